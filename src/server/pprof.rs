//! `/debug/pprof/*`: Go's pprof handler conventions for a Rust process.
//!
//! Owns the index page, the CPU profile (pprof-rs), the command line, and
//! running renders off the async workers one at a time with a time bound.
//! Never blocks an async worker: profile building and symbolisation run in
//! `spawn_blocking` behind [`RENDER`].
//!
//! # Why pprof-rs's `frame-pointer` unwinder
//! pprof-rs takes its stacks inside a SIGPROF handler, at any instruction of
//! any thread, including inside allocscope's allocator and malloc. Its
//! default unwinder (backtrace-rs over libgcc's `_Unwind_Backtrace`) is not
//! async-signal-safe in general: unless glibc >= 2.35 and GCC >= 12 libgcc
//! give it the lock-free `_dl_find_object`, it takes the loader lock
//! (`dl_iterate_phdr`), and frames registered at run time (JITs) take
//! libgcc's object mutex, so a signal landing in `dlopen` or in another
//! unwind deadlocks the process (tikv/pprof-rs#36, ray-project/ray#48671).
//! pprof-rs's work-around, a blocklist, drops every sample taken inside
//! libc: where allocation time goes. A profiler that can hang the host is
//! the worse failure, so the exporter uses the frame-pointer walk: it reads
//! `rbp` chains only, checks every address before reading it (pprof-rs
//! `addr_validate`), takes no lock and costs ~20 instructions a frame.
//!
//! The price, measured on the demo (`cargo run --release`, built with
//! `-C force-frame-pointers=yes`, 3 s profiles): about 40% of the samples
//! carry a stack against 100% with the default unwinder, because code
//! without frame pointers (glibc's malloc, free and memcpy use `rbp` as a
//! general register) ends the walk at once; and pprof-rs's walk starts at
//! the caller of the interrupted function, so leaf functions do not appear.
//! Stack-less samples still count in the profile's total. Without
//! `-C force-frame-pointers=yes` the host's own frames are found only where
//! the compiler kept frame pointers (rustup's std has them).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{query_get, Reply, State};
use crate::profile::{FlamegraphOptions, Frames, HeapProfile, PprofKind, SampleType, Symbols};

/// Renders (heap and CPU profiles, flamegraphs) run one at a time.
pub(crate) static RENDER: Semaphore = Semaphore::const_new(1);

/// Longest CPU profile, in seconds.
pub const MAX_CPU_SECONDS: u64 = 300;
/// Longest window of a delta heap profile (`/debug/pprof/heap?seconds=N`,
/// `allocs?seconds=N`), in seconds.
pub const MAX_DELTA_SECONDS: u64 = 300;
/// CPU profile length when `seconds` is not given (Go's default).
pub const DEFAULT_CPU_SECONDS: u64 = 30;
/// Sampling frequency of CPU profiles (Go's).
const CPU_HZ: i32 = 100;

/// Runs `f` on a blocking thread once no other render runs, within
/// `timeout` in all (waiting included). A render that overruns keeps its
/// turn until it ends, so overruns cannot pile up.
pub(crate) async fn render<T, F>(timeout: Duration, what: &str, f: F) -> Result<T, Reply>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let work = async {
        let permit = RENDER
            .acquire()
            .await
            .map_err(|_| Reply::error(503, "the exporter is shutting down"))?;
        let job = tokio::task::spawn_blocking(move || {
            let _turn = permit;
            // the exporter's own work, also on a host's blocking threads
            let _scope = crate::scope::ALLOCSCOPE.enter();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("the renderer panicked".to_string()))
        });
        match job.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Reply::error(500, &format!("could not render {what}: {e}"))),
            Err(e) => Err(Reply::error(500, &format!("could not render {what}: {e}"))),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(Reply::error(
            503,
            &format!(
                "rendering {what} took longer than render_timeout ({}s), waiting for the \
                 previous render included; try again later or raise render_timeout",
                timeout.as_secs()
            ),
        )),
    }
}

/// The one CPU profile that may run (process-wide: the profiler is).
static CPU_BUSY: AtomicBool = AtomicBool::new(false);

struct CpuTurn;

impl CpuTurn {
    fn take() -> Option<CpuTurn> {
        CPU_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(CpuTurn)
    }
}

impl Drop for CpuTurn {
    fn drop(&mut self) {
        CPU_BUSY.store(false, Ordering::Release);
    }
}

