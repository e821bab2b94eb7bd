//! Heap profile formats from real return addresses: folded stacks, pprof
//! protobuf (and `go tool pprof` reading it), Go's debug=1 text, inferno
//! flamegraphs and the leak-hunting diff.
//!
//! The stacks are captured with `backtrace::trace` inside distinct
//! `#[inline(never)]` functions, then fed to the profile builder as the
//! sampler would feed them.
#![cfg(feature = "profile")]

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Read;
use std::process::Command;

use allocscope::profile::{FlamegraphOptions, HeapProfile, PprofKind, SampleType};
use allocscope::test_util::RawSample;
use allocscope::AllocScope;
use pprof::protos::{Message, Profile};

#[global_allocator]
static A: AllocScope = AllocScope::system();

const KIB512: u64 = 512 * 1024;

/// Return addresses, leaf first, starting at the caller of this function
/// (this function and the backtrace crate's frames are left out).
#[inline(never)]
fn caller_stack() -> Vec<usize> {
    let me = caller_stack as *const () as usize;
    let mut seen_me = false;
    let mut out = Vec::new();
    backtrace::trace(|f| {
        if seen_me {
            out.push(f.ip() as usize);
        } else if f.symbol_address() as usize == me {
            seen_me = true;
        }
        true
    });
    assert!(seen_me, "caller_stack did not find its own frame");
    out
}

/// The whole stack as `backtrace::trace` sees it, leaf first, including the
/// backtrace crate's own frames (which the profile must drop).
#[inline(never)]
fn full_stack() -> Vec<usize> {
    let mut out = Vec::new();
    backtrace::trace(|f| {
        out.push(f.ip() as usize);
        true
    });
    black_box(out)
}

// The bodies differ (the constants) so that the linker cannot fold the
// functions into one.
#[inline(never)]
fn leaky_cache_insert() -> Vec<usize> {
    let s = caller_stack();
    black_box(0x1eau16);
    black_box(s)
}

#[inline(never)]
fn outer_caller() -> Vec<usize> {
    black_box(leaky_cache_insert())
}

#[inline(never)]
fn request_handler() -> Vec<usize> {
    let s = caller_stack();
    black_box(0x4a11u32);
    black_box(s)
}

#[inline(never)]
fn traced_with_backtrace_frames() -> Vec<usize> {
    black_box(full_stack())
}

#[inline(always)]
fn inlined_helper() -> Vec<usize> {
    let s = caller_stack();
    black_box(0x11u8);
    s
}

#[inline(never)]
fn inline_host() -> Vec<usize> {
    let s = inlined_helper();
    black_box(0x22u8);
    black_box(s)
}

fn raw(stack: &[usize], size: u64, interval: u64, allocs: u64, frees: u64) -> RawSample {
    RawSample {
        stack: stack.to_vec(),
        size,
        interval,
        allocs,
        frees,
    }
}

/// Go's scaleHeapSample, by hand: (objects, bytes).
fn go_scale(count: u64, size: u64, rate: u64) -> (u64, u64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, count * size);
    }
    let scale = 1.0 / (1.0 - (-(size as f64) / rate as f64).exp());
    (
        (count as f64 * scale) as u64,
        ((count * size) as f64 * scale) as u64,
    )
}

struct Fixture {
    leak: Vec<usize>,
    handler: Vec<usize>,
    profile: HeapProfile,
}

/// leak stack: 10 x 1024 B sampled (2 freed) and 3 x 64 B (none freed) at
/// 512 KiB; handler stack: 100 x 4096 B at 4 KiB, all freed.
fn fixture() -> Fixture {
    let leak = outer_caller();
    let handler = request_handler();
    let profile = allocscope::test_util::profile_from_raw(
        vec![
            raw(&leak, 1024, KIB512, 10, 2),
            raw(&leak, 64, KIB512, 3, 0),
            raw(&handler, 4096, 4096, 100, 100),
        ],
        KIB512,
    );
    Fixture {
        leak,
        handler,
        profile,
    }
}

