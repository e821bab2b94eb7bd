//! Symbolisation: return addresses to demangled frames, inlined functions
//! expanded, with files and lines when asked for.
//!
//! Owns the process-wide address cache and the rule that drops
//! allocscope's own frames (and the allocator shims) from the leaf end of a
//! stack. Runs only when a profile is captured or exported, on an ordinary
//! thread: it allocates and locks freely, and is never reachable from the
//! allocator.
//!
//! Names come from each loaded object's symbol table (`super::symtab`,
//! built once per object from the mapped file), inlined functions and, with
//! [`Symbols::Lines`], files and lines from its DWARF (`super::dwarf`, read
//! in place for the addresses of one capture and forgotten after it).
//!
//! The cache is bounded ([`SYMBOL_CACHE_CAPACITY`] addresses): when an
//! insertion would exceed it, the cache is cleared first. Symbols already
//! handed to a profile stay alive in that profile (they are reference
//! counted), so clearing costs only re-resolution later, never correctness.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

/// Most return addresses the symbol cache keeps before it is cleared.
///
/// About 64k addresses: far more than the distinct call sites of a typical
/// heap profile, and some 10 MiB at worst (frame names are shared between
/// the addresses and profiles that use them; a few hundred addresses, tens
/// of KiB, are typical).
pub const SYMBOL_CACHE_CAPACITY: usize = 64 * 1024;

/// How much a profile says about each frame (see
/// [`HeapProfile::capture_with`](super::HeapProfile::capture_with)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Symbols {
    /// Function names: the symbol table's full paths, and the functions
    /// inlined at each address from the debug info when the binary has it.
    /// No files or lines. The default: cheap in time and memory (see
    /// docs/measurements.md).
    #[default]
    Names,
    /// Names, and the source file and line of every frame from the debug
    /// info's line tables (when the binary has them). Reads more of the
    /// debug info, once per new address; the exporter's `?lines=1`.
    Lines,
}

impl Symbols {
    fn lines(self) -> bool {
        matches!(self, Symbols::Lines)
    }
}

/// One frame of a symbolised stack: a function, or one level of functions
/// inlined into each other at the same return address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    name: Arc<str>,
    system_name: Option<Arc<str>>,
    file: Option<Arc<str>>,
    line: Option<u32>,
    address: usize,
    inlined: bool,
}

impl Frame {
    /// The demangled function path without the hash suffix (e.g.
    /// `myapp::cache::Cache::insert`), or `0x…` (the return address) when
    /// the address could not be resolved.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The symbol as the linker knows it (mangled), when it differs from
    /// [`name`](Self::name).
    pub fn system_name(&self) -> Option<&str> {
        self.system_name.as_deref()
    }

    /// Source file, when the profile was captured with [`Symbols::Lines`]
    /// and the debug info has it.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Source line, when the profile was captured with [`Symbols::Lines`]
    /// and the debug info has it.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The return address this frame was resolved from. Inlined frames share
    /// the address of the call they were inlined into.
    pub fn address(&self) -> usize {
        self.address
    }

    /// Whether this function was inlined into the next frame (its caller) at
    /// the same address.
    pub fn is_inlined(&self) -> bool {
        self.inlined
    }

    /// Whether the address could not be resolved to a name.
    pub fn is_unresolved(&self) -> bool {
        self.name.starts_with("0x") && self.file.is_none()
    }

    /// What makes two frames the same function call site, whatever the
    /// address: name, file and line.
    pub(crate) fn key(&self) -> FrameKey {
        (Arc::clone(&self.name), self.file.clone(), self.line)
    }

    fn unresolved(address: usize) -> Frame {
        Frame {
            name: format!("{address:#x}").into(),
            system_name: None,
            file: None,
            line: None,
            address,
            inlined: false,
        }
    }

    /// Replaces the file (tests).
    #[cfg(test)]
    pub(crate) fn set_file_for_tests(&mut self, file: Option<&str>) {
        self.file = file.map(Into::into);
    }

    /// Builds a frame from parts (tests).
    #[cfg(test)]
    pub(crate) fn synthetic(name: &str, address: usize, inlined: bool) -> Frame {
        Frame {
            name: name.into(),
            system_name: None,
            file: Some("src/synthetic.rs".into()),
            line: Some(7),
            address,
            inlined,
        }
    }
}

/// See [`Frame::key`].
pub(crate) type FrameKey = (Arc<str>, Option<Arc<str>>, Option<u32>);

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(file) = &self.file {
            write!(f, " at {file}:{}", self.line.unwrap_or(0))?;
        }
        if self.inlined {
            write!(f, " (inlined)")?;
        }
        write!(f, " [{:#x}]", self.address)
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Everything known about one return address: its frames, innermost
/// (inlined) first and the physically calling function last, as pprof's
/// `Location.line` wants them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// The return address as captured.
    pub(crate) address: usize,
    /// Start of the machine-code function containing the call, when known
    /// (for `name+0x…` offsets in the text format).
    pub(crate) entry: Option<usize>,
    /// Never empty.
    pub(crate) frames: Box<[Frame]>,
}

