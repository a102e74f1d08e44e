//! Legacy map definitions (`struct bpf_map_def` in `SEC("maps")` or `SEC("maps/<name>")`), made
//! into what aya-obj reads, as cilium/ebpf reads them for the Go library.
//!
//! aya-obj reads up to 28 bytes of a definition as {type, key_size, value_size, max_entries,
//! map_flags, id, pinning}. Go users compile other layouts: iovisor/gobpf's puts `pinning` and a
//! 256-byte `namespace` after the five standard fields, which aya would read as its `id` and
//! (from the namespace's first bytes) an invalid pinning type. cilium/ebpf reads the five
//! standard fields and ignores the rest; so does the pipeline, by giving the symbol a 20-byte
//! size. Zero key and value sizes of perf event arrays become 4, as cilium does; editors and
//! exclusions apply here, before aya creates anything.

use object::{build::elf::Builder, elf};

use crate::{Error, MapSpecEditor, Result};

/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
const PERF_EVENT_ARRAY: u32 = 4;
/// The five standard fields.
const STANDARD: u64 = 20;
/// aya's own layout (five fields, id, pinning): kept as it is.
const AYA_LAYOUT: u64 = 28;

/// What [`normalize`] did, for the pipeline's log and checks.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Legacy maps by name.
    pub(crate) names: Vec<String>,
    /// Whether anything changed.
    pub(crate) changed: bool,
    /// Sections renamed because every map in them was excluded (old, new): aya refuses a
    /// `maps` section without maps, and the BTF DATASEC of the old name must follow.
    pub(crate) emptied: Vec<(String, String)>,
}

fn field(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn set(data: &mut [u8], at: usize, v: u32) {
    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Normalizes every legacy map definition of `b`, applies `editors` to them and takes the
/// `excluded` ones out of aya's sight (with the relocations that reference them).
pub(crate) fn normalize(
    b: &mut Builder<'_>,
    editors: &[MapSpecEditor],
    excluded: &[String],
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let sections: Vec<_> = b
        .sections
        .iter()
        .filter(|s| s.name.as_slice().starts_with(b"maps") && s.sh_type == elf::SHT_PROGBITS)
        .map(|s| s.id())
        .collect();
    let mut deleted = Vec::new();
    let mut parking = None;
    for sid in sections {
        let syms: Vec<_> = b
            .symbols
            .iter()
            .filter(|s| s.section == Some(sid) && !s.name.is_empty())
            .filter(|s| matches!(s.st_type(), elf::STT_OBJECT | elf::STT_NOTYPE))
            .map(|s| s.id())
            .collect();
        for sym_id in syms {
            let sym = b.symbols.get(sym_id);
            let name = String::from_utf8_lossy(sym.name.as_slice()).into_owned();
            let (start, size) = (sym.st_value, sym.st_size);
            let malformed = |reason: String| Error::InvalidMapDefinition {
                map: name.clone(),
                reason,
            };
            if size < STANDARD {
                return Err(malformed(format!(
                    "its definition is {size} bytes; a struct bpf_map_def has at least five 4-byte fields (type, key_size, value_size, max_entries, map_flags)"
                )));
            }
            out.names.push(name.clone());
            if excluded.contains(&name) {
                // Moved out of the maps section rather than deleted: aya-obj still finds the
                // symbol's offset for its BTF DATASEC entry, but creates no map for it.
                let parking = *parking.get_or_insert_with(|| {
                    let s = b.sections.add();
                    s.name = b".ebpf_manager.excluded"[..].into();
                    s.sh_type = elf::SHT_PROGBITS;
                    s.sh_addralign = 1;
                    s.data = object::build::elf::SectionData::Data(Vec::new().into());
                    s.id()
                });
                b.symbols.get_mut(sym_id).section = Some(parking);
                deleted.push(sym_id);
                out.changed = true;
                continue;
            }
            let object::build::elf::SectionData::Data(data) = &mut b.sections.get_mut(sid).data
            else {
                return Err(malformed("its section holds no data".into()));
            };
            let end = start
                .checked_add(STANDARD)
                .filter(|&e| e <= data.len() as u64)
                .ok_or_else(|| {
                    malformed(format!(
                        "its definition at byte {start} runs past the end of its {}-byte section",
                        data.len()
                    ))
                })?;
            let def = &mut data.to_mut()[start as usize..end as usize];
            let before = def.to_vec();
            if field(def, 0) == PERF_EVENT_ARRAY {
                for at in [4, 8] {
                    if field(def, at) == 0 {
                        set(def, at, 4);
                    }
                }
            }
            if let Some(e) = editors.iter().find(|e| e.name == name) {
                let fields = [e.map_type, e.key_size, e.value_size, e.max_entries, e.flags];
                for (i, v) in fields.into_iter().enumerate() {
                    if let Some(v) = v {
                        set(def, i * 4, v);
                    }
                }
            }
            out.changed |= def != before.as_slice();
            if size != STANDARD && size != AYA_LAYOUT {
                log::debug!(
                    "map `{name}`: a {size}-byte legacy definition; reading its five standard fields, as the Go library does"
                );
                b.symbols.get_mut(sym_id).st_size = STANDARD;
                out.changed = true;
            }
        }
    }
    if !deleted.is_empty() {
        let emptied: Vec<_> = b
            .sections
            .iter()
            .filter(|s| s.name.as_slice().starts_with(b"maps") && s.sh_type == elf::SHT_PROGBITS)
            .filter(|s| {
                !b.symbols
                    .iter()
                    .any(|y| y.section == Some(s.id()) && y.st_type() == elf::STT_OBJECT)
            })
            .map(|s| s.id())
            .collect();
        for (n, sid) in emptied.into_iter().enumerate() {
            let s = b.sections.get_mut(sid);
            let old = String::from_utf8_lossy(s.name.as_slice()).into_owned();
            let new = format!(".ebpf_manager.excluded.{n}");
            s.name = new.clone().into_bytes().into();
            out.emptied.push((old, new));
        }
    }
    if !deleted.is_empty() {
        // Programs that reference an excluded map keep an unrelocated map load: the kernel
        // refuses them, which is right, since they must be excluded too.
        for s in b.sections.iter_mut() {
            if let object::build::elf::SectionData::Relocation(rels) = &mut s.data {
                rels.retain(|r| !r.symbol.is_some_and(|id| deleted.contains(&id)));
            }
        }
    }
    Ok(out)
}
