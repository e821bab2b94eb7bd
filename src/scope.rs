//! Who allocates: allocation scopes.
//!
//! ```
//! use allocscope::scope::{InScope, Scope};
//!
//! static CHECKOUT: Scope = Scope::new("checkout");
//!
//! let cart = CHECKOUT.within(|| vec![0u8; 4096]);   // a closure
//! {
//!     let _g = CHECKOUT.enter();                   // until the guard drops
//!     let _more = vec![0u8; 64];
//! }
//! // a future: the scope follows it across polls and worker threads
//! let fut = async { vec![0u8; 16] }.in_scope(&CHECKOUT);
//! # drop((cart, fut));
//! let tenant = Scope::named(format!("tenant-{}", 42));   // a name made at run time
//! let _g = tenant.enter();
//! for s in allocscope::scope::stats() {
//!     let _ = (s.name, s.allocations, s.allocated_bytes, s.inuse_bytes, s.inuse_objects);
//! }
//! ```
//!
//! **Exact counts.** Every allocation is attributed to exactly one scope:
//! the innermost one entered on its thread, or the implicit `unscoped`.
//! The sums over all scopes of `allocations` and `allocated_bytes` equal
//! [`crate::stats`]'s, once the threads that allocated are joined (a
//! `realloc` counts as one allocation of its new size, as there).
//!
//! **What it costs.** The allocation fast path counts one more increment
//! in the thread's own storage; the bytes come from the sampling countdown
//! it already keeps. Frees cost nothing. Entering or leaving a scope books
//! the allocations since the last switch into the thread's own counter
//! block: no lock, no allocation, no cache line another thread writes.
//! Figures: docs/measurements.md, "Scopes".
//!
//! **In use.** `inuse_bytes` and `inuse_objects` are estimates from the
//! heap sampler (each sample records the scope it was taken in), un-biased
//! like the heap profile's; they are 0 with sampling off.
//!
//! **Bounded.** At most [`max_scopes`] names (default 64,
//! [`set_max_scopes`], configuration key `max_scopes`) besides the built-in
//! `unscoped`, `other` and `allocscope` (the exporter's own work). Names
//! past the bound count under `other`; [`info`] says how many were folded
//! there. A name is 1 to 64 bytes of printable text (no control
//! characters): [`Scope::new`] rejects another at compile time in a
//! `static` or `const`; [`Scope::named`] folds it into `other` and counts
//! it in [`Info::rejected_names`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll};

use crate::counters;

/// The most names [`set_max_scopes`] accepts.
pub const MAX_SCOPES_LIMIT: usize = counters::SCOPE_SLOTS - BUILT_IN;

/// The default bound on scope names.
pub const DEFAULT_MAX_SCOPES: usize = 64;

/// The longest scope name, in bytes.
pub const NAME_MAX: usize = 64;

/// Ids of the built-in scopes.
pub(crate) const UNSCOPED: u32 = 0;
pub(crate) const OTHER: u32 = 1;
pub(crate) const EXPORTER: u32 = 2;
const BUILT_IN: usize = 3;
const BUILT_IN_NAMES: [&str; BUILT_IN] = ["unscoped", "other", "allocscope"];

/// Not interned yet.
const UNSET: u32 = u32::MAX;

/// A named scope that allocations can be attributed to (see the [module
/// docs](self)). Usually a `static`: `static CHECKOUT: Scope =
/// Scope::new("checkout");`. Scopes with the same name are the same scope.
#[derive(Debug)]
pub struct Scope {
    name: &'static str,
    /// The interned id, or `UNSET` until first entered.
    id: AtomicU32,
}

/// The exporter's own work (rendering profiles, scrapes) runs in this
/// scope, named `allocscope`.
pub static ALLOCSCOPE: Scope = Scope::built_in(EXPORTER);

/// The scope names past the bound fold into (named `other`).
static OTHER_SCOPE: Scope = Scope::built_in(OTHER);
static UNSCOPED_SCOPE: Scope = Scope::built_in(UNSCOPED);