/// The one delta heap profile that may run (`heap?seconds=N` and
/// `allocs?seconds=N` share it): each holds a captured profile for its
/// whole window and takes two render turns, so, as for CPU profiles, a
/// second one gets 409 instead of piling up behind 300-second windows.
static DELTA_BUSY: AtomicBool = AtomicBool::new(false);

struct DeltaTurn;

impl DeltaTurn {
    fn take() -> Option<DeltaTurn> {
        DELTA_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(DeltaTurn)
    }
}

impl Drop for DeltaTurn {
    fn drop(&mut self) {
        DELTA_BUSY.store(false, Ordering::Release);
    }
}

/// Parses `seconds` of a CPU profile: default 30, 1..=300.
pub(crate) fn cpu_seconds(q: Option<&str>) -> Result<u64, Reply> {
    match q {
        None => Ok(DEFAULT_CPU_SECONDS),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=MAX_CPU_SECONDS).contains(&n) => Ok(n),
            _ => Err(Reply::error(
                400,
                &format!(
                    "invalid seconds {s:?}: expected a whole number of seconds from 1 to \
                     {MAX_CPU_SECONDS} (default {DEFAULT_CPU_SECONDS})"
                ),
            )),
        },
    }
}

/// `/debug/pprof/profile?seconds=N`: a CPU profile, gzipped pprof.
pub(crate) async fn cpu_profile(state: &State, seconds: u64) -> Reply {
    let Some(turn) = CpuTurn::take() else {
        return Reply::error(
            409,
            "a CPU profile is already being taken (one at a time); retry when it finishes",
        );
    };
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(CPU_HZ)
        .build()
    {
        Ok(g) => g,
        Err(pprof::Error::Running) => {
            return Reply::error(
                409,
                "a CPU profile is already being taken in this process (by pprof-rs outside \
                 the exporter); retry when it finishes",
            )
        }
        Err(e) => return Reply::error(500, &format!("could not start the CPU profiler: {e}")),
    };
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        () = super::shutting_down(&mut shutdown) => {
            return Reply::error(503, "the exporter is shutting down; the CPU profile was abandoned");
        }
    }
    let built = render(state.render_timeout, "the CPU profile", move || {
        let _turn = turn;
        let report = guard.report().build().map_err(|e| e.to_string())?;
        drop(guard);
        let profile = report.pprof().map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        pprof::protos::Message::encode(&profile, &mut raw).map_err(|e| e.to_string())?;
        gzip(&raw)
    })
    .await;
    match built {
        Ok(bytes) => Reply::binary(bytes, "profile"),
        Err(r) => r,
    }
}

/// `seconds` of a delta heap profile (`heap` and `allocs`): none (the
/// profile as it is), or 1..=300. Pure (the fuzz target `query` calls it).
pub(crate) fn delta_seconds(q: &[(String, String)]) -> Result<Option<u64>, Reply> {
    match query_get(q, "seconds") {
        None => Ok(None),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=MAX_DELTA_SECONDS).contains(&n) => Ok(Some(n)),
            _ => Err(Reply::error(
                400,
                &format!(
                    "invalid seconds {s:?}: a delta profile (what was allocated and freed in \
                     the next N seconds) takes a whole number of seconds from 1 to \
                     {MAX_DELTA_SECONDS}; leave seconds out for the profile since the start"
                ),
            )),
        },
    }
}

/// What `raw=N` asks of the frames of `heap`, `allocs` and `heap.svg`: any
/// `N > 0` keeps std's allocation machinery at the leaf end of the stacks
/// ([`Frames::Raw`]); 0 or none trims it ([`Frames::Trimmed`]). Pure (the
/// fuzz target `query` calls it).
pub(crate) fn frames_param(q: &[(String, String)]) -> Result<Frames, Reply> {
    match query_get(q, "raw") {
        None => Ok(Frames::Trimmed),
        Some(r) => match r.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Frames::Raw),
            Ok(_) => Ok(Frames::Trimmed),
            Err(_) => Err(Reply::error(
                400,
                &format!(
                    "invalid raw {r:?}: expected an integer (raw=1 keeps std's allocation \
                     frames such as alloc::alloc::realloc and RawVec at the leaf end of the \
                     stacks, raw=0 trims them, the default)"
                ),
            )),
        },
    }
}

