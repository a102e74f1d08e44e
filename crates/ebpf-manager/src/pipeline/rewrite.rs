//! The init-time rewrite of the ELF with `object`'s builder: program sections renamed, merged
//! or hidden for aya (with `.BTF.ext` following), legacy maps normalized (`maps.rs`).

use std::collections::{HashMap, HashSet};

use object::{
    build::elf::{Builder, SectionData},
    elf,
};

use super::{btf, btf_types, bypass, invalid, ksyms, maps, sections, Settings};
use crate::{Error, Result};

/// One renamed or merged program section, for `.BTF.ext`.
struct Moved {
    from: String,
    to: String,
    shift: u32,
}

/// The init-time rewrite with `object`'s ELF builder; returns the bytes and the bypass index of
/// each patched program.
pub(super) fn rewrite(
    original: &[u8],
    settings: &Settings<'_>,
) -> Result<(Vec<u8>, bypass::Indexes)> {
    let readable = without_llvm_sections(original)?;
    let mut b = Builder::read(readable.as_slice()).map_err(invalid)?;
    for s in b.sections.iter_mut() {
        if s.name.as_slice().starts_with(b".llvm_addrsig") {
            s.delete = true;
        }
    }
    // clang shares one string table between section and symbol names; the builder writes
    // section names into a table of their own.
    if !b
        .sections
        .iter()
        .any(|s| matches!(s.data, SectionData::SectionString))
    {
        let s = b.sections.add();
        s.name = b".shstrtab"[..].into();
        s.sh_type = elf::SHT_STRTAB;
        s.sh_addralign = 1;
        s.data = SectionData::SectionString;
    }
    let mut names: HashSet<String> = b
        .sections
        .iter()
        .map(|s| String::from_utf8_lossy(s.name.as_slice()).into_owned())
        .collect();
    let mut excluded = settings.excluded_maps.to_vec();
    let (mut indexes, mut shifts) = (Vec::new(), Vec::new());
    let bypass_map = b
        .symbols
        .iter()
        .find(|s| s.name.as_slice() == bypass::MAP.as_bytes() && s.section.is_some())
        .map(|s| s.id());
    if let Some(map) = bypass_map {
        if settings.bypass_enabled {
            (indexes, shifts) = bypass::inject(&mut b, map)?;
        }
        // Without bypass (or without a program to bypass) the map is not created, as in Go.
        if indexes.is_empty() && !excluded.iter().any(|m| m == bypass::MAP) {
            excluded.push(bypass::MAP.to_owned());
        }
    }
    let mut moved = Vec::new();
    let programs: Vec<_> = b
        .sections
        .iter()
        .filter(|s| {
            s.sh_type == elf::SHT_PROGBITS && s.sh_flags & u64::from(elf::SHF_EXECINSTR) != 0
        })
        .map(|s| {
            (
                s.id(),
                String::from_utf8_lossy(s.name.as_slice()).into_owned(),
            )
        })
        .filter(|(_, n)| !n.starts_with(".text") && !n.is_empty())
        .collect();
    let mut hidden = 0;
    for (id, name) in programs {
        let to = match sections::fate(&name) {
            sections::Fate::Keep => continue,
            // XDP names take no suffix in aya: sections of one such name are merged.
            sections::Fate::Rename(to) if to.starts_with("xdp") => {
                let target = b
                    .sections
                    .iter()
                    .find(|s| s.name.as_slice() == to.as_bytes() && !s.delete);
                if let Some(target) = target.map(|t| t.id()) {
                    let shift = merge(&mut b, target, id)?;
                    moved.push(Moved {
                        from: name,
                        to,
                        shift,
                    });
                    continue;
                }
                to
            }
            // A suffix keeps names unique: aya-obj keys func info by section name.
            sections::Fate::Rename(to) => {
                let rest = name.split_once('/').map_or("", |(_, r)| r);
                unique(
                    &mut names,
                    if rest.is_empty() {
                        to
                    } else {
                        format!("{to}/{rest}")
                    },
                )
            }
            sections::Fate::Hide(_) => {
                hidden += 1;
                unique(&mut names, format!("socket/ebpf_manager_hidden_{hidden}"))
            }
        };
        names.insert(to.clone());
        b.sections.get_mut(id).name = to.clone().into_bytes().into();
        moved.push(Moved {
            from: name,
            to,
            shift: 0,
        });
    }
    let outcome = maps::normalize(
        &mut b,
        settings.spec_editors,
        &excluded,
        settings.inner_outer,
    )?;
    let (converted, maps_size) = maps::convert_maps_of_maps(&mut b, settings.inner_outer)?;
    let emptied = maps::rename_emptied(&mut b);
    let btf_maps = edit_btf_maps(
        &mut b,
        settings.spec_editors,
        &excluded,
        &converted,
        maps_size,
    )?;
    let unknown = |m: &&String| !outcome.names.contains(m) && !btf_maps.contains(m);
    if settings.excluded_maps.iter().any(|m| unknown(&m)) {
        // struct_ops maps are made by the manager after aya's load (manager/struct_ops.rs).
        let struct_ops = super::struct_ops::names(original);
        if let Some(m) = settings
            .excluded_maps
            .iter()
            .find(|m| unknown(m) && !struct_ops.contains(m))
        {
            return Err(Error::InvalidOption {
                option: format!("excluded map `{m}`"),
                reason: format!(
                    "the object has no map `{m}` (it has: {})",
                    [outcome.names.as_slice(), btf_maps.as_slice(), &struct_ops]
                        .concat()
                        .join(", ")
                ),
            });
        }
    }
    if !moved.is_empty() || !emptied.is_empty() || !shifts.is_empty() {
        fix_btf(&mut b, &shifts, &moved, &emptied)?;
    }
    if !settings.ksyms.is_empty() {
        let btf = b.sections.iter_mut().find(|s| s.name.as_slice() == b".BTF");
        if let Some(s) = btf {
            if let SectionData::Data(data) = &s.data {
                s.data = SectionData::Data(ksyms::fix_btf(data)?.into());
            }
        }
    }
    let mut out = Vec::new();
    b.write(&mut out).map_err(invalid)?;
    Ok((out, indexes))
}

