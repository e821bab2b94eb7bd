//! The loaded objects' symbol tables, built once per object: function
//! names for return addresses without reading debug info.
//!
//! For each loaded object that a profile's addresses fall in, the object
//! file is mapped read-only (`crate::sys::MappedFile`: read in place from
//! the page cache, never copied onto the heap) and its function symbols are
//! gathered into a compact table: start address, size and the offset of
//! the name in the mapped string table, 16 bytes a function, sorted by
//! start. Names are read from the mapping and demangled only for the
//! addresses a profile needs. The table is kept for the life of the
//! process (or until [`clear`]); the mapping's pages are dropped from
//! resident memory after each use ([`ObjectSymbols::drop_resident_pages`]).
//!
//! The table is the object's full symbol table (`.symtab`) when it has one;
//! else that of its separate debug file found by build id under
//! `/usr/lib/debug/.build-id/` (what distributions' `-dbg` packages
//! install); else its dynamic symbols (`.dynsym`: exported functions only).
//! The same object's DWARF, when present and not compressed, is read by
//! `super::dwarf` through the same mapping.
//!
//! Linux only (it lists loaded objects with `dl_iterate_phdr`, through
//! `crate::sys::loaded_objects`); elsewhere it finds nothing and addresses
//! stay unresolved.

#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
pub(crate) use other::*;

#[cfg(target_os = "linux")]
mod linux {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use object::read::elf::{ElfFile, SectionHeader, Sym};
    use object::{elf, Object, ObjectSection};
    use parking_lot::Mutex;

    use crate::sys::{LoadedObject, MappedFile};

    #[cfg(target_pointer_width = "64")]
    pub(crate) type Elf = object::elf::FileHeader64<object::Endianness>;
    #[cfg(not(target_pointer_width = "64"))]
    pub(crate) type Elf = object::elf::FileHeader32<object::Endianness>;

    /// One function symbol: `start..start + size` in the file's addresses,
    /// its name at `name` in the string table. 16 bytes.
    #[derive(Clone, Copy, Debug)]
    struct FuncSym {
        start: u64,
        size: u32,
        name: u32,
    }

    /// The symbol table of one loaded object, and the mapped files its
    /// names and debug info are read from.
    #[derive(Debug)]
    pub(crate) struct ObjectSymbols {
        /// The loader's name (empty for the executable) and load bias: what
        /// identifies the object among the loaded ones.
        name: String,
        bias: u64,
        /// The object file itself, when it could be mapped.
        file: Option<MappedFile>,
        /// Its separate debug file, when one was found by build id.
        debug_file: Option<MappedFile>,
        /// Whether the names come from `debug_file` (else from `file`).
        names_in_debug_file: bool,
        /// Byte range of the string table in that file.
        strtab: std::ops::Range<usize>,
        /// Function symbols by start (for equal starts, the largest first).
        syms: Box<[FuncSym]>,
        /// The code ranges of the DWARF units that `.debug_aranges` does
        /// not list (`super::dwarf`), once worked out.
        pub(crate) unlisted_units: std::sync::OnceLock<super::super::dwarf::UnitRanges>,
    }