/// Resolved addresses, by (address, with lines).
type Cache = HashMap<(usize, bool), Arc<Location>>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Return addresses currently held by the symbol cache (at most
/// [`SYMBOL_CACHE_CAPACITY`]; an address resolved both with and without
/// lines counts twice).
pub fn symbol_cache_len() -> usize {
    CACHE.lock().as_ref().map_or(0, HashMap::len)
}

/// Empties the symbol cache and forgets the loaded objects' symbol tables
/// (e.g. after loading or unloading shared libraries, whose addresses may
/// now mean something else).
pub fn clear_symbol_cache() {
    *CACHE.lock() = None;
    super::symtab::clear();
}

/// Resolves every address in `addrs`, from the cache where possible. The
/// cache lock is never held while symbols or debug info are being read.
pub(crate) fn resolve_many(
    addrs: impl IntoIterator<Item = usize>,
    symbols: Symbols,
) -> HashMap<usize, Arc<Location>> {
    let lines = symbols.lines();
    let mut out: HashMap<usize, Arc<Location>> = HashMap::new();
    let mut missing = Vec::new();
    {
        let cache = CACHE.lock();
        for a in addrs {
            if out.contains_key(&a) {
                continue;
            }
            match cache.as_ref().and_then(|c| c.get(&(a, lines))) {
                Some(loc) => {
                    out.insert(a, Arc::clone(loc));
                }
                None => {
                    // Placeholder so duplicates are skipped; filled below.
                    out.insert(a, Arc::new(resolve_placeholder(a)));
                    missing.push(a);
                }
            }
        }
    }
    if missing.is_empty() {
        return out;
    }
    missing.sort_unstable();
    let resolved = resolve_batch(&missing, symbols);
    let mut cache = CACHE.lock();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() + resolved.len() > SYMBOL_CACHE_CAPACITY {
        log::debug!(
            "allocscope: symbol cache full ({} addresses), clearing it",
            map.len()
        );
        map.clear();
    }
    for loc in resolved {
        let loc = Arc::new(loc);
        if map.len() < SYMBOL_CACHE_CAPACITY {
            map.insert((loc.address, lines), Arc::clone(&loc));
        }
        out.insert(loc.address, loc);
    }
    out
}

fn resolve_placeholder(address: usize) -> Location {
    Location {
        address,
        entry: None,
        frames: Box::new([Frame::unresolved(address)]),
    }
}

/// A location that nothing could name.
fn unresolved_location(address: usize) -> Location {
    Location {
        address,
        entry: crate::sys::enclosing_function(address),
        frames: Box::new([Frame::unresolved(address)]),
    }
}

/// Demangled names and the names as linked, shared by the frames of one
/// batch.
#[derive(Default)]
struct Names(HashMap<Vec<u8>, Named>);

/// A demangled name, and the name as linked when it differs.
type Named = (Arc<str>, Option<Arc<str>>);

impl Names {
    /// `raw` (mangled or not) demangled without the hash, and `raw` itself
    /// when it differs; `None` for a blank name.
    fn get(&mut self, raw: &[u8]) -> Option<Named> {
        if let Some(n) = self.0.get(raw) {
            return Some(n.clone());
        }
        let demangled = format!("{:#}", backtrace::SymbolName::new(raw));
        if demangled.trim().is_empty() {
            return None;
        }
        let linked = String::from_utf8_lossy(raw);
        let system = (linked != demangled && !linked.is_empty()).then(|| linked.as_ref().into());
        let n: Named = (Arc::from(demangled), system);
        self.0.insert(raw.to_vec(), n.clone());
        Some(n)
    }
}

/// Resolves `rets` (sorted, distinct return addresses), in that order.
#[cfg(all(target_os = "linux", not(miri)))]
fn resolve_batch(rets: &[usize], symbols: Symbols) -> Vec<Location> {
    use super::dwarf;
    use object::read::elf::ElfFile;

    let objects = crate::sys::loaded_objects();
    let mut out: Vec<Option<Location>> = rets.iter().map(|_| None).collect();
    // Group the lookups by object; each object's addresses stay sorted.
    let mut by_object: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, &ret) in rets.iter().enumerate() {
        if ret <= 1 {
            continue;
        }
        let pc = ret - 1;
        if let Some(o) = objects.iter().position(|o| o.contains(pc)) {
            by_object.entry(o).or_default().push(i);
        }
    }
    let mut names = Names::default();
    let mut files = dwarf::Files::default();
    for (o, idx) in by_object {
        let syms = super::symtab::symbols_of(&objects[o]);
        let bias = syms.bias();
        let svma = |i: usize| ((rets[i] - 1) as u64).wrapping_sub(bias);
        let pcs: Vec<u64> = idx.iter().map(|&i| svma(i)).collect();
        // DWARF: the object's own, else its debug file's.
        let infos: Vec<dwarf::PcInfo<'_>> = [syms.object_bytes(), syms.debug_bytes()]
            .into_iter()
            .flatten()
            .find_map(|bytes| {
                let parsed = ElfFile::<super::symtab::Elf>::parse(bytes).ok()?;
                let d = dwarf::load(&parsed)?;
                let release = || syms.drop_resident_pages();
                Some(d.lookup(
                    &pcs,
                    symbols.lines(),
                    &mut files,
                    &syms.unlisted_units,
                    &release,
                ))
            })
            .unwrap_or_default();
        for (k, &i) in idx.iter().enumerate() {
            let ret = rets[i];
            let sym = syms.find(pcs[k]);
            let info = infos.get(k);
            out[i] = Some(compose(
                ret,
                sym.as_ref().map(|s| s.name),
                sym.as_ref()
                    .and_then(|s| usize::try_from(s.start.wrapping_add(bias)).ok()),
                info,
                &mut names,
            ));
        }
        syms.drop_resident_pages();
    }
    rets.iter()
        .zip(out)
        .map(|(&ret, l)| l.unwrap_or_else(|| unresolved_location(ret)))
        .collect()
}