/// A copy of `elf` whose LLVM-specific sections (`SHT_LLVM_ADDRSIG`, for linkers; `object`'s
/// builder refuses their type) are plain data, deleted after reading.
pub(super) fn without_llvm_sections(elf: &[u8]) -> Result<Vec<u8>> {
    const SHT_LOOS_LLVM: std::ops::RangeInclusive<u32> = 0x6fff_4c00..=0x6fff_4cff;
    let mut out = elf.to_vec();
    let truncated = || invalid("truncated ELF header");
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let shoff = elf
        .get(0x28..0x30)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(truncated)? as usize;
    let entsize = usize::from(u16_at(0x3a).ok_or_else(truncated)?);
    let count = usize::from(u16_at(0x3c).ok_or_else(truncated)?);
    for i in 0..count {
        let at = shoff + i * entsize + 4;
        let Some(ty) = elf.get(at..at + 4) else {
            return Err(invalid("section headers past the end of the file"));
        };
        if SHT_LOOS_LLVM.contains(&u32::from_le_bytes(ty.try_into().expect("4 bytes"))) {
            out[at..at + 4].copy_from_slice(&elf::SHT_PROGBITS.to_le_bytes());
        }
    }
    Ok(out)
}

/// Applies editors to and exclusions of BTF-defined maps (`.BTF` types, see `btf_types.rs`);
/// returns the names of the object's BTF maps.
fn edit_btf_maps(
    b: &mut Builder<'_>,
    editors: &[crate::MapSpecEditor],
    excluded: &[String],
    converted: &[maps::Converted],
    maps_size: u64,
) -> Result<Vec<String>> {
    let btf_id = b
        .sections
        .iter()
        .find(|s| s.name.as_slice() == b".BTF")
        .map(|s| s.id());
    let btf_id = match btf_id {
        Some(id) => id,
        None if converted.is_empty() => return Ok(Vec::new()),
        // An object built without -g (the Go examples' Makefile): Go accepts its legacy maps of
        // maps; aya-obj reads an inner map only from BTF, so the converted maps get BTF of
        // their own, in an otherwise empty `.BTF`.
        None => {
            let s = b.sections.add();
            s.name = b".BTF"[..].into();
            s.sh_type = elf::SHT_PROGBITS;
            s.sh_addralign = 4;
            s.data = SectionData::Data(btf_types::empty().into());
            s.id()
        }
    };
    let SectionData::Data(data) = &b.sections.get(btf_id).data else {
        return Ok(Vec::new());
    };
    let bad = |e: String| invalid(format!("cannot edit its BTF maps: {e}"));
    let mut types = btf_types::Types::parse(data).map_err(bad)?;
    for c in converted {
        types.remove_vars(&c.from_section, std::slice::from_ref(&c.name));
        let size = u32::try_from(maps_size).map_err(|_| bad(".maps over 4 GiB".into()))?;
        types.add_map_of_maps(&c.name, c.outer, c.inner, c.offset, size);
    }
    let names = types.vars(".maps");
    let gone: Vec<String> = excluded
        .iter()
        .filter(|m| names.contains(m))
        .cloned()
        .collect();
    let edits: Vec<&crate::MapSpecEditor> = editors
        .iter()
        .filter(|e| names.contains(&e.name))
        .filter(|e| {
            e.map_type.is_some()
                || e.key_size.is_some()
                || e.value_size.is_some()
                || e.flags.is_some()
        })
        .collect();
    if gone.is_empty() && edits.is_empty() && converted.is_empty() {
        return Ok(names);
    }
    types.remove_vars(".maps", &gone);
    for e in edits {
        types.edit_map(e);
    }
    b.sections.get_mut(btf_id).data = SectionData::Data(types.to_bytes().into());
    // Programs referencing an excluded map keep an unrelocated load (aya-obj would otherwise
    // relocate it to another map of `.maps`): the kernel refuses them, as it should.
    let symbols: Vec<_> = b
        .symbols
        .iter()
        .filter(|s| gone.iter().any(|g| g.as_bytes() == s.name.as_slice()))
        .filter(|s| {
            s.section
                .is_some_and(|id| b.sections.get(id).name.as_slice() == b".maps")
        })
        .map(|s| s.id())
        .collect();
    for s in b.sections.iter_mut() {
        if let SectionData::Relocation(rels) = &mut s.data {
            rels.retain(|r| !r.symbol.is_some_and(|id| symbols.contains(&id)));
        }
    }
    Ok(names)
}

