//! Every call allocscope makes into the OS and the C library, each behind a
//! small wrapper: the page size, anonymous mappings and their residency,
//! the process's resident memory and thread count, `malloc_trim` and the
//! glibc probe behind it, `pthread` keys, `pthread_atfork`, a thread's stack
//! bounds, the monotonic clock and, for profiles, the loaded objects, read-only mappings of
//! their files (`MappedFile`) and the unwinder's function lookup.
//!
//! Some of these run inside the allocator (a thread's first event maps its
//! counter block and creates the exit key; the first sample maps the
//! sampler's arenas; a sample looks up its thread's stack bounds; a forked
//! child checks which pages are still mapped): [`page_size`], [`map_zeroed`],
//! [`map_zeroed_noreserve`], [`residency`], [`ThreadKey`], [`at_fork`],
//! [`monotonic_ns`] and [`thread_stack_bounds`] never allocate through the global allocator,
//! never panic and never take a lock of allocscope's. The rest run on
//! ordinary threads (the collector, the exporter, profile capture) and may
//! allocate.
//!
//! What stays elsewhere, and why: the allocator's own `malloc`, `calloc`
//! and `realloc` calls in `crate::alloc` (they *are* the hot path, inlined
//! into every allocation); the frame-pointer walk in `crate::sampling`
//! (raw reads of the stack, bounded by [`thread_stack_bounds`]); the
//! counters' and the sampler store's reads of their own mappings. None of
//! those calls the OS.