/// Without the loader's list of objects (off Linux) or debug info (Miri),
/// addresses stay unresolved.
#[cfg(not(all(target_os = "linux", not(miri))))]
fn resolve_batch(rets: &[usize], _symbols: Symbols) -> Vec<Location> {
    rets.iter().map(|&r| unresolved_location(r)).collect()
}

/// One location from what the symbol table (`symbol`, the function's
/// linked name; `start`, its run-time address) and DWARF (`info`) say
/// about the return address `ret`.
#[cfg(all(target_os = "linux", not(miri)))]
fn compose(
    ret: usize,
    symbol: Option<&[u8]>,
    start: Option<usize>,
    info: Option<&super::dwarf::PcInfo<'_>>,
    names: &mut Names,
) -> Location {
    let chain = info.map_or(&[][..], |i| &i.chain[..]);
    let own_line = info.and_then(|i| i.line.clone());
    let frame = |names: &mut Names, raw: Option<&[u8]>, at: Option<(Arc<str>, u32)>, inlined| {
        let (name, system_name) = match raw.and_then(|r| names.get(r)) {
            Some(n) => n,
            None => (format!("{ret:#x}").into(), None),
        };
        let (file, line) = match at {
            Some((f, l)) => (Some(f), Some(l)),
            None => (None, None),
        };
        Frame {
            name,
            system_name,
            file,
            line,
            address: ret,
            inlined,
        }
    };
    let mut frames: Vec<Frame> = Vec::with_capacity(chain.len().max(1));
    // Inlined functions, innermost first: each at the call site of the
    // function inlined into it (the innermost at the address's own line).
    let n = chain.len();
    for k in (1..n).rev() {
        let at = if k + 1 == n {
            own_line.clone()
        } else {
            chain[k + 1].call.clone()
        };
        frames.push(frame(names, chain[k].name, at, true));
    }
    // The function itself: the symbol table's full name, else DWARF's.
    let at = if n > 1 {
        chain[1].call.clone()
    } else {
        own_line.clone()
    };
    let raw = symbol.or_else(|| chain.first().and_then(|f| f.name));
    if raw.is_none() && frames.is_empty() && at.is_none() {
        return unresolved_location(ret);
    }
    frames.push(frame(names, raw, at, false));
    Location {
        address: ret,
        entry: start
            .filter(|s| *s < ret)
            .or_else(|| crate::sys::enclosing_function(ret)),
        frames: frames.into_boxed_slice(),
    }
}

/// Whether a name has a path outside generic arguments (`a::b`,
/// `<T as a::Tr>::f`), rather than the bare name (`insert`,
/// `call_once<…>`, `{closure#0}`) that line-tables-only debug info gives.
pub(super) fn has_path(name: &str) -> bool {
    let mut depth = 0i32;
    let mut prev = '\0';
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ':' if prev == ':' && depth == 0 => return true,
            _ => {}
        }
        prev = c;
    }
    false
}