/// `…::h0123456789abcdef`, the legacy mangling's hash.
fn has_hash_suffix(frame: &str) -> bool {
    let last = frame.rsplit("::").next().unwrap_or("");
    last.len() == 17 && last.starts_with('h') && last[1..].chars().all(|c| c.is_ascii_hexdigit())
}

fn is_backtrace_crate(frame: &str) -> bool {
    frame.starts_with("backtrace::") || frame.starts_with("<backtrace::")
}

fn line_for<'a>(folded: &'a str, func: &str) -> Option<&'a str> {
    folded.lines().find(|l| l.contains(func))
}

fn value(line: &str) -> u64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn folded_is_root_first_named_and_scaled() {
    let f = fixture();
    assert!(f.leak.len() > 3 && f.handler.len() > 3);
    let p = &f.profile;
    assert_eq!(p.interval(), KIB512);
    assert_eq!(p.buckets().len(), 3);

    let inuse = p.folded(SampleType::InuseSpace);
    // The handler's objects were all freed: no in-use line.
    assert!(line_for(&inuse, "request_handler").is_none(), "{inuse}");
    let leak = line_for(&inuse, "leaky_cache_insert").expect("leak stack in folded output");
    let frames: Vec<&str> = leak.rsplit_once(' ').unwrap().0.split(';').collect();
    let pos = |name: &str| {
        frames
            .iter()
            .position(|f| *f == format!("profile_formats::{name}"))
            .unwrap_or_else(|| panic!("{name} not a frame of {leak}"))
    };
    assert!(
        pos("outer_caller") < pos("leaky_cache_insert"),
        "not root first: {leak}"
    );
    // The test function may be inlined into its harness closure: with
    // line-tables-only debug info an inlined frame has its short name.
    let test_fn = frames
        .iter()
        .position(|f| f.ends_with("folded_is_root_first_named_and_scaled"))
        .expect("test function frame");
    assert!(test_fn < pos("outer_caller"));
    assert_eq!(
        *frames.last().unwrap(),
        "profile_formats::leaky_cache_insert"
    );
    assert!(
        !leak.contains("caller_stack") && !frames.iter().any(|f| is_backtrace_crate(f)),
        "{leak}"
    );
    assert!(
        !leak.starts_with("0x0;"),
        "null return address kept: {leak}"
    );
    assert!(
        !frames.iter().any(|f| has_hash_suffix(f)),
        "hash suffix in {leak}"
    );
    // Two sizes merged into one line, each scaled on its own (Go's rule).
    let expected = go_scale(8, 1024, KIB512).1 + go_scale(3, 64, KIB512).1;
    assert_eq!(value(leak), expected);
    // About 8 KiB x 512.5 + 192 B x 8192.5.
    assert!((5_771_000..5_772_000).contains(&expected), "{expected}");
    assert_eq!(p.total(SampleType::InuseSpace), expected);

    let objects = p.folded(SampleType::AllocObjects);
    let handler = line_for(&objects, "request_handler").expect("handler stack");
    assert_eq!(value(handler), go_scale(100, 4096, 4096).0);
    assert_eq!(value(handler), 158); // 100 / (1 - 1/e)
    let leak = line_for(&objects, "leaky_cache_insert").unwrap();
    assert_eq!(
        value(leak),
        go_scale(10, 1024, KIB512).0 + go_scale(3, 64, KIB512).0
    );

    let b = p
        .buckets()
        .iter()
        .find(|b| b.size() == 1024)
        .expect("1 KiB bucket");
    assert_eq!((b.sampled_allocs(), b.sampled_inuse()), (10, 8));
    assert_eq!(
        b.estimate(SampleType::InuseObjects),
        go_scale(8, 1024, KIB512).0
    );
    assert_eq!(b.frames()[0].name(), "profile_formats::leaky_cache_insert");
    assert!(b.frames()[0]
        .file()
        .is_some_and(|f| f.ends_with("profile_formats.rs")));
}

