//! Frames users care about: the allocation machinery of Rust's standard
//! library trimmed from the leaf end of every stack.
//!
//! Owns [`Frames`] (trimmed, the default, or raw) and the one declared list
//! of what counts as allocation machinery, [`ALLOCATION_MACHINERY`].
//!
//! # Why
//! In a Rust program almost every allocation goes through the same few std
//! functions: `vec![x; n]` through `alloc::vec::from_elem`, `RawVecInner`
//! and `alloc::alloc::alloc`; a `push` through `RawVec::grow_one`,
//! `finish_grow` and `alloc::alloc::realloc`. Left in, those frames take the
//! leaf of nearly every stack: on the demo, `go tool pprof -top` on
//! `/debug/pprof/allocs` put `alloc::alloc::realloc` (57%),
//! `alloc::alloc::alloc` (29%) and `RawVecInner::try_allocate_in` (14%) at
//! the top of `flat`, and the user's functions nowhere in it (measured:
//! docs/profiles.md, "Frames users care about"). Go's runtime shows a Go
//! user their own function as the allocating frame (`runtime.mallocgc` and
//! `growslice` are below the profile); trimming does the same for Rust.
//!
//! # What is trimmed
//! Starting at the leaf (after allocscope's own frames and the allocator
//! shims, which are always dropped), every frame that is allocation
//! machinery is dropped, up to the first frame that is not: the caller that
//! asked for the memory. Only that leading run is touched; std frames
//! further out (a `std::thread` entry point, an iterator adaptor calling the
//! user's closure) stay. A stack made of machinery alone is left whole
//! rather than emptied. Buckets whose stacks become equal merge (their
//! counts add up) in every export.
//!
//! A frame is machinery when its *owner* starts with a prefix of
//! [`ALLOCATION_MACHINERY`]: the owner of `a::b::f` is its path; of
//! `<Type as Trait>::f` or `<Type>::f` it is `Type` (after `&`, `&mut`,
//! `*const`, `*mut`, `dyn`), unless `Type` has no path of its own (a
//! generic parameter or a primitive, as in `<T as
//! alloc::string::ToString>::to_string` or `<u8 as
//! alloc::vec::spec_from_elem::SpecFromElem>::from_elem`), in which case it
//! is the trait (and an inherent method of a primitive, `<[T]>::to_vec`,
//! `<str>::replace`, is std's, which only std can define). So a std trait's
//! method on the user's type (`<app::Key as core::clone::Clone>::clone`)
//! is the user's code and stops the trimming. Inlined frames named without
//! a path (debug info built with `debug = "line-tables-only"`) are
//! machinery when their file is std's (`/library/alloc/src/`,
//! `/library/core/src/`, known with `lines=1`), else they take the class of
//! the frame they are inlined into.
//!
//! # Raw frames
//! [`Frames::Raw`] keeps every frame (only allocscope's own frames and the
//! allocator shims are dropped, as always): the exporter's `raw=1`, or
//! [`HeapProfile::capture_frames`](super::HeapProfile::capture_frames).

use std::sync::Arc;

use super::symbolize::{has_path, Location};
use super::Frame;

/// Which frames a profile keeps at the leaf end of its stacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Frames {
    /// The allocation machinery of std (see [`ALLOCATION_MACHINERY`]) is
    /// trimmed from the leaf end: each stack's leaf is the function that
    /// asked for the memory. The default.
    #[default]
    Trimmed,
    /// Every frame std's allocation path went through is kept
    /// (`alloc::alloc::realloc`, `RawVecInner::finish_grow`, …); only
    /// allocscope's own frames and the allocator shims are dropped. The
    /// exporter's `raw=1`.
    Raw,
}