/// Whether a frame at the leaf end of a stack belongs to allocscope's
/// allocation path, to the stack capture, or to the allocator shims between
/// the caller and the global allocator, by its demangled name alone (no
/// debug info and no file names needed, whatever the source layout):
/// functions under `allocscope::alloc::`, `allocscope::counters::` and
/// `allocscope::sampling::`, `AllocScope`'s `GlobalAlloc` methods
/// (`<allocscope::alloc::AllocScope<A> as core::alloc::global::GlobalAlloc>::alloc`),
/// the `backtrace` crate, and the shims (`__rust_alloc`, `__rg_alloc`,
/// `__rdl_alloc`, …). std's own allocation code (`alloc::…`: `RawVec`,
/// `Box::new`, …) is not: it is trimmed separately, and only in a
/// [`Frames::Trimmed`](super::Frames::Trimmed) profile (`super::machinery`),
/// so that raw profiles still show how the user's code allocated. Nor is the
/// rest of allocscope: allocations made by its exporter or profile code are
/// ordinary allocation sites. (The few allocating functions of those three
/// modules that are not on the allocation path, such as
/// `allocscope::sampling::raw_buckets` for a profile, have their
/// allocations attributed to their caller.)
pub(crate) fn is_allocator_frame(name: &str) -> bool {
    // Since Rust 1.89 the shims are mangled into a `__rustc` namespace.
    let n = name.strip_prefix("__rustc::").unwrap_or(name);
    // a trait method's path starts at its type: `<allocscope::alloc::…`
    let path = n.strip_prefix('<').unwrap_or(n);
    const ALLOCATION_PATH: [&str; 6] = [
        "allocscope::alloc::",
        "allocscope::AllocScope<",
        "allocscope::counters::",
        "allocscope::sampling::",
        "backtrace::",
        "std::alloc::__default_lib_allocator::",
    ];
    matches!(
        n,
        "__rust_alloc" | "__rust_alloc_zeroed" | "__rust_realloc" | "__rust_dealloc"
    ) || n.starts_with("__rg_")
        || n.starts_with("__rdl_")
        || ALLOCATION_PATH.iter().any(|p| path.starts_with(p))
}

/// Whether a function's name alone says it is std's (no file needed, as
/// in profiles without lines): a path under `std::`, `core::` or `alloc::`
/// (`alloc::raw_vec::RawVec<T>::grow`, `<alloc::alloc::Global>::alloc_impl`),
/// a method of one of their types (`<alloc::vec::Vec<T> as
/// core::clone::Clone>::clone`), or one of their traits' methods on a type
/// without a path of its own (a generic parameter, a primitive, a slice or
/// a reference to one: `<T as alloc::slice::hack::ConvertVec>::to_vec`,
/// `<&T as core::fmt::Display>::fmt`). A std trait's method on the user's
/// type (`<app::Key as core::clone::Clone>::clone`) is the user's code.
fn is_std_name(name: &str) -> bool {
    const STD: [&str; 3] = ["std::", "core::", "alloc::"];
    let Some(inner) = name.strip_prefix('<') else {
        return STD.iter().any(|p| name.starts_with(p));
    };
    if STD.iter().any(|p| inner.starts_with(p)) {
        return true;
    }
    // `<Type as Trait>::method`: the ` as ` at the outermost level
    let mut depth = 0i32;
    for (i, c) in inner.char_indices() {
        match c {
            '<' | '[' | '(' => depth += 1,
            '>' | ']' | ')' if depth == 0 => return false,
            '>' | ']' | ')' => depth -= 1,
            ' ' if depth == 0 && inner[i..].starts_with(" as ") => {
                let ty = &inner[..i];
                let tr = &inner[i + 4..];
                return !ty.contains("::") && STD.iter().any(|p| tr.starts_with(p));
            }
            _ => {}
        }
    }
    false
}

/// How a frame at the leaf end of a stack is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// allocscope, the stack capture, the allocator shims: dropped.
    Allocator,
    /// std/core/alloc: kept, unless allocator frames surround it.
    Std,
    /// Anything else (the user's code): the stack starts here at the latest.
    Other,
}

/// The class of `f`, given the class of the frame it is inlined into
/// (`caller`: the next frame of its location, outwards).
///
/// Debug info built with `debug = "line-tables-only"` names inlined
/// functions without their path (`{closure#0}`, `with<Cell<u64>>`,
/// `alloc_impl<System>`), and only the outermost frame of a location gets
/// its full name from the symbol table (`super::symtab`). Such a
/// frame is part of the function it was inlined into: it takes that
/// function's class, unless its file is std's own.
fn classify(f: &Frame, caller: Option<Class>) -> Class {
    if is_allocator_frame(&f.name) {
        return Class::Allocator;
    }
    let file = f.file.as_deref().unwrap_or("");
    if is_std_name(&f.name)
        || [
            "/library/std/src/",
            "/library/core/src/",
            "/library/alloc/src/",
        ]
        .iter()
        .any(|p| file.contains(p))
    {
        return Class::Std;
    }
    match caller {
        Some(c) if f.inlined && !has_path(&f.name) => c,
        _ => Class::Other,
    }
}