#[test]
fn backtrace_frames_at_the_leaf_are_dropped() {
    let stack = traced_with_backtrace_frames();
    let p = allocscope::test_util::profile_from_raw(vec![raw(&stack, 32, 1, 1, 0)], 1);
    let folded = p.folded(SampleType::InuseSpace);
    let (frames, v) = folded.trim_end().rsplit_once(' ').unwrap();
    assert_eq!(v, "32");
    assert!(!frames.split(';').any(is_backtrace_crate), "{frames}");
    assert!(
        frames.ends_with("profile_formats::full_stack"),
        "leaf is not the first non-backtrace frame: {frames}"
    );
    assert!(frames.contains("profile_formats::traced_with_backtrace_frames;"));
}

#[test]
fn unresolvable_addresses_are_hex() {
    let mut stack = vec![0x10usize];
    stack.extend(request_handler());
    let p = allocscope::test_util::profile_from_raw(vec![raw(&stack, 8, 1, 1, 0)], 1);
    let folded = p.folded(SampleType::InuseSpace);
    assert!(
        folded.contains("profile_formats::request_handler;0x10 8\n"),
        "{folded}"
    );
}

fn gunzip_decode(gz: &[u8]) -> Profile {
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gunzip");
    Profile::decode(raw.as_slice()).expect("pprof protobuf")
}

#[test]
fn pprof_is_laid_out_like_gos_heap_profile() {
    let f = fixture();
    let m = gunzip_decode(&f.profile.to_pprof(PprofKind::Heap));
    let s = |i: i64| m.string_table[usize::try_from(i).unwrap()].as_str();
    assert_eq!(m.string_table[0], "");
    let types: Vec<(&str, &str)> = m.sample_type.iter().map(|v| (s(v.ty), s(v.unit))).collect();
    assert_eq!(
        types,
        [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes")
        ]
    );
    let pt = m.period_type.as_ref().expect("period_type");
    assert_eq!((s(pt.ty), s(pt.unit)), ("space", "bytes"));
    assert_eq!(m.period, KIB512 as i64);
    assert_eq!(s(m.default_sample_type), "inuse_space");
    assert!(m.time_nanos > 1_600_000_000_000_000_000);
    for mp in &m.mapping {
        assert!(mp.has_functions && mp.has_filenames && mp.has_line_numbers);
    }

    let locs: HashMap<u64, _> = m.location.iter().map(|l| (l.id, l)).collect();
    let funcs: HashMap<u64, _> = m.function.iter().map(|f| (f.id, f)).collect();
    assert!(locs.keys().chain(funcs.keys()).all(|id| *id != 0));
    // a bucket's in-use values in age groups (label `age`, seconds; alloc
    // values = in-use ones), what it freed in a sample without an age
    let mut sizes = Vec::new();
    for smp in &m.sample {
        assert_eq!(smp.value.len(), 4);
        // `scope` and `thread` last (string labels): this fixture's
        // samples are in no scope
        let n = smp.label.len();
        assert!(n >= 3, "{n} labels");
        assert_eq!(
            (s(smp.label[n - 2].key), s(smp.label[n - 2].str)),
            ("scope", "unscoped")
        );
        assert_eq!(s(smp.label[n - 1].key), "thread");
        assert!(!s(smp.label[n - 1].str).is_empty());
        match n - 2 {
            1 => {}
            2 => {
                assert_eq!(s(smp.label[1].key), "age");
                assert_eq!(s(smp.label[1].num_unit), "seconds");
                // alloc values = in-use ones, but age 0 holds the freed too
                if smp.label[1].num == 0 {
                    assert!(smp.value[0] >= smp.value[2] && smp.value[1] >= smp.value[3]);
                } else {
                    assert_eq!(smp.value[0..2], smp.value[2..4]);
                }
            }
            n => panic!("{n} labels"),
        }
        assert_eq!(s(smp.label[0].key), "bytes");
        sizes.push(smp.label[0].num);
        assert!(smp.location_id.iter().all(|id| locs.contains_key(id)));
        for l in &smp.location_id {
            for line in &locs[l].line {
                assert!(funcs.contains_key(&line.function_id));
            }
        }
        // Leaf first: the first location is in the allocating function.
        let leaf = locs[&smp.location_id[0]];
        let leaf_names: Vec<&str> = leaf
            .line
            .iter()
            .map(|l| s(funcs[&l.function_id].name))
            .collect();
        let want = if smp.label[0].num == 4096 {
            "profile_formats::request_handler"
        } else {
            "profile_formats::leaky_cache_insert"
        };
        assert_eq!(*leaf_names.last().unwrap(), want, "{leaf_names:?}");
        assert!(leaf.line.last().unwrap().line > 0);
        let fid = leaf.line.last().unwrap().function_id;
        assert!(s(funcs[&fid].filename).ends_with("profile_formats.rs"));
        assert!(
            s(funcs[&fid].system_name).starts_with("_R")
                || s(funcs[&fid].system_name).starts_with("_ZN")
        );
    }
    sizes.sort();
    sizes.dedup();
    assert_eq!(sizes, [64, 1024, 4096]);
    // Values are the estimates, in one age group here (the fixture's
    // blocks have no birth times: age 0, which holds the freed too).
    let v1k: Vec<_> = m.sample.iter().filter(|s| s.label[0].num == 1024).collect();
    assert_eq!(v1k.len(), 1);
    assert_eq!(v1k[0].label[1].num, 0);
    let (ao, asp) = go_scale(10, 1024, KIB512);
    let (io, isp) = go_scale(8, 1024, KIB512);
    assert_eq!(v1k[0].value, [ao as i64, asp as i64, io as i64, isp as i64]);

    let allocs = gunzip_decode(&f.profile.to_pprof(PprofKind::Allocs));
    assert_eq!(
        allocs.string_table[allocs.default_sample_type as usize],
        "alloc_space"
    );
}