    /// A function found for an address: where it starts (file address) and
    /// its name as linked (mangled), borrowed from the mapping.
    pub(crate) struct FoundSym<'a> {
        pub(crate) start: u64,
        pub(crate) name: &'a [u8],
    }

    impl ObjectSymbols {
        /// Maps `o`'s file and builds its table. Never fails: an object
        /// whose file cannot be read gets an empty table (and a debug log).
        fn build(o: &LoadedObject) -> ObjectSymbols {
            let path: PathBuf = if o.is_main {
                PathBuf::from("/proc/self/exe")
            } else {
                PathBuf::from(&o.name)
            };
            let mut out = ObjectSymbols {
                name: o.name.clone(),
                bias: o.bias,
                file: None,
                debug_file: None,
                names_in_debug_file: false,
                strtab: 0..0,
                syms: Box::new([]),
                unlisted_units: std::sync::OnceLock::new(),
            };
            let file = match MappedFile::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    log::debug!("allocscope: cannot map {path:?} for its symbols: {e}");
                    return out;
                }
            };
            let parsed = ElfFile::<Elf>::parse(file.bytes());
            let (full, build_id) = match &parsed {
                Ok(p) => (
                    table(p, false),
                    p.build_id().ok().flatten().map(<[u8]>::to_vec),
                ),
                Err(e) => {
                    log::debug!("allocscope: cannot parse {path:?}: {e}");
                    (None, None)
                }
            };
            let mut chosen = full.map(|t| (false, t));
            if chosen.is_none() {
                // A stripped object: its debug file's full table, else the
                // dynamic symbols.
                if let Some(debug) = build_id.as_deref().and_then(debug_file_by_build_id) {
                    if let Ok(p) = ElfFile::<Elf>::parse(debug.bytes()) {
                        chosen = table(&p, false).map(|t| (true, t));
                    }
                    out.debug_file = Some(debug);
                }
            }
            if chosen.is_none() {
                chosen = parsed
                    .as_ref()
                    .ok()
                    .and_then(|p| table(p, true))
                    .map(|t| (false, t));
            }
            drop(parsed);
            if let Some((in_debug, (strtab, syms))) = chosen {
                out.names_in_debug_file = in_debug;
                out.strtab = strtab;
                out.syms = syms;
            }
            out.file = Some(file);
            out.drop_resident_pages();
            out
        }

        /// The object file's bytes (for its DWARF), when it is mapped.
        pub(crate) fn object_bytes(&self) -> Option<&[u8]> {
            self.file.as_ref().map(MappedFile::bytes)
        }

        /// The separate debug file's bytes, when one was found.
        pub(crate) fn debug_bytes(&self) -> Option<&[u8]> {
            self.debug_file.as_ref().map(MappedFile::bytes)
        }

        /// Added to the object's file addresses to get run-time addresses.
        pub(crate) fn bias(&self) -> u64 {
            self.bias
        }

        /// Function symbols in the table.
        pub(crate) fn len(&self) -> usize {
            self.syms.len()
        }

        /// The function containing the file address `svma`.
        pub(crate) fn find(&self, svma: u64) -> Option<FoundSym<'_>> {
            let idx = self.syms.partition_point(|s| s.start <= svma);
            // Walk back over symbols starting at or before the address (a
            // zero-size symbol may shadow the one that really contains it).
            let hit = self.syms[..idx].iter().rev().take(8).find(|s| {
                svma < s.start.saturating_add(u64::from(s.size)) || (s.size == 0 && svma == s.start)
            })?;
            let names = if self.names_in_debug_file {
                self.debug_file.as_ref()?
            } else {
                self.file.as_ref()?
            };
            let strtab = names.bytes().get(self.strtab.clone())?;
            let rest = strtab.get(usize::try_from(hit.name).ok()?..)?;
            let name = &rest[..rest.iter().position(|b| *b == 0)?];
            (!name.is_empty()).then_some(FoundSym {
                start: hit.start,
                name,
            })
        }

        /// Takes the mapped files' pages out of resident memory (see
        /// `MappedFile::drop_resident_pages`).
        pub(crate) fn drop_resident_pages(&self) {
            for f in self.file.iter().chain(self.debug_file.iter()) {
                f.drop_resident_pages();
            }
        }

        /// Bytes of heap the table holds.
        pub(crate) fn heap_bytes(&self) -> usize {
            self.syms.len() * std::mem::size_of::<FuncSym>()
                + self.name.capacity()
                + self
                    .unlisted_units
                    .get()
                    .map_or(0, |u| u.len() * std::mem::size_of::<(u64, u64, usize)>())
        }
    }

    /// The function symbols of `p`'s full (`dynamic == false`) or dynamic
    /// symbol table, sorted, with the byte range of its string table; `None`
    /// when the table is absent or holds no function.
    fn table(
        p: &ElfFile<'_, Elf>,
        dynamic: bool,
    ) -> Option<(std::ops::Range<usize>, Box<[FuncSym]>)> {
        let endian = p.endian();
        let t = if dynamic {
            p.elf_dynamic_symbol_table()
        } else {
            p.elf_symbol_table()
        };
        if t.is_empty() {
            return None;
        }
        let strsec = p.elf_section_table().section(t.string_section()).ok()?;
        if strsec.sh_type(endian) == elf::SHT_NOBITS {
            return None;
        }
        let (off, size) = strsec.file_range(endian)?;
        let strtab = usize::try_from(off).ok()?..usize::try_from(off.checked_add(size)?).ok()?;
        let mut syms: Vec<FuncSym> = t
            .symbols()
            .iter()
            .filter(|s| {
                matches!(s.st_type(), elf::STT_FUNC | elf::STT_GNU_IFUNC)
                    && !s.st_shndx(endian).is_special()
                    && s.st_name(endian) != 0
            })
            // (a u32 in 32-bit ELF files)
            .filter_map(
                #[allow(clippy::useless_conversion)]
                |s| {
                    let start: u64 = s.st_value(endian).into();
                    let size: u64 = s.st_size(endian).into();
                    (start != 0).then(|| FuncSym {
                        start,
                        size: u32::try_from(size).unwrap_or(u32::MAX),
                        name: s.st_name(endian),
                    })
                },
            )
            .collect();
        if syms.is_empty() {
            return None;
        }
        syms.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.size.cmp(&a.size)));
        Some((strtab, syms.into_boxed_slice()))
    }

    /// `/usr/lib/debug/.build-id/ab/cdef….debug`, mapped, when it exists.
    fn debug_file_by_build_id(id: &[u8]) -> Option<MappedFile> {
        if id.len() < 2 {
            return None;
        }
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let path = Path::new("/usr/lib/debug/.build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        let f = MappedFile::open(&path).ok()?;
        // only a file of the same build
        let same = ElfFile::<Elf>::parse(f.bytes())
            .ok()
            .and_then(|p| p.build_id().ok().flatten().map(|b| b == id))
            .unwrap_or(false);
        same.then_some(f)
    }

    /// Whether a section of `p` is usable in place: present, with file
    /// contents, not compressed.
    pub(crate) fn section_in_place<'a>(p: &ElfFile<'a, Elf>, name: &str) -> Option<&'a [u8]> {
        let s = p.section_by_name(name)?;
        let range = s.compressed_file_range().ok()?;
        if range.format != object::CompressionFormat::None {
            return None;
        }
        s.data().ok()
    }

    static OBJECTS: Mutex<Vec<Arc<ObjectSymbols>>> = Mutex::new(Vec::new());

    /// The table of `o`, built the first time it is asked for.
    pub(crate) fn symbols_of(o: &LoadedObject) -> Arc<ObjectSymbols> {
        let mut objects = OBJECTS.lock();
        if let Some(s) = objects
            .iter()
            .find(|s| s.bias == o.bias && s.name == o.name)
        {
            return Arc::clone(s);
        }
        let built = Arc::new(ObjectSymbols::build(o));
        log::debug!(
            "allocscope: symbol table of {:?}: {} functions, {} bytes",
            if o.is_main { "the executable" } else { &o.name },
            built.len(),
            built.heap_bytes()
        );
        objects.push(Arc::clone(&built));
        built
    }

    /// Forgets every table (and unmaps the files, once no capture uses
    /// them): after shared libraries were unloaded, say.
    pub(crate) fn clear() {
        OBJECTS.lock().clear();
    }

    /// Heap bytes held by the tables, and how many objects have one.
    pub(crate) fn footprint() -> (usize, usize) {
        let objects = OBJECTS.lock();
        (objects.iter().map(|o| o.heap_bytes()).sum(), objects.len())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[inline(never)]
        fn symtab_probe_function() -> usize {
            std::hint::black_box(symtab_probe_function as *const () as usize + 1)
        }

        fn find_name(addr: usize) -> Option<String> {
            let objects = crate::sys::loaded_objects();
            let o = objects.iter().find(|o| o.contains(addr))?;
            let s = symbols_of(o);
            let f = s.find((addr as u64).wrapping_sub(s.bias()))?;
            Some(format!("{:#}", backtrace::SymbolName::new(f.name)))
        }

        #[test]
        fn finds_full_names_in_the_executable_and_in_libc() {
            let inside = symtab_probe_function() + 1;
            assert_eq!(
                find_name(inside).as_deref(),
                Some("allocscope::profile::symtab::linux::tests::symtab_probe_function")
            );
            let m = find_name(libc::malloc as *const () as usize + 2).expect("malloc in libc");
            assert!(m.contains("malloc"), "{m}");
            assert_eq!(find_name(0), None);
            assert_eq!(find_name(usize::MAX), None);
            // built once: the same table again
            let objects = crate::sys::loaded_objects();
            let main = objects.iter().find(|o| o.is_main).unwrap();
            assert!(Arc::ptr_eq(&symbols_of(main), &symbols_of(main)));
            let (bytes, n) = footprint();
            assert!(n >= 1 && bytes > 0 && bytes < 64 << 20, "{bytes} {n}");
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    /// No symbol tables off Linux.
    pub(crate) fn clear() {}

    /// Nothing held.
    pub(crate) fn footprint() -> (usize, usize) {
        (0, 0)
    }
}