/// The classes of a location's frames (innermost first, as they are),
/// worked out from the outermost frame inwards.
fn classify_location(loc: &Location) -> Vec<Class> {
    let mut classes = vec![Class::Other; loc.frames.len()];
    let mut caller = None;
    for (c, f) in classes.iter_mut().zip(loc.frames.iter()).rev() {
        *c = classify(f, caller);
        caller = Some(*c);
    }
    classes
}

/// Drops the allocator's frames from the leaf end (`locs` is leaf first):
/// every frame up to the last allocscope, capture or shim frame (see
/// [`is_allocator_frame`] and `classify`) that comes before the first frame
/// of other code. std frames between allocator
/// frames (a `LocalKey::with` inside the sampler) go with them; std frames
/// after the last one (`RawVec::grow`) stay. A location whose inner frames
/// are dropped keeps its outer ones.
pub(crate) fn trim_leaf(locs: &[Arc<Location>]) -> Vec<Arc<Location>> {
    let mut cut = 0usize;
    let mut seen = 0usize;
    'scan: for loc in locs {
        for class in classify_location(loc) {
            seen += 1;
            match class {
                Class::Allocator => cut = seen,
                Class::Std => {}
                Class::Other => break 'scan,
            }
        }
    }
    drop_leaf_frames(locs.iter().cloned(), cut)
}

