//! Inlined functions, files and lines from an object's DWARF, read in place
//! from its mapped file, for a batch of addresses, keeping nothing.
//!
//! The unwinder's DWARF reader (`backtrace`, through `addr2line`) parses
//! the abbreviations and range lists of every compilation unit of an object
//! the first time it is asked about one address, and keeps every line table
//! and function tree it ever read: tens of MiB for a service of a few tens
//! of MiB of debug info. This reader does less, and forgets it all:
//!
//! - the compilation units of the addresses come from `.debug_aranges` (the
//!   units it does not list are asked for their ranges only when an address
//!   is still unplaced);
//! - each unit holding addresses is walked once, entry by entry, with its
//!   own abbreviations; subprograms and inlined subroutines whose ranges
//!   hold none of the addresses are skipped with their children;
//! - with lines, the unit's line program is run once, rows not kept;
//! - names are the section's own bytes (borrowed from the mapping), files
//!   interned once per batch.
//!
//! At any time the heap holds one unit's abbreviations and line program
//! header, a stack as deep as the nesting of the functions being walked,
//! and the results. Nothing outlives the call. Debug info it cannot read in
//! place (compressed sections) is not read at all: the symbol table's
//! names are used alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::read::elf::ElfFile;
use object::Object;

use super::symtab::{section_in_place, Elf};

type R<'a> = EndianSlice<'a, RunTimeEndian>;

/// An object's DWARF sections, borrowed from its mapping, and where its
/// units start (once a reference across units asks).
pub(crate) struct Dwarf<'a>(gimli::Dwarf<R<'a>>, std::cell::OnceCell<Vec<usize>>);

/// The DWARF of `p`, when it has `.debug_info` and every DWARF section it
/// has can be read in place (not compressed).
pub(crate) fn load<'a>(p: &ElfFile<'a, Elf>) -> Option<Dwarf<'a>> {
    section_in_place(p, ".debug_info")?;
    let endian = if p.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let loaded = gimli::Dwarf::load(|id| -> Result<R<'a>, ()> {
        use object::ObjectSection;
        match p.section_by_name(id.name()) {
            None => Ok(EndianSlice::new(&[], endian)),
            Some(s) if s.size() == 0 => Ok(EndianSlice::new(&[], endian)),
            Some(_) => section_in_place(p, id.name())
                .map(|d| EndianSlice::new(d, endian))
                .ok_or(()),
        }
    });
    match loaded {
        Ok(d) => Some(Dwarf(d, std::cell::OnceCell::new())),
        Err(()) => {
            log::debug!(
                "allocscope: debug info is compressed; function names come from the symbol \
                 table alone"
            );
            None
        }
    }
}

/// One function containing an address, as DWARF names it.
#[derive(Debug, Default)]
pub(crate) struct DwFrame<'a> {
    /// Linkage (mangled) name when DWARF has one, else the plain name.
    pub(crate) name: Option<&'a [u8]>,
    /// For an inlined function: the file and line of the call, in its
    /// caller (with lines only).
    pub(crate) call: Option<(Arc<str>, u32)>,
}

/// What DWARF says about one address.
#[derive(Debug, Default)]
pub(crate) struct PcInfo<'a> {
    /// The functions containing it: the subprogram first, then each
    /// inlined function, outermost first. Empty when DWARF does not cover
    /// the address.
    pub(crate) chain: Vec<DwFrame<'a>>,
    /// The file and line of the address itself (with lines only).
    pub(crate) line: Option<(Arc<str>, u32)>,
}

/// Interns file paths for the frames of one batch.
#[derive(Default)]
pub(crate) struct Files(HashMap<String, Arc<str>>);

