//! Function names from the ELF symbol tables of the loaded objects.
//!
//! Debug info built with `debug = "line-tables-only"` names functions
//! without their path (`insert`, `call_once<…>`); the symbol table still has
//! the full mangled name. This module finds, for return addresses, the
//! function symbol that contains each call, reading only the symbol and
//! string tables of the object files (through the page cache), on demand.
//! Nothing is kept between calls: results live in the symbol cache.
//!
//! Linux only (it lists loaded objects with `dl_iterate_phdr`, through
//! `crate::sys::loaded_objects`); elsewhere it finds nothing and DWARF's
//! names are used as they are.

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
    let objects = crate::sys::loaded_objects();
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
        // the text symbols defined here
        let mut syms: Vec<TextSymbol<'_>> = Vec::new();
        for table in [parsed.symbols(), parsed.dynamic_symbols()] {
            for s in table {
                if s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0 {
                    if let Ok(name) = s.name_bytes() {
                        if !name.is_empty() {
                            syms.push(TextSymbol {
                                start: s.address(),
                                end: s.address().saturating_add(s.size()),
                                name,
                            });
                        }
                    }
                }
            }
            if !syms.is_empty() {
                break; // the full table (.symtab) is enough when present
            }
        }
        // By start; for equal starts the largest first (then any alias).
        syms.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        for (ret, svma) in lookups {
            let idx = syms.partition_point(|s| s.start <= svma);
            // Walk back over symbols starting at or before the address (a
            // zero-size symbol may shadow the one that really contains it).
            let hit = syms[..idx]
                .iter()
                .rev()
                .take(8)
                .find(|s| svma < s.end || (s.end == s.start && svma == s.start));
            if let Some(&TextSymbol { name, .. }) = hit {
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

/// A function symbol of an object file: its address range (in the file's
/// addresses) and its name as linked.
#[cfg(target_os = "linux")]
struct TextSymbol<'a> {
    start: u64,
    end: u64,
    name: &'a [u8],
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn function_names(_rets: &[usize]) -> HashMap<usize, SymName> {
    HashMap::new()
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