/// `locs` (leaf first) without their first `cut` frames, counted across
/// locations: a location whose inner frames are dropped keeps its outer
/// ones (inlined frames of one address).
pub(super) fn drop_leaf_frames(
    locs: impl ExactSizeIterator<Item = Arc<Location>>,
    cut: usize,
) -> Vec<Arc<Location>> {
    let mut out = Vec::with_capacity(locs.len());
    let mut dropped = 0usize;
    for loc in locs {
        let n = loc.frames.len();
        if dropped >= cut {
            out.push(loc);
        } else if dropped + n <= cut {
            dropped += n;
        } else {
            let skip = cut - dropped;
            dropped = cut;
            out.push(Arc::new(Location {
                address: loc.address,
                entry: loc.entry,
                frames: loc.frames[skip..].into(),
            }));
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A location of synthetic frames, leaf first (also for the
    /// machinery tests).
    pub(in crate::profile) fn loc(address: usize, names: &[&str]) -> Arc<Location> {
        let n = names.len();
        Arc::new(Location {
            address,
            entry: None,
            frames: names
                .iter()
                .enumerate()
                .map(|(i, s)| Frame::synthetic(s, address, i + 1 < n))
                .collect(),
        })
    }

    fn names(locs: &[Arc<Location>]) -> Vec<String> {
        locs.iter()
            .flat_map(|l| l.frames.iter().map(|f| f.name.to_string()))
            .collect()
    }

    fn frame(name: &str, file: Option<&str>, inlined: bool) -> Frame {
        Frame {
            name: name.into(),
            system_name: None,
            file: file.map(Into::into),
            line: None,
            address: 1,
            inlined,
        }
    }

    #[test]
    fn the_allocation_path_is_told_by_symbol_whatever_the_files() {
        // no debug info (no file), or any source layout: the name decides
        let own_file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/alloc.rs");
        let registry =
            "/home/u/.cargo/registry/src/index.crates.io-x/allocscope-0.3.1/src/counters.rs";
        for file in [
            None,
            Some(own_file),
            Some(registry),
            Some("/elsewhere/lib.rs"),
        ] {
            for n in [
                "allocscope::alloc::AllocScope<A>::alloc_slow",
                "allocscope::sampling::stack::capture",
                "allocscope::counters::local::attach",
                "<allocscope::alloc::AllocScope<A> as core::alloc::global::GlobalAlloc>::alloc",
            ] {
                assert_eq!(
                    classify(&frame(n, file, false), None),
                    Class::Allocator,
                    "{n} {file:?}"
                );
            }
            for n in [
                "allocscope_demo::main",
                "allocscope::server::metrics::Metrics::render",
                "allocscope_demo::counters::count",
                "allocscope::measure",
                "main",
            ] {
                assert_eq!(
                    classify(&frame(n, file, false), None),
                    Class::Other,
                    "{n} {file:?}"
                );
            }
        }
        // a short-named inlined frame is part of the function it is inlined
        // into, whatever its file says
        let short = frame("{closure#0}", Some(own_file), true);
        assert_eq!(classify(&short, Some(Class::Allocator)), Class::Allocator);
        assert_eq!(classify(&short, Some(Class::Other)), Class::Other);
        assert_eq!(classify(&short, None), Class::Other);
        let short = frame("alloc_impl<std::alloc::System>", None, true);
        assert_eq!(classify(&short, Some(Class::Allocator)), Class::Allocator);
        // but not a physical frame, nor one with a path
        assert_eq!(
            classify(&frame("start_thread", None, false), Some(Class::Allocator)),
            Class::Other
        );
        assert_eq!(
            classify(&frame("app::f", None, true), Some(Class::Allocator)),
            Class::Other
        );
        // std's files and names stay std's
        let std_local = "/rustc/abc/library/std/src/thread/local.rs";
        assert_eq!(
            classify(
                &frame("with<Cell<u64>>", Some(std_local), true),
                Some(Class::Allocator)
            ),
            Class::Std
        );
    }

    #[test]
    fn allocator_frames_are_recognised() {
        for n in [
            "allocscope::sampling::store::record",
            "allocscope::sampling::begin",
            "allocscope::counters::local::undo_small_alloc",
            "<allocscope::AllocScope<A> as core::alloc::global::GlobalAlloc>::alloc",
            "<allocscope::alloc::AllocScope<std::alloc::System> as core::alloc::global::GlobalAlloc>::dealloc",
            "__rust_alloc",
            "__rustc::__rust_alloc",
            "__rust_alloc_zeroed",
            "__rust_realloc",
            "__rust_dealloc",
            "__rg_alloc",
            "__rustc::__rg_alloc",
            "__rdl_alloc",
            "std::alloc::__default_lib_allocator::__rdl_alloc",
            "backtrace::backtrace::trace_unsynchronized",
            "<backtrace::backtrace::Frame>::ip",
        ] {
            assert!(is_allocator_frame(n), "{n}");
        }
        for n in [
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "alloc::alloc::alloc",
            "myapp::cache::Cache::insert",
            "allocscope_demo::main",
            "allocscope::server::metrics::Metrics::render",
            "allocscope::measure",
            "allocscope::sampler::record",
            "allocscope_sampling::record",
            "<allocscope::profile::HeapProfile>::capture",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "__rust_begin_short_backtrace",
            "0x1234",
        ] {
            assert!(!is_allocator_frame(n), "{n}");
        }
    }

    #[test]
    fn trim_drops_only_the_leading_allocator_run() {
        let locs = vec![
            loc(1, &["backtrace::trace"]),
            loc(
                2,
                &[
                    "allocscope::sampling::store::record",
                    "<allocscope::AllocScope<A> as GlobalAlloc>::alloc",
                ],
            ),
            loc(3, &["__rustc::__rust_alloc"]),
            // inlined allocator frames inside a user location: keep the user part
            loc(
                4,
                &["alloc::alloc::alloc", "alloc::raw_vec::RawVec<T>::grow"],
            ),
            loc(5, &["user::f"]),
            // allocscope frames further up (a callback) are kept
            loc(6, &["allocscope::measure"]),
            loc(7, &["main"]),
        ];
        let t = trim_leaf(&locs);
        assert_eq!(
            names(&t),
            [
                "alloc::alloc::alloc",
                "alloc::raw_vec::RawVec<T>::grow",
                "user::f",
                "allocscope::measure",
                "main"
            ]
        );
        let partial = vec![
            loc(
                9,
                &[
                    "allocscope::sampling::store::record",
                    "__rust_alloc",
                    "user::g",
                    "user::h",
                ],
            ),
            loc(10, &["main"]),
        ];
        let t = trim_leaf(&partial);
        assert_eq!(names(&t), ["user::g", "user::h", "main"]);
        assert_eq!(t[0].address, 9);
        assert!(t[0].frames[0].inlined && !t[0].frames[1].inlined);
        assert!(trim_leaf(&[loc(1, &["__rust_alloc"])]).is_empty());
        assert!(trim_leaf(&[]).is_empty());
    }

    fn framed(address: usize, frames: &[(&str, &str)]) -> Arc<Location> {
        let n = frames.len();
        Arc::new(Location {
            address,
            entry: None,
            frames: frames
                .iter()
                .enumerate()
                .map(|(i, (name, file))| Frame {
                    name: (*name).into(),
                    system_name: None,
                    file: Some((*file).into()),
                    line: Some(1),
                    address,
                    inlined: i + 1 < n,
                })
                .collect(),
        })
    }

    #[test]
    fn trim_gives_short_names_their_callers_class_and_skips_std_between_allocator_frames() {
        // Files do not matter: allocscope's frames are told by the full
        // names of the functions (the outermost frame of each location,
        // from the symbol table), and short-named inlined frames belong to
        // the function they are inlined into.
        let std_local = "/rustc/abc/library/std/src/thread/local.rs";
        let bt =
            "/home/u/.cargo/registry/src/index.crates.io-1/backtrace-0.3.77/src/backtrace/mod.rs";
        for own in [
            "/anywhere/src/x.rs",
            "",
            concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs"),
        ] {
            let locs = vec![
                framed(
                    1,
                    &[
                        ("trace_unsynchronized<F>", bt),
                        ("allocscope::sampling::stack::capture", own),
                    ],
                ),
                // short-named sampler closure inside std's LocalKey::with
                framed(
                    2,
                    &[
                        ("{closure#0}", own),
                        ("with<Cell<u64>>", std_local),
                        ("allocscope::sampling::begin", own),
                    ],
                ),
                // the shim, with `AllocScope`'s methods inlined (short names)
                framed(
                    3,
                    &[
                        ("alloc_sampled<std::alloc::System>", own),
                        ("alloc", own),
                        ("__rustc::__rust_alloc", ""),
                    ],
                ),
                framed(
                    4,
                    &[(
                        "alloc::raw_vec::RawVec<T>::grow",
                        "/rustc/abc/library/alloc/src/raw_vec.rs",
                    )],
                ),
                framed(
                    5,
                    &[
                        ("insert", "/app/src/cache.rs"),
                        ("app::Cache::put", "/app/src/cache.rs"),
                    ],
                ),
                framed(6, &[("main", "/app/src/main.rs")]),
            ];
            assert_eq!(
                names(&trim_leaf(&locs)),
                [
                    "alloc::raw_vec::RawVec<T>::grow",
                    "insert",
                    "app::Cache::put",
                    "main"
                ],
                "{own}"
            );
        }
        // The shim and `AllocScope`'s methods inlined into the user's code
        // (LTO): the short names inside the shim go with it.
        let lto = vec![
            framed(1, &[("allocscope::sampling::begin", "")]),
            framed(
                2,
                &[
                    ("alloc_impl<std::alloc::System>", ""),
                    ("__rust_alloc", ""),
                    ("grow_one<u8>", "/rustc/abc/library/alloc/src/raw_vec.rs"),
                    ("app::push", "/app/src/lib.rs"),
                ],
            ),
            framed(3, &[("main", "/app/src/main.rs")]),
        ];
        assert_eq!(
            names(&trim_leaf(&lto)),
            ["grow_one<u8>", "app::push", "main"]
        );
        // A user closure run by an allocscope function: kept, with its caller.
        let measured = vec![
            framed(1, &[("__rust_alloc", "")]),
            framed(
                2,
                &[
                    (
                        "alloc::alloc::alloc",
                        "/rustc/abc/library/alloc/src/alloc.rs",
                    ),
                    ("{closure#0}", "/app/src/main.rs"),
                    (
                        "measure<F>",
                        concat!(env!("CARGO_MANIFEST_DIR"), "/src/stats.rs"),
                    ),
                ],
            ),
            framed(3, &[("main", "/app/src/main.rs")]),
        ];
        assert_eq!(
            names(&trim_leaf(&measured)),
            ["alloc::alloc::alloc", "{closure#0}", "measure<F>", "main"]
        );
    }

    #[test]
    fn trim_by_names_alone_drops_a_capture_inside_the_sampler() {
        // Names without files (Symbols::Names): std's generic trait code
        // between the sampler's frames goes with them.
        let locs = vec![
            loc(1, &["allocscope::sampling::stack::capture"]),
            loc(
                2,
                &["<allocscope::AllocScope<A> as core::alloc::global::GlobalAlloc>::alloc"],
            ),
            loc(3, &["__rustc::__rust_alloc"]),
            loc(
                4,
                &[
                    "alloc::alloc::alloc",
                    "<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec",
                    "alloc::slice::<impl [T]>::to_vec",
                    "allocscope::sampling::store::raw_buckets",
                    "allocscope::sampling::raw_buckets",
                ],
            ),
            loc(
                5,
                &[
                    "allocscope::profile::HeapProfile::capture_with",
                    "app::main",
                ],
            ),
        ];
        let locs: Vec<Arc<Location>> = locs
            .into_iter()
            .map(|l| {
                let mut frames = l.frames.to_vec();
                for f in &mut frames {
                    f.file = None;
                    f.line = None;
                }
                Arc::new(Location {
                    address: l.address,
                    entry: None,
                    frames: frames.into(),
                })
            })
            .collect();
        assert_eq!(
            names(&trim_leaf(&locs)),
            [
                "allocscope::profile::HeapProfile::capture_with",
                "app::main"
            ]
        );
    }

    #[test]
    fn std_is_told_by_name_alone() {
        for n in [
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "std::thread::local::LocalKey<T>::with",
            "<alloc::alloc::Global>::alloc_impl",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec",
            "<&T as core::fmt::Display>::fmt",
            "<[u8] as alloc::borrow::ToOwned>::to_owned",
            "<F as core::ops::function::FnOnce<()>>::call_once",
            "<core::panic::unwind_safe::AssertUnwindSafe<F> as core::ops::function::FnOnce<()>>::call_once",
        ] {
            assert!(is_std_name(n), "{n}");
            assert_eq!(classify(&frame(n, None, false), None), Class::Std, "{n}");
        }
        for n in [
            "<app::Key as core::clone::Clone>::clone",
            "<alloc_tool::X as app::Tr>::f",
            "<T as app::Tr>::f",
            "app::f",
            "{closure#0}",
            "<unbalanced",
            "",
        ] {
            assert!(!is_std_name(n), "{n}");
        }
    }

    #[test]
    fn paths_are_told_from_short_names() {
        assert!(has_path("myapp::cache::Cache::insert"));
        assert!(has_path(
            "<std::sys::thread::unix::Thread>::new::thread_start"
        ));
        assert!(has_path(
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone"
        ));
        assert!(!has_path(
            "call_once<profile_formats::x::{closure_env#0}, ()>"
        ));
        assert!(!has_path("{closure#0}"));
        assert!(!has_path("insert"));
        assert!(!has_path("start_thread"));
    }

    #[test]
    fn bogus_addresses_resolve_to_hex_without_panicking() {
        for symbols in [Symbols::Names, Symbols::Lines] {
            let m = resolve_many(
                [0usize, 1, 2, usize::MAX, 0xdead_beef, 0xdead_beef],
                symbols,
            );
            assert_eq!(m.len(), 5);
            let l = &m[&0xdead_beef];
            assert_eq!(l.frames.len(), 1);
            assert_eq!(l.frames[0].name(), "0xdeadbeef");
            assert!(l.frames[0].is_unresolved());
            assert_eq!(m[&0].frames[0].name(), "0x0");
        }
        let m = resolve_many(
            [0usize, 1, 2, usize::MAX, 0xdead_beef, 0xdead_beef],
            Symbols::Lines,
        );
        assert_eq!(m.len(), 5);
        let l = &m[&0xdead_beef];
        assert_eq!(l.frames.len(), 1);
        assert_eq!(l.frames[0].name(), "0xdeadbeef");
        assert!(l.frames[0].is_unresolved());
        assert_eq!(m[&0].frames[0].name(), "0x0");
        assert!(symbol_cache_len() <= SYMBOL_CACHE_CAPACITY);
    }

    /// The return address of a call made inside this function.
    #[inline(never)]
    fn symbolize_probe() -> usize {
        let me = symbolize_probe as *const () as usize;
        let mut ip = 0;
        let mut seen = false;
        backtrace::trace(|f| {
            if f.symbol_address() as usize == me {
                seen = true;
                ip = f.ip() as usize;
                return false;
            }
            true
        });
        std::hint::black_box(if seen { ip } else { 0 })
    }

    #[test]
    fn real_addresses_resolve_to_demangled_names_and_are_cached() {
        let ip = symbolize_probe();
        assert_ne!(ip, 0, "could not find the probe's own frame");
        let m = resolve_many([ip], Symbols::Lines);
        let l = &m[&ip];
        let last = l.frames.last().expect("frames");
        // Full path even with line-tables-only debug info (symbol table).
        assert_eq!(
            last.name(),
            "allocscope::profile::symbolize::tests::symbolize_probe",
            "{l:?}"
        );
        assert!(
            last.file().is_some_and(|f| f.ends_with("symbolize.rs")),
            "{l:?}"
        );
        assert!(last.line().is_some_and(|n| n > 0), "{l:?}");
        assert!(l
            .entry
            .is_some_and(|e| e == symbolize_probe as *const () as usize));
        assert!(symbol_cache_len() >= 1);
        let again = resolve_many([ip], Symbols::Lines);
        assert!(
            Arc::ptr_eq(&again[&ip], l),
            "second lookup not served from the cache"
        );
        // Names alone: the same names, no files or lines, cached apart.
        let names = resolve_many([ip], Symbols::Names);
        let n = &names[&ip];
        assert!(!Arc::ptr_eq(n, l));
        let got: Vec<&str> = n.frames.iter().map(Frame::name).collect();
        let want: Vec<&str> = l.frames.iter().map(Frame::name).collect();
        assert_eq!(got, want);
        assert!(n
            .frames
            .iter()
            .all(|f| f.file().is_none() && f.line().is_none()));
        assert_eq!(n.entry, l.entry);
        assert!(Arc::ptr_eq(&resolve_many([ip], Symbols::Names)[&ip], n));
    }
}