/// What counts as allocation machinery, and why: a frame whose owner (see
/// the module docs) starts with one of these prefixes is trimmed from the
/// leaf end of a stack under [`Frames::Trimmed`]. The one place the rule
/// is declared.
///
/// Chosen from the demo's real stacks (docs/profiles.md): every frame
/// between the user's call and the allocator was under one of these.
pub const ALLOCATION_MACHINERY: &[(&str, &str)] = &[
    (
        "alloc::",
        "the alloc crate, which exists to obtain memory for values: the global \
         allocation functions (alloc::alloc::alloc, realloc, alloc_zeroed, exchange_malloc, \
         Global's Allocator impl: alloc_impl, grow_impl), RawVec and RawVecInner (the buffer \
         of Vec, String and VecDeque: with_capacity_in, try_allocate_in, grow_one, \
         grow_amortized, finish_grow, reserve), Vec and String growth (with_capacity, \
         reserve, push, push_str, extend_from_slice, spec_extend, from_iter, from_elem \
         behind vec![x; n]), Box::new, Rc and Arc allocation, slice and str to_vec, \
         to_owned and join, fmt::format behind format!; on the leaf run each of these only \
         obtains memory the caller asked for",
    ),
    (
        "core::",
        "core never allocates: on the leaf run its frames are the glue between the caller \
         and alloc (Iterator::collect, fold and for_each driving Vec::from_iter, fmt::write \
         and Formatter driving String's fmt::Write, Display of primitives, Option and \
         Result combinators, closure shims)",
    ),
    (
        "std::collections::",
        "std's HashMap and HashSet: insert, reserve and with_capacity grow the hash table \
         behind them",
    ),
    (
        "hashbrown::",
        "the hash table behind std's HashMap (and the crate of that name): \
         RawTable::reserve_rehash, resize, fallible_with_capacity",
    ),
    (
        "std::alloc::",
        "std's re-exports of the allocation functions (std::alloc::alloc, realloc) and \
         the System allocator",
    ),
];

/// Files of std's allocation code, for inlined frames named without a path.
const MACHINERY_FILES: [&str; 2] = ["/library/alloc/src/", "/library/core/src/"];

/// Whether a path (a function's, or a type's or trait's) is under one of
/// [`ALLOCATION_MACHINERY`]'s prefixes.
fn machinery_path(path: &str) -> bool {
    ALLOCATION_MACHINERY
        .iter()
        .any(|(prefix, _)| path.starts_with(prefix))
}

/// Whether a demangled function name is allocation machinery by its owner
/// (see the module docs), with no file needed.
pub(crate) fn is_machinery_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('<') else {
        return machinery_path(name);
    };
    // `<Type as Trait>::f` or `<Type>::f`: find the end of `Type`.
    let mut depth = 0i32;
    let mut end = None;
    let mut trait_path = None;
    for (i, c) in inner.char_indices() {
        match c {
            '<' | '[' | '(' => depth += 1,
            '>' | ']' | ')' if depth == 0 => {
                end = Some(i);
                break;
            }
            '>' | ']' | ')' => depth -= 1,
            ' ' if depth == 0 && inner[i..].starts_with(" as ") => {
                end = Some(i);
                trait_path = Some(&inner[i + 4..]);
                break;
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return false;
    };
    let mut ty = inner[..end].trim();
    for p in ["&mut ", "&", "*const ", "*mut ", "dyn "] {
        ty = ty.strip_prefix(p).unwrap_or(ty).trim_start();
    }
    if has_path(ty) {
        return machinery_path(ty);
    }
    match trait_path {
        Some(tr) => machinery_path(tr),
        // an inherent method of a primitive (`<[T]>::to_vec`, `<str>::…`):
        // only std defines those, and on the leaf run they allocate
        None => !ty.is_empty(),
    }
}

/// Whether `f` is allocation machinery, given whether the frame it is
/// inlined into is (`caller`: the next frame of its location, outwards).
fn is_machinery(f: &Frame, caller: Option<bool>) -> bool {
    if f.is_unresolved() {
        return false;
    }
    if has_path(f.name()) || f.name().starts_with('<') {
        return is_machinery_name(f.name());
    }
    let file = f.file().unwrap_or("");
    if MACHINERY_FILES.iter().any(|p| file.contains(p)) {
        return true;
    }
    match caller {
        Some(c) if f.is_inlined() => c,
        _ => false,
    }
}

/// Whether each frame of `loc` (innermost first, as they are) is
/// machinery, worked out from the outermost frame inwards.
fn machinery_of(loc: &Location) -> Vec<bool> {
    let mut out = vec![false; loc.frames.len()];
    let mut caller = None;
    for (m, f) in out.iter_mut().zip(loc.frames.iter()).rev() {
        *m = is_machinery(f, caller);
        caller = Some(*m);
    }
    out
}

/// Trims the leading run of allocation machinery from `locs` (leaf first,
/// allocscope's frames already dropped) under [`Frames::Trimmed`]; returns
/// `locs` as they are under [`Frames::Raw`], or when every frame is
/// machinery. A location whose inner frames are dropped keeps its outer
/// ones.
pub(crate) fn trim(locs: Vec<Arc<Location>>, frames: Frames) -> Vec<Arc<Location>> {
    if frames == Frames::Raw {
        return locs;
    }
    let mut cut = 0usize;
    let mut whole = true;
    'scan: for loc in &locs {
        for m in machinery_of(loc) {
            if !m {
                whole = false;
                break 'scan;
            }
            cut += 1;
        }
    }
    if cut == 0 || whole {
        return locs;
    }
    super::symbolize::drop_leaf_frames(locs.into_iter(), cut)
}