/// The parameters of `/debug/pprof/heap` and `allocs`: whether `debug`
/// asks for text, after checking `seconds` (a delta profile is pprof
/// only: `seconds` with `debug` > 0 is a 400, as in Go). Pure (the fuzz
/// target `query` calls it).
pub(crate) fn heap_params(q: &[(String, String)]) -> Result<bool, Reply> {
    let text = match query_get(q, "debug") {
        None => false,
        Some(d) => match d.parse::<u32>() {
            Ok(n) => n > 0,
            Err(_) => {
                return Err(Reply::error(
                    400,
                    &format!(
                        "invalid debug {d:?}: expected 0 (gzipped pprof, the default) or 1 \
                         (text)"
                    ),
                ))
            }
        },
    };
    if delta_seconds(q)?.is_some() && text {
        return Err(Reply::error(
            400,
            "seconds and debug params are incompatible: a delta profile (seconds=N) is served \
             as pprof only; leave out debug",
        ));
    }
    Ok(text)
}

/// `min_age=D` of `heap`, `allocs` and `heap.svg`: keep only the in-use
/// samples at least `D` old ([`HeapProfile::min_age`]); `D` as the
/// configuration's durations (`250ms`, `10s`, `5m`, `2h`); `0` or none,
/// no filter. Pure.
pub(crate) fn min_age_param(q: &[(String, String)]) -> Result<Option<Duration>, Reply> {
    match query_get(q, "min_age") {
        None => Ok(None),
        Some(t) => match super::config::parse_duration(t) {
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(Reply::error(
                400,
                &format!(
                    "invalid min_age {t:?}: {e}; expected a duration: a whole number with a \
                     unit ms, s, m or h (e.g. min_age=10m keeps the blocks in use for 10 \
                     minutes or more), or 0 for all"
                ),
            )),
        },
    }
}

/// `scope=NAME` and `thread=NAME` of `heap`, `allocs` and `heap.svg`: keep
/// only the samples taken in that scope ([`HeapProfile::scope`]) or by that
/// thread group ([`HeapProfile::thread`]); both may be given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelFilter {
    pub scope: Option<String>,
    pub thread: Option<String>,
}

impl LabelFilter {
    /// `p` restricted as the filter says.
    pub(crate) fn apply(&self, p: HeapProfile) -> HeapProfile {
        match self.apply_to(&p) {
            Some(f) => f,
            None => p,
        }
    }

    /// `p` restricted as the filter says; `None` when the filter keeps
    /// everything (no parameter given).
    fn apply_to(&self, p: &HeapProfile) -> Option<HeapProfile> {
        match (&self.scope, &self.thread) {
            (None, None) => None,
            (Some(s), None) => Some(p.scope(s)),
            (None, Some(t)) => Some(p.thread(t)),
            (Some(s), Some(t)) => Some(p.scope(s).thread(t)),
        }
    }

