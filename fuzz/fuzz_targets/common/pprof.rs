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

    // One sample per bucket with a non-zero value, in bucket order.
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let buckets: Vec<_> = profile
        .buckets()
        .iter()
        .filter(|b| SampleType::ALL.iter().any(|t| b.estimate(*t) != 0))
        .collect();
    assert_eq!(decoded.sample.len(), buckets.len());
    for (sample, b) in decoded.sample.iter().zip(&buckets) {
        let values: Vec<i64> = SampleType::ALL
            .iter()
            .map(|t| to_i64(b.estimate(*t)))
            .collect();
        assert_eq!(sample.value, values);
        let sizes: Vec<(&str, i64)> = sample.label.iter().map(|l| (s(l.key), l.num)).collect();
        if b.size() == 0 {
            assert!(sizes.is_empty());
        } else {
            assert_eq!(sizes, [("bytes", to_i64(b.size()))]);
        }
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