/// Runs `go tool pprof` with `args` on a file, or explains why not.
fn go_pprof(args: &[&str], file: &std::path::Path) -> Option<String> {
    let require = std::env::var("ALLOCSCOPE_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    let out = Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        .env("PPROF_TMPDIR", env!("CARGO_TARGET_TMPDIR"))
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => panic!(
            "go tool pprof {args:?} failed: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if !require => {
            eprintln!(
                "SKIPPED: `go` not runnable ({e}); install Go to check profiles with go tool pprof \
                 (set ALLOCSCOPE_REQUIRE_TOOLS=1 to make this a failure)"
            );
            None
        }
        Err(e) => panic!("ALLOCSCOPE_REQUIRE_TOOLS=1 but `go` is not runnable: {e}"),
    }
}

#[test]
fn go_tool_pprof_reads_the_profile_without_the_binary() {
    let f = fixture();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("allocscope-heap.pb.gz");
    std::fs::write(&path, f.profile.to_pprof(PprofKind::Heap)).unwrap();
    let Some(top) = go_pprof(&["-top", "-sample_index=inuse_space"], &path) else {
        return;
    };
    assert!(top.contains("leaky_cache_insert"), "{top}");
    assert!(
        !top.contains("request_handler"),
        "freed objects in inuse view: {top}"
    );
    let top = go_pprof(&["-top", "-sample_index=alloc_objects"], &path).unwrap();
    assert!(
        top.contains("request_handler") && top.contains("leaky_cache_insert"),
        "{top}"
    );
    // Go's legacy parser reads the debug=1 text and scales it the same way.
    let text = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("allocscope-heap.txt");
    std::fs::write(&text, f.profile.to_text(PprofKind::Heap)).unwrap();
    let raw = go_pprof(&["-raw", "-sample_index=inuse_space"], &text).unwrap();
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains(&format!("Period: {KIB512}")), "{raw}");
    // Go's scaling of our sampled counts gives our estimates (for the
    // buckets sampled at the header's interval).
    let raw_values: Vec<Vec<u64>> = raw
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(v, _)| {
            let v: Vec<u64> = v
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (v.len() == 4).then_some(v)
        })
        .collect();
    assert_eq!(raw_values.len(), 3, "{raw}");
    for b in f.profile.buckets().iter().filter(|b| b.size() != 4096) {
        let want: Vec<u64> = SampleType::ALL.iter().map(|t| b.estimate(*t)).collect();
        assert!(raw_values.contains(&want), "{want:?} not in {raw}");
    }
}

