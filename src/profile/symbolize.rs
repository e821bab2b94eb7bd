//! Symbolisation: return addresses to demangled, inline-expanded frames.
//!
//! Owns the process-wide address cache and the rule that drops
//! allocscope's own frames (and the allocator shims) from the leaf end of a
//! stack. Runs only when a profile is captured or exported, on an ordinary
//! thread: it allocates, locks and reads debug info freely, and is never
//! reachable from the allocator.
//!
//! The cache is bounded ([`SYMBOL_CACHE_CAPACITY`] addresses): when an
//! insertion would exceed it, the cache is cleared first. Symbols already
//! handed to a profile stay alive in that profile (they are reference
//! counted), so clearing costs only re-resolution later, never correctness.

use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

/// Most return addresses the symbol cache keeps before it is cleared.
///
/// About 64k addresses: far more than the distinct call sites of a typical
/// heap profile, and a few tens of MiB at worst (frame names are shared
/// between the profiles that use them).
pub const SYMBOL_CACHE_CAPACITY: usize = 64 * 1024;

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

    /// Source file, when debug info has it.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Source line, when debug info has it.
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
    /// Start of the machine-code function containing the call, when the
    /// unwinder knows it (for `name+0x…` offsets in the text format).
    pub(crate) entry: Option<usize>,
    /// Never empty.
    pub(crate) frames: Box<[Frame]>,
}

static CACHE: Mutex<Option<HashMap<usize, Arc<Location>>>> = Mutex::new(None);

/// Return addresses currently held by the symbol cache (at most
/// [`SYMBOL_CACHE_CAPACITY`]).
pub fn symbol_cache_len() -> usize {
    CACHE.lock().as_ref().map_or(0, HashMap::len)
}

/// Empties the symbol cache (e.g. after loading or unloading shared
/// libraries, whose addresses may now mean something else).
pub fn clear_symbol_cache() {
    *CACHE.lock() = None;
}

/// Resolves every address in `addrs`, from the cache where possible. The
/// cache lock is never held while debug info is being read.
pub(crate) fn resolve_many(
    addrs: impl IntoIterator<Item = usize>,
) -> HashMap<usize, Arc<Location>> {
    let mut out: HashMap<usize, Arc<Location>> = HashMap::new();
    let mut missing = Vec::new();
    {
        let cache = CACHE.lock();
        for a in addrs {
            if out.contains_key(&a) {
                continue;
            }
            match cache.as_ref().and_then(|c| c.get(&a)) {
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
    let mut fresh: Vec<Location> = missing.into_iter().map(resolve_one).collect();
    // The unwinder's parsed debug info (tens of MiB for a large binary)
    // would otherwise stay on the heap for good after the first profile;
    // the addresses it resolved stay in this module's own cache, so only
    // new addresses pay the parse again.
    backtrace::clear_symbol_cache();
    name_from_symtab(&mut fresh);
    let resolved: Vec<(usize, Arc<Location>)> = fresh
        .into_iter()
        .map(|l| (l.address, Arc::new(l)))
        .collect();
    let mut cache = CACHE.lock();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() + resolved.len() > SYMBOL_CACHE_CAPACITY {
        log::debug!(
            "allocscope: symbol cache full ({} addresses), clearing it",
            map.len()
        );
        map.clear();
    }
    for (a, loc) in resolved {
        if map.len() < SYMBOL_CACHE_CAPACITY {
            map.insert(a, Arc::clone(&loc));
        }
        out.insert(a, loc);
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

/// Resolves one return address. `backtrace::resolve` itself looks up
/// `address - 1` (inside the call instruction), so the return address is
/// passed unchanged; its callback runs once per inlined frame, innermost
/// first.
fn resolve_one(address: usize) -> Location {
    let mut frames: Vec<Frame> = Vec::new();
    // (Miri, which runs the profile math's tests, has no debug info to read:
    // every address stays unresolved there.)
    if address > 1 && !cfg!(miri) {
        backtrace::resolve(address as *mut c_void, |sym| {
            let (name, system_name) = match sym.name() {
                Some(n) => {
                    let demangled = format!("{n:#}");
                    let raw = String::from_utf8_lossy(n.as_bytes());
                    let system = (raw != demangled && !raw.is_empty()).then(|| raw.into());
                    (demangled, system)
                }
                None => (String::new(), None),
            };
            let name = if name.trim().is_empty() {
                format!("{address:#x}")
            } else {
                name
            };
            frames.push(Frame {
                name: name.into(),
                system_name,
                file: sym.filename().map(|p| p.to_string_lossy().into()),
                line: sym.lineno(),
                address,
                inlined: true,
            });
        });
    }
    if frames.is_empty() {
        frames.push(Frame::unresolved(address));
    }
    if let Some(last) = frames.last_mut() {
        last.inlined = false;
    }
    Location {
        address,
        entry: crate::sys::enclosing_function(address),
        frames: frames.into_boxed_slice(),
    }
}

/// Whether a name has a path outside generic arguments (`a::b`,
/// `<T as a::Tr>::f`), rather than the bare name (`insert`,
/// `call_once<…>`, `{closure#0}`) that line-tables-only debug info gives.
fn has_path(name: &str) -> bool {
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

/// Debug info built with `debug = "line-tables-only"` names functions
/// without their path. The outermost (not inlined) frame of each address is
/// a real function with a symbol: take its full name from the symbol table.
/// Inlined frames have no symbol and keep the short name.
fn name_from_symtab(locs: &mut [Location]) {
    let short: Vec<usize> = locs
        .iter()
        .filter(|l| {
            l.frames
                .last()
                .is_some_and(|f| !f.is_unresolved() && !has_path(&f.name))
        })
        .map(|l| l.address)
        .collect();
    if short.is_empty() {
        return;
    }
    let names = super::symtab::function_names(&short);
    for l in locs.iter_mut() {
        let (Some(n), Some(f)) = (names.get(&l.address), l.frames.last_mut()) else {
            continue;
        };
        if has_path(&n.demangled) && *f.name != *n.demangled {
            f.name = n.demangled.as_str().into();
            f.system_name = Some(n.mangled.as_str().into());
        }
    }
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
/// `Box::new`, …) is not: it shows how the user's code allocated. Nor is the
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
/// its full name from the symbol table ([`name_from_symtab`]). Such a
/// frame is part of the function it was inlined into: it takes that
/// function's class, unless its file is std's own.
fn classify(f: &Frame, caller: Option<Class>) -> Class {
    if is_allocator_frame(&f.name) {
        return Class::Allocator;
    }
    let file = f.file.as_deref().unwrap_or("");
    let n = f.name.strip_prefix('<').unwrap_or(&f.name);
    if ["std::", "core::", "alloc::"]
        .iter()
        .any(|p| n.starts_with(p))
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
    let mut out = Vec::with_capacity(locs.len());
    let mut dropped = 0usize;
    for loc in locs {
        let n = loc.frames.len();
        if dropped >= cut {
            out.push(Arc::clone(loc));
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
mod tests {
    use super::*;

    fn loc(address: usize, names: &[&str]) -> Arc<Location> {
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
        let m = resolve_many([0usize, 1, 2, usize::MAX, 0xdead_beef, 0xdead_beef]);
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
        let m = resolve_many([ip]);
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
        assert!(l
            .entry
            .is_some_and(|e| e == symbolize_probe as *const () as usize));
        assert!(symbol_cache_len() >= 1);
        let again = resolve_many([ip]);
        assert!(
            Arc::ptr_eq(&again[&ip], l),
            "second lookup not served from the cache"
        );
    }
}