#[cfg(test)]
mod tests {
    use super::super::symbolize::tests::loc;
    use super::*;

    fn names(locs: &[Arc<Location>]) -> Vec<String> {
        locs.iter()
            .flat_map(|l| l.frames.iter().map(|f| f.name().to_string()))
            .collect()
    }

    #[test]
    fn the_demos_machinery_is_recognised() {
        // Every leaf-run frame of the demo's allocs profile (docs/profiles.md).
        for n in [
            "alloc::alloc::alloc",
            "alloc::alloc::realloc",
            "alloc::alloc::alloc_zeroed",
            "<alloc::alloc::Global>::alloc_impl_runtime",
            "<alloc::alloc::Global as core::alloc::Allocator>::grow",
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<alloc::raw_vec::RawVecInner>::finish_grow",
            "<alloc::raw_vec::RawVecInner<_>>::reserve::do_reserve_and_handle::<alloc::alloc::Global>",
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "alloc::vec::Vec<T,A>::push",
            "<alloc::vec::Vec<u8>>::with_capacity",
            "alloc::vec::from_elem",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<alloc::vec::Vec<T> as alloc::vec::spec_from_iter::SpecFromIter<T,I>>::from_iter",
            "<alloc::string::String>::push_str",
            "<alloc::string::String as core::fmt::Write>::write_str",
            "<&mut alloc::string::String as core::fmt::Write::write_fmt::SpecWriteFmt>::spec_write_fmt",
            "<T as alloc::string::ToString>::to_string",
            "<str as alloc::borrow::ToOwned>::to_owned",
            "<I as alloc::sync::ToArcSlice<T>>::to_arc_slice",
            "alloc::sync::Arc<T>::allocate_for_layout",
            "alloc::boxed::Box<T>::new",
            "<alloc::boxed::Box<T>>::new",
            "alloc::slice::<impl [T]>::to_vec",
            "<[T]>::to_vec_in::<alloc::alloc::Global>",
            "alloc::fmt::format::format_inner",
            "core::fmt::write",
            "<core::fmt::Formatter>::pad_integral",
            "<u8 as core::fmt::Display>::fmt",
            "<core::iter::adapters::map::Map<I,F> as core::iter::traits::iterator::Iterator>::fold",
            "core::iter::traits::iterator::Iterator::collect",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
            "<hashbrown::raw::RawTableInner>::fallible_with_capacity",
            "std::alloc::alloc",
        ] {
            assert!(is_machinery_name(n), "{n}");
        }
        for n in [
            "allocscope_demo::leak_a_little",
            "allocscope_demo::Cache::fill",
            "<allocscope_demo::Cache>::fill",
            "myapp::handler::{{closure}}",
            "<myapp::Key as core::clone::Clone>::clone",
            "<&myapp::Key as core::fmt::Display>::fmt",
            "<myapp::Wrapper<alloc::vec::Vec<u8>> as core::default::Default>::default",
            "<T as myapp::Encode>::encode",
            "std::thread::Builder::spawn_unchecked_",
            "std::fs::read_to_string",
            "std::io::default_read_to_end",
            "tokio::runtime::blocking::pool::Spawner::spawn_thread",
            "main",
            "0x1234",
            "<>::x",
            "<unterminated",
        ] {
            assert!(!is_machinery_name(n), "{n}");
        }
    }