/// Parses one `a: b [c: d] @ 0x..` record line.
fn parse_record(line: &str) -> ([u64; 4], Vec<usize>) {
    let (counts, addrs) = line.split_once(" @").expect("@");
    let nums: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 4, "{line}");
    let addrs = addrs
        .split_whitespace()
        .map(|a| usize::from_str_radix(a.strip_prefix("0x").expect("0x"), 16).unwrap())
        .collect();
    ([nums[0], nums[1], nums[2], nums[3]], addrs)
}

#[test]
fn debug1_text_parses_and_scales_like_go() {
    let f = fixture();
    let t = f.profile.to_text(PprofKind::Heap);
    let mut lines = t.lines();
    let header = lines.next().unwrap();
    assert_eq!(
        header,
        format!("heap profile: 11: 8384 [113: 420032] @ heap/{}", 2 * KIB512)
    );
    let mut records = Vec::new();
    let mut comments: Vec<&str> = Vec::new();
    for l in lines {
        if l.starts_with('#') {
            comments.push(l);
        } else if !l.is_empty() {
            records.push(parse_record(l));
        }
    }
    assert_eq!(records.len(), 3);
    // Most in-use bytes first, the stacks' own (trimmed) addresses.
    assert_eq!(records[0].0, [8, 8192, 10, 10240]);
    let nonzero = |s: &[usize]| s.iter().copied().filter(|a| *a != 0).collect::<Vec<_>>();
    assert_eq!(records[0].1, nonzero(&f.leak));
    assert_eq!(records[1].0, [3, 192, 3, 192]);
    assert_eq!(records[2].0, [0, 0, 100, 409_600]);
    assert_eq!(records[2].1, nonzero(&f.handler));
    // Scaled with the header's interval, the counts give the estimates.
    let (_, isp) = go_scale(8, 8192 / 8, KIB512);
    assert_eq!(f.profile.buckets()[0].estimate(SampleType::InuseSpace), isp);
    // Comments: `#\t0x..\tname+0x..\tfile:line`.
    let c = comments
        .iter()
        .find(|c| c.contains("profile_formats::leaky_cache_insert"))
        .expect("leak frame comment");
    let parts: Vec<&str> = c.split('\t').collect();
    assert_eq!(parts.len(), 4, "{c}");
    assert_eq!(parts[0], "#");
    assert!(parts[1].starts_with("0x"));
    assert!(
        parts[2].starts_with("profile_formats::leaky_cache_insert+0x"),
        "{c}"
    );
    assert!(parts[3].contains("profile_formats.rs:"), "{c}");
}

fn svg(render: impl FnOnce(&mut Vec<u8>) -> Result<(), allocscope::Error>) -> String {
    let mut out = Vec::new();
    render(&mut out).expect("render");
    let s = String::from_utf8(out).expect("utf-8");
    assert!(s.starts_with("<?xml"), "{}", &s[..s.len().min(200)]);
    assert!(s.trim_end().ends_with("</svg>"));
    s
}