/// A name not in `names`, from `want`.
fn unique(names: &mut HashSet<String>, want: String) -> String {
    let mut name = want.clone();
    let mut n = 0;
    while names.contains(&name) {
        n += 1;
        name = format!("{want}/{n}");
    }
    name
}

/// Appends program section `from` to `into` (8-byte aligned), with its symbols and
/// relocations; returns where its code starts in `into`.
fn merge(
    b: &mut Builder<'_>,
    into: object::build::elf::SectionId,
    from: object::build::elf::SectionId,
) -> Result<u32> {
    let name = |b: &Builder<'_>, id| {
        String::from_utf8_lossy(b.sections.get(id).name.as_slice()).into_owned()
    };
    let SectionData::Data(code) = b.sections.get(from).data.clone() else {
        return Err(invalid(format!(
            "program section `{}` holds no data",
            name(b, from)
        )));
    };
    let into_name = name(b, into);
    let SectionData::Data(target) = &mut b.sections.get_mut(into).data else {
        return Err(invalid(format!(
            "program section `{into_name}` holds no data"
        )));
    };
    let target = target.to_mut();
    target.resize(target.len().next_multiple_of(8), 0);
    let base = target.len() as u64;
    target.extend_from_slice(&code);
    let size = target.len() as u64;
    let into_section = b.sections.get_mut(into);
    into_section.sh_size = size;
    b.sections.get_mut(from).delete = true;
    for s in b.symbols.iter_mut() {
        if s.section == Some(from) {
            s.section = Some(into);
            s.st_value += base;
        }
    }
    let into_rel = b
        .sections
        .iter()
        .find(|s| s.sh_info_section == Some(into) && matches!(s.data, SectionData::Relocation(_)))
        .map(|s| s.id());
    let from_rels: Vec<_> = b
        .sections
        .iter()
        .filter(|s| s.sh_info_section == Some(from) && !s.delete)
        .map(|s| s.id())
        .collect();
    for rel_id in from_rels {
        let rel = b.sections.get_mut(rel_id);
        let SectionData::Relocation(rels) = &mut rel.data else {
            continue;
        };
        rels.iter_mut().for_each(|r| r.r_offset += base);
        match into_rel {
            Some(into_rel) => {
                let rels = std::mem::take(rels);
                rel.delete = true;
                if let SectionData::Relocation(target) = &mut b.sections.get_mut(into_rel).data {
                    target.extend(rels);
                }
            }
            None => rel.sh_info_section = Some(into),
        }
    }
    u32::try_from(base)
        .map_err(|_| invalid(format!("program section `{into_name}` grows over 4 GiB")))
}