#[cfg(target_os = "linux")]
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Page size assumed where the OS cannot tell (and until [`page_size`]
/// has asked it once).
const FALLBACK_PAGE: usize = 4096;

/// The page size, read once from `sysconf` (0: not read yet).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The size of a memory page (4 KiB on x86-64; 4, 16 or 64 KiB on
/// AArch64, as the kernel was built). Read from `sysconf(_SC_PAGESIZE)`
/// once and cached; 4096 if that fails or is not a power of two. One
/// relaxed load after the first call; never allocates or panics.
#[inline]
pub(crate) fn page_size() -> usize {
    match PAGE_SIZE.load(Relaxed) {
        0 => read_page_size(),
        p => p,
    }
}

#[cold]
fn read_page_size() -> usize {
    #[cfg(unix)]
    // SAFETY: `sysconf` only reads a system setting; no pointers involved.
    let p = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    #[cfg(not(unix))]
    let p = FALLBACK_PAGE;
    let p = if p.is_power_of_two() {
        p
    } else {
        FALLBACK_PAGE
    };
    PAGE_SIZE.store(p, Relaxed);
    p
}

/// `n` rounded up to whole pages (saturating at the largest whole page).
#[inline]
pub(crate) fn round_to_pages(n: usize) -> usize {
    let page = page_size();
    n.checked_next_multiple_of(page)
        .unwrap_or(usize::MAX & !(page - 1))
}

/// A fresh, zeroed, page-aligned, readable and writable mapping of at least
/// `bytes` bytes (rounded up to whole pages), outside any allocator; null
/// if the OS refuses. Never unmapped by allocscope. Swap is reserved for
/// it, so a mapping the OS cannot back fails here rather than when touched.
#[inline]
pub(crate) fn map_zeroed(bytes: usize) -> *mut u8 {
    map_anonymous(bytes, false)
}

/// As [`map_zeroed`], but without reserving swap (`MAP_NORESERVE`): for
/// large arenas that are touched a page at a time.
#[inline]
pub(crate) fn map_zeroed_noreserve(bytes: usize) -> *mut u8 {
    map_anonymous(bytes, true)
}

fn map_anonymous(bytes: usize, noreserve: bool) -> *mut u8 {
    let bytes = round_to_pages(bytes.max(1));
    #[cfg(unix)]
    {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if noreserve {
            flags |= libc::MAP_NORESERVE;
        }
        // SAFETY: a new anonymous private mapping at an address the kernel
        // chooses; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }
    #[cfg(not(unix))]
    {
        use std::alloc::{GlobalAlloc, Layout, System};
        let _ = noreserve;
        match Layout::from_size_align(bytes, page_size()) {
            // SAFETY: a non-zero size (at least one page).
            Ok(l) => unsafe { System.alloc_zeroed(l) },
            Err(_) => std::ptr::null_mut(),
        }
    }
}

/// Resident bytes of the pages covering `p..p + len` (`mincore`), or
/// `None` if any of them is not mapped (or, off Linux, always: the OS
/// cannot tell). Reads nothing at `p`; uses a small buffer on the stack,
/// never allocates.
pub(crate) fn residency(p: *const u8, len: usize) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        let start = p as usize & !(page - 1);
        let end = (p as usize).checked_add(len)?;
        let mut resident = 0;
        let mut at = start;
        // one `mincore` per 256 pages: one byte of `vec` per page
        let mut vec = [0u8; 256];
        while at < end {
            let chunk = (end - at).min(vec.len() * page);
            // SAFETY: `mincore` only reports on the range (ENOMEM if a page
            // of it is not mapped) and writes one byte per page of it into
            // `vec`, which has room for `chunk / page` rounded up (<= 256).
            let rc = unsafe { libc::mincore(at as *mut c_void, chunk, vec.as_mut_ptr()) };
            if rc != 0 {
                return None;
            }
            let pages = chunk.div_ceil(page);
            resident += vec[..pages].iter().filter(|&&v| v & 1 != 0).count() * page;
            at += chunk;
        }
        Some(resident)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (p, len);
        None
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (0 if the clock cannot be read). On
/// Linux a vDSO call: no system call, no allocation, no lock. The sampler
/// reads it when it records a sampled block (its birth time) and when it
/// removes one (its lifetime): both already on the cold sampled path.
/// `CLOCK_MONOTONIC_COARSE` would be cheaper but ticks every 4 ms, too
/// coarse for lifetimes measured from 1 µs (docs/profiles.md, "Ages and
/// lifetimes").
#[inline]
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` to the pointer, which
    // points to a local of that type; it touches nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Resident memory of the process in bytes (Linux: `/proc/self/statm`,
/// field 2, in pages); `None` elsewhere or on failure. Allocates (reads a
/// file): never call it from the allocator.
pub(crate) fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        parse_statm(&statm, page_size() as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Resident bytes from the text of `/proc/<pid>/statm` (field 2, pages).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_statm(statm: &str, page: u64) -> Option<u64> {
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page))
}

/// OS threads of the process (Linux: `/proc/self/stat`, field 20);
/// `None` elsewhere or on failure. Allocates.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) fn thread_count() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        parse_stat_threads(&stat)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Field 20 (threads) of the text of `/proc/<pid>/stat`. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted
/// after its last `)`.
#[cfg_attr(not(all(target_os = "linux", feature = "server")), allow(dead_code))]
fn parse_stat_threads(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state)
    rest.split_ascii_whitespace().nth(20 - 3)?.parse().ok()
}

/// Returns glibc's free memory to the OS (`malloc_trim(0)`). False, doing
/// nothing, where the C library is not glibc. Takes glibc's arena locks:
/// never call it from the allocator.
pub(crate) fn malloc_trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` has no preconditions; it takes glibc's arena
        // locks itself and returns free pages with madvise/sbrk.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Whether glibc's malloc serves the global allocator, probed once (see
/// `glibc`); false where the C library is not glibc. Allocates 64 KiB
/// through the global allocator on its first call: never call it from the
/// allocator.
pub(crate) fn glibc_malloc_serves_global_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        *glibc::DETECTED.get_or_init(glibc::probe)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// What [`glibc_malloc_serves_global_allocator`] found (`None`: not probed
/// yet, or not glibc).
pub(crate) fn glibc_malloc_detected() -> Option<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::DETECTED.get().copied()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    //! Is the global allocator's memory glibc's malloc's?
    //!
    //! `AllocScope<A>` is a `const` static of the user's crate: no code of
    //! ours runs when it is created, and the hot path must not record its
    //! inner type. So the answer is observed instead: allocate a 64 KiB
    //! block through the global allocator and see whether glibc's own
    //! in-use count (`mallinfo`: arena chunks in use plus mmapped chunks)
    //! grew by at least that much. 64 KiB is above glibc's thread cache and
    //! below its mmap threshold, so glibc serves it from an arena. A
    //! concurrent free on another thread can hide the growth, so three
    //! tries; a concurrent glibc allocation of 64 KiB or more could fake it
    //! with another allocator, which costs one harmless `malloc_trim`.
    //! `mallinfo` (not `mallinfo2`) keeps old glibc versions loadable; its
    //! `int` fields wrap above 2 GiB, so differences are taken modulo 2^32.
    use std::alloc::Layout;
    use std::sync::OnceLock;

    pub(super) static DETECTED: OnceLock<bool> = OnceLock::new();

    const PROBE: usize = 64 * 1024;

    fn in_use() -> u32 {
        // SAFETY: `mallinfo` has no preconditions (it locks the arenas).
        let m = unsafe { libc::mallinfo() };
        (m.uordblks as u32).wrapping_add(m.hblkhd as u32)
    }

    pub(super) fn probe() -> bool {
        let Ok(layout) = Layout::from_size_align(PROBE, 16) else {
            return false;
        };
        for _ in 0..3 {
            let before = in_use();
            // SAFETY: a non-zero-sized layout. `black_box`: the compiler
            // may otherwise elide an allocation that is freed unused.
            let p = std::hint::black_box(unsafe { std::alloc::alloc(layout) });
            if p.is_null() {
                return false;
            }
            let after = in_use();
            // SAFETY: allocated just above with this layout.
            unsafe { std::alloc::dealloc(p, layout) };
            let grew = after.wrapping_sub(before);
            if grew as usize >= PROBE && grew < 1 << 31 {
                log::debug!(
                    target: "allocscope",
                    "glibc's malloc serves the global allocator: collection cycles call malloc_trim"
                );
                return true;
            }
        }
        log::info!(
            target: "allocscope",
            "the global allocator is not glibc's malloc: collection cycles do not call \
             malloc_trim (release_to_os = \"always\" forces it; a reclaimer can purge \
             another allocator)"
        );
        false
    }
}

