//! Body of the `query` fuzz target (also run by `tests/fuzz_replay.rs`):
//! every endpoint's query parsing never panics, answers errors with the
//! documented statuses, and keeps accepted values within their documented
//! ranges; decoded parameters re-encode to the same parameters.
use allocscope::server::{
    DEFAULT_CPU_SECONDS, MAX_CPU_SECONDS, MAX_DELTA_SECONDS, MAX_QUERY_BYTES,
};
use allocscope::test_util::{parse_query, ParsedQuery};

/// The input is the raw query string (invalid UTF-8 replaced, as a URI's
/// query is ASCII anyway).
pub fn run(data: &[u8]) {
    let q = String::from_utf8_lossy(data);
    let parsed = match parse_query(&q) {
        Ok(p) => p,
        Err(status) => {
            let expected = if q.len() > MAX_QUERY_BYTES { 414 } else { 400 };
            assert_eq!(status, expected, "{q:?}");
            return;
        }
    };
    assert!(q.len() <= MAX_QUERY_BYTES);
    check(&q, &parsed);
    // Percent-encoding every decoded byte gives back the same parameters.
    let again = encode(&parsed.params);
    match parse_query(&again) {
        Ok(p) => assert_eq!(p.params, parsed.params, "{q:?} -> {again:?}"),
        Err(status) => assert!(
            status == 414 && again.len() > MAX_QUERY_BYTES,
            "{q:?} -> {again:?}: {status}"
        ),
    }
}

fn get<'a>(p: &'a ParsedQuery, key: &str) -> Option<&'a str> {
    p.params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn check(q: &str, p: &ParsedQuery) {
    // At most one parameter per `&`-separated piece.
    assert!(p.params.len() <= q.split('&').count());
    // min_age: absent or 0 is no filter; an accepted one is a positive
    // duration; a refused one is a 400 and was given.
    match (&p.min_age, get(p, "min_age")) {
        (Ok(None), _) => {}
        (Ok(Some(d)), v) => assert!(!d.is_zero() && v.is_some(), "{q:?}"),
        (Err(st), v) => assert!(*st == 400 && v.is_some(), "{q:?}"),
    }
    // scope= and thread=: a name as scopes take them (1 to 64 bytes of
    // printable text), given back as is; a refused one is a 400, was
    // given, and is not such a name.
    for (parsed, key) in [(&p.scope, "scope"), (&p.thread, "thread")] {
        match (parsed, get(p, key)) {
            (Ok(None), v) => assert!(v.is_none(), "{q:?}"),
            (Ok(Some(n)), v) => {
                assert_eq!(Some(n.as_str()), v, "{q:?}");
                assert!(allocscope::scope::is_valid_name(n), "{q:?}");
                assert!(!n.is_empty() && n.len() <= 64, "{q:?}");
                assert!(!n.chars().any(|c| c.is_control()), "{q:?}");
            }
            (Err(st), v) => {
                assert_eq!(*st, 400, "{q:?}");
                assert!(
                    v.is_some_and(|v| !allocscope::scope::is_valid_name(v)),
                    "{q:?}"
                );
            }
        }
    }
    // CPU profile seconds: default 30, else 1..=300.
    match (&p.cpu_seconds, get(p, "seconds")) {
        (Ok(s), None) => assert_eq!(*s, DEFAULT_CPU_SECONDS),
        (Ok(s), Some(v)) => {
            assert!((1..=MAX_CPU_SECONDS).contains(s), "{q:?}");
            assert_eq!(v.parse::<u64>().ok(), Some(*s), "{q:?}");
        }
        (Err(st), v) => assert!(*st == 400 && v.is_some(), "{q:?}"),
    }
    // Heap: debug is a u32 (text when > 0); a delta (seconds=) is pprof
    // only.
    match &p.heap_text {
        Ok(text) => {
            let d = get(p, "debug").map(|d| d.parse::<u32>().expect("accepted debug"));
            assert_eq!(*text, d.unwrap_or(0) > 0, "{q:?}");
            if get(p, "seconds").is_some() {
                assert!(!text, "{q:?}");
                assert!(matches!(p.heap_seconds, Ok(Some(_))), "{q:?}");
            }
        }
        Err(st) => assert_eq!(*st, 400, "{q:?}"),
    }
    // Delta heap profiles: 1..=300 seconds, nothing when not given.
    match (&p.heap_seconds, get(p, "seconds")) {
        (Ok(None), None) => {}
        (Ok(Some(s)), Some(v)) => {
            assert!((1..=MAX_DELTA_SECONDS).contains(s), "{q:?}");
            assert_eq!(v.parse::<u64>().ok(), Some(*s), "{q:?}");
        }
        (Ok(s), v) => panic!("{q:?}: seconds {v:?} parsed as {s:?}"),
        (Err(st), v) => assert!(*st == 400 && v.is_some(), "{q:?}"),
    }
    // raw=: an integer, std's allocation frames kept when > 0.
    match (&p.raw, get(p, "raw")) {
        (Ok(r), None) => assert!(!r, "{q:?}"),
        (Ok(r), Some(v)) => assert_eq!(v.parse::<i64>().ok().map(|n| n > 0), Some(*r), "{q:?}"),
        (Err(st), v) => assert!(*st == 400 && v.is_some(), "{q:?}"),
    }
    // Heap gc=: an integer, a cycle when > 0.
    match (&p.heap_gc, get(p, "gc")) {
        (Ok(gc), None) => assert!(!gc, "{q:?}"),
        (Ok(gc), Some(v)) => assert_eq!(v.parse::<i64>().ok().map(|n| n > 0), Some(*gc), "{q:?}"),
        (Err(st), v) => assert!(*st == 400 && v.is_some(), "{q:?}"),
    }
    // heap.svg: one of the four sample types, or `temporary` (drawn as
    // alloc_space); diff only `baseline`.
    match &p.svg {
        Ok((sample, diff)) => {
            let name = match get(p, "sample").unwrap_or("inuse_space") {
                "temporary" => "alloc_space",
                n => n,
            };
            assert_eq!(
                name.parse::<allocscope::profile::SampleType>().ok(),
                Some(*sample)
            );
            assert_eq!(*diff, get(p, "diff").is_some(), "{q:?}");
        }
        Err(st) => assert_eq!(*st, 400, "{q:?}"),
    }
    // lines=: an integer, files and lines when > 0.
    match (&p.lines, get(p, "lines")) {
        (Ok(l), None) => assert!(!l, "{q:?}"),
        (Ok(l), Some(v)) => assert_eq!(v.parse::<i64>().ok().map(|n| n > 0), Some(*l), "{q:?}"),
        (Err(st), v) => assert!(*st == 400 && v.is_some(), "{q:?}"),
    }
    // POST /gc: only set and memory_limit, each once, at least one.
    match &p.gc_post {
        Ok((set, limit)) => {
            assert!(set.is_some() || limit.is_some(), "{q:?}");
            assert!(p
                .params
                .iter()
                .all(|(k, _)| k == "set" || k == "memory_limit"));
            assert!(p.params.len() <= 2, "{q:?}");
            if let Some(allocscope::gc::MemoryLimit::Bytes(n)) = limit {
                assert!(*n > 0, "{q:?}");
            }
        }
        Err(st) => assert_eq!(*st, 400, "{q:?}"),
    }
    // GET /gc carrying a change: 405, and only then.
    let changes = p
        .params
        .iter()
        .any(|(k, _)| k == "set" || k == "memory_limit");
    assert_eq!(p.gc_get_change, changes.then_some(405), "{q:?}");
}

fn encode(params: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}