    #[test]
    fn only_the_leading_run_is_trimmed_and_locations_split() {
        let locs = vec![
            loc(
                1,
                &[
                    "alloc::alloc::realloc",
                    "<alloc::raw_vec::RawVecInner>::finish_grow",
                ],
            ),
            loc(
                2,
                &[
                    "alloc::raw_vec::RawVec<T,A>::grow_one",
                    "alloc::vec::Vec<T,A>::push",
                    "app::fill",
                    "core::iter::traits::iterator::Iterator::for_each",
                ],
            ),
            loc(3, &["alloc::vec::Vec<T>::extend", "app::run"]),
            loc(4, &["main"]),
        ];
        let t = trim(locs.clone(), Frames::Trimmed);
        assert_eq!(
            names(&t),
            [
                "app::fill",
                "core::iter::traits::iterator::Iterator::for_each",
                "alloc::vec::Vec<T>::extend",
                "app::run",
                "main"
            ]
        );
        assert_eq!(t[0].address, 2);
        assert!(t[0].frames[0].is_inlined());
        // further-out locations are shared, not copied
        assert!(Arc::ptr_eq(&t[1], &locs[2]));
        assert_eq!(names(&trim(locs.clone(), Frames::Raw)), names(&locs));
        // all machinery: kept whole rather than emptied
        let all = vec![
            loc(1, &["alloc::alloc::alloc"]),
            loc(2, &["core::ops::function::FnOnce::call_once"]),
        ];
        assert_eq!(names(&trim(all.clone(), Frames::Trimmed)), names(&all));
        assert!(trim(Vec::new(), Frames::Trimmed).is_empty());
        // an unresolved frame stops the trimming
        let unresolved = vec![
            loc(1, &["alloc::alloc::alloc"]),
            loc(2, &["0x2"]),
            loc(3, &["main"]),
        ];
        assert_eq!(names(&trim(unresolved, Frames::Trimmed)), ["0x2", "main"]);
    }

    #[test]
    fn short_inlined_names_take_their_callers_class_or_stds_file() {
        let short = |name: &str, file: Option<&str>| {
            let mut f = Frame::synthetic(name, 1, true);
            f.set_file_for_tests(file);
            f
        };
        // `grow_one` inlined into a RawVec symbol: machinery
        let l = Location {
            address: 1,
            entry: None,
            frames: vec![
                short("finish_grow", None),
                Frame::synthetic("alloc::raw_vec::RawVec<T,A>::grow_one", 1, false),
            ]
            .into(),
        };
        assert_eq!(machinery_of(&l), [true, true]);
        // inlined into the user's function: the user's, unless std's file says otherwise
        let l = Location {
            address: 1,
            entry: None,
            frames: vec![
                short("realloc", Some("/rustc/abc/library/alloc/src/alloc.rs")),
                short("push", None),
                Frame::synthetic("app::f", 1, false),
            ]
            .into(),
        };
        assert_eq!(machinery_of(&l), [true, false, false]);
    }
}