/// A `pthread` thread-specific-data key whose destructor runs at the exit
/// of every thread that set a non-null value for it (after Rust's own
/// thread-local destructors; also for threads not started by Rust).
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct ThreadKey(libc::pthread_key_t);

#[cfg(unix)]
impl ThreadKey {
    /// Creates a key with destructor `on_exit` (called with the thread's
    /// value; an `extern "C"` function aborts rather than unwind). `None`
    /// if the process is out of keys. Does not allocate through the global
    /// allocator.
    pub(crate) fn create(on_exit: extern "C" fn(*mut libc::c_void)) -> Option<ThreadKey> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; the destructor is a safe
        // `extern "C"` function, sound to call with any pointer.
        (unsafe { libc::pthread_key_create(&mut key, Some(on_exit)) } == 0)
            .then_some(ThreadKey(key))
    }

    /// The key as a number, to keep in an atomic ([`ThreadKey::from_raw`]).
    pub(crate) fn into_raw(self) -> usize {
        self.0 as usize
    }

    /// The key [`ThreadKey::into_raw`] gave `raw` for.
    ///
    /// # Safety
    /// `raw` must come from `into_raw` of a key that has not been deleted.
    pub(crate) unsafe fn from_raw(raw: usize) -> ThreadKey {
        ThreadKey(raw as libc::pthread_key_t)
    }

    /// Deletes the key (no destructor runs for it any more).
    pub(crate) fn delete(self) {
        // SAFETY: a live key (the type's invariant), consumed here.
        unsafe { libc::pthread_key_delete(self.0) };
    }

    /// Sets this thread's value; a non-null one makes the destructor run at
    /// this thread's exit. False if that failed (out of memory).
    pub(crate) fn set(&self, value: *mut libc::c_void) -> bool {
        // SAFETY: a live key (the type's invariant); the value is only
        // stored, and handed to the destructor, which accepts any pointer.
        unsafe { libc::pthread_setspecific(self.0, value) == 0 }
    }
}