/// Makes `.BTF` and `.BTF.ext` follow renamed and merged sections.
fn fix_btf(
    b: &mut Builder<'_>,
    shifts: &[bypass::Shift],
    moved: &[Moved],
    emptied: &[(String, String)],
) -> Result<()> {
    let find = |b: &Builder<'_>, name: &str| {
        b.sections
            .iter()
            .find(|s| s.name.as_slice() == name.as_bytes())
            .map(|s| s.id())
    };
    let Some(btf_id) = find(b, ".BTF") else {
        return Ok(());
    };
    let SectionData::Data(data) = &b.sections.get(btf_id).data else {
        return Ok(());
    };
    let mut btf = data.to_vec();
    let bad = |e: String| invalid(format!("cannot rewrite its BTF: {e}"));
    let mut offsets: HashMap<String, u32> = HashMap::new();
    let mut offset_of = |btf: &mut Vec<u8>, name: &str| -> Result<u32> {
        if let Some(&o) = offsets.get(name) {
            return Ok(o);
        }
        let o = btf::append_string(btf, name).map_err(bad)?;
        offsets.insert(name.to_owned(), o);
        Ok(o)
    };
    for (old, new) in emptied {
        let off = offset_of(&mut btf, new)?;
        btf::rename_datasec(&mut btf, old, off).map_err(bad)?;
    }
    if let Some(ext_id) = find(b, ".BTF.ext") {
        let SectionData::Data(raw) = &b.sections.get(ext_id).data else {
            return Ok(());
        };
        let mut ext = btf::Ext::parse(raw).map_err(bad)?;
        let offsets_of = |ext: &btf::Ext, btf: &[u8], name: &str| -> Vec<u32> {
            let set: HashSet<u32> = ext
                .names()
                .filter(|&o| btf::string_at(btf, o).is_ok_and(|s| s == name))
                .collect();
            set.into_iter().collect()
        };
        // Shifts name sections as they were before the renames below.
        for s in shifts {
            for from in offsets_of(&ext, &btf, &s.section) {
                ext.shift(from, s.at, s.by).map_err(bad)?;
            }
        }
        for m in moved {
            // A section merged into one that has blocks of its own joins those: aya-obj keeps
            // one block per name.
            let existing = offsets_of(&ext, &btf, &m.to).into_iter().next();
            let to = match existing {
                Some(o) => o,
                None => offset_of(&mut btf, &m.to)?,
            };
            for from in offsets_of(&ext, &btf, &m.from) {
                ext.move_section(from, to, m.shift).map_err(bad)?;
            }
        }
        b.sections.get_mut(ext_id).data = SectionData::Data(ext.to_bytes().into());
        // Its relocations (for linkers; aya reads none) describe the old layout.
        for s in b.sections.iter_mut() {
            if s.sh_info_section == Some(ext_id) {
                s.delete = true;
            }
        }
    }
    b.sections.get_mut(btf_id).data = SectionData::Data(btf.into());
    Ok(())
}