#[test]
fn flamegraph_has_title_names_and_search() {
    let f = fixture();
    let s = svg(|w| {
        f.profile
            .flamegraph(SampleType::InuseSpace, &FlamegraphOptions::default(), w)
    });
    assert!(s.contains("Heap in use (bytes), sampled every 512 KiB"));
    assert!(s.contains("profile_formats::leaky_cache_insert"));
    assert!(s.contains("profile_formats::outer_caller"));
    assert!(
        s.contains("function search("),
        "inferno's search script missing"
    );
    assert!(s.contains("bytes"));
    let s = svg(|w| {
        f.profile.flamegraph(
            SampleType::AllocObjects,
            &FlamegraphOptions::default().title("Allocs").reverse(true),
            w,
        )
    });
    assert!(s.contains("Allocs") && s.contains("objects"));
    assert!(s.contains("profile_formats::request_handler"));
}

#[test]
fn diff_shows_only_the_grown_stack() {
    let leak = outer_caller();
    let handler = request_handler();
    let base = allocscope::test_util::profile_from_raw(
        vec![
            raw(&leak, 1024, KIB512, 10, 0),
            raw(&handler, 4096, 4096, 100, 50),
        ],
        KIB512,
    );
    let now = allocscope::test_util::profile_from_raw(
        vec![
            raw(&leak, 1024, KIB512, 30, 0),
            raw(&handler, 4096, 4096, 200, 150),
        ],
        KIB512,
    );
    let d = now.diff(&base);
    let t = SampleType::InuseSpace;
    let growth = d.growth_folded(t);
    assert_eq!(growth.lines().count(), 1, "{growth}");
    let line = line_for(&growth, "leaky_cache_insert").expect("leak grew");
    assert_eq!(
        value(line),
        go_scale(30, 1024, KIB512).1 - go_scale(10, 1024, KIB512).1
    );
    let diff = d.folded(t);
    let h = line_for(&diff, "request_handler").unwrap();
    let nums: Vec<u64> = h
        .rsplitn(3, ' ')
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(nums[0], nums[1], "handler unchanged: {h}");
    let s = svg(|w| d.flamegraph(t, &FlamegraphOptions::default(), w));
    assert!(
        s.contains("What grew since the baseline: Heap in use (bytes)"),
        "title"
    );
    assert!(s.contains("profile_formats::leaky_cache_insert"));
    assert!(s.contains("function search("));
}

#[test]
fn empty_profile_renders_everywhere() {
    let p = allocscope::test_util::profile_from_raw(vec![], KIB512);
    assert!(p.is_empty());
    assert_eq!(p.interval(), KIB512);
    let s = svg(|w| p.flamegraph(SampleType::InuseSpace, &FlamegraphOptions::default(), w));
    assert!(s.contains("no samples yet"));
    assert!(s.contains("Heap in use (bytes), sampled every 512 KiB"));
    let m = gunzip_decode(&p.to_pprof(PprofKind::Heap));
    assert!(m.sample.is_empty());
    assert_eq!(m.sample_type.len(), 4);
    assert_eq!(p.folded(SampleType::AllocSpace), "");
    assert!(p
        .to_text(PprofKind::Allocs)
        .starts_with("heap profile: 0: 0 [0: 0] @ heap/1048576\n"));
    let d = p.diff(&p);
    assert_eq!(d.folded(SampleType::InuseSpace), "");
    svg(|w| d.flamegraph(SampleType::InuseSpace, &FlamegraphOptions::default(), w));
    assert!(allocscope::profile::symbol_cache_len() <= allocscope::profile::SYMBOL_CACHE_CAPACITY);
}

