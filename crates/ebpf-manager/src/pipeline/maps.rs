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

use crate::{Error, InnerOuterMapSpec, MapSpecEditor, Result};

/// `BPF_MAP_TYPE_ARRAY_OF_MAPS` and `BPF_MAP_TYPE_HASH_OF_MAPS`.
const MAPS_OF_MAPS: [u32; 2] = [12, 13];
/// Bytes of the BTF struct a converted map of maps gets in `.maps` (five `__uint` members).
pub(crate) const CONVERTED_SIZE: u64 = 40;

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
    inner_outer: &[InnerOuterMapSpec],
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
                .checked_add(size)
                .filter(|&e| e <= data.len() as u64)
                .and(start.checked_add(STANDARD))
                .ok_or_else(|| {
                    malformed(format!(
                        "its {size}-byte definition at byte {start} runs past the end of its {}-byte section",
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
            if MAPS_OF_MAPS.contains(&field(def, 0))
                && !inner_outer.iter().any(|s| s.outer_map_name == name)
            {
                return Err(malformed(
                    "it is a legacy map of maps, whose inner map aya cannot know: name it in Options::inner_outer_map_specs (the Go InnerOuterMapSpecs)".into(),
                ));
            }
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

/// Renames the legacy map sections left without maps (excluded or converted ones moved out):
/// aya refuses a `maps` section without maps. Returns (old, new) names for the BTF DATASECs.
pub(crate) fn rename_emptied(b: &mut Builder<'_>) -> Vec<(String, String)> {
    let emptied: Vec<_> = b
        .sections
        .iter()
        .filter(|s| s.name.as_slice().starts_with(b"maps") && s.sh_type == elf::SHT_PROGBITS)
        .filter(|s| {
            !b.symbols.iter().any(|y| {
                y.section == Some(s.id())
                    && !y.name.is_empty()
                    && matches!(y.st_type(), elf::STT_OBJECT | elf::STT_NOTYPE)
            })
        })
        .map(|s| s.id())
        .collect();
    let mut renamed = Vec::new();
    for (n, sid) in emptied.into_iter().enumerate() {
        let s = b.sections.get_mut(sid);
        let old = String::from_utf8_lossy(s.name.as_slice()).into_owned();
        let new = format!(".ebpf_manager.emptied.{n}");
        s.name = new.clone().into_bytes().into();
        renamed.push((old, new));
    }
    renamed
}

/// A legacy map of maps moved to `.maps`, to be described in BTF with its inner map.
#[derive(Debug)]
pub(crate) struct Converted {
    pub(crate) name: String,
    /// Type, key size, value size, max entries, flags.
    pub(crate) outer: [u32; 5],
    pub(crate) inner: [u32; 5],
    pub(crate) offset: u32,
    /// The legacy section it came from (its DATASEC loses the map's VAR).
    pub(crate) from_section: String,
}

fn definition(
    b: &Builder<'_>,
    name: &str,
) -> Option<(object::build::elf::SymbolId, [u32; 5], String)> {
    let sym = b.symbols.iter().find(|s| {
        s.name.as_slice() == name.as_bytes()
            && s.section
                .is_some_and(|id| b.sections.get(id).name.as_slice().starts_with(b"maps"))
    })?;
    let section = b.sections.get(sym.section?);
    let object::build::elf::SectionData::Data(data) = &section.data else {
        return None;
    };
    let def = data.get(sym.st_value as usize..sym.st_value as usize + STANDARD as usize)?;
    let fields = [0, 4, 8, 12, 16].map(|at| field(def, at));
    Some((
        sym.id(),
        fields,
        String::from_utf8_lossy(section.name.as_slice()).into_owned(),
    ))
}

/// Moves each legacy outer map of `specs` into `.maps` (created when missing); returns them and
/// the size `.maps` ends with.
pub(crate) fn convert_maps_of_maps(
    b: &mut Builder<'_>,
    specs: &[InnerOuterMapSpec],
) -> Result<(Vec<Converted>, u64)> {
    let mut converted = Vec::new();
    if specs.is_empty() {
        return Ok((converted, 0));
    }
    let refuse = |spec: &InnerOuterMapSpec, reason: String| Error::InvalidOption {
        option: format!(
            "inner_outer_map_specs {{ {} -> {} }}",
            spec.outer_map_name, spec.inner_map_name
        ),
        reason,
    };
    let maps_id = match b.sections.iter().find(|s| s.name.as_slice() == b".maps") {
        Some(s) => s.id(),
        None => {
            let s = b.sections.add();
            s.name = b".maps"[..].into();
            s.sh_type = elf::SHT_PROGBITS;
            s.sh_flags = u64::from(elf::SHF_ALLOC | elf::SHF_WRITE);
            s.sh_addralign = 8;
            s.data = object::build::elf::SectionData::Data(Vec::new().into());
            s.id()
        }
    };
    for spec in specs {
        let Some((outer_id, outer, from_section)) = definition(b, &spec.outer_map_name) else {
            return Err(refuse(spec, format!("the object has no legacy map `{}` (a BTF-defined map of maps names its inner map in `values`)", spec.outer_map_name)));
        };
        let Some((_, inner, _)) = definition(b, &spec.inner_map_name) else {
            return Err(refuse(
                spec,
                format!("the object has no legacy map `{}`", spec.inner_map_name),
            ));
        };
        if !MAPS_OF_MAPS.contains(&outer[0]) {
            return Err(refuse(
                spec,
                format!(
                    "`{}` is a map of type {}, not a map of maps",
                    spec.outer_map_name, outer[0]
                ),
            ));
        }
        let object::build::elf::SectionData::Data(data) = &mut b.sections.get_mut(maps_id).data
        else {
            return Err(refuse(
                spec,
                "the object's .maps section holds no data".into(),
            ));
        };
        let data = data.to_mut();
        data.resize(data.len().next_multiple_of(8), 0);
        let offset = data.len() as u64;
        data.resize((offset + CONVERTED_SIZE) as usize, 0);
        let sym = b.symbols.get_mut(outer_id);
        sym.section = Some(maps_id);
        sym.st_value = offset;
        sym.st_size = CONVERTED_SIZE;
        converted.push(Converted {
            name: spec.outer_map_name.clone(),
            outer,
            inner,
            offset: offset as u32,
            from_section,
        });
    }
    let size = match &b.sections.get(maps_id).data {
        object::build::elf::SectionData::Data(d) => d.len() as u64,
        _ => 0,
    };
    Ok((converted, size))
}
