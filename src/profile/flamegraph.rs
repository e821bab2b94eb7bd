//! Flamegraphs (inferno SVG, with its built-in search and zoom) of a heap
//! profile or of a diff.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use inferno::flamegraph::{self, color, Direction, Options};

use super::{HeapProfile, SampleType, Symbols};
use crate::Error;

/// Colour schemes for flamegraphs (inferno's palettes). Differential
/// flamegraphs always colour by growth (red) and shrinkage (blue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FlamegraphColors {
    /// Greens and blues, the classic memory palette.
    #[default]
    Mem,
    /// Reds and yellows, the classic CPU palette.
    Hot,
    /// Coloured by crate: std/core/alloc in one hue, your crates in another.
    Rust,
    /// Blues.
    Blue,
    /// Aqua tones.
    Aqua,
}

impl FlamegraphColors {
    fn palette(self) -> color::Palette {
        use color::{BasicPalette as B, MultiPalette as M, Palette as P};
        match self {
            FlamegraphColors::Mem => P::Basic(B::Mem),
            FlamegraphColors::Hot => P::Basic(B::Hot),
            FlamegraphColors::Rust => P::Multi(M::Rust),
            FlamegraphColors::Blue => P::Basic(B::Blue),
            FlamegraphColors::Aqua => P::Basic(B::Aqua),
        }
    }
}

/// How to draw a flamegraph. `FlamegraphOptions::default()` gives a
/// fluid-width graph, roots at the bottom, titled after what is shown.
///
/// ```
/// let opts = allocscope::profile::FlamegraphOptions::default()
///     .title("Cache growth")
///     .width(1600)
///     .icicle(true);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FlamegraphOptions {
    title: Option<String>,
    subtitle: Option<String>,
    width: Option<usize>,
    min_width: f64,
    reverse: bool,
    icicle: bool,
    colors: FlamegraphColors,
}

impl Default for FlamegraphOptions {
    fn default() -> Self {
        FlamegraphOptions {
            title: None,
            subtitle: None,
            width: None,
            min_width: 0.01,
            reverse: false,
            icicle: false,
            colors: FlamegraphColors::default(),
        }
    }
}

/// Accepted image widths, in pixels.
const WIDTHS: std::ops::RangeInclusive<usize> = 100..=100_000;

crate::macros::setters!(FlamegraphOptions {
    /// Replaces the default title (which says what is shown and at what
    /// sampling interval; that note then moves to the subtitle).
    title(title: impl Into<String>) => Some(title.into());
    /// A line under the title.
    subtitle(subtitle: impl Into<String>) => Some(subtitle.into());
    /// A fixed image width in pixels (100 to 100000); by default the graph
    /// fills the browser window.
    width(pixels: usize) => Some(pixels);
    /// Frames narrower than this percentage of the total are left out
    /// (default 0.01; 0 to 100).
    min_width(percent: f64);
    /// Merge stacks from the leaf end: the allocating functions form the
    /// base and their callers grow on top.
    reverse(reverse: bool);
    /// Draw top-down (an icicle graph) instead of bottom-up.
    icicle(icicle: bool);
    /// The colour scheme.
    colors(colors: FlamegraphColors);
});

impl FlamegraphOptions {
    fn validate(&self) -> Result<(), Error> {
        if let Some(w) = self.width {
            if !WIDTHS.contains(&w) {
                return Err(Error::InvalidArgument {
                    what: "flamegraph width",
                    value: w.to_string(),
                    expected: "a width from 100 to 100000 pixels",
                });
            }
        }
        if !(self.min_width.is_finite() && (0.0..=100.0).contains(&self.min_width)) {
            return Err(Error::InvalidArgument {
                what: "flamegraph min_width",
                value: self.min_width.to_string(),
                expected: "a percentage of the total width from 0 to 100",
            });
        }
        Ok(())
    }
}

/// Folded values larger than this are scaled down (and inferno's `factor`
/// scales the displayed numbers back), so inferno's sums cannot overflow.
const MAX_TOTAL: u128 = 1 << 53;

/// A flamegraph to draw: folded lines with one value (or two, before and
/// after, for a differential graph).
pub(crate) struct Graph<'a> {
    pub(crate) title: String,
    pub(crate) note: String,
    pub(crate) count_name: &'static str,
    /// Folded stack (root first) to (before, after); `before` is `None` for
    /// an ordinary graph.
    pub(crate) stacks: Vec<(&'a str, Option<u64>, u64)>,
    pub(crate) empty_message: &'static str,
}

/// Tracks whether the caller's writer failed, to tell I/O errors from
/// rendering errors.
struct Tracked<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

