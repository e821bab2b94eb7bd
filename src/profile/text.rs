//! Go's legacy text heap profile (`/debug/pprof/heap?debug=1`).
//!
//! Like Go, the counts are the *sampled* ones and the header's
//! `heap/<2 × interval>` tells readers (`go tool pprof`, people) how to
//! scale them; each record is followed by `#` comment lines naming its
//! frames.

use super::{HeapProfile, PprofKind};

/// Counts the bytes written to it.
struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// A label value in double quotes, `"` and `\` escaped and control
/// characters written `\u{..}`, so that a `# labels:` line stays one line.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' | '\\' => {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                }
                c if c.is_control() => write!(f, "{}", c.escape_unicode())?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

impl HeapProfile {
    /// The profile in Go's `debug=1` text heap format (the gaps in the
    /// comment lines are tabs):
    ///
    /// ```text
    /// heap profile: 3: 3072 [10: 10240] @ heap/1048576
    /// 3: 3072 [10: 10240] @ 0x55d0c1a2b3c4 0x55d0c1a2b000
    /// #   0x55d0c1a2b3c3  myapp::cache::Cache::insert+0x53  src/cache.rs:42
    /// #   0x55d0c1a2afff  myapp::main+0x1f  src/main.rs:9
    /// ```
    ///
    /// Header: in-use objects and bytes, then allocated objects and bytes
    /// (sampled counts, summed), `@ heap/` twice the sampling interval (as
    /// Go writes it). One record per bucket (stack and object size), most
    /// in-use bytes first, with the stack's return addresses leaf first and
    /// a comment line per frame (inlined frames share their address; the
    /// comment address is the return address minus one, inside the call).
    ///
    /// After each record line, a comment names its scope and thread group
    /// the way Go's goroutine profiles name their labels (`# labels:
    /// {"scope":"checkout", "thread":"request-worker"}`); readers of the
    /// format skip comment lines.
    ///
    /// Readers scale the counts with the header's interval; buckets sampled
    /// under another interval (the interval was changed at run time) are
    /// scaled with the current one there, unlike in the other formats.
    /// `kind` does not change the text (Go writes `heap` and `allocs` the
    /// same way in this format); it is named in a trailing comment.
    pub fn to_text(&self, kind: PprofKind) -> String {
        struct Rec<'a> {
            b: &'a super::Bucket,
            inuse: u64,
            inuse_bytes: u64,
            alloc_bytes: u64,
        }
        let mut recs: Vec<Rec<'_>> = self
            .buckets
            .iter()
            .map(|b| Rec {
                b,
                inuse: b.sampled_inuse(),
                inuse_bytes: b.sampled_inuse().saturating_mul(b.size),
                alloc_bytes: b.sampled_allocs.saturating_mul(b.size),
            })
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.inuse_bytes));
        let sum = |f: fn(&Rec<'_>) -> u64| recs.iter().fold(0u64, |s, r| s.saturating_add(f(r)));
        let rate2 = self.interval.max(1).saturating_mul(2);

        // The text of a large profile is large (a comment line per frame of
        // every record): it is written twice, first to count its bytes,
        // then into a string of exactly that size, never regrown.
        let write = |out: &mut dyn std::fmt::Write| {
            // Writing to a String or a counter cannot fail: the results are
            // ignored.
            let _ = writeln!(
                out,
                "heap profile: {}: {} [{}: {}] @ heap/{}",
                sum(|r| r.inuse),
                sum(|r| r.inuse_bytes),
                sum(|r| r.b.sampled_allocs),
                sum(|r| r.alloc_bytes),
                rate2
            );
            for r in &recs {
                let _ = write!(
                    out,
                    "{}: {} [{}: {}] @",
                    r.inuse, r.inuse_bytes, r.b.sampled_allocs, r.alloc_bytes
                );
                for loc in r.b.locations.iter() {
                    let _ = write!(out, " {:#x}", loc.address);
                }
                let _ = out.write_char('\n');
                let _ = writeln!(
                    out,
                    "# labels: {{\"scope\":{}, \"thread\":{}}}",
                    Quoted(r.b.scope()),
                    Quoted(r.b.thread())
                );
                for loc in r.b.locations.iter() {
                    let pc = loc.address.saturating_sub(1);
                    for f in loc.frames.iter() {
                        if f.is_unresolved() {
                            let _ = writeln!(out, "#\t{pc:#x}");
                            continue;
                        }
                        let name = super::folded::sanitize(f.name());
                        let _ = write!(out, "#\t{pc:#x}\t{name}");
                        if let Some(entry) = loc.entry.filter(|e| *e <= pc) {
                            let _ = write!(out, "+{:#x}", pc - entry);
                        }
                        let _ = writeln!(
                            out,
                            "\t{}:{}",
                            f.file().unwrap_or("??"),
                            f.line().unwrap_or(0)
                        );
                    }
                }
                let _ = out.write_char('\n');
            }
            let _ = writeln!(
                out,
                "# allocscope {} profile: sampled counts, {}; {} buckets",
                kind.name(),
                super::sampling_note(self.interval),
                recs.len()
            );
        };
        let mut size = Counter(0);
        write(&mut size);
        let mut out = String::with_capacity(size.0);
        write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::synthetic;
    use super::*;

    #[test]
    fn go_debug1_layout() {
        let p = synthetic(
            512 * 1024,
            &[
                (&["main", "app::cache::insert"], 100, 3, 1),
                (&["main", "app::tmp"], 10, 4, 4),
            ],
        );
        let t = p.to_text(PprofKind::Heap);
        let mut lines = t.lines();
        assert_eq!(
            lines.next(),
            Some("heap profile: 2: 200 [7: 340] @ heap/1048576")
        );
        assert_eq!(lines.next(), Some("2: 200 [3: 300] @ 0x1000 0x1001"));
        assert_eq!(
            lines.next(),
            Some("# labels: {\"scope\":\"unscoped\", \"thread\":\"main\"}")
        );
        assert_eq!(
            lines.next(),
            Some("#\t0xfff\tapp::cache::insert\tsrc/synthetic.rs:7")
        );
        assert_eq!(
            lines.next(),
            Some("#\t0x1000\tmain+0x0\tsrc/synthetic.rs:7")
        );
        assert_eq!(lines.next(), Some(""));
        assert_eq!(lines.next(), Some("0: 0 [4: 40] @ 0x1000 0x1001"));
        assert_eq!(Quoted("a\"b\\c\nd").to_string(), "\"a\\\"b\\\\c\\u{a}d\"");
        let empty = synthetic(1, &[]).to_text(PprofKind::Allocs);
        assert!(
            empty.starts_with("heap profile: 0: 0 [0: 0] @ heap/2\n"),
            "{empty}"
        );
    }
}