/// Whether `name` is a valid scope name (1 to [`NAME_MAX`] bytes, no ASCII
/// or C1 control characters).
pub const fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > NAME_MAX {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x20 || c == 0x7f {
            return false;
        }
        // C1 controls U+0080..U+009F are C2 80..C2 9F in UTF-8
        if c == 0xc2 && i + 1 < b.len() && b[i + 1] >= 0x80 && b[i + 1] <= 0x9f {
            return false;
        }
        i += 1;
    }
    true
}

impl Scope {
    /// A scope named `name`: 1 to 64 bytes of printable text.
    ///
    /// # Panics
    /// If `name` is not valid ([`is_valid_name`]). In a `static` or `const`,
    /// the usual place, that is a compile-time error, so a bad literal never
    /// reaches a running service. (For names made at run time use
    /// [`Scope::named`], which never panics.)
    ///
    /// ```compile_fail
    /// // an empty name does not compile
    /// static BAD: allocscope::scope::Scope = allocscope::scope::Scope::new("");
    /// ```
    /// ```compile_fail
    /// // nor does a control character
    /// static BAD: allocscope::scope::Scope = allocscope::scope::Scope::new("a\nb");
    /// ```
    pub const fn new(name: &'static str) -> Scope {
        assert!(
            is_valid_name(name),
            "a scope name is 1 to 64 bytes of printable text"
        );
        Scope {
            name,
            id: AtomicU32::new(UNSET),
        }
    }

    const fn built_in(id: u32) -> Scope {
        Scope {
            name: BUILT_IN_NAMES[id as usize],
            id: AtomicU32::new(id),
        }
    }

    /// The scope named `name`, made at run time and interned for the
    /// process: the same name gives the same `&'static Scope`. Never
    /// panics: a name that is not valid ([`is_valid_name`]) gives `other`
    /// (counted in [`Info::rejected_names`]), and so does a new name past
    /// [`max_scopes`] (counted in [`Info::folded_names`]). May take a lock
    /// (never on an allocation path); keep the returned scope rather than
    /// calling this per request where you can.
    pub fn named(name: impl AsRef<str>) -> &'static Scope {
        let name = name.as_ref();
        if !is_valid_name(name) {
            REJECTED.fetch_add(1, Relaxed);
            return &OTHER_SCOPE;
        }
        if let Some(b) = built_in_id(name) {
            return [&UNSCOPED_SCOPE, &OTHER_SCOPE, &ALLOCSCOPE][b as usize];
        }
        let mut reg = registry();
        if let Some(&id) = reg.by_name.get(name) {
            return reg.scope_of(id);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        match reg.add(leaked) {
            Some(id) => reg.scope_of(id),
            None => &OTHER_SCOPE,
        }
    }

    /// The scope's name (as given; a scope folded into `other` still has
    /// its own name here).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The scope's id, interning its name on first use.
    #[inline]
    fn id(&self) -> u32 {
        match self.id.load(Relaxed) {
            UNSET => self.intern(),
            id => id,
        }
    }

    #[cold]
    #[inline(never)]
    fn intern(&self) -> u32 {
        let id = match built_in_id(self.name) {
            Some(id) => id,
            None => {
                let mut reg = registry();
                match reg.by_name.get(self.name) {
                    Some(&id) => id,
                    None => reg.add(self.name).unwrap_or(OTHER),
                }
            }
        };
        self.id.store(id, Relaxed);
        id
    }

    /// Makes this the calling thread's scope until the guard drops (also
    /// when a panic unwinds through it); the previous scope is restored
    /// then. Guards are meant to drop in the reverse order of their
    /// creation, as they do in ordinary code.
    ///
    /// No lock, no allocation: the scope's id is one relaxed load. Only the
    /// first use of a `Scope` (`enter`, `within` or `in_scope`) interns its
    /// name, which takes the registry's lock once.
    #[inline]
    pub fn enter(&self) -> Entered {
        Entered {
            prev: counters::switch_scope(self.id()),
            _not_send: PhantomData,
        }
    }

    /// Runs `f` in this scope on the calling thread.
    #[inline]
    pub fn within<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.enter();
        f()
    }
}

/// The guard [`Scope::enter`] returns: restores the previous scope when it
/// drops. Not `Send`: the scope is the thread's.
#[derive(Debug)]
#[must_use = "the scope ends when the guard drops"]
pub struct Entered {
    prev: u32,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        counters::switch_scope(self.prev);
    }
}