pub(crate) fn render(
    graph: Graph<'_>,
    options: &FlamegraphOptions,
    writer: impl Write,
) -> Result<(), Error> {
    options.validate()?;
    let (title, subtitle) = match &options.title {
        Some(t) => (
            t.clone(),
            Some(match &options.subtitle {
                Some(s) => format!("{s} ({})", graph.title),
                None => graph.title.clone(),
            }),
        ),
        None => (graph.title.clone(), options.subtitle.clone()),
    };

    // Reverse (leaf end first) here rather than with inferno's option, and
    // sort by stack, so the lines are in the order inferno checks for. The
    // stacks are borrowed unless reversed: a large profile is not copied.
    let mut lines: BTreeMap<Cow<'_, str>, (Option<u64>, u64)> = BTreeMap::new();
    for &(stack, before, after) in &graph.stacks {
        if before.unwrap_or(0) == 0 && after == 0 {
            continue;
        }
        let key = if options.reverse {
            Cow::Owned(stack.rsplit(';').collect::<Vec<_>>().join(";"))
        } else {
            Cow::Borrowed(stack)
        };
        let e = lines.entry(key).or_insert((before.map(|_| 0), 0));
        e.0 = match (e.0, before) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, _) => a,
        };
        e.1 = e.1.saturating_add(after);
    }
    let total: u128 = lines
        .values()
        .map(|(b, a)| u128::from(b.unwrap_or(0)).max(u128::from(*a)))
        .sum();
    let divisor = total.div_ceil(MAX_TOTAL).max(1) as u64;
    // One buffer of lines for inferno, rather than a string per line.
    let mut text = String::with_capacity(lines.keys().map(|k| k.len() + 24).sum());
    for (stack, (before, after)) in &lines {
        // Writing to a String cannot fail.
        let _ = match before {
            Some(b) => writeln!(text, "{stack} {} {}", b / divisor, after / divisor),
            None => writeln!(text, "{stack} {}", after / divisor),
        };
    }
    let has_width = lines.values().any(|(_, a)| a / divisor > 0);
    drop(lines);

    let mut w = Tracked {
        inner: writer,
        failed: false,
    };
    if !has_width {
        return write_empty_svg(
            &mut w,
            &title,
            subtitle.as_deref(),
            graph.empty_message,
            options,
        )
        .map_err(|e| io_error(e, "writing the flamegraph SVG"));
    }

    let mut opt = Options::default();
    opt.title = title;
    opt.subtitle = subtitle;
    opt.count_name = graph.count_name.to_string();
    opt.notes = graph.note.replace("--", "-");
    opt.image_width = options.width;
    opt.min_width = options.min_width;
    opt.colors = options.colors.palette();
    opt.direction = if options.icicle {
        Direction::Inverted
    } else {
        Direction::Straight
    };
    opt.factor = divisor as f64;
    opt.no_sort = true;
    match flamegraph::from_lines(&mut opt, text.lines(), &mut w) {
        Ok(()) => Ok(()),
        Err(e) if w.failed => Err(io_error(e, "writing the flamegraph SVG")),
        Err(e) => Err(Error::Render {
            what: "flamegraph SVG",
            message: e.to_string(),
        }),
    }
}

fn io_error(source: io::Error, context: &str) -> Error {
    Error::Io {
        context: context.to_string(),
        source,
    }
}

