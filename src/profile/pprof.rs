//! pprof protobuf export, laid out exactly as Go's `runtime/pprof` writes a
//! heap profile, so `go tool pprof`, Pyroscope and Parca read it like a Go
//! service's `/debug/pprof/heap` or `/debug/pprof/allocs`.
//!
//! The profile is fully symbolised (functions, files, lines, inlined
//! frames) and has no mappings, so `go tool pprof` needs neither the binary
//! nor a `/debug/pprof/symbol` endpoint.

use std::collections::HashMap;
use std::io::Write;
use std::time::UNIX_EPOCH;

use pprof::protos::{Function, Label, Line, Location, Message, Profile, Sample, ValueType};

use super::{HeapProfile, PprofKind, SampleType};

/// Interns strings (borrowed from the profile while it is built); index 0
/// is always `""`.
struct Strings<'a> {
    table: Vec<String>,
    index: HashMap<&'a str, i64>,
}

impl<'a> Strings<'a> {
    fn new() -> Self {
        let mut s = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.id("");
        s
    }

    fn id(&mut self, s: &'a str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s, i);
        i
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl HeapProfile {
    /// The profile as a gzip-compressed pprof protobuf, as Go writes heap
    /// profiles: sample types `alloc_objects/count`, `alloc_space/bytes`,
    /// `inuse_objects/count`, `inuse_space/bytes` (estimates, see the
    /// module docs), period type `space/bytes`, period = the current
    /// sampling interval, a numeric label `bytes` = object size on each
    /// sample, and `default_sample_type` `inuse_space` ([`PprofKind::Heap`])
    /// or `alloc_space` ([`PprofKind::Allocs`]).
    ///
    /// **Scopes and threads.** Every sample carries two string labels:
    /// `scope` ([`Bucket::scope`](super::Bucket::scope)) and `thread` (the
    /// thread group, [`Bucket::thread`](super::Bucket::thread)), so that
    /// `go tool pprof -tags` lists them and `-tagfocus scope=checkout`,
    /// Pyroscope and Parca split by them. A sample's labels are `bytes`,
    /// then `age` (below) when it has one, then `scope` and `thread`.
    ///
    /// **Ages.** A bucket's in-use values are split into age groups
    /// (log-scale classes of its live samples' ages, at most one per
    /// doubling): one sample per group, with a numeric label `age` (unit
    /// `seconds`) = the youngest age in the group, rounded down, so that
    /// `go tool pprof -tagfocus age=…` never admits a younger block. A
    /// group's `alloc_*` values equal its `inuse_*` ones, but for what the
    /// bucket allocated and freed: that goes with the age-0 group (blocks
    /// under a second old) when there is one, else in one more sample
    /// without an `age` label and with zero in-use values. Totals are those
    /// of the profile.
    ///
    /// Locations carry the return address minus one (inside the call
    /// instruction) and one line per inlined frame, innermost first.
    pub fn to_pprof(&self, kind: PprofKind) -> Vec<u8> {
        gzip_message(&self.to_pprof_message(kind))
    }

    /// The difference between this profile and an `earlier` one, as Go's
    /// `net/http/pprof` serves `/debug/pprof/heap?seconds=N`: gzipped
    /// pprof, read by `go tool pprof` like any heap profile.
    ///
    /// Computed as Go computes it (`serveDeltaProfile`): both profiles as
    /// exported ([`to_pprof`](Self::to_pprof): each scaled on its own), the
    /// earlier one's values negated and the two merged, samples with the
    /// same locations and labels adding up (`profile.Merge`). All four
    /// values are differences, `inuse_*` included (negative where the
    /// heap shrank); samples that come to zero in all four are left out,
    /// so a stack that neither allocated nor freed in between is absent.
    /// The profile's time is this one's, its duration the time between the
    /// two, its period the larger. One departure: a label named `age`
    /// (the age of in-use samples, meaningless for a difference) is
    /// dropped before merging, so that an unchanged stack cancels out.
    /// The `scope` and `thread` labels stay: a stack's samples in two
    /// scopes are two samples of the delta.
    ///
    /// Both profiles should be captured with the same [`Frames`](super::Frames)
    /// and [`Symbols`](super::Symbols); stacks are matched by their
    /// symbolised frames and return addresses.
    ///
    /// ```
    /// # #[cfg(feature = "profile")] {
    /// use allocscope::profile::{HeapProfile, PprofKind};
    /// let before = HeapProfile::capture();
    /// let kept = vec![0u8; 1 << 20]; // allocated in the window
    /// let delta = HeapProfile::capture().delta_pprof(&before, PprofKind::Allocs);
    /// # let _ = (kept, delta);
    /// # }
    /// ```
    pub fn delta_pprof(&self, earlier: &HeapProfile, kind: PprofKind) -> Vec<u8> {
        gzip_message(&delta_message(
            &earlier.to_pprof_message(kind),
            &self.to_pprof_message(kind),
        ))
    }
}

/// `message` encoded and gzipped, as Go writes its profiles.
fn gzip_message(message: &Profile) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    // Go's runtime/pprof compresses its profiles at BestSpeed too.
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    match gz.write_all(&bytes).and_then(|()| gz.finish()) {
        Ok(out) => out,
        Err(e) => {
            // Cannot happen when writing to memory; pprof also reads
            // uncompressed protobuf, so degrade rather than fail.
            log::warn!("allocscope: gzip of a heap profile failed ({e}); serving it uncompressed");
            bytes
        }
    }
}

impl HeapProfile {
    /// The decoded pprof message (see [`to_pprof`](Self::to_pprof)).
    pub(crate) fn to_pprof_message(&self, kind: PprofKind) -> Profile {
        let mut st = Strings::new();
        let sample_type = SampleType::ALL
            .iter()
            .map(|t| ValueType {
                ty: st.id(t.name()),
                unit: st.id(t.unit()),
            })
            .collect();
        let period_type = Some(ValueType {
            ty: st.id("space"),
            unit: st.id("bytes"),
        });
        let bytes_key = st.id("bytes");
        let age_key = st.id("age");
        let seconds_unit = st.id("seconds");
        let scope_key = st.id("scope");
        let thread_key = st.id("thread");

        let mut functions: Vec<Function> = Vec::new();
        let mut function_ids: HashMap<(i64, i64, i64), u64> = HashMap::new();
        let mut locations: Vec<Location> = Vec::new();
        let mut location_ids: HashMap<(usize, Vec<(u64, i64)>), u64> = HashMap::new();
        // Buckets share their locations (the symbol cache's): each is
        // worked out once.
        let mut by_location: HashMap<*const super::Location, u64> = HashMap::new();
        let mut samples = Vec::with_capacity(self.buckets.len());

        for b in &self.buckets {
            let values: Vec<i64> = SampleType::ALL
                .iter()
                .map(|t| to_i64(b.estimate(*t)))
                .collect();
            if values.iter().all(|v| *v == 0) {
                continue;
            }
            let mut location_id = Vec::with_capacity(b.locations.len());
            for loc in b.locations.iter() {
                if let Some(&id) = by_location.get(&std::sync::Arc::as_ptr(loc)) {
                    location_id.push(id);
                    continue;
                }
                let lines: Vec<(u64, i64)> = loc
                    .frames
                    .iter()
                    .map(|f| {
                        let name = st.id(f.name());
                        let system = st.id(f.system_name().unwrap_or(f.name()));
                        let file = st.id(f.file().unwrap_or(""));
                        let next = functions.len() as u64 + 1;
                        let id = *function_ids.entry((name, system, file)).or_insert_with(|| {
                            functions.push(Function {
                                id: next,
                                name,
                                system_name: system,
                                filename: file,
                                start_line: 0,
                            });
                            next
                        });
                        (id, i64::from(f.line().unwrap_or(0)))
                    })
                    .collect();
                let next = locations.len() as u64 + 1;
                let address = loc.address;
                let id = *location_ids
                    .entry((address, lines))
                    .or_insert_with_key(|(_, lines)| {
                        locations.push(Location {
                            id: next,
                            mapping_id: 0,
                            address: address.saturating_sub(1) as u64,
                            line: lines
                                .iter()
                                .map(|&(function_id, line)| Line { function_id, line })
                                .collect(),
                            is_folded: false,
                        });
                        next
                    });
                by_location.insert(std::sync::Arc::as_ptr(loc), id);
                location_id.push(id);
            }
            let label = if b.size != 0 {
                vec![Label {
                    key: bytes_key,
                    str: 0,
                    num: to_i64(b.size),
                    num_unit: 0,
                }]
            } else {
                Vec::new()
            };
            // `scope` and `thread` come last, after `age` when there is one
            let names = [
                Label {
                    key: scope_key,
                    str: st.id(&b.scope),
                    num: 0,
                    num_unit: 0,
                },
                Label {
                    key: thread_key,
                    str: st.id(&b.thread),
                    num: 0,
                    num_unit: 0,
                },
            ];
            // In-use values split by age: one sample per age group, its
            // alloc values equal to its in-use ones (live blocks were
            // allocated too), labelled `age` (seconds, the group's
            // youngest, rounded down). What was allocated and freed goes
            // with the age-0 group (the youngest, when there is one: no
            // more samples than groups), else in one more sample without
            // an age.
            let groups = b.age_groups();
            let (mut freed_objects, mut freed_bytes) = (
                b.estimate(SampleType::AllocObjects),
                b.estimate(SampleType::AllocSpace),
            );
            for g in &groups {
                freed_objects = freed_objects.saturating_sub(g.objects);
                freed_bytes = freed_bytes.saturating_sub(g.bytes);
            }
            let n = groups.len();
            for (i, g) in groups.iter().enumerate() {
                let mut label = label.clone();
                label.push(Label {
                    key: age_key,
                    str: 0,
                    num: to_i64(g.age_seconds),
                    num_unit: seconds_unit,
                });
                label.extend_from_slice(&names);
                let (mut ao, mut asp) = (g.objects, g.bytes);
                // (the groups are oldest first: the youngest is the last)
                if i + 1 == n && g.age_seconds == 0 {
                    ao = ao.saturating_add(std::mem::take(&mut freed_objects));
                    asp = asp.saturating_add(std::mem::take(&mut freed_bytes));
                }
                samples.push(Sample {
                    location_id: location_id.clone(),
                    value: vec![to_i64(ao), to_i64(asp), to_i64(g.objects), to_i64(g.bytes)],
                    label,
                });
            }
            let mut label = label;
            label.extend_from_slice(&names);
            if groups.is_empty() {
                samples.push(Sample {
                    location_id,
                    value: values,
                    label,
                });
            } else if freed_objects > 0 || freed_bytes > 0 {
                samples.push(Sample {
                    location_id,
                    value: vec![to_i64(freed_objects), to_i64(freed_bytes), 0, 0],
                    label,
                });
            }
        }

        let time_nanos = self
            .captured_at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let default_sample_type = st.id(kind.default_sample_type().name());
        Profile {
            sample_type,
            sample: samples,
            mapping: Vec::new(),
            location: locations,
            function: functions,
            string_table: st.table,
            drop_frames: 0,
            keep_frames: 0,
            time_nanos,
            duration_nanos: 0,
            period_type,
            period: to_i64(self.interval),
            comment: Vec::new(),
            default_sample_type,
        }
    }
}

/// A label a delta profile drops (see [`HeapProfile::delta_pprof`]).
const DELTA_DROPPED_LABEL: &str = "age";

/// Go's delta: `after` minus `before`, merged as `profile.Merge` merges
/// (`before` scaled by -1 first): samples keyed by their locations (by
/// address and lines: function name, system name, file, start line, line)
/// and labels, values added, all-zero samples left out.
pub(crate) fn delta_message(before: &Profile, after: &Profile) -> Profile {
    /// What identifies a location across two profiles.
    type LocKey = (u64, bool, Vec<(i64, i64)>);
    /// What identifies a sample: its locations and its labels (key, str,
    /// num, unit as indexes of the merged string table).
    type SampleKey = (Vec<u64>, Vec<(i64, i64, i64, i64)>);
    struct Merge<'a> {
        st: Strings<'a>,
        functions: Vec<Function>,
        function_ids: HashMap<(i64, i64, i64, i64), u64>,
        locations: Vec<Location>,
        location_ids: HashMap<LocKey, u64>,
        samples: Vec<Sample>,
        sample_ids: HashMap<SampleKey, usize>,
    }
    impl<'a> Merge<'a> {
        fn add(&mut self, p: &'a Profile, sign: i64) {
            let s = |i: i64| -> &'a str {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| p.string_table.get(i))
                    .map_or("", String::as_str)
            };
            let function_by_id: HashMap<u64, &Function> =
                p.function.iter().map(|f| (f.id, f)).collect();
            let location_by_id: HashMap<u64, &Location> =
                p.location.iter().map(|l| (l.id, l)).collect();
            let mut mapped: HashMap<u64, u64> = HashMap::new();
            for smp in &p.sample {
                let mut location_id = Vec::with_capacity(smp.location_id.len());
                for id in &smp.location_id {
                    if let Some(&m) = mapped.get(id) {
                        location_id.push(m);
                        continue;
                    }
                    let Some(loc) = location_by_id.get(id) else {
                        continue;
                    };
                    let lines: Vec<(u64, i64)> = loc
                        .line
                        .iter()
                        .filter_map(|l| {
                            let f = function_by_id.get(&l.function_id)?;
                            let key = (
                                self.st.id(s(f.name)),
                                self.st.id(s(f.system_name)),
                                self.st.id(s(f.filename)),
                                f.start_line,
                            );
                            let next = self.functions.len() as u64 + 1;
                            let fid = *self.function_ids.entry(key).or_insert_with(|| {
                                self.functions.push(Function {
                                    id: next,
                                    name: key.0,
                                    system_name: key.1,
                                    filename: key.2,
                                    start_line: key.3,
                                });
                                next
                            });
                            Some((fid, l.line))
                        })
                        .collect();
                    let key: LocKey = (
                        loc.address,
                        loc.is_folded,
                        lines.iter().map(|&(f, l)| (f as i64, l)).collect(),
                    );
                    let next = self.locations.len() as u64 + 1;
                    let lid = *self.location_ids.entry(key).or_insert_with(|| {
                        self.locations.push(Location {
                            id: next,
                            mapping_id: 0,
                            address: loc.address,
                            line: lines
                                .iter()
                                .map(|&(function_id, line)| Line { function_id, line })
                                .collect(),
                            is_folded: loc.is_folded,
                        });
                        next
                    });
                    mapped.insert(*id, lid);
                    location_id.push(lid);
                }
                let label: Vec<Label> = smp
                    .label
                    .iter()
                    .filter(|l| s(l.key) != DELTA_DROPPED_LABEL)
                    .map(|l| Label {
                        key: self.st.id(s(l.key)),
                        str: self.st.id(s(l.str)),
                        num: l.num,
                        num_unit: self.st.id(s(l.num_unit)),
                    })
                    .collect();
                let key: SampleKey = (
                    location_id.clone(),
                    label
                        .iter()
                        .map(|l| (l.key, l.str, l.num, l.num_unit))
                        .collect(),
                );
                let i = *self.sample_ids.entry(key).or_insert_with(|| {
                    self.samples.push(Sample {
                        location_id,
                        value: vec![0; smp.value.len()],
                        label,
                    });
                    self.samples.len() - 1
                });
                let values = &mut self.samples[i].value;
                if values.len() < smp.value.len() {
                    values.resize(smp.value.len(), 0);
                }
                for (v, add) in values.iter_mut().zip(&smp.value) {
                    *v = v.saturating_add(add.saturating_mul(sign));
                }
            }
        }
    }

    let mut m = Merge {
        st: Strings::new(),
        functions: Vec::new(),
        function_ids: HashMap::new(),
        locations: Vec::new(),
        location_ids: HashMap::new(),
        samples: Vec::new(),
        sample_ids: HashMap::new(),
    };
    // The header is the newer profile's (Go's sample types are equal in
    // both; `combineHeaders` checks that).
    let s = |i: i64| -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| after.string_table.get(i))
            .map_or("", String::as_str)
    };
    let sample_type = after
        .sample_type
        .iter()
        .map(|v| ValueType {
            ty: m.st.id(s(v.ty)),
            unit: m.st.id(s(v.unit)),
        })
        .collect();
    let period_type = after.period_type.as_ref().map(|v| ValueType {
        ty: m.st.id(s(v.ty)),
        unit: m.st.id(s(v.unit)),
    });
    let default_sample_type = m.st.id(s(after.default_sample_type));
    m.add(before, -1);
    m.add(after, 1);
    let sample: Vec<Sample> = m
        .samples
        .into_iter()
        .filter(|smp| smp.value.iter().any(|v| *v != 0))
        .collect();
    // Locations and functions that only zero samples used are kept: pprof
    // ignores them, and Go's compaction would only renumber.
    Profile {
        sample_type,
        sample,
        mapping: Vec::new(),
        location: m.locations,
        function: m.functions,
        string_table: m.st.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: after.time_nanos,
        duration_nanos: after.time_nanos.saturating_sub(before.time_nanos).max(0),
        period_type,
        period: before.period.max(after.period),
        comment: Vec::new(),
        default_sample_type,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::synthetic;
    use super::*;
    use std::io::Read;

    pub(super) fn decode(gz: &[u8]) -> Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .expect("gzip");
        Profile::decode(raw.as_slice()).expect("protobuf")
    }

    #[test]
    fn layout_is_gos() {
        let p = synthetic(
            4096,
            &[
                (&["main", "app::run", "app::cache::insert"], 100, 3, 1),
                (&["main", "app::run", "app::cache::insert"], 50, 2, 0),
                (&["main", "app::tmp"], 10, 4, 4),
            ],
        );
        let m = decode(&p.to_pprof(PprofKind::Allocs));
        let s = |i: i64| m.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
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
        let pt = m.period_type.as_ref().unwrap();
        assert_eq!((s(pt.ty), s(pt.unit)), ("space", "bytes"));
        assert_eq!(m.period, 4096);
        assert_eq!(s(m.default_sample_type), "alloc_space");
        assert!(m.time_nanos > 0);
        // the first two buckets have blocks in use: an age group each (age
        // 0, the first one's freed block with it); the last, no age
        assert_eq!(m.sample.len(), 3);
        let per_bucket: Vec<&[Sample]> = vec![&m.sample[0..1], &m.sample[1..2], &m.sample[2..3]];
        for (smps, b) in per_bucket.into_iter().zip(p.buckets()) {
            let mut sum = [0i64; 4];
            for smp in smps {
                assert_eq!(smp.value.len(), 4);
                for (s, v) in sum.iter_mut().zip(&smp.value) {
                    *s += v;
                }
                let inuse = smp.value[2] > 0 || smp.value[3] > 0;
                assert_eq!(smp.label.len(), if inuse { 4 } else { 3 });
                // scope and thread last, as strings
                let names: Vec<(&str, &str, i64)> = smp.label[smp.label.len() - 2..]
                    .iter()
                    .map(|l| (s(l.key), s(l.str), l.num))
                    .collect();
                assert_eq!(names, [("scope", "unscoped", 0), ("thread", "main", 0)]);
                if inuse {
                    // an age group, labelled; age 0 holds the freed too
                    assert!(smp.value[0] >= smp.value[2] && smp.value[1] >= smp.value[3]);
                    assert_eq!(s(smp.label[1].key), "age");
                    assert_eq!(s(smp.label[1].num_unit), "seconds");
                    assert_eq!(smp.label[1].num, 0);
                }
                assert_eq!(smp.location_id, smps[0].location_id);
            }
            assert_eq!(sum, SampleType::ALL.map(|t| b.estimate(t) as i64));
            let smp = &smps[0];
            assert_eq!(s(smp.label[0].key), "bytes");
            assert_eq!(smp.label[0].num as u64, b.size());
            // leaf first
            let leaf = &m.location[(smp.location_id[0] - 1) as usize];
            let f = &m.function[(leaf.line[0].function_id - 1) as usize];
            assert_eq!(s(f.name), b.frames()[0].name());
            assert_eq!(s(f.filename), "src/synthetic.rs");
            assert_eq!(leaf.line[0].line, 7);
        }
        for (i, l) in m.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
        }
        for (i, f) in m.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
        }
        // Each function and string once.
        assert_eq!(m.function.len(), 4);
        let mut t = m.string_table.clone();
        t.sort();
        t.dedup();
        assert_eq!(t.len(), m.string_table.len());
        assert!(m.mapping.is_empty());

        let h = decode(&p.to_pprof(PprofKind::Heap));
        assert_eq!(
            h.string_table[h.default_sample_type as usize],
            "inuse_space"
        );
    }
}