/// Runs futures in a scope: `fut.in_scope(&CHECKOUT).await`. Every poll of
/// the future, on whatever thread polls it, runs in the scope (the scope
/// of the thread that polls is restored after each poll).
pub trait InScope: Future + Sized {
    /// This future, polled in `scope`.
    fn in_scope(self, scope: &Scope) -> Scoped<Self>;
}

impl<F: Future> InScope for F {
    fn in_scope(self, scope: &Scope) -> Scoped<F> {
        Scoped {
            inner: self,
            scope: scope.id(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled in a scope ([`InScope::in_scope`]).
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        scope: u32,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _g = Entered {
            prev: counters::switch_scope(*this.scope),
            _not_send: PhantomData,
        };
        this.inner.poll(cx)
    }
}

/// The name of the calling thread's current scope.
pub fn current() -> &'static str {
    name_of(counters::current_scope())
}

fn built_in_id(name: &str) -> Option<u32> {
    BUILT_IN_NAMES
        .iter()
        .position(|b| *b == name)
        .map(|i| i as u32)
}

/// Interned names by id, readable lock-free (published with `COUNT`).
struct NameSlot {
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
    /// The `&'static Scope` [`Scope::named`] hands out, made on first use.
    scope: AtomicPtr<Scope>,
}

static NAMES: [NameSlot; counters::SCOPE_SLOTS] = [const {
    NameSlot {
        ptr: AtomicPtr::new(std::ptr::null_mut()),
        len: AtomicUsize::new(0),
        scope: AtomicPtr::new(std::ptr::null_mut()),
    }
}; counters::SCOPE_SLOTS];

/// Ids in use (the built-in ones and the names interned).
static COUNT: AtomicUsize = AtomicUsize::new(BUILT_IN);
static MAX: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_SCOPES);
static FOLDED: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);

/// The most distinct folded names remembered (so a name folded again is
/// not counted twice); past it every fold counts.
const FOLDED_REMEMBERED: usize = 65_536;

#[derive(Default)]
struct Registry {
    by_name: HashMap<&'static str, u32>,
    folded: HashSet<String>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REG: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
    REG.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Interns `name` (not interned yet): its new id, or `None` past the
    /// bound (counted as folded).
    fn add(&mut self, name: &'static str) -> Option<u32> {
        let count = COUNT.load(Relaxed);
        if count - BUILT_IN >= MAX.load(Relaxed).min(MAX_SCOPES_LIMIT) {
            if self.folded.len() >= FOLDED_REMEMBERED || self.folded.insert(name.to_owned()) {
                FOLDED.fetch_add(1, Relaxed);
            }
            return None;
        }
        let slot = &NAMES[count];
        slot.ptr.store(name.as_ptr().cast_mut(), Relaxed);
        slot.len.store(name.len(), Relaxed);
        COUNT.store(count + 1, Release);
        self.by_name.insert(name, count as u32);
        Some(count as u32)
    }

    /// The `&'static Scope` of interned id `id`, made once.
    fn scope_of(&mut self, id: u32) -> &'static Scope {
        let slot = &NAMES[id as usize];
        let p = slot.scope.load(Acquire);
        if !p.is_null() {
            // SAFETY: set below from a leaked box, never freed.
            return unsafe { &*p };
        }
        let s: &'static Scope = Box::leak(Box::new(Scope {
            name: name_of(id),
            id: AtomicU32::new(id),
        }));
        slot.scope.store(std::ptr::from_ref(s).cast_mut(), Release);
        s
    }
}

/// The name of scope `id`.
pub(crate) fn name_of(id: u32) -> &'static str {
    if let Some(n) = BUILT_IN_NAMES.get(id as usize) {
        return n;
    }
    if id as usize >= COUNT.load(Acquire) {
        return "other";
    }
    let slot = &NAMES[id as usize];
    let (p, len) = (slot.ptr.load(Relaxed), slot.len.load(Relaxed));
    if p.is_null() {
        return "other";
    }
    // SAFETY: `p..p+len` is a `&'static str` interned before `COUNT`
    // covered `id` (Release/Acquire): a static literal or a leaked string.
    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(p, len)) }
}

/// Scope ids in use now.
pub(crate) fn count() -> usize {
    COUNT.load(Acquire)
}