#[test]
fn inlined_frames_are_expanded_in_call_order() {
    let stack = inline_host();
    let p = allocscope::test_util::profile_from_raw(vec![raw(&stack, 16, 1, 1, 0)], 1);
    let frames = p.buckets()[0].frames();
    // Leaf first: the inlined helper, then the function it was inlined into,
    // both at the same return address.
    assert!(
        frames[0].name().ends_with("inlined_helper"),
        "{:?}",
        &frames[..3]
    );
    assert!(frames[0].is_inlined());
    assert_eq!(frames[1].name(), "profile_formats::inline_host");
    assert!(!frames[1].is_inlined());
    assert_eq!(frames[0].address(), frames[1].address());
    let folded = p.folded(SampleType::InuseSpace);
    assert!(
        folded
            .trim_end()
            .ends_with(";profile_formats::inline_host;profile_formats::inlined_helper 16")
            || folded
                .trim_end()
                .ends_with(";profile_formats::inline_host;inlined_helper 16"),
        "{folded}"
    );
    // pprof: one location, two lines, innermost first.
    let m = gunzip_decode(&p.to_pprof(PprofKind::Heap));
    let leaf = &m.location[(m.sample[0].location_id[0] - 1) as usize];
    let names: Vec<&str> = leaf
        .line
        .iter()
        .map(|l| m.string_table[m.function[(l.function_id - 1) as usize].name as usize].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].ends_with("inlined_helper") && names[1] == "profile_formats::inline_host");
}

#[test]
fn names_alone_are_the_same_names_without_files_or_lines() {
    use allocscope::profile::Symbols;
    let leak = outer_caller();
    let inl = inline_host();
    let raws = || vec![raw(&leak, 1024, KIB512, 10, 2), raw(&inl, 16, 1, 1, 0)];
    let names = allocscope::test_util::profile_from_raw_with(raws(), KIB512, Symbols::Names);
    let lines = allocscope::test_util::profile_from_raw_with(raws(), KIB512, Symbols::Lines);
    assert_eq!(
        (names.symbols(), lines.symbols()),
        (Symbols::Names, Symbols::Lines)
    );
    // the same stacks, frame for frame, inlined frames included
    assert_eq!(
        names.folded(SampleType::InuseSpace),
        lines.folded(SampleType::InuseSpace)
    );
    for (n, l) in names.buckets().iter().zip(lines.buckets()) {
        let nn: Vec<(&str, bool)> = n
            .frames()
            .iter()
            .map(|f| (f.name(), f.is_inlined()))
            .collect();
        let ll: Vec<(&str, bool)> = l
            .frames()
            .iter()
            .map(|f| (f.name(), f.is_inlined()))
            .collect();
        assert_eq!(nn, ll);
        assert!(n
            .frames()
            .iter()
            .all(|f| f.file().is_none() && f.line().is_none()));
        assert!(l.frames()[0]
            .file()
            .is_some_and(|f| f.ends_with("profile_formats.rs")));
    }
    let inlined = names.buckets().iter().find(|b| b.size() == 16).unwrap();
    assert!(inlined.frames()[0].name().ends_with("inlined_helper"));
    assert!(inlined.frames()[0].is_inlined());
    assert_eq!(inlined.frames()[1].name(), "profile_formats::inline_host");
    // pprof: names and linked names, no files or lines
    let m = gunzip_decode(&names.to_pprof(PprofKind::Heap));
    let s = |i: i64| m.string_table[usize::try_from(i).unwrap()].as_str();
    assert!(m
        .function
        .iter()
        .any(|f| s(f.name) == "profile_formats::leaky_cache_insert"
            && (s(f.system_name).starts_with("_R") || s(f.system_name).starts_with("_ZN"))));
    assert!(m.function.iter().all(|f| s(f.filename).is_empty()));
    assert!(m.location.iter().flat_map(|l| &l.line).all(|l| l.line == 0));
    // with lines, the flamegraph draws a frame per call site
    let svg = svg(|w| lines.flamegraph(SampleType::InuseSpace, &FlamegraphOptions::default(), w));
    assert!(
        svg.contains("profile_formats::leaky_cache_insert profile_formats.rs:")
            || svg.contains("profile_formats::leaky_cache_insert /"),
        "no file:line in the frames"
    );
    assert!(svg.contains("profile_formats.rs:"));
    let svg = svg_names(&names);
    assert!(!svg.contains("profile_formats.rs:"));
}

fn svg_names(p: &HeapProfile) -> String {
    svg(|w| p.flamegraph(SampleType::InuseSpace, &FlamegraphOptions::default(), w))
}