#[cfg(test)]
mod delta_tests {
    use super::super::tests::synthetic;
    use super::tests::decode;
    use super::*;

    /// (leaf function name, bytes label, values) of every sample.
    fn samples(m: &Profile) -> Vec<(String, i64, Vec<i64>)> {
        let s = |i: i64| m.string_table[i as usize].clone();
        let mut out: Vec<(String, i64, Vec<i64>)> = m
            .sample
            .iter()
            .map(|smp| {
                let leaf = &m.location[(smp.location_id[0] - 1) as usize];
                let f = &m.function[(leaf.line[0].function_id - 1) as usize];
                let bytes = smp
                    .label
                    .iter()
                    .find(|l| s(l.key) == "bytes")
                    .map_or(0, |l| l.num);
                (s(f.name), bytes, smp.value.clone())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn delta_subtracts_per_stack_and_size_and_drops_what_did_not_change() {
        let before = synthetic(
            4096,
            &[
                (&["main", "app::before"], 100, 3, 1),
                (&["main", "app::window"], 10, 4, 4),
                (&["main", "app::window"], 20, 1, 0),
                (&["main", "app::shrank"], 64, 5, 0),
            ],
        );
        let after = synthetic(
            4096,
            &[
                (&["main", "app::before"], 100, 3, 1),
                (&["main", "app::window"], 10, 6, 4),
                (&["main", "app::window"], 20, 1, 0),
                (&["main", "app::new"], 8, 2, 0),
                (&["main", "app::shrank"], 64, 5, 5),
            ],
        );
        let est = |p: &HeapProfile, leaf: &str, size: u64| -> Vec<i64> {
            let b = p
                .buckets()
                .iter()
                .find(|b| b.frames()[0].name() == leaf && b.size() == size)
                .unwrap();
            SampleType::ALL
                .iter()
                .map(|t| b.estimate(*t) as i64)
                .collect()
        };
        let m = decode(&after.delta_pprof(&before, PprofKind::Allocs));
        let got = samples(&m);
        let diff = |leaf: &str, size: u64, old: bool| -> Vec<i64> {
            let a = est(&after, leaf, size);
            if !old {
                return a;
            }
            let b = est(&before, leaf, size);
            a.iter().zip(&b).map(|(x, y)| x - y).collect()
        };
        assert_eq!(
            got,
            vec![
                ("app::new".to_string(), 8, diff("app::new", 8, false)),
                ("app::shrank".to_string(), 64, diff("app::shrank", 64, true)),
                ("app::window".to_string(), 10, diff("app::window", 10, true)),
            ],
            "unchanged stacks (app::before, app::window at 20 bytes) are left out"
        );
        // allocated in the window: 2 more objects of 10 bytes, none freed
        let w = &got[2].2;
        assert!(w[0] > 0 && w[1] > 0 && w[2] > 0 && w[3] > 0, "{w:?}");
        // freed in the window: in-use values go negative, allocs unchanged
        let sh = &got[1].2;
        assert_eq!((sh[0], sh[1]), (0, 0));
        assert!(sh[2] < 0 && sh[3] < 0, "{sh:?}");
        // header: Go's
        let s = |i: i64| m.string_table[i as usize].as_str();
        assert_eq!(s(m.default_sample_type), "alloc_space");
        let types: Vec<&str> = m.sample_type.iter().map(|v| s(v.ty)).collect();
        assert_eq!(
            types,
            [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space"
            ]
        );
        assert_eq!(m.period, 4096);
        let pt = m.period_type.as_ref().unwrap();
        assert_eq!((s(pt.ty), s(pt.unit)), ("space", "bytes"));
        let heap = decode(&after.delta_pprof(&before, PprofKind::Heap));
        assert_eq!(
            heap.string_table[heap.default_sample_type as usize],
            "inuse_space"
        );
        // a profile minus itself is empty
        assert!(decode(&after.delta_pprof(&after, PprofKind::Heap))
            .sample
            .is_empty());
    }

    /// (leaf, scope, thread, inuse_space) of every sample.
    fn labelled(m: &Profile) -> Vec<(String, String, String, i64)> {
        let s = |i: i64| m.string_table[i as usize].clone();
        let mut out: Vec<_> = m
            .sample
            .iter()
            .map(|smp| {
                let leaf = &m.location[(smp.location_id[0] - 1) as usize];
                let f = &m.function[(leaf.line[0].function_id - 1) as usize];
                let label = |k: &str| {
                    let l: Vec<_> = smp.label.iter().filter(|l| s(l.key) == k).collect();
                    assert_eq!(l.len(), 1, "one {k} label");
                    assert_eq!((l[0].num, l[0].num_unit), (0, 0));
                    s(l[0].str)
                };
                (s(f.name), label("scope"), label("thread"), smp.value[3])
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_sample_carries_scope_and_thread_and_deltas_keep_them() {
        use super::super::tests::synthetic_labelled;
        let before = synthetic_labelled(
            1,
            &[
                (
                    &["main", "app::cart"],
                    64,
                    3,
                    0,
                    "checkout",
                    "request-worker",
                ),
                (&["main", "app::cart"], 64, 2, 0, "search", "request-worker"),
                (&["main", "app::index"], 32, 5, 1, "search", "indexer"),
            ],
        );
        let m = decode(&before.to_pprof(PprofKind::Heap));
        let want = |cart_search: i64| {
            vec![
                (
                    "app::cart".to_string(),
                    "checkout".to_string(),
                    "request-worker".to_string(),
                    192,
                ),
                (
                    "app::cart".to_string(),
                    "search".to_string(),
                    "request-worker".to_string(),
                    cart_search,
                ),
                (
                    "app::index".to_string(),
                    "search".to_string(),
                    "indexer".to_string(),
                    128,
                ),
            ]
        };
        assert_eq!(labelled(&m), want(128));
        // every string once
        let mut t = m.string_table.clone();
        t.sort();
        t.dedup();
        assert_eq!(t.len(), m.string_table.len());
        // a delta: unchanged (stack, labels) cancel, the same stack in
        // another scope does not
        let after = synthetic_labelled(
            1,
            &[
                (
                    &["main", "app::cart"],
                    64,
                    3,
                    0,
                    "checkout",
                    "request-worker",
                ),
                (&["main", "app::cart"], 64, 7, 0, "search", "request-worker"),
                (&["main", "app::index"], 32, 5, 1, "search", "indexer"),
            ],
        );
        assert!(decode(&after.delta_pprof(&after, PprofKind::Heap))
            .sample
            .is_empty());
        let d = decode(&after.delta_pprof(&before, PprofKind::Heap));
        assert_eq!(
            labelled(&d),
            [(
                "app::cart".to_string(),
                "search".to_string(),
                "request-worker".to_string(),
                320
            )]
        );
        // the filters keep the labels
        let c = decode(&before.scope("checkout").to_pprof(PprofKind::Heap));
        assert_eq!(labelled(&c), want(128)[..1]);
        let i = decode(&before.thread("indexer-2").to_pprof(PprofKind::Allocs));
        assert_eq!(labelled(&i), want(128)[2..]);
    }

    #[test]
    fn delta_times_period_and_labels_follow_go() {
        let before = synthetic(512, &[(&["main", "a"], 16, 2, 0)]);
        let after = synthetic(
            512,
            &[(&["main", "a"], 16, 2, 0), (&["main", "b"], 16, 1, 0)],
        );
        let mut b = before.to_pprof_message(PprofKind::Heap);
        let mut a = after.to_pprof_message(PprofKind::Heap);
        b.time_nanos = 1_000;
        a.time_nanos = 3_000_001_000;
        a.period = 1024;
        // an `age` label differs between the captures: dropped, so `a` cancels
        for (p, age) in [(&mut b, 5), (&mut a, 9)] {
            let key = p.string_table.len() as i64;
            p.string_table.push("age".to_string());
            for smp in &mut p.sample {
                smp.label.push(Label {
                    key,
                    str: 0,
                    num: age,
                    num_unit: 0,
                });
            }
        }
        let d = delta_message(&b, &a);
        assert_eq!(d.time_nanos, 3_000_001_000);
        assert_eq!(d.duration_nanos, 3_000_000_000);
        assert_eq!(d.period, 1024);
        let got = samples(&d);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "b");
        assert!(!d.string_table.iter().any(|s| s == "age"));
        // other labels separate samples, as in Go's merge
        let mut b2 = before.to_pprof_message(PprofKind::Heap);
        let key = b2.string_table.len() as i64;
        b2.string_table.push("thread".to_string());
        b2.sample[0].label.push(Label {
            key,
            str: 0,
            num: 1,
            num_unit: 0,
        });
        let d = delta_message(&b2, &after.to_pprof_message(PprofKind::Heap));
        assert_eq!(samples(&d).len(), 3);
        // the encoded form reads back
        let bytes = gzip_message(&d);
        assert_eq!(decode(&bytes).sample.len(), 3);
    }
}