/// Registers fork handlers (`pthread_atfork`): `prepare` in the parent
/// before `fork`, `parent` in it after, `child` in the child (with only
/// the forking thread). False if that failed. glibc keeps the list with
/// its own `malloc`, not through the global allocator.
#[cfg(unix)]
pub(crate) fn at_fork(
    prepare: Option<extern "C" fn()>,
    parent: Option<extern "C" fn()>,
    child: Option<extern "C" fn()>,
) -> bool {
    // SAFETY: the handlers are safe `extern "C"` functions (an unwind out of
    // one aborts); registering them touches no memory of ours.
    unsafe {
        libc::pthread_atfork(
            prepare.map(|f| f as unsafe extern "C" fn()),
            parent.map(|f| f as unsafe extern "C" fn()),
            child.map(|f| f as unsafe extern "C" fn()),
        ) == 0
    }
}

/// Where a thread's stack lies: `low..high`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackBounds {
    pub(crate) low: usize,
    pub(crate) high: usize,
}

/// The calling thread's stack (`pthread_getattr_np`); `None` off Linux or
/// on failure. Does not go through the global allocator (for the main
/// thread glibc reads `/proc/self/maps` with its own `malloc`): callers
/// look it up once per thread and cache it.
pub(crate) fn thread_stack_bounds() -> Option<StackBounds> {
    #[cfg(target_os = "linux")]
    {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: `pthread_getattr_np` initialises `attr` when it returns 0.
        if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
            return None;
        }
        let mut addr: *mut c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: `attr` was initialised above and is destroyed once, after
        // its last use; the out-pointers are valid locals.
        let rc = unsafe {
            let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            rc
        };
        if rc != 0 || addr.is_null() || size == 0 {
            return None;
        }
        let low = addr as usize;
        Some(StackBounds {
            low,
            high: low.checked_add(size)?,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// One object loaded in the process: where its segments are, and its load
/// bias.
#[cfg(all(feature = "profile", target_os = "linux"))]
pub(crate) struct LoadedObject {
    /// Its path as the loader has it (empty for the executable).
    pub(crate) name: String,
    /// Whether it is the executable itself.
    pub(crate) is_main: bool,
    /// Added to its addresses to get where they are in memory.
    pub(crate) bias: u64,
    /// Loaded segments, `start..end` in memory.
    pub(crate) ranges: Vec<std::ops::Range<usize>>,
}

#[cfg(all(feature = "profile", target_os = "linux"))]
impl LoadedObject {
    /// Whether `addr` lies in one of its loaded segments.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        self.ranges.iter().any(|r| r.contains(&addr))
    }
}

/// The objects loaded in the process (`dl_iterate_phdr`), the executable
/// first. Allocates: profile capture only.
#[cfg(all(feature = "profile", target_os = "linux"))]
pub(crate) fn loaded_objects() -> Vec<LoadedObject> {
    use std::ffi::{c_int, CStr};

    /// Adds the object `info` describes to the `Vec<LoadedObject>` at
    /// `data`.
    ///
    /// # Safety
    /// Only as `dl_iterate_phdr`'s callback, with `data` the
    /// `&mut Vec<LoadedObject>` handed to it.
    unsafe extern "C" fn callback(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `&mut Vec<LoadedObject>` passed below, alive
        // for the whole `dl_iterate_phdr` call; `info` and the program
        // headers it points to are valid for the duration of this callback,
        // as `dl_iterate_phdr` guarantees.
        let (objects, info) = unsafe { (&mut *(data as *mut Vec<LoadedObject>), &*info) };
        let first = objects.is_empty();
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string
            // owned by the loader, valid during the callback.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        let phdrs = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers,
            // valid during the callback.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let bias = info.dlpi_addr as usize;
        let ranges = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| {
                let start = bias.wrapping_add(p.p_vaddr as usize);
                start..start.wrapping_add(p.p_memsz as usize)
            })
            .collect();
        objects.push(LoadedObject {
            // The first object listed is the executable (empty name).
            is_main: first && name.is_empty(),
            name,
            bias: bias as u64,
            ranges,
        });
        0
    }

    let mut objects: Vec<LoadedObject> = Vec::new();
    // SAFETY: the callback only reads what the loader hands it and writes to
    // `objects`, which outlives the call; it never unwinds.
    unsafe {
        libc::dl_iterate_phdr(Some(callback), &mut objects as *mut _ as *mut c_void);
    }
    objects
}

/// Start of the machine-code function containing the call that `ret`
/// returns to, from the unwinder's tables; `None` if no loaded object's
/// unwind info covers it (or off Linux, or under Miri).
#[cfg(feature = "profile")]
pub(crate) fn enclosing_function(ret: usize) -> Option<usize> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        extern "C" {
            // Part of the unwinder ABI (libgcc_s, LLVM libunwind) that std
            // links on Linux for panics and backtraces. Looks up `pc - 1`.
            fn _Unwind_FindEnclosingFunction(pc: *mut c_void) -> *mut c_void;
        }
        if ret <= 1 {
            return None;
        }
        // SAFETY: the function only searches the loaded objects' unwind
        // tables for an FDE covering the address; it never dereferences
        // `pc` and returns null when no object covers it.
        let f = unsafe { _Unwind_FindEnclosingFunction(ret as *mut c_void) } as usize;
        (f != 0 && f < ret).then_some(f)
    }
    #[cfg(any(not(target_os = "linux"), miri))]
    {
        let _ = ret;
        None
    }
}