/// Escapes text for XML and HTML content and attribute values (control
/// characters become spaces).
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A small, valid SVG that says there is nothing to draw yet (inferno
/// refuses to draw no data).
fn write_empty_svg(
    w: &mut impl Write,
    title: &str,
    subtitle: Option<&str>,
    message: &str,
    options: &FlamegraphOptions,
) -> io::Result<()> {
    let width = options.width.unwrap_or(1200);
    let height = 120;
    let mid = width / 2;
    write!(
        w,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eef2ee\"/>\n\
         <text x=\"{mid}\" y=\"24\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"17\">{}</text>\n",
        xml_escape(title)
    )?;
    if let Some(s) = subtitle {
        writeln!(
            w,
            "<text x=\"{mid}\" y=\"48\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"12\" fill=\"#a0a0a0\">{}</text>",
            xml_escape(s)
        )?;
    }
    writeln!(
        w,
        "<text x=\"{mid}\" y=\"84\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"14\">{}</text>\n</svg>",
        xml_escape(message)
    )?;
    w.flush()
}

impl HeapProfile {
    /// Renders the estimated `sample` values as an inferno flamegraph SVG
    /// (interactive: click to zoom, Ctrl-F to search) into `writer`.
    ///
    /// The title says what is shown and how it was sampled (e.g. "Heap in
    /// use (bytes), sampled every 512 KiB"); widths are in `bytes` or
    /// `objects`. A profile without samples renders a small SVG saying so.
    /// A profile captured with [`Symbols::Lines`] is drawn a frame per call
    /// site: `name file:line`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for options out of range, [`Error::Io`]
    /// when `writer` fails, [`Error::Render`] if inferno rejects the data.
    pub fn flamegraph(
        &self,
        sample: SampleType,
        options: &FlamegraphOptions,
        writer: impl Write,
    ) -> Result<(), Error> {
        let title = format!("{}, {}", sample.description(), self.sampling_note());
        let note = format!("allocscope heap profile, {} estimated", sample.name());
        // A profile with files and lines is drawn a frame per call site.
        let by_line;
        let by_name;
        let stacks: Vec<(&str, Option<u64>, u64)> = if self.symbols == Symbols::Lines {
            by_line = self.line_values(sample);
            by_line
                .iter()
                .map(|(k, v)| (k.as_str(), None, *v))
                .collect()
        } else {
            by_name = self.folded_values(sample);
            by_name.iter().map(|(k, v)| (*k, None, *v)).collect()
        };
        let graph = Graph {
            title,
            note,
            count_name: count_name(sample),
            stacks,
            empty_message: "no samples yet",
        };
        render(graph, options, writer)
    }
}

pub(crate) fn count_name(sample: SampleType) -> &'static str {
    if sample.is_bytes() {
        "bytes"
    } else {
        "objects"
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::synthetic;
    use super::*;

    fn svg(p: &HeapProfile, t: SampleType, o: &FlamegraphOptions) -> String {
        let mut out = Vec::new();
        p.flamegraph(t, o, &mut out).expect("render");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn renders_title_names_and_search() {
        let p = synthetic(
            512 * 1024,
            &[
                (&["main", "app::run", "app::cache::insert"], 100, 3, 1),
                (&["main", "app::tmp<[u8; 4]>"], 10, 4, 4),
            ],
        );
        let s = svg(&p, SampleType::InuseSpace, &FlamegraphOptions::default());
        assert!(
            s.contains("Heap in use (bytes), sampled every 512 KiB"),
            "{s}"
        );
        assert!(s.contains("app::cache::insert"));
        assert!(
            s.contains("function search("),
            "inferno's search JS missing"
        );
        assert!(s.contains(" bytes"));
        assert!(!s.contains("app::tmp"), "zero-valued stack drawn");
        let s = svg(
            &p,
            SampleType::AllocObjects,
            &FlamegraphOptions::default()
                .title("Mine")
                .width(800)
                .reverse(true)
                .icicle(true)
                .colors(FlamegraphColors::Rust)
                .min_width(0.0),
        );
        assert!(s.contains(">Mine<"));
        assert!(s.contains("Allocated since start (objects), sampled every 512 KiB"));
        assert!(s.contains("app::tmp&lt;[u8: 4]&gt;"), "{s}");
        assert!(s.contains(" objects"));
    }

    #[test]
    fn empty_profile_renders_a_valid_svg() {
        let p = synthetic(4096, &[]);
        let s = svg(
            &p,
            SampleType::InuseSpace,
            &FlamegraphOptions::default().title("a<b"),
        );
        assert!(s.starts_with("<?xml"));
        assert!(s.contains("no samples yet"));
        assert!(s.contains("a&lt;b"));
        assert!(s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn bad_options_and_failing_writers_are_errors() {
        let p = synthetic(4096, &[(&["main"], 8, 1, 0)]);
        for o in [
            FlamegraphOptions::default().width(3),
            FlamegraphOptions::default().min_width(f64::NAN),
            FlamegraphOptions::default().min_width(-1.0),
        ] {
            let e = p
                .flamegraph(SampleType::InuseSpace, &o, Vec::new())
                .unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        }
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = p
            .flamegraph(
                SampleType::InuseSpace,
                &FlamegraphOptions::default(),
                Broken,
            )
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn huge_values_are_scaled_not_overflowed() {
        let p = synthetic(
            1,
            &[
                (&["main", "a"], u64::MAX / 2, 1, 0),
                (&["main", "b"], u64::MAX / 2, 1, 0),
                (&["main", "c"], 1, 1, 0),
            ],
        );
        let s = svg(&p, SampleType::InuseSpace, &FlamegraphOptions::default());
        assert!(s.contains(">main<") || s.contains("main"), "{s}");
    }
}