/// Sets the bound on scope names (1 to [`MAX_SCOPES_LIMIT`]) and returns
/// the previous one. Names already interned stay; new names past the
/// bound fold into `other`.
pub fn set_max_scopes(n: usize) -> Result<usize, crate::Error> {
    if n == 0 || n > MAX_SCOPES_LIMIT {
        return Err(crate::Error::InvalidArgument {
            what: "max_scopes",
            value: n.to_string(),
            expected: "a number of scope names from 1 to 509",
        });
    }
    Ok(MAX.swap(n, Relaxed))
}

/// The bound on scope names (default [`DEFAULT_MAX_SCOPES`]).
pub fn max_scopes() -> usize {
    MAX.load(Relaxed)
}

/// The scope registry's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// Names interned (not counting `unscoped`, `other`, `allocscope`).
    pub scopes: usize,
    /// The bound on names ([`max_scopes`]).
    pub max_scopes: usize,
    /// Distinct valid names folded into `other` because the bound was
    /// reached (after 65,536 distinct ones, every further fold counts).
    pub folded_names: u64,
    /// Names [`Scope::named`] was given that are not valid
    /// ([`is_valid_name`]): each call counts.
    pub rejected_names: u64,
}

/// The scope registry's state: names in use, the bound, and how many names
/// were folded into `other`.
pub fn info() -> Info {
    Info {
        scopes: count() - BUILT_IN,
        max_scopes: max_scopes(),
        folded_names: FOLDED.load(Relaxed),
        rejected_names: REJECTED.load(Relaxed),
    }
}

/// One scope's counts (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ScopeStats {
    /// The scope's name (`unscoped`, `other`, `allocscope`, or one given).
    pub name: &'static str,
    /// Allocations made in it (exact; a `realloc` counts as one).
    pub allocations: u64,
    /// Bytes allocated in it (exact).
    pub allocated_bytes: u64,
    /// Estimated bytes allocated in it and not yet freed (from the heap
    /// sampler; 0 with sampling off).
    pub inuse_bytes: u64,
    /// Estimated objects allocated in it and not yet freed.
    pub inuse_objects: u64,
}

/// Every scope's counts: `unscoped`, `other`, `allocscope`, then the named
/// scopes in the order they were first used. Reads every thread's counter
/// block and the sampler's buckets; does not stop the allocating threads.
pub fn stats() -> Vec<ScopeStats> {
    let n = count();
    let mut exact = vec![(0u64, 0u64); n];
    counters::by_scope(&mut exact);
    let mut inuse = vec![(0f64, 0f64); n];
    crate::sampling::inuse_by_scope(&mut inuse);
    exact
        .iter()
        .zip(&inuse)
        .enumerate()
        .map(
            |(id, (&(allocations, allocated_bytes), &(objects, bytes)))| ScopeStats {
                name: name_of(id as u32),
                allocations,
                allocated_bytes,
                inuse_bytes: bytes.round() as u64,
                inuse_objects: objects.round() as u64,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(is_valid_name("checkout"));
        assert!(is_valid_name("tenant 42/ü"));
        assert!(is_valid_name(&"x".repeat(64)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"x".repeat(65)));
        assert!(!is_valid_name("a\nb"));
        assert!(!is_valid_name("a\u{7f}"));
        assert!(!is_valid_name("a\u{85}"));
    }

    #[test]
    fn a_bad_run_time_name_is_other_and_counted() {
        let before = info().rejected_names;
        assert_eq!(Scope::named("").name(), "other");
        assert_eq!(Scope::named("bad\tname").name(), "other");
        assert_eq!(info().rejected_names, before + 2);
    }

    #[test]
    fn the_same_name_is_the_same_scope() {
        let a = Scope::named("unit-same");
        let b = Scope::named(String::from("unit-same"));
        assert!(std::ptr::eq(a, b));
        static S: Scope = Scope::new("unit-same");
        assert_eq!(S.id(), a.id());
        assert_eq!(Scope::named("allocscope").id(), EXPORTER);
    }

    #[test]
    fn max_scopes_is_checked() {
        assert!(set_max_scopes(0).is_err());
        assert!(set_max_scopes(MAX_SCOPES_LIMIT + 1).is_err());
        assert_eq!(MAX_SCOPES_LIMIT, 509);
    }
}
