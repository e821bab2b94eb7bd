//! Leak hunting: what changed between two heap profiles, per stack.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use super::flamegraph::{count_name, render, Graph};
use super::{FlamegraphOptions, HeapProfile, SampleType};
use crate::Error;

/// One stack of a [`HeapDiff`]: its estimated values in the baseline and
/// now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffStack {
    stack: String,
    before: [u64; 4],
    after: [u64; 4],
}

impl DiffStack {
    /// The folded stack (frame names root first, `;`-separated), as in
    /// [`HeapProfile::folded`].
    pub fn stack(&self) -> &str {
        &self.stack
    }

    /// The estimate of `t` in the baseline (0 if the stack was not in it).
    pub fn before(&self, t: SampleType) -> u64 {
        self.before[t as usize]
    }

    /// The estimate of `t` now (0 if the stack is gone).
    pub fn after(&self, t: SampleType) -> u64 {
        self.after[t as usize]
    }

    /// `after - before` (negative when the stack shrank).
    pub fn delta(&self, t: SampleType) -> i128 {
        i128::from(self.after(t)) - i128::from(self.before(t))
    }
}

/// The difference between a heap profile and an earlier baseline, per
/// stack (object sizes merged): see [`HeapProfile::diff`].
#[derive(Clone, Debug)]
pub struct HeapDiff {
    stacks: Vec<DiffStack>,
    interval: u64,
    baseline_at: SystemTime,
    captured_at: SystemTime,
}

impl HeapProfile {
    /// Compares this profile with an earlier `baseline`: for every stack in
    /// either, its estimated values before (baseline) and after (`self`).
    /// Estimates are un-sampled, so profiles taken at different sampling
    /// intervals compare fairly.
    ///
    /// ```
    /// # #[cfg(feature = "profile")] {
    /// use allocscope::profile::{HeapProfile, SampleType};
    /// let baseline = HeapProfile::capture();
    /// // ... let the suspected leak run ...
    /// let now = HeapProfile::capture();
    /// let grew = now.diff(&baseline).growth_folded(SampleType::InuseSpace);
    /// # let _ = grew;
    /// # }
    /// ```
    pub fn diff(&self, baseline: &HeapProfile) -> HeapDiff {
        let mut m: BTreeMap<String, ([u64; 4], [u64; 4])> = BTreeMap::new();
        for (k, v) in baseline.stack_values() {
            m.entry(k.to_owned()).or_default().0 = v;
        }
        for (k, v) in self.stack_values() {
            match m.get_mut(k) {
                Some(e) => e.1 = v,
                None => {
                    m.insert(k.to_owned(), ([0; 4], v));
                }
            }
        }
        HeapDiff {
            stacks: m
                .into_iter()
                .map(|(stack, (before, after))| DiffStack {
                    stack,
                    before,
                    after,
                })
                .collect(),
            interval: self.interval,
            baseline_at: baseline.captured_at,
            captured_at: self.captured_at,
        }
    }
}

impl HeapDiff {
    /// Every stack in either profile, sorted by stack.
    pub fn stacks(&self) -> &[DiffStack] {
        &self.stacks
    }

    /// When the baseline was captured.
    pub fn baseline_captured_at(&self) -> SystemTime {
        self.baseline_at
    }

    /// When the newer profile was captured.
    pub fn captured_at(&self) -> SystemTime {
        self.captured_at
    }

    /// Total growth of `t` over all stacks (negative when the heap shrank).
    pub fn total_delta(&self, t: SampleType) -> i128 {
        self.stacks.iter().map(|s| s.delta(t)).sum()
    }

    /// inferno's differential folded format: `stack before after` per
    /// stack, sorted by stack, leaving out stacks that are zero in both.
    /// `inferno-flamegraph` draws it with widths from `after` and colours
    /// from the change.
    pub fn folded(&self, t: SampleType) -> String {
        let mut out = String::new();
        for s in &self.stacks {
            let (b, a) = (s.before(t), s.after(t));
            if b != 0 || a != 0 {
                // Writing to a String cannot fail.
                let _ = writeln!(out, "{} {b} {a}", s.stack);
            }
        }
        out
    }

    /// Only the stacks that grew, as ordinary folded stacks of the growth:
    /// `stack (after - before)`. Render it as a plain flamegraph to see
    /// where a leak comes from.
    pub fn growth_folded(&self, t: SampleType) -> String {
        super::folded::write_lines(self.stacks.iter().filter_map(|s| {
            let (b, a) = (s.before(t), s.after(t));
            (a > b).then(|| (s.stack.as_str(), a - b))
        }))
    }

    /// Renders an inferno differential flamegraph: frame widths are the
    /// values now, colours the change since the baseline (red grew, blue
    /// shrank). Titled "What grew since the baseline: …".
    ///
    /// # Errors
    /// As [`HeapProfile::flamegraph`].
    pub fn flamegraph(
        &self,
        sample: SampleType,
        options: &FlamegraphOptions,
        writer: impl Write,
    ) -> Result<(), Error> {
        let elapsed = self
            .captured_at
            .duration_since(self.baseline_at)
            .map(|d| format!(" over {:.0} s", d.as_secs_f64()))
            .unwrap_or_default();
        let graph = Graph {
            title: format!(
                "What grew since the baseline: {}, {}",
                sample.description(),
                super::sampling_note(self.interval)
            ),
            note: format!(
                "allocscope heap diff, {} estimated{elapsed}; red grew, blue shrank",
                sample.name()
            ),
            count_name: count_name(sample),
            stacks: self
                .stacks
                .iter()
                .map(|s| (s.stack.as_str(), Some(s.before(sample)), s.after(sample)))
                .collect(),
            empty_message: "nothing left in the newer profile",
        };
        render(graph, options, writer)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::synthetic;
    use super::*;

    #[test]
    fn diff_shows_growth() {
        let base = synthetic(
            1,
            &[
                (&["main", "cache::insert"], 100, 2, 0),
                (&["main", "tmp"], 10, 5, 0),
                (&["main", "gone"], 8, 1, 0),
            ],
        );
        let now = synthetic(
            1,
            &[
                (&["main", "cache::insert"], 100, 7, 0),
                (&["main", "tmp"], 10, 5, 0),
                (&["main", "new"], 4, 1, 0),
            ],
        );
        let d = now.diff(&base);
        let t = SampleType::InuseSpace;
        assert_eq!(
            d.folded(t),
            "main;cache::insert 200 700\nmain;gone 8 0\nmain;new 0 4\nmain;tmp 50 50\n"
        );
        assert_eq!(d.growth_folded(t), "main;cache::insert 500\nmain;new 4\n");
        assert_eq!(d.total_delta(t), 500 + 4 - 8);
        assert_eq!(d.stacks().len(), 4);
        let mut svg = Vec::new();
        d.flamegraph(t, &FlamegraphOptions::default(), &mut svg)
            .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(
            svg.contains("What grew since the baseline: Heap in use (bytes)"),
            "{svg}"
        );
        assert!(svg.contains("cache::insert"));
        // Same profile: no growth, but still a valid graph.
        let same = now.diff(&now);
        assert_eq!(same.growth_folded(t), "");
        let mut svg = Vec::new();
        same.flamegraph(t, &FlamegraphOptions::default(), &mut svg)
            .unwrap();
        // Empty both sides.
        let e = synthetic(1, &[]).diff(&synthetic(1, &[]));
        let mut svg = Vec::new();
        e.flamegraph(t, &FlamegraphOptions::default(), &mut svg)
            .unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("</svg>"));
    }
}