/// A whole file mapped read-only into the address space (`mmap`,
/// `PROT_READ`, `MAP_PRIVATE`): the symbol tables and debug info of the
/// loaded objects are read through it in place, never copied onto the
/// heap. Pages are read from the page cache when first touched and count
/// as the process's (file-backed, reclaimable) resident memory until
/// [`MappedFile::drop_resident_pages`] or the drop. Profile capture only:
/// opening allocates (the path).
///
/// Reading the mapping is sound as long as nobody truncates or rewrites the
/// file in place while it is mapped (a read past a truncation raises
/// `SIGBUS`). Executables and shared libraries are replaced by rename, not
/// rewritten in place, by package managers and linkers: the same
/// assumption the dynamic loader and every unwinder make about the objects
/// they map.
#[cfg(all(feature = "profile", target_os = "linux"))]
pub(crate) struct MappedFile {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value (unmapped once,
// in `drop`): sharing `&[u8]` views of it between threads is as safe as
// sharing any immutable byte slice.
#[cfg(all(feature = "profile", target_os = "linux"))]
unsafe impl Send for MappedFile {}
// SAFETY: as for `Send`: nothing is ever written through the mapping.
#[cfg(all(feature = "profile", target_os = "linux"))]
unsafe impl Sync for MappedFile {}

#[cfg(all(feature = "profile", target_os = "linux"))]
impl MappedFile {
    /// Maps the whole of the file at `path`, read-only. An empty file, a
    /// file that cannot be opened or a refused mapping is an error.
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<MappedFile> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file larger than the address space"))?;
        if len == 0 {
            return Err(std::io::Error::other("empty file"));
        }
        // SAFETY: a new private, read-only mapping of an open file at an
        // address the kernel chooses; no existing memory is touched. The
        // descriptor may be closed afterwards: the mapping keeps the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        std::ptr::NonNull::new(p.cast::<u8>())
            .map(|ptr| MappedFile { ptr, len })
            .ok_or_else(|| std::io::Error::other("mmap returned null"))
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` is a live read-only mapping owned by
        // `self` (unmapped only in `drop`, which needs `&mut self`), and
        // nothing writes to it (see the type's documentation about the file
        // itself).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Takes the mapping's pages out of the process's resident memory
    /// (`madvise(MADV_DONTNEED)`): the next read of a page brings it back
    /// from the page cache (or the file), unchanged, since nothing is ever
    /// written to a read-only private mapping. Call it when no slice of
    /// the mapping is being read.
    pub(crate) fn drop_resident_pages(&self) {
        // SAFETY: the range is exactly this live mapping; for a read-only
        // private file mapping `MADV_DONTNEED` only drops the page-table
        // entries: later reads fault the same file contents back in.
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTNEED) };
        if rc != 0 {
            log::debug!(
                "allocscope: madvise(MADV_DONTNEED) of a mapped object file failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(all(feature = "profile", target_os = "linux"))]
impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `open` created; `&mut self`
        // proves no slice of it is alive.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(all(feature = "profile", target_os = "linux"))]
impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedFile({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two_and_cached() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096, "{p}");
        assert_eq!(PAGE_SIZE.load(Relaxed), p);
        assert_eq!(round_to_pages(1), p);
        assert_eq!(round_to_pages(p), p);
        assert_eq!(round_to_pages(p + 1), 2 * p);
        assert_eq!(round_to_pages(usize::MAX) % p, 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn mappings_are_zeroed_and_their_residency_is_read() {
        let page = page_size();
        let p = map_zeroed_noreserve(3 * page);
        assert!(!p.is_null());
        assert_eq!(residency(p, 3 * page), Some(0), "nothing touched yet");
        // SAFETY: the mapping is 3 pages, readable and writable.
        unsafe {
            assert_eq!(*p.add(page), 0);
            *p.add(page) = 1;
        }
        assert_eq!(residency(p, 3 * page), Some(page));
        // a range that starts mid-page covers its first page
        assert_eq!(residency(p.wrapping_add(page + 10), 1), Some(page));
        let q = map_zeroed(1);
        assert!(!q.is_null() && (q as usize).is_multiple_of(page));
        // more than one `mincore` chunk
        let big = map_zeroed_noreserve(600 * page);
        assert_eq!(residency(big, 600 * page), Some(0));
        // an address that is not mapped
        assert_eq!(residency(std::ptr::null(), 1), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_and_threads_are_read() {
        assert!(resident_bytes().unwrap() > 0);
        assert!(thread_count().unwrap() >= 1);
    }

    #[test]
    fn proc_files_are_parsed() {
        let s = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 \
                 12345 100000000 2560 18446744073709551615";
        assert_eq!(parse_stat_threads(s), Some(7));
        assert_eq!(parse_stat_threads("garbage"), None);
        assert_eq!(parse_stat_threads("1 (x) S 1"), None);
        assert_eq!(
            parse_statm("25000 2560 300 1 0 900 0\n", 4096),
            Some(2560 * 4096)
        );
        assert_eq!(parse_statm("garbage", 4096), None);
        assert_eq!(parse_statm("1", 4096), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn stack_bounds_hold_a_local() {
        let local = 0u8;
        let b = thread_stack_bounds().unwrap();
        let at = std::ptr::addr_of!(local) as usize;
        assert!(b.low < at && at < b.high, "{b:?} {at:#x}");
    }

    #[test]
    #[cfg(unix)]
    fn thread_keys_run_their_destructor_at_thread_exit() {
        use std::sync::atomic::AtomicUsize;
        static RAN: AtomicUsize = AtomicUsize::new(0);
        extern "C" fn on_exit(v: *mut libc::c_void) {
            RAN.fetch_add(v as usize, Relaxed);
        }
        let key = ThreadKey::create(on_exit).unwrap();
        let raw = key.into_raw();
        std::thread::spawn(move || {
            // SAFETY: `raw` is the live key created above.
            let k = unsafe { ThreadKey::from_raw(raw) };
            assert!(k.set(5 as *mut libc::c_void));
        })
        .join()
        .unwrap();
        assert_eq!(RAN.load(Relaxed), 5);
        // SAFETY: as above; deleted once, here.
        unsafe { ThreadKey::from_raw(raw) }.delete();
    }

    #[test]
    #[cfg(all(feature = "profile", target_os = "linux"))]
    fn files_are_mapped_read_only_and_their_pages_dropped() {
        let exe = MappedFile::open(std::path::Path::new("/proc/self/exe")).unwrap();
        let bytes = exe.bytes();
        assert_eq!(&bytes[..4], b"\x7fELF");
        // Reading every page makes them resident in this process; dropping
        // them takes them out again. (The test binary is tens of MiB; other
        // tests running meanwhile move resident memory far less.)
        let len = bytes.len() as u64;
        let page = page_size();
        let before = resident_bytes().unwrap();
        let sum: u64 = bytes.iter().step_by(page).map(|&b| u64::from(b)).sum();
        std::hint::black_box(sum);
        let touched = resident_bytes().unwrap();
        exe.drop_resident_pages();
        let dropped = resident_bytes().unwrap();
        assert!(
            touched >= before + len / 2 && dropped + len / 2 <= touched,
            "file of {len} bytes; resident {before} -> {touched} -> {dropped}"
        );
        assert_eq!(&exe.bytes()[..4], b"\x7fELF", "read back unchanged");
        assert!(format!("{exe:?}").starts_with("MappedFile("));
        assert!(MappedFile::open(std::path::Path::new("/nonexistent/allocscope")).is_err());
        assert!(MappedFile::open(std::path::Path::new("/dev/null")).is_err());
    }
}

/// The calling thread's OS thread id (`gettid`; 0 where there is none).
/// A system call: no allocation, no lock.
pub(crate) fn gettid() -> u32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` takes no arguments and cannot fail.
        (unsafe { libc::gettid() }) as u32
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The process id (the main thread's thread id on Linux).
pub(crate) fn getpid() -> u32 {
    std::process::id()
}

/// A thread's kernel name (`comm`): at most 15 bytes, truncated by the
/// kernel from longer names.
#[derive(Clone, Copy)]
pub(crate) struct Comm {
    buf: [u8; 16],
    len: usize,
}

impl Comm {
    /// The name's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len.min(16)]
    }

    /// A name from up to 16 bytes (ends at the first NUL or newline).
    pub(crate) fn from_bytes(buf: [u8; 16]) -> Comm {
        Comm::from_buf(buf)
    }

    fn from_buf(buf: [u8; 16]) -> Comm {
        let len = buf.iter().position(|&b| b == 0 || b == b'\n').unwrap_or(16);
        Comm { buf, len }
    }
}

/// The calling thread's kernel name (`prctl(PR_GET_NAME)`): one system
/// call, no allocation, no lock, so usable inside the allocator. `None`
/// where there is none.
pub(crate) fn current_comm() -> Option<Comm> {
    #[cfg(target_os = "linux")]
    {
        let mut buf = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) to
        // the pointer, which points to a local buffer of 16 bytes.
        let rc = unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr(), 0, 0, 0) };
        (rc == 0).then(|| Comm::from_buf(buf))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The kernel name of thread `tid` of this process
/// (`/proc/self/task/<tid>/comm`), read with `open`/`read` into a stack
/// buffer: no allocation, no lock, so usable inside the allocator. `None`
/// if it cannot be read (the thread exited, or no `/proc`).
pub(crate) fn task_comm(tid: u32) -> Option<Comm> {
    #[cfg(target_os = "linux")]
    {
        // "/proc/self/task/" + up to 10 digits + "/comm" + NUL
        let mut path = [0u8; 48];
        let prefix = b"/proc/self/task/";
        path[..prefix.len()].copy_from_slice(prefix);
        let mut n = prefix.len();
        let mut digits = [0u8; 10];
        let mut d = 0;
        let mut t = tid;
        loop {
            digits[d] = b'0' + (t % 10) as u8;
            d += 1;
            t /= 10;
            if t == 0 {
                break;
            }
        }
        for k in (0..d).rev() {
            path[n] = digits[k];
            n += 1;
        }
        let suffix = b"/comm";
        path[n..n + suffix.len()].copy_from_slice(suffix);
        // path[n + 5] is the NUL (zeroed)
        // SAFETY: `path` is NUL-terminated; flags open it read-only.
        let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let mut buf = [0u8; 16];
        // SAFETY: reads at most 16 bytes into the 16-byte local buffer from
        // the descriptor opened above, which is closed right after.
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
        (got > 0).then(|| Comm::from_buf(buf))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}
