//! Body of the `pprof` fuzz target (also run by `tests/fuzz_replay.rs`): a
//! profile built from arbitrary raw samples encodes to gzipped protobuf
//! that decodes (`pprof::protos::Profile`, prost) to the profile's sample
//! types, values, object sizes and period.
use std::io::Read;

use allocscope::profile::{PprofKind, SampleType};
use allocscope::test_util::{profile_from_raw, RawSample};
use pprof::protos::{Message, Profile};

/// Input: byte 0 chooses the current interval and the kind, then 12 bytes
/// per raw sample: stack length and 3 frame bytes (small, unresolvable
/// addresses, so nothing is read from debug info), 4 bytes of size, an
/// interval shift, 2 bytes of sampled allocations, and the freed share.
pub fn run(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let current_interval = 1u64 << (head % 32);
    let kind = if head & 0x80 == 0 {
        PprofKind::Heap
    } else {
        PprofKind::Allocs
    };
    let raw: Vec<RawSample> = rest
        .chunks_exact(12)
        .map(|c| {
            let depth = usize::from(c[0] % 4);
            let stack = c[1..1 + depth]
                .iter()
                .map(|&b| 0x1000 + usize::from(b) * 8)
                .collect();
            let size = u64::from(u32::from_le_bytes([c[4], c[5], c[6], c[7]])) << (c[0] >> 4);
            let allocs = u64::from(u16::from_le_bytes([c[9], c[10]]));
            RawSample {
                stack,
                size,
                interval: 1u64 << (c[8] % 40),
                allocs,
                frees: u64::from(c[11]) * allocs / 255,
            }
        })
        .collect();
    let profile = profile_from_raw(raw, current_interval);

    let gz = profile.to_pprof(kind);
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut bytes)
        .expect("to_pprof output is gzip");
    let decoded = Profile::decode(bytes.as_slice()).expect("to_pprof output is a pprof Profile");
    let s = |i: i64| -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| decoded.string_table.get(i))
            .map(String::as_str)
            .expect("string index in range")
    };
    assert_eq!(decoded.string_table.first().map(String::as_str), Some(""));

    let types: Vec<(&str, &str)> = decoded
        .sample_type
        .iter()
        .map(|t| (s(t.ty), s(t.unit)))
        .collect();
    let want: Vec<(&str, &str)> = SampleType::ALL
        .iter()
        .map(|t| (t.name(), t.unit()))
        .collect();
    assert_eq!(types, want);
    assert_eq!(
        s(decoded.default_sample_type),
        kind.default_sample_type().name()
    );
    let period = decoded.period_type.as_ref().expect("period type");
    assert_eq!((s(period.ty), s(period.unit)), ("space", "bytes"));
    assert_eq!(decoded.period, i64::try_from(current_interval).unwrap());

    // Every sample: its numeric labels (`bytes`, `age`) first, then the
    // string labels `scope` and `thread`, in that order. The checks below
    // look at the numeric ones.
    let nums = |smp: &pprof::protos::Sample| -> Vec<pprof::protos::Label> {
        let n = smp.label.len();
        assert!(n >= 2, "scope and thread labels");
        assert_eq!(s(smp.label[n - 2].key), "scope");
        assert_eq!(s(smp.label[n - 1].key), "thread");
        for l in &smp.label[n - 2..] {
            assert!(l.str != 0 && l.num == 0 && l.num_unit == 0);
            assert!(!s(l.str).is_empty());
        }
        assert!(smp.label[..n - 2].iter().all(|l| l.str == 0));
        smp.label[..n - 2].to_vec()
    };
    // Per bucket with a non-zero value, in bucket order: one sample when
    // nothing is in use; else one sample per age group (labelled `age`, in
    // seconds, alloc values = in-use values but for the freed, which go
    // with an age-0 group, the last, or else in one more sample without an
    // age), adding up to the bucket's values.
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let buckets: Vec<_> = profile
        .buckets()
        .iter()
        .filter(|b| SampleType::ALL.iter().any(|t| b.estimate(*t) != 0))
        .collect();
    let mut samples = decoded.sample.iter().peekable();
    for b in &buckets {
        let values: Vec<i64> = SampleType::ALL
            .iter()
            .map(|t| to_i64(b.estimate(*t)))
            .collect();
        let size_label: Vec<(&str, i64)> = if b.size() == 0 {
            Vec::new()
        } else {
            vec![("bytes", to_i64(b.size()))]
        };
        // its scope and thread, on each of its samples
        let names = |smp: &pprof::protos::Sample| -> Vec<(String, String)> {
            smp.label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (s(l.key).to_string(), s(l.str).to_string()))
                .collect()
        };
        let want_names = vec![
            ("scope".to_string(), b.scope().to_string()),
            ("thread".to_string(), b.thread().to_string()),
        ];
        let mut mine = Vec::new();
        if values[2] == 0 && values[3] == 0 {
            mine.push(samples.next().expect("a sample per bucket"));
        } else {
            // this bucket's age groups: labelled `age`, with its object
            // size and its stack (the next bucket's groups follow at once)
            let ours = |smp: &&pprof::protos::Sample, first: Option<&&pprof::protos::Sample>| {
                let numeric = nums(smp);
                numeric.iter().any(|l| s(l.key) == "age")
                    && names(smp) == want_names
                    && numeric
                        .iter()
                        .filter(|l| s(l.key) == "bytes")
                        .map(|l| (s(l.key), l.num))
                        .eq(size_label.iter().copied())
                    && first.is_none_or(|f| f.location_id == smp.location_id)
            };
            while let Some(smp) = samples.next_if(|smp| ours(smp, mine.first())) {
                let numeric = nums(smp);
                let age = numeric.last().expect("age label");
                assert_eq!((s(age.key), s(age.num_unit)), ("age", "seconds"));
                assert!(age.num >= 0);
                if age.num == 0 {
                    assert!(smp.value[0] >= smp.value[2] && smp.value[1] >= smp.value[3]);
                } else {
                    assert_eq!(smp.value[0..2], smp.value[2..4]);
                }
                let rest: Vec<(&str, i64)> = numeric[..numeric.len() - 1]
                    .iter()
                    .map(|l| (s(l.key), l.num))
                    .collect();
                assert_eq!(rest, size_label);
                mine.push(smp);
            }
            assert!(!mine.is_empty(), "in-use values have an age group");
            let alloc: Vec<i128> = (0..2)
                .map(|i| mine.iter().map(|m| i128::from(m.value[i])).sum())
                .collect();
            let saturated =
                values.contains(&i64::MAX) || mine.iter().any(|m| m.value.contains(&i64::MAX));
            if !saturated && (i128::from(values[0]) > alloc[0] || i128::from(values[1]) > alloc[1])
            {
                let freed = samples.next().expect("the freed sample");
                assert_eq!(freed.value[2..4], [0, 0]);
                mine.push(freed);
            }
        }
        for smp in &mine {
            assert_eq!(smp.location_id, mine[0].location_id);
            assert_eq!(names(smp), want_names);
        }
        let last = mine.last().expect("samples");
        let last_nums = nums(last);
        if !last_nums.iter().any(|l| s(l.key) == "age") {
            let sizes: Vec<(&str, i64)> = last_nums.iter().map(|l| (s(l.key), l.num)).collect();
            assert_eq!(sizes, size_label);
        }
        if values.iter().all(|v| *v < i64::MAX) {
            for (i, v) in values.iter().enumerate() {
                let sum: i128 = mine.iter().map(|m| i128::from(m.value[i])).sum();
                assert_eq!(sum, i128::from(*v), "value {i} of {values:?}");
            }
        }
        for sample in &mine {
            for id in &sample.location_id {
                let loc = decoded
                    .location
                    .iter()
                    .find(|l| l.id == *id)
                    .expect("sample location exists");
                for line in &loc.line {
                    assert!(decoded.function.iter().any(|f| f.id == line.function_id));
                }
            }
        }
    }
    assert!(samples.next().is_none(), "no sample past the buckets'");
    for (t, i) in SampleType::ALL.iter().zip(0..) {
        let sum = decoded
            .sample
            .iter()
            .fold(0i64, |a, smp| a.saturating_add(smp.value[i]));
        let total = to_i64(profile.total(*t));
        // Equal unless some value saturated at i64::MAX.
        if total < i64::MAX && sum < i64::MAX {
            assert_eq!(sum, total, "{t:?}");
        }
    }
}
