//! Function names from the ELF symbol tables of the loaded objects.
//!
//! Debug info built with `debug = "line-tables-only"` names functions
//! without their path (`insert`, `call_once<…>`); the symbol table still has
//! the full mangled name. This module finds, for return addresses, the
//! function symbol that contains each call, reading only the symbol and
//! string tables of the object files (through the page cache), on demand.
//! Nothing is kept between calls: results live in the symbol cache.
//!
//! Linux only (it lists loaded objects with `dl_iterate_phdr`); elsewhere it
//! finds nothing and DWARF's names are used as they are.

use std::collections::HashMap;

/// A function symbol's names: demangled without the hash, and as linked.
pub(crate) struct SymName {
    pub(crate) demangled: String,
    pub(crate) mangled: String,
}

/// Names of the functions containing the calls that the return addresses
/// `rets` return to. Addresses without a symbol are left out.
#[cfg(target_os = "linux")]
pub(crate) fn function_names(rets: &[usize]) -> HashMap<usize, SymName> {
    use object::{Object, ObjectSymbol, SymbolKind};

    let mut out = HashMap::new();
    if rets.is_empty() {
        return out;
    }
    let objects = loaded_objects();
    // Group the lookups by object: each object's tables are read once.
    let mut by_object: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
    for &ret in rets {
        let pc = ret.wrapping_sub(1);
        if let Some(i) = objects.iter().position(|o| o.contains(pc)) {
            let svma = (pc as u64).wrapping_sub(objects[i].bias);
            by_object.entry(i).or_default().push((ret, svma));
        }
    }
    for (i, lookups) in by_object {
        let o = &objects[i];
        let path = if o.is_main {
            std::path::Path::new("/proc/self/exe")
        } else {
            std::path::Path::new(&o.name)
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("allocscope: cannot read symbols of {path:?}: {e}");
                continue;
            }
        };
        let cache = object::ReadCache::new(file);
        let parsed = match object::File::parse(&cache) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("allocscope: cannot parse {path:?}: {e}");
                continue;
            }
        };
        // (start, end, name): text symbols that are defined here.
        let mut syms: Vec<(u64, u64, &[u8])> = Vec::new();
        for table in [parsed.symbols(), parsed.dynamic_symbols()] {
            for s in table {
                if s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0 {
                    if let Ok(name) = s.name_bytes() {
                        if !name.is_empty() {
                            syms.push((s.address(), s.address().saturating_add(s.size()), name));
                        }
                    }
                }
            }
            if !syms.is_empty() {
                break; // the full table (.symtab) is enough when present
            }
        }
        // By start; for equal starts the largest first (then any alias).
        syms.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        for (ret, svma) in lookups {
            let idx = syms.partition_point(|s| s.0 <= svma);
            // Walk back over symbols starting at or before the address (a
            // zero-size symbol may shadow the one that really contains it).
            let hit = syms[..idx]
                .iter()
                .rev()
                .take(8)
                .find(|s| svma < s.1 || (s.1 == s.0 && svma == s.0));
            if let Some(&(_, _, name)) = hit {
                let sym = backtrace::SymbolName::new(name);
                out.insert(
                    ret,
                    SymName {
                        demangled: format!("{sym:#}"),
                        mangled: String::from_utf8_lossy(name).into_owned(),
                    },
                );
            }
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn function_names(_rets: &[usize]) -> HashMap<usize, SymName> {
    HashMap::new()
}

/// One loaded object: where its segments are, and its load bias.
#[cfg(target_os = "linux")]
struct LoadedObject {
    name: String,
    is_main: bool,
    bias: u64,
    /// Loaded segments, `[start, end)` in memory.
    ranges: Vec<(usize, usize)>,
}

#[cfg(target_os = "linux")]
impl LoadedObject {
    fn contains(&self, addr: usize) -> bool {
        self.ranges.iter().any(|&(s, e)| s <= addr && addr < e)
    }
}

#[cfg(target_os = "linux")]
fn loaded_objects() -> Vec<LoadedObject> {
    use std::ffi::{c_int, c_void, CStr};

    unsafe extern "C" fn callback(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `&mut Vec<LoadedObject>` passed below, alive
        // for the whole `dl_iterate_phdr` call; `info` and the program
        // headers it points to are valid for the duration of this callback,
        // as `dl_iterate_phdr` guarantees.
        let (objects, info) = unsafe { (&mut *(data as *mut Vec<LoadedObject>), &*info) };
        let first = objects.is_empty();
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string
            // owned by the loader, valid during the callback.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        let phdrs = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers,
            // valid during the callback.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let bias = info.dlpi_addr as usize;
        let ranges = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| {
                let start = bias.wrapping_add(p.p_vaddr as usize);
                (start, start.wrapping_add(p.p_memsz as usize))
            })
            .collect();
        objects.push(LoadedObject {
            // The first object listed is the executable (empty name).
            is_main: first && name.is_empty(),
            name,
            bias: bias as u64,
            ranges,
        });
        0
    }

    let mut objects: Vec<LoadedObject> = Vec::new();
    // SAFETY: the callback only reads what the loader hands it and writes to
    // `objects`, which outlives the call; it never unwinds.
    unsafe {
        libc::dl_iterate_phdr(Some(callback), &mut objects as *mut _ as *mut c_void);
    }
    objects
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[inline(never)]
    fn symtab_probe_function() -> usize {
        // A return address inside this function: the address of the
        // function itself plus one (any address inside works).
        std::hint::black_box(symtab_probe_function as *const () as usize + 1)
    }

    #[test]
    fn finds_full_names_in_the_executable_and_in_libc() {
        let inside = symtab_probe_function() + 1;
        let libc_fn = libc::malloc as *const () as usize + 2;
        let names = function_names(&[inside, libc_fn, 0, 1, usize::MAX]);
        let n = names.get(&inside).expect("own function in .symtab");
        assert_eq!(
            n.demangled,
            "allocscope::profile::symtab::tests::symtab_probe_function"
        );
        assert!(n.mangled.starts_with("_ZN") || n.mangled.starts_with("_R"));
        let m = names.get(&libc_fn).expect("malloc in libc's symbols");
        assert!(m.demangled.contains("malloc"), "{}", m.demangled);
        assert!(!names.contains_key(&0) && !names.contains_key(&usize::MAX));
    }
}