impl Files {
    fn intern(&mut self, s: String) -> Arc<str> {
        if let Some(a) = self.0.get(&s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = s.as_str().into();
        self.0.insert(s, Arc::clone(&a));
        a
    }
}

/// Code ranges `(begin, end, unit offset)` of the units that
/// `.debug_aranges` does not list.
pub(crate) type UnitRanges = Box<[(u64, u64, usize)]>;

/// Most nested functions followed at one address (a guard against
/// malformed debug info).
const MAX_DEPTH: usize = 256;

impl<'a> Dwarf<'a> {
    /// What DWARF says about each of `pcs` (file addresses, sorted and
    /// distinct), in the same order. With `lines`, files and lines too;
    /// without, only the functions (and no line program is read).
    ///
    /// `unlisted` is the object's own (see `units_of`). `release` is called
    /// after each unit is read, to take the pages just read out of resident
    /// memory (they stay in the page cache).
    pub(crate) fn lookup(
        &self,
        pcs: &[u64],
        lines: bool,
        files: &mut Files,
        unlisted: &OnceLock<UnitRanges>,
        release: &dyn Fn(),
    ) -> Vec<PcInfo<'a>> {
        let mut out: Vec<PcInfo<'a>> = pcs.iter().map(|_| PcInfo::default()).collect();
        if pcs.is_empty() {
            return out;
        }
        let mut by_unit: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, unit) in self
            .units_of(pcs, unlisted, release)
            .into_iter()
            .enumerate()
        {
            if let Some(u) = unit {
                by_unit.entry(u).or_default().push(i);
            }
        }
        for (offset, idx) in by_unit {
            let unit_pcs: Vec<u64> = idx.iter().map(|&i| pcs[i]).collect();
            match self.unit_lookup(offset, &unit_pcs, lines, files) {
                Ok(infos) => {
                    for (i, info) in idx.into_iter().zip(infos) {
                        out[i] = info;
                    }
                }
                Err(e) => {
                    log::debug!("allocscope: unreadable debug info in the unit at {offset:#x}: {e}")
                }
            }
            release();
        }
        out
    }

    /// The `.debug_info` offset of the unit holding each of `pcs` (sorted).
    /// `unlisted` keeps, for the life of the object, the code ranges of the
    /// units that `.debug_aranges` does not list (often none: units
    /// without code), worked out the first time an address is not placed
    /// by `.debug_aranges`.
    fn units_of(
        &self,
        pcs: &[u64],
        unlisted: &OnceLock<UnitRanges>,
        release: &dyn Fn(),
    ) -> Vec<Option<usize>> {
        let mut unit: Vec<Option<usize>> = vec![None; pcs.len()];
        // (a range at 0 is that of code the linker discarded)
        let place = |unit: &mut [Option<usize>], begin: u64, end: u64, off: usize| {
            if begin == 0 {
                return;
            }
            let mut i = pcs.partition_point(|&pc| pc < begin);
            while i < pcs.len() && pcs[i] < end {
                unit[i].get_or_insert(off);
                i += 1;
            }
        };
        let mut headers = self.0.debug_aranges.headers();
        while let Ok(Some(h)) = headers.next() {
            let off = h.debug_info_offset().0;
            let mut entries = h.entries();
            while let Ok(Some(e)) = entries.next() {
                let r = e.range();
                place(&mut unit, r.begin, r.end, off);
            }
        }
        if unit.iter().all(Option::is_some) {
            return unit;
        }
        let ranges = unlisted.get_or_init(|| {
            let r = self.unlisted_ranges();
            release();
            r
        });
        for &(begin, end, off) in ranges.iter() {
            place(&mut unit, begin, end, off);
        }
        unit
    }

    /// The code ranges of the units `.debug_aranges` does not list, by the
    /// ranges of their root entries: each unit's abbreviations are parsed
    /// and dropped in turn.
    fn unlisted_ranges(&self) -> UnitRanges {
        let mut listed: HashSet<usize> = HashSet::new();
        let mut headers = self.0.debug_aranges.headers();
        while let Ok(Some(h)) = headers.next() {
            listed.insert(h.debug_info_offset().0);
        }
        let mut out: Vec<(u64, u64, usize)> = Vec::new();
        let mut headers = self.0.units();
        while let Ok(Some(h)) = headers.next() {
            let Some(off) = h.debug_info_offset().map(|o| o.0) else {
                continue;
            };
            if listed.contains(&off) {
                continue;
            }
            let Ok(u) = self.unit(h, false) else { continue };
            let Ok(mut ranges) = self.0.unit_ranges(&u) else {
                continue;
            };
            while let Ok(Some(r)) = ranges.next() {
                if r.begin < r.end {
                    out.push((r.begin, r.end, off));
                }
            }
        }
        log::debug!(
            "allocscope: {} code ranges in units that .debug_aranges does not list",
            out.len()
        );
        out.into_boxed_slice()
    }

    /// The unit of `header`, with its line program when `lines` (gimli's
    /// own constructor), else without: the line program's header (a file
    /// table that can hold hundreds of paths) is neither read nor parsed.
    fn unit(
        &self,
        header: gimli::UnitHeader<R<'a>>,
        lines: bool,
    ) -> gimli::Result<gimli::Unit<R<'a>>> {
        if lines {
            return self.0.unit(header);
        }
        let abbreviations = self.0.abbreviations(&header)?;
        let encoding = header.encoding();
        let file = self.0.file_type;
        let mut unit = gimli::Unit {
            abbreviations,
            name: None,
            comp_dir: None,
            low_pc: 0,
            str_offsets_base: gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
                encoding, file,
            ),
            addr_base: gimli::DebugAddrBase(0),
            loclists_base: gimli::DebugLocListsBase::default_for_encoding_and_file(encoding, file),
            rnglists_base: gimli::DebugRngListsBase::default_for_encoding_and_file(encoding, file),
            line_program: None,
            dwo_id: None,
            header,
        };
        let mut low_pc = None;
        {
            let mut cursor = unit.header.entries(&unit.abbreviations);
            cursor.next_dfs()?;
            let root = cursor.current().ok_or(gimli::Error::MissingUnitDie)?;
            for attr in root.attrs() {
                match (attr.name(), attr.value()) {
                    (gimli::DW_AT_low_pc, v) => low_pc = Some(v),
                    (gimli::DW_AT_str_offsets_base, AttributeValue::DebugStrOffsetsBase(b)) => {
                        unit.str_offsets_base = b;
                    }
                    (
                        gimli::DW_AT_addr_base | gimli::DW_AT_GNU_addr_base,
                        AttributeValue::DebugAddrBase(b),
                    ) => unit.addr_base = b,
                    (
                        gimli::DW_AT_rnglists_base | gimli::DW_AT_GNU_ranges_base,
                        AttributeValue::DebugRngListsBase(b),
                    ) => unit.rnglists_base = b,
                    (gimli::DW_AT_loclists_base, AttributeValue::DebugLocListsBase(b)) => {
                        unit.loclists_base = b;
                    }
                    _ => {}
                }
            }
        }
        if let Some(v) = low_pc {
            if let Some(a) = self.0.attr_address(&unit, v)? {
                unit.low_pc = a;
            }
        }
        Ok(unit)
    }

    /// Walks the unit at `offset` for `pcs` (sorted, all in that unit).
    fn unit_lookup(
        &self,
        offset: usize,
        pcs: &[u64],
        lines: bool,
        files: &mut Files,
    ) -> gimli::Result<Vec<PcInfo<'a>>> {
        let header = self
            .0
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(offset))?;
        let unit = self.unit(header, lines)?;
        let u = unit.unit_ref(&self.0);

        /// A function entry that holds some of the addresses.
        struct Rec<'a> {
            name: Option<AttributeValue<R<'a>>>,
            origin: Option<AttributeValue<R<'a>>>,
            call_file: Option<u64>,
            call_line: u32,
        }
        /// An open function entry: its depth and the addresses it holds.
        struct Scope {
            depth: isize,
            pcs: Vec<usize>,
        }
        let all: Vec<usize> = (0..pcs.len()).collect();
        let mut recs: Vec<Rec<'a>> = Vec::new();
        let mut chains: Vec<Vec<usize>> = vec![Vec::new(); pcs.len()];
        let mut stack: Vec<Scope> = Vec::new();
        let mut skip_deeper_than: Option<isize> = None;
        let mut entries = u.entries_raw(None)?;
        while !entries.is_empty() {
            let depth = entries.next_depth();
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            if let Some(d) = skip_deeper_than {
                if depth > d {
                    entries.skip_attributes(abbrev.attributes())?;
                    continue;
                }
                skip_deeper_than = None;
            }
            while stack.last().is_some_and(|s| s.depth >= depth) {
                stack.pop();
            }
            let tag = abbrev.tag();
            if tag != gimli::DW_TAG_subprogram && tag != gimli::DW_TAG_inlined_subroutine {
                entries.skip_attributes(abbrev.attributes())?;
                continue;
            }
            let inlined = tag == gimli::DW_TAG_inlined_subroutine;
            let (mut low, mut high, mut size, mut ranges) = (None, None, None, None);
            let mut rec = Rec {
                name: None,
                origin: None,
                call_file: None,
                call_line: 0,
            };
            let mut linkage = false;
            for spec in abbrev.attributes() {
                let attr = entries.read_attribute(*spec)?;
                match attr.name() {
                    gimli::DW_AT_low_pc => low = u.attr_address(attr.value())?,
                    gimli::DW_AT_high_pc => match attr.value() {
                        AttributeValue::Udata(v) => size = Some(v),
                        v => high = u.attr_address(v)?,
                    },
                    gimli::DW_AT_ranges => ranges = u.attr_ranges_offset(attr.value())?,
                    gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                        rec.name = Some(attr.value());
                        linkage = true;
                    }
                    gimli::DW_AT_name if !linkage => rec.name = Some(attr.value()),
                    gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                        rec.origin = Some(attr.value());
                    }
                    gimli::DW_AT_call_file => {
                        // DWARF 5 numbers files from 0; before, 0 is none.
                        if let AttributeValue::FileIndex(f) = attr.value() {
                            if f > 0 || u.header.version() >= 5 {
                                rec.call_file = Some(f);
                            }
                        }
                    }
                    gimli::DW_AT_call_line => {
                        rec.call_line = attr
                            .udata_value()
                            .map_or(0, |l| u32::try_from(l).unwrap_or(0));
                    }
                    _ => {}
                }
            }
            // The addresses this entry holds, among those its parent holds
            // (any of the unit's, for a subprogram).
            let candidates: &[usize] = match stack.last() {
                Some(s) if inlined => &s.pcs,
                _ => &all,
            };
            let mut held: Vec<usize> = Vec::new();
            let mut hold = |begin: u64, end: u64| {
                // (code the linker discarded is at 0)
                if begin >= end || begin == 0 {
                    return;
                }
                let mut i = candidates.partition_point(|&c| pcs[c] < begin);
                while i < candidates.len() && pcs[candidates[i]] < end {
                    held.push(candidates[i]);
                    i += 1;
                }
            };
            if !candidates.is_empty() {
                if let Some(r) = ranges {
                    let mut list = u.ranges(r)?;
                    while let Some(r) = list.next()? {
                        hold(r.begin, r.end);
                    }
                } else if let Some(begin) = low {
                    if let Some(end) = high.or_else(|| size.map(|s| begin.wrapping_add(s))) {
                        hold(begin, end);
                    }
                }
            }
            if held.is_empty() {
                if abbrev.has_children() {
                    skip_deeper_than = Some(depth);
                }
                continue;
            }
            held.sort_unstable();
            held.dedup();
            let id = recs.len();
            recs.push(rec);
            for &i in &held {
                let chain = &mut chains[i];
                if !inlined {
                    // a subprogram starts the chain afresh
                    chain.clear();
                }
                if chain.len() < MAX_DEPTH {
                    chain.push(id);
                }
            }
            if abbrev.has_children() {
                stack.push(Scope { depth, pcs: held });
            }
        }

        // Names, once per entry that holds an address.
        let names: Vec<Option<&'a [u8]>> = recs
            .iter()
            .map(|r| {
                let direct = r
                    .name
                    .and_then(|v| u.attr_string(v).ok())
                    .map(|s| s.slice());
                direct.or_else(|| {
                    r.origin
                        .and_then(|o| self.name_of(&unit, o, 16).ok().flatten())
                })
            })
            .collect();

        // Files, rendered once per file index of the unit.
        let mut file_names: HashMap<u64, Option<Arc<str>>> = HashMap::new();
        let mut file_of = |files: &mut Files, index: u64| -> Option<Arc<str>> {
            file_names
                .entry(index)
                .or_insert_with(|| {
                    let header = unit.line_program.as_ref()?.header();
                    render_file(u, header, index).map(|p| files.intern(p))
                })
                .clone()
        };

        let mut out: Vec<PcInfo<'a>> = Vec::with_capacity(pcs.len());
        for chain in chains {
            let frames = chain
                .into_iter()
                .map(|id| DwFrame {
                    name: names[id],
                    // the call site of an inlined function (lines only)
                    call: match (lines, recs[id].call_file) {
                        (true, Some(f)) => file_of(files, f).map(|f| (f, recs[id].call_line)),
                        _ => None,
                    },
                })
                .collect();
            out.push(PcInfo {
                chain: frames,
                line: None,
            });
        }
        if !lines {
            return Ok(out);
        }
        // The line program, run once: each address gets the row that
        // covers it.
        if let Some(program) = unit.line_program.clone() {
            let mut rows = program.rows();
            let mut prev: Option<(u64, u64, u32)> = None;
            while let Some((_, row)) = rows.next_row()? {
                let addr = row.address();
                if let Some((pa, pf, pl)) = prev {
                    if addr > pa {
                        let mut i = pcs.partition_point(|&pc| pc < pa);
                        while i < pcs.len() && pcs[i] < addr {
                            if out[i].line.is_none() {
                                out[i].line = file_of(files, pf).map(|f| (f, pl));
                            }
                            i += 1;
                        }
                    }
                }
                prev = if row.end_sequence() {
                    None
                } else {
                    let line = row
                        .line()
                        .map_or(0, |l| u32::try_from(l.get()).unwrap_or(0));
                    Some((addr, row.file_index(), line))
                };
            }
        }
        Ok(out)
    }

    /// The name of the entry an `abstract_origin` or `specification`
    /// attribute points to, following such links up to `limit` times.
    fn name_of(
        &self,
        unit: &gimli::Unit<R<'a>>,
        at: AttributeValue<R<'a>>,
        limit: usize,
    ) -> gimli::Result<Option<&'a [u8]>> {
        if limit == 0 {
            return Ok(None);
        }
        match at {
            AttributeValue::UnitRef(offset) => self.name_at(unit, offset, limit),
            AttributeValue::DebugInfoRef(dr) => {
                // Another unit (link-time optimisation): find it.
                let Some(other) = self.unit_containing(dr.0)? else {
                    return Ok(None);
                };
                let Some(offset) = dr.to_unit_offset(&other.header) else {
                    return Ok(None);
                };
                self.name_at(&other, offset, limit)
            }
            _ => Ok(None),
        }
    }

    fn name_at(
        &self,
        unit: &gimli::Unit<R<'a>>,
        offset: gimli::UnitOffset,
        limit: usize,
    ) -> gimli::Result<Option<&'a [u8]>> {
        let u = unit.unit_ref(&self.0);
        let mut entries = u.entries_raw(Some(offset))?;
        let Some(abbrev) = entries.read_abbreviation()? else {
            return Ok(None);
        };
        let mut name = None;
        let mut next = None;
        for spec in abbrev.attributes() {
            let attr = entries.read_attribute(*spec)?;
            match attr.name() {
                gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                    if let Ok(s) = u.attr_string(attr.value()) {
                        return Ok(Some(s.slice()));
                    }
                }
                gimli::DW_AT_name => name = u.attr_string(attr.value()).ok().map(|s| s.slice()),
                gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                    next = Some(attr.value());
                }
                _ => {}
            }
        }
        match (name, next) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(n)) => self.name_of(unit, n, limit - 1),
            (None, None) => Ok(None),
        }
    }

    /// The unit whose entries include the `.debug_info` offset `off`.
    fn unit_containing(&self, off: usize) -> gimli::Result<Option<gimli::Unit<R<'a>>>> {
        let starts = self.1.get_or_init(|| {
            let mut v = Vec::new();
            let mut headers = self.0.units();
            while let Ok(Some(h)) = headers.next() {
                if let Some(o) = h.debug_info_offset() {
                    v.push(o.0);
                }
            }
            v
        });
        let i = starts.partition_point(|&s| s <= off);
        let Some(&start) = i.checked_sub(1).and_then(|i| starts.get(i)) else {
            return Ok(None);
        };
        let h = self
            .0
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(start))?;
        if off >= start.saturating_add(h.length_including_self()) {
            return Ok(None);
        }
        self.unit(h, false).map(Some)
    }
}

/// The path of file `index` of a unit's line program: the unit's directory,
/// the file's directory and its name, joined as the compiler gave them.
fn render_file<'a>(
    u: gimli::UnitRef<'_, R<'a>>,
    header: &gimli::LineProgramHeader<R<'a>>,
    index: u64,
) -> Option<String> {
    let file = header.file(index)?;
    let mut path = match u.comp_dir {
        Some(d) => String::from_utf8_lossy(d.slice()).into_owned(),
        None => String::new(),
    };
    if file.directory_index() != 0 {
        if let Some(dir) = file.directory(header) {
            let dir = u.attr_string(dir).ok()?;
            path_push(&mut path, &String::from_utf8_lossy(dir.slice()));
        }
    }
    let name = u.attr_string(file.path_name()).ok()?;
    path_push(&mut path, &String::from_utf8_lossy(name.slice()));
    Some(path)
}

fn path_push(path: &mut String, p: &str) {
    if p.starts_with('/') || path.is_empty() {
        *path = p.to_string();
    } else {
        if !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(p);
    }
}