    /// What a flamegraph's subtitle says of the filter: `scope checkout,
    /// thread group indexer`.
    fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            self.scope.as_ref().map(|s| format!("scope {s}")),
            self.thread.as_ref().map(|t| format!("thread group {t}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// `key=NAME` (`scope` or `thread`): none, or a name as scopes take them
/// (1 to 64 bytes of printable text, [`crate::scope::is_valid_name`]); a
/// name no sample has is no error (an empty profile). Pure.
fn name_param(q: &[(String, String)], key: &str, what: &str) -> Result<Option<String>, Reply> {
    match query_get(q, key) {
        None => Ok(None),
        Some(n) if crate::scope::is_valid_name(n) => Ok(Some(n.to_string())),
        Some(n) => {
            // a long value is named by its start only
            let shown: String = n.chars().take(80).collect();
            let more = if shown.len() < n.len() { "…" } else { "" };
            Err(Reply::error(
                400,
                &format!(
                    "invalid {key} {shown:?}{more}: expected {what}: 1 to {} bytes of \
                     printable text (no control characters)",
                    crate::scope::NAME_MAX
                ),
            ))
        }
    }
}

/// `scope=NAME` of `heap`, `allocs` and `heap.svg` (see [`LabelFilter`]).
/// Pure (the fuzz target `query` calls it).
pub(crate) fn scope_param(q: &[(String, String)]) -> Result<Option<String>, Reply> {
    name_param(q, "scope", "a scope name such as scope=checkout")
}

/// `thread=NAME` of `heap`, `allocs` and `heap.svg` (see [`LabelFilter`]):
/// a thread group, or a thread's name (its group). Pure (the fuzz target
/// `query` calls it).
pub(crate) fn thread_param(q: &[(String, String)]) -> Result<Option<String>, Reply> {
    name_param(
        q,
        "thread",
        "a thread group such as thread=tokio-runtime-worker",
    )
}

/// Both of [`scope_param`] and [`thread_param`].
pub(crate) fn label_filter(q: &[(String, String)]) -> Result<LabelFilter, Reply> {
    Ok(LabelFilter {
        scope: scope_param(q)?,
        thread: thread_param(q)?,
    })
}

/// The parameters `heap`, `allocs` and `heap.svg` share: which samples
/// (`scope`, `thread`, `min_age`) and how their frames are read
/// (`lines`, `raw`).
#[derive(Clone, Debug)]
pub(crate) struct ProfileQuery {
    pub filter: LabelFilter,
    pub min_age: Option<Duration>,
    pub symbols: Symbols,
    pub frames: Frames,
}

impl ProfileQuery {
    /// A heap profile captured as the query asks: its frames, then only
    /// its samples.
    pub(crate) fn capture(&self) -> HeapProfile {
        let p = self
            .filter
            .apply(HeapProfile::capture_frames(self.symbols, self.frames));
        match self.min_age {
            Some(age) => p.min_age(age),
            None => p,
        }
    }
}

/// Parses [`ProfileQuery`]'s parameters; a 400 naming the first bad one.
pub(crate) fn profile_query(q: &[(String, String)]) -> Result<ProfileQuery, Reply> {
    Ok(ProfileQuery {
        filter: label_filter(q)?,
        min_age: min_age_param(q)?,
        symbols: lines_param(q)?,
        frames: frames_param(q)?,
    })
}

/// Whether `gc=N` asks for a collection cycle before the heap profile: as
/// in Go's handler, any `N > 0` does (and only for `/debug/pprof/heap`).
/// Pure (the fuzz target `query` calls it).
pub(crate) fn heap_gc_param(q: &[(String, String)]) -> Result<bool, Reply> {
    match query_get(q, "gc") {
        None => Ok(false),
        Some(g) => g.parse::<i64>().map(|n| n > 0).map_err(|_| {
            Reply::error(
                400,
                &format!(
                    "invalid gc {g:?}: expected an integer (gc=1 runs a collection cycle \
                     before the heap profile, gc=0 does not)"
                ),
            )
        }),
    }
}

/// What `lines=N` asks of the symbols of `heap`, `allocs` and `heap.svg`:
/// any `N > 0` adds the source file and line of every frame
/// ([`Symbols::Lines`]); 0 or none, function names alone. Pure (the fuzz
/// target `query` calls it).
pub(crate) fn lines_param(q: &[(String, String)]) -> Result<Symbols, Reply> {
    match query_get(q, "lines") {
        None => Ok(Symbols::Names),
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Symbols::Lines),
            Ok(_) => Ok(Symbols::Names),
            Err(_) => Err(Reply::error(
                400,
                &format!(
                    "invalid lines {l:?}: expected an integer (lines=1 adds the source file and \
                     line of every frame, lines=0 gives function names alone, the default)"
                ),
            )),
        },
    }
}

/// `/debug/pprof/heap` and `/debug/pprof/allocs`: the heap profile as
/// gzipped pprof, or Go's text format with `debug=1` (any `debug` > 0).
/// `gc=1` on `heap` first runs a collection cycle ([`crate::gc::collect`]: the
/// registered reclaimers, then memory returned to the OS), as Go's handler
/// runs `runtime.GC()`, so the in-use figures reflect what the application
/// could give back. `lines=1` adds the source file and line of every frame
/// (function names alone by default: cheaper, see
/// [`HeapProfile::capture_with`]). `raw=1` keeps std's allocation
/// machinery at the leaf end of the stacks ([`Frames::Raw`]). `min_age=D`
/// keeps only the in-use samples at least `D` old
/// ([`HeapProfile::min_age`]). `scope=NAME` and `thread=NAME` keep the
/// samples of one scope or thread group ([`LabelFilter`]). `seconds=N`
/// serves a delta profile ([`heap_delta`]; not with `min_age`; with
/// `scope` and `thread`, both captures filtered).
pub(crate) async fn heap(state: &State, kind: PprofKind, q: &[(String, String)]) -> Reply {
    let text = match heap_params(q) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let pq = match profile_query(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match delta_seconds(q) {
        Ok(Some(_)) if pq.min_age.is_some() => {
            return Reply::error(
                400,
                "min_age does not apply to a delta profile (seconds=N): a delta shows what \
                 was allocated in the window, all of it younger than N seconds; ask for one or \
                 the other",
            )
        }
        Ok(Some(seconds)) => return heap_delta(state, kind, seconds, pq).await,
        Ok(None) => {}
        Err(r) => return r,
    }
    let gc = match heap_gc_param(q) {
        Ok(g) => g && kind == PprofKind::Heap,
        Err(r) => return r,
    };
    let name = kind.name();
    let what = format!("the {name} profile");
    let r = render(state.render_timeout, &what, move || {
        if gc {
            crate::gc::collect();
        }
        let p = pq.capture();
        Ok(if text {
            Err(p.to_text(kind))
        } else {
            Ok(p.to_pprof(kind))
        })
    })
    .await;
    match r {
        Ok(Ok(bytes)) => Reply::binary(bytes, name),
        Ok(Err(text)) => Reply::text(text),
        Err(r) => r,
    }
}

/// `/debug/pprof/heap?seconds=N` and `allocs?seconds=N`: what was
/// allocated and freed in the next `N` seconds, as Go's `net/http/pprof`
/// serves it ([`HeapProfile::delta_pprof`]): a capture now, an
/// asynchronous wait of `N` seconds (no thread is held), a second capture,
/// their difference as gzipped pprof (`heap-delta` / `allocs-delta`).
///
/// One at a time (409 for a second, as for CPU profiles). Each capture is
/// a render of its own, bounded by `render_timeout` (waiting for the render
/// turn included); the window itself is not a render, so a delta longer
/// than `render_timeout` is never cut by it. Shutdown abandons the window
/// (503). `gc` is ignored, as in Go.
async fn heap_delta(state: &State, kind: PprofKind, seconds: u64, pq: ProfileQuery) -> Reply {
    let Some(turn) = DeltaTurn::take() else {
        return Reply::error(
            409,
            "a delta heap profile (seconds=N) is already being taken (one at a time); retry \
             when it finishes",
        );
    };
    let name = kind.name();
    let first = render(
        state.render_timeout,
        &format!("the first {name} profile of the delta"),
        {
            let pq = pq.clone();
            move || Ok(pq.capture())
        },
    )
    .await;
    let before = match first {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        () = super::shutting_down(&mut shutdown) => {
            return Reply::error(
                503,
                "the exporter is shutting down; the delta profile was abandoned",
            );
        }
    }
    let built = render(
        state.render_timeout,
        &format!("the second {name} profile of the delta"),
        move || {
            let _turn = turn;
            Ok(pq.capture().delta_pprof(&before, kind))
        },
    )
    .await;
    match built {
        Ok(bytes) => Reply::binary(
            bytes,
            match kind {
                PprofKind::Heap => "heap-delta",
                PprofKind::Allocs => "allocs-delta",
            },
        ),
        Err(r) => r,
    }
}

/// The parameters of `/debug/pprof/heap.svg`: the sample type and whether
/// `diff=baseline` was asked for (`sample=temporary` draws `alloc_space`,
/// of the short-lived blocks: [`temporary_param`]). Pure (the fuzz target
/// `query` calls it).
pub(crate) fn svg_params(q: &[(String, String)]) -> Result<(SampleType, bool), Reply> {
    let sample = match query_get(q, "sample") {
        Some(TEMPORARY) => SampleType::AllocSpace,
        s => s
            .unwrap_or("inuse_space")
            .parse::<SampleType>()
            .map_err(|e| {
                Reply::error(
                    400,
                    &format!("{e}, or temporary (bytes allocated by short-lived blocks)"),
                )
            })?,
    };
    let diff = match query_get(q, "diff") {
        None => false,
        Some("baseline") => true,
        Some(d) => {
            return Err(Reply::error(
                400,
                &format!("invalid diff {d:?}: the only diff is diff=baseline"),
            ))
        }
    };
    Ok((sample, diff))
}

/// The `sample` of the temporary-allocations flamegraph.
const TEMPORARY: &str = "temporary";

/// Whether `heap.svg` is asked for the temporary allocations
/// (`sample=temporary`). Pure.
pub(crate) fn temporary_param(q: &[(String, String)]) -> bool {
    query_get(q, "sample") == Some(TEMPORARY)
}

/// `/debug/pprof/heap.svg?sample=…[&diff=baseline|&lines=1|&min_age=D][&raw=1]`:
/// the heap flamegraph, or what grew since the saved baseline; `raw=1`
/// keeps std's allocation frames (not with `diff=baseline`). With
/// `lines=1` each frame is `name file:line`; a diff compares stacks by
/// function names, so `lines=1` with `diff=baseline` is a 400. `min_age=D`
/// draws only the in-use samples at least `D` old
/// ([`HeapProfile::min_age`]; not with a diff). `sample=temporary` draws
/// the estimated bytes allocated by blocks freed within
/// `temporary_lifetime` ([`HeapProfile::short_lived`]; neither a diff nor
/// `min_age` apply: those blocks are gone). `scope=NAME` and
/// `thread=NAME` draw the samples of one scope or thread group
/// ([`LabelFilter`]; with a diff, the baseline is filtered alike).
pub(crate) async fn heap_svg(state: &State, q: &[(String, String)]) -> Reply {
    let (sample, diff) = match svg_params(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let pq = match profile_query(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let temporary = temporary_param(q);
    if temporary && (diff || pq.min_age.is_some()) {
        return Reply::error(
            400,
            "sample=temporary shows blocks already freed: neither diff=baseline nor min_age \
             applies to it",
        );
    }
    if diff && pq.min_age.is_some() {
        return Reply::error(
            400,
            "min_age does not apply to diff=baseline: ask for one or the other",
        );
    }
    if diff && pq.symbols == Symbols::Lines {
        return Reply::error(
            400,
            "lines=1 does not apply to diff=baseline: a diff compares stacks by function \
             names; leave out lines",
        );
    }
    if diff && pq.frames == Frames::Raw {
        return Reply::error(
            400,
            "raw=1 does not apply to diff=baseline: the baseline is saved with std's \
             allocation frames trimmed, and a diff compares stacks alike; leave out raw",
        );
    }
    let baseline = match diff {
        false => None,
        true => match state.baseline() {
            Some(b) => Some(b),
            None => {
                return Reply::error(
                    409,
                    "no baseline saved yet: POST /debug/pprof/baseline first, then ask for \
                     /debug/pprof/heap.svg?diff=baseline",
                )
            }
        },
    };
    let r = render(state.render_timeout, "the heap flamegraph", move || {
        let mut now = pq.capture();
        let mut svg = Vec::with_capacity(64 * 1024);
        let mut opts = FlamegraphOptions::default();
        let mut subtitle: Vec<String> = pq.filter.describe().into_iter().collect();
        if let Some(age) = pq.min_age {
            subtitle.push(format!("in use for {age:?} or more"));
        }
        if !subtitle.is_empty() {
            opts = opts.subtitle(subtitle.join(", "));
        }
        if temporary {
            let threshold = crate::profile::temporary_lifetime();
            now = now.short_lived(threshold);
            opts = opts.title(format!(
                "Temporary allocations: bytes allocated by blocks freed within {threshold:?} \
                 (estimated)"
            ));
        }
        match baseline {
            Some(b) => now
                .diff(pq.filter.apply_to(&b).as_ref().unwrap_or(&b))
                .flamegraph(sample, &opts, &mut svg),
            None => now.flamegraph(sample, &opts, &mut svg),
        }
        .map_err(|e| e.to_string())?;
        Ok(svg)
    })
    .await;
    match r {
        Ok(svg) => Reply::svg(svg),
        Err(r) => r,
    }
}

/// `POST /debug/pprof/baseline`: captures the heap profile that
/// `heap.svg?diff=baseline` compares with.
pub(crate) async fn save_baseline(state: &State) -> Reply {
    let r = render(state.render_timeout, "the baseline", || {
        Ok(HeapProfile::capture())
    })
    .await;
    match r {
        Ok(p) => {
            let msg = format!(
                "baseline saved: {} buckets, {} bytes in use (estimated); \
                 /debug/pprof/heap.svg?diff=baseline shows what grew since\n",
                p.buckets().len(),
                p.total(SampleType::InuseSpace)
            );
            state.set_baseline(p);
            Reply::text(msg)
        }
        Err(r) => r,
    }
}

/// Gzips `raw` (pprof files are gzipped protobuf).
pub(crate) fn gzip(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(raw).map_err(|e| e.to_string())?;
    z.finish().map_err(|e| e.to_string())
}

/// `/debug/pprof/cmdline`: the command line, arguments separated by NUL
/// bytes, as Go.
pub(crate) fn cmdline() -> Reply {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Reply::text(args.join("\0"))
}

/// The profiles listed on the index page: path, description.
const PROFILES: &[(&str, &str)] = &[
    ("allocs", "A sampling of all past memory allocations (the heap profile with alloc_space as its default view). You can specify the seconds GET parameter (1 to 300) for a delta profile: what was allocated in the next N seconds."),
    ("heap", "A sampling of memory allocations of live objects. You can specify the seconds GET parameter (1 to 300) for a delta profile: what was allocated and freed in the next N seconds. Add debug=1 for text, lines=1 for the file and line of every frame, raw=1 to keep std's allocation frames (alloc::alloc::realloc, RawVec, …) at the leaf end of the stacks, scope=NAME or thread=NAME for the samples of one scope or thread group (every sample carries scope and thread labels)."),
    ("heap.svg", "The heap profile as a flamegraph (sample=inuse_space|inuse_objects|alloc_space|alloc_objects; diff=baseline for growth since the saved baseline; lines=1 for a frame per source line; raw=1 for std's allocation frames; scope=NAME, thread=NAME for one scope or thread group)."),
    ("profile", "CPU profile. You can specify the duration in the seconds GET parameter (1 to 300, default 30). After you get the profile file, use the go tool pprof command to investigate the profile."),
    ("cmdline", "The command line invocation of the current program."),
];

/// `/debug/pprof/`: the HTML index.
pub(crate) fn index() -> Reply {
    let mut rows = String::new();
    for (name, what) in PROFILES {
        rows.push_str(&format!(
            "<tr><td><a href=\"/debug/pprof/{name}\">{name}</a></td><td>{what}</td></tr>\n"
        ));
    }
    Reply::html(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>/debug/pprof/</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:.3em 1em;vertical-align:top}}\
         </style></head><body>\n<h1>/debug/pprof/</h1>\n<p>Set debug=1 as a query parameter to \
         export in legacy text format.</p>\n<table>\n{rows}</table>\n\
         <form method=\"post\" action=\"/debug/pprof/baseline\"><p>\
         <button type=\"submit\">Save a heap baseline</button> (POST /debug/pprof/baseline), then \
         see what grew: <a href=\"/debug/pprof/heap.svg?diff=baseline\">heap.svg?diff=baseline</a>\
         </p></form>\n<p><a href=\"/\">allocscope home</a> · <a href=\"/metrics\">/metrics</a></p>\
         \n</body></html>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(cpu_seconds(None).ok(), Some(30));
        assert_eq!(cpu_seconds(Some("1")).ok(), Some(1));
        assert_eq!(cpu_seconds(Some("300")).ok(), Some(300));
        for bad in [
            "0",
            "301",
            "-1",
            "",
            "2.5",
            "abc",
            "99999999999999999999999",
        ] {
            assert!(cpu_seconds(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn renders_are_bounded_in_time_and_queued() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let slow = tokio::spawn(render(Duration::from_millis(100), "slow", || {
                std::thread::sleep(Duration::from_millis(600));
                Ok(1)
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
            // queued behind the slow one, which keeps its turn past its bound
            let queued = render(Duration::from_millis(200), "queued", || Ok(2)).await;
            let slow = slow.await.unwrap();
            assert_eq!(slow.unwrap_err().status, 503);
            let q = queued.unwrap_err();
            assert_eq!(q.status, 503);
            assert!(String::from_utf8_lossy(&q.body).contains("render_timeout"));
            // once it has finished, renders run again
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(
                render(Duration::from_secs(5), "ok", || Ok(3)).await.ok(),
                Some(3)
            );
            let e = render(Duration::from_secs(5), "failing", || {
                Err::<(), _>("no".into())
            })
            .await
            .unwrap_err();
            assert_eq!(e.status, 500);
            let p = render(
                Duration::from_secs(5),
                "panicking",
                || -> Result<(), String> { panic!("boom") },
            )
            .await
            .unwrap_err();
            assert_eq!(p.status, 500);
        });
    }

    #[test]
    fn lines_asks_for_files_and_lines() {
        let q = |v: &str| vec![("lines".to_string(), v.to_string())];
        assert_eq!(lines_param(&[]).ok(), Some(Symbols::Names));
        assert_eq!(lines_param(&q("1")).ok(), Some(Symbols::Lines));
        assert_eq!(lines_param(&q("7")).ok(), Some(Symbols::Lines));
        assert_eq!(lines_param(&q("0")).ok(), Some(Symbols::Names));
        assert_eq!(lines_param(&q("-1")).ok(), Some(Symbols::Names));
        for bad in ["", "yes", "1.0", "99999999999999999999"] {
            let e = lines_param(&q(bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
            assert!(String::from_utf8_lossy(&e.body).contains("lines=1"));
        }
    }

    #[test]
    fn delta_seconds_raw_and_debug() {
        let q = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(delta_seconds(&[]).ok(), Some(None));
        assert_eq!(delta_seconds(&q(&[("seconds", "1")])).ok(), Some(Some(1)));
        assert_eq!(
            delta_seconds(&q(&[("seconds", "300")])).ok(),
            Some(Some(300))
        );
        for bad in ["0", "301", "abc", "-1", "", "2.5", "99999999999999999999"] {
            let e = delta_seconds(&q(&[("seconds", bad)])).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
            assert!(String::from_utf8_lossy(&e.body).contains("from 1 to 300"));
            // heap_params refuses it too
            assert_eq!(
                heap_params(&q(&[("seconds", bad)])).unwrap_err().status,
                400
            );
        }
        assert_eq!(heap_params(&q(&[("seconds", "5")])).ok(), Some(false));
        assert_eq!(
            heap_params(&q(&[("seconds", "5"), ("debug", "0")])).ok(),
            Some(false)
        );
        let e = heap_params(&q(&[("seconds", "5"), ("debug", "1")])).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(String::from_utf8_lossy(&e.body).contains("incompatible"));
        assert_eq!(heap_params(&q(&[("debug", "1")])).ok(), Some(true));

        assert_eq!(frames_param(&[]).ok(), Some(Frames::Trimmed));
        assert_eq!(frames_param(&q(&[("raw", "1")])).ok(), Some(Frames::Raw));
        assert_eq!(
            frames_param(&q(&[("raw", "0")])).ok(),
            Some(Frames::Trimmed)
        );
        for bad in ["", "yes", "1.0"] {
            let e = frames_param(&q(&[("raw", bad)])).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
    }

    #[test]
    fn scope_and_thread_take_names() {
        let q = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(label_filter(&[]).ok(), Some(LabelFilter::default()));
        let f = label_filter(&q(&[("scope", "checkout"), ("thread", "indexer-2")])).unwrap();
        assert_eq!(f.scope.as_deref(), Some("checkout"));
        assert_eq!(f.thread.as_deref(), Some("indexer-2"));
        assert_eq!(
            f.describe().as_deref(),
            Some("scope checkout, thread group indexer-2")
        );
        assert_eq!(LabelFilter::default().describe(), None);
        // names no sample has are fine: an empty profile
        assert!(scope_param(&q(&[("scope", "no such scope")])).is_ok());
        let long = "x".repeat(65);
        for (key, bad) in [
            ("scope", ""),
            ("scope", long.as_str()),
            ("scope", "a\nb"),
            ("thread", "\u{7f}"),
            ("thread", "a\u{85}b"),
            ("thread", ""),
        ] {
            let e = label_filter(&q(&[(key, bad)])).unwrap_err();
            assert_eq!(e.status, 400, "{key}={bad:?}");
            let body = String::from_utf8_lossy(&e.body).into_owned();
            assert!(body.contains(&format!("invalid {key} ")), "{body}");
        }
        // a long value is named by its start only
        let huge = "y".repeat(4000) + "\n";
        let e = scope_param(&q(&[("scope", &huge)])).unwrap_err();
        assert!(e.body.len() < 600, "{}", e.body.len());
        assert_eq!(
            scope_param(&q(&[("scope", &"z".repeat(64))])).ok(),
            Some(Some("z".repeat(64)))
        );
    }

    #[test]
    fn one_delta_profile_at_a_time() {
        let a = DeltaTurn::take().expect("free");
        assert!(DeltaTurn::take().is_none());
        drop(a);
        assert!(DeltaTurn::take().is_some());
    }

    #[test]
    fn one_cpu_profile_at_a_time() {
        let a = CpuTurn::take().expect("free");
        assert!(CpuTurn::take().is_none());
        drop(a);
        assert!(CpuTurn::take().is_some());
    }
}
