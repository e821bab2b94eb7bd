//! Folded stacks (Brendan Gregg's format, what inferno and most flamegraph
//! tools read): `root;caller;leaf value`, one line per stack.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Frame, HeapProfile, SampleType, Symbols};

/// The stack of a bucket whose stack could not be captured at all.
pub(crate) const UNKNOWN_STACK: &str = "[unknown]";

/// A frame name made safe for a folded line: `;` separates frames, so a `;`
/// inside a name (array types such as `[u8; 8]`) becomes `:`; control
/// characters (which would break lines) become spaces; surrounding spaces
/// are trimmed; an empty name becomes `?`.
pub(crate) fn sanitize(name: &str) -> Cow<'_, str> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Cow::Borrowed("?");
    }
    if trimmed.chars().any(|c| c == ';' || c.is_control()) {
        Cow::Owned(
            trimmed
                .chars()
                .map(|c| match c {
                    ';' => ':',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// The folded key of a stack given leaf first: names root first,
/// `;`-separated. With [`Symbols::Lines`], each frame with a file is
/// `name file:line`, so that every call site is a frame of its own (the
/// flamegraph of such a profile).
pub(crate) fn stack_key(frames_leaf_first: &[Frame], symbols: Symbols) -> String {
    if frames_leaf_first.is_empty() {
        return UNKNOWN_STACK.to_string();
    }
    let mut s = String::new();
    for (i, f) in frames_leaf_first.iter().rev().enumerate() {
        if i > 0 {
            s.push(';');
        }
        s.push_str(&sanitize(f.name()));
        if symbols == Symbols::Lines {
            if let Some(file) = f.file() {
                s.push(' ');
                s.push_str(&sanitize(file));
                // Writing to a String cannot fail.
                let _ = write!(s, ":{}", f.line().unwrap_or(0));
            }
        }
    }
    s
}

/// Writes `stack value` lines for the non-zero values, in key order.
pub(crate) fn write_lines<'a>(values: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut out = String::new();
    for (stack, v) in values {
        if v != 0 {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{stack} {v}");
        }
    }
    out
}

impl HeapProfile {
    /// The profile as folded stacks of estimated `t` values: one line per
    /// stack (all object sizes merged), frames root first and
    /// `;`-separated, a space, then the value; lines with a zero value are
    /// left out; lines sorted by stack.
    ///
    /// Frame names are demangled paths without the hash suffix
    /// (`myapp::cache::Cache::insert`), inlined functions are frames of
    /// their own, unresolved addresses are `0x…`. A `;` inside a name
    /// becomes `:`; a bucket without any frame is `[unknown]`. Stacks are
    /// function names whatever the profile's [`Symbols`]: files and lines
    /// are in [`Bucket::frames`](super::Bucket::frames), the pprof and the
    /// text formats.
    pub fn folded(&self, t: SampleType) -> String {
        let values = self.folded_values(t);
        write_lines(values.iter().map(|(k, v)| (*k, *v)))
    }

    /// Non-zero estimated `t` values per folded stack (the buckets' keys,
    /// borrowed).
    pub(crate) fn folded_values(&self, t: SampleType) -> BTreeMap<&str, u64> {
        self.stack_values()
            .into_iter()
            .map(|(k, v)| (k, v[t as usize]))
            .filter(|(_, v)| *v != 0)
            .collect()
    }

    /// Non-zero estimated `t` values per stack of `name file:line` frames
    /// (see [`stack_key`]): a profile captured with [`Symbols::Lines`], drawn
    /// a frame per call site.
    pub(crate) fn line_values(&self, t: SampleType) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for b in &self.buckets {
            let v = b.estimate(t);
            if v != 0 {
                let e = m.entry(stack_key(b.frames(), Symbols::Lines)).or_default();
                *e = e.saturating_add(v);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::synthetic;
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(
            sanitize("<[u8; 8] as Debug>::fmt"),
            "<[u8: 8] as Debug>::fmt"
        );
        assert_eq!(sanitize(" a\tb\n"), "a b");
        assert_eq!(sanitize(""), "?");
        assert_eq!(sanitize("plain::name"), "plain::name");
    }

    #[test]
    fn folded_merges_sizes_and_skips_zeros() {
        let p = synthetic(
            1,
            &[
                (&["main", "app::run", "app::cache::insert"], 100, 3, 1),
                (&["main", "app::run", "app::cache::insert"], 50, 2, 0),
                (&["main", "app::tmp"], 10, 4, 4),
            ],
        );
        assert_eq!(
            p.folded(SampleType::InuseSpace),
            "main;app::run;app::cache::insert 300\n"
        );
        assert_eq!(
            p.folded(SampleType::AllocObjects),
            "main;app::run;app::cache::insert 5\nmain;app::tmp 4\n"
        );
        assert_eq!(
            p.folded(SampleType::AllocSpace),
            "main;app::run;app::cache::insert 400\nmain;app::tmp 40\n"
        );
        assert_eq!(synthetic(1, &[]).folded(SampleType::InuseSpace), "");
        assert_eq!(
            synthetic(1, &[(&[], 8, 1, 0)]).folded(SampleType::InuseSpace),
            "[unknown] 8\n"
        );
    }
}
