//! Bypass (the Go `BypassEnabled`): programs that open with an `ld_imm64` of the undefined
//! symbol `bypass_program` get a prologue that looks their index up in the `program_bypassed`
//! array and returns 0 while it is set, so pausing them is a map write instead of a detach.
//!
//! The prologue is longer than the placeholder, so everything after it in the section moves:
//! relocations, later functions' symbols, and `.BTF.ext` records (the caller shifts those with
//! the returned [`Shift`]s). Like the Go library, only a placeholder at instruction 0, or at 1
//! after an instruction that reads r1, is patched: later, the registers to keep are unknown.

use object::{
    build::elf::{Builder, Relocation, SectionData, SymbolId},
    elf,
};

use crate::{Error, Result};

/// The array of bypass flags, one `u32` per program index (index 0 is unused).
pub(crate) const MAP: &str = "program_bypassed";
/// The placeholder symbol.
pub(crate) const PLACEHOLDER: &str = "bypass_program";

/// The stack slot the prologue uses for the lookup key.
const SLOT: i16 = -8;

/// Each patched program's function and bypass index.
pub(crate) type Indexes = Vec<(String, u32)>;

/// Bytes added to a section at `at` (offsets from `at` on move by `by`).
#[derive(Debug)]
pub(super) struct Shift {
    pub(super) section: String,
    pub(super) at: u32,
    pub(super) by: u32,
}

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    super::Instruction {
        code,
        dst,
        src,
        off,
        imm,
    }
    .to_bytes()
}

/// The prologue for program `index`; its map load is at slot [`MAP_LOAD`].
fn prologue(index: u32) -> Vec<u8> {
    let index = index as i32;
    [
        ins(0xbf, 6, 1, 0, 0),           // r6 = r1 (the context)
        ins(0x62, 10, 0, SLOT, index),   // *(u32 *)(r10 - 8) = index
        ins(0xbf, 2, 10, 0, 0),          // r2 = r10
        ins(0x07, 2, 0, 0, SLOT as i32), // r2 += -8
        ins(0x18, 1, 0, 0, 0),           // r1 = program_bypassed ll (relocated)
        ins(0, 0, 0, 0, 0),
        ins(0x85, 0, 0, 0, 1),     // call bpf_map_lookup_elem
        ins(0x15, 0, 0, 2, 0),     // if r0 == 0 goto return 0
        ins(0x61, 1, 0, 0, 0),     // r1 = *(u32 *)(r0 + 0)
        ins(0x15, 1, 0, 2, 0),     // if r1 == 0 goto continue
        ins(0xb7, 0, 0, 0, 0),     // r0 = 0
        ins(0x95, 0, 0, 0, 0),     // exit
        ins(0x62, 10, 0, SLOT, 0), // continue: *(u32 *)(r10 - 8) = 0
        ins(0xbf, 1, 6, 0, 0),     // r1 = r6
    ]
    .concat()
}

/// Slot of the prologue's map load.
const MAP_LOAD: u64 = 4;
/// Bytes the prologue adds over the 16-byte placeholder.
const GROWTH: u64 = 14 * 8 - 16;

/// Injects the prologue into every program opening with the placeholder; returns each patched
/// function with its index (from 1), and the section shifts.
pub(super) fn inject(b: &mut Builder<'_>, map: SymbolId) -> Result<(Indexes, Vec<Shift>)> {
    let Some(placeholder) = b
        .symbols
        .iter()
        .find(|s| s.name.as_slice() == PLACEHOLDER.as_bytes() && s.section.is_none())
        .map(|s| s.id())
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    // (relocation section, program section, offset), by section then decreasing offset so that
    // each insertion leaves the earlier offsets valid.
    let mut sites = Vec::new();
    for rel in b.sections.iter() {
        let (SectionData::Relocation(rels), Some(target)) = (&rel.data, rel.sh_info_section) else {
            continue;
        };
        let t = b.sections.get(target);
        if t.sh_flags & u64::from(elf::SHF_EXECINSTR) == 0
            || t.name.as_slice().starts_with(b".text")
        {
            continue;
        }
        for r in rels.iter().filter(|r| r.symbol == Some(placeholder)) {
            sites.push((rel.id(), target, r.r_offset));
        }
    }
    // Indexes follow the order of the programs in the object, from 1; insertions go from the
    // end so that each leaves the earlier offsets valid.
    sites.sort_by_key(|&(_, t, o)| (object::build::Id::index(&t), o));
    let mut indexes = Vec::new();
    let mut shifts = Vec::new();
    for (n, (rel_id, target, at)) in sites.into_iter().enumerate().rev() {
        let index = n as u32 + 1;
        let func = b
            .symbols
            .iter()
            .filter(|s| s.section == Some(target) && s.st_type() == elf::STT_FUNC)
            .find(|s| (s.st_value..s.st_value + s.st_size).contains(&at))
            .map(|s| {
                (
                    s.id(),
                    String::from_utf8_lossy(s.name.as_slice()).into_owned(),
                    s.st_value,
                )
            });
        let Some((func_id, function, start)) = func else {
            continue;
        };
        let SectionData::Data(data) = &mut b.sections.get_mut(target).data else {
            continue;
        };
        let refuse = |reason: String| Error::Bypass {
            function: function.clone(),
            reason,
        };
        let slot = (at - start) / 8;
        if slot > 1 {
            return Err(refuse(format!(
                "its `{PLACEHOLDER}` placeholder is instruction {slot}; it must open the program (instruction 0, or 1 after a copy of r1)"
            )));
        }
        // Before the placeholder, only a copy of the context into a register the prologue's
        // helper call keeps (r6 to r9) can stay: anything else would be clobbered or skipped.
        let first = data.get(start as usize..start as usize + 2);
        let keeps_context = first
            .is_some_and(|b| b[0] == 0xbf && b[1] >> 4 == 1 && (6..=9).contains(&(b[1] & 0x0f)));
        if slot == 1 && !keeps_context {
            return Err(refuse(format!(
                "instruction 0, before its `{PLACEHOLDER}` placeholder, is not a copy of r1 into r6-r9"
            )));
        }
        let data = data.to_mut();
        let end = at as usize + 16;
        if end > data.len() {
            return Err(refuse(
                "its placeholder runs past the end of its section".into(),
            ));
        }
        data.splice(at as usize..end, prologue(index));
        indexes.push((function.clone(), index));
        let name = String::from_utf8_lossy(b.sections.get(target).name.as_slice()).into_owned();
        for s in b.symbols.iter_mut() {
            if s.section == Some(target) && s.st_value >= at + 16 {
                s.st_value += GROWTH;
            }
        }
        b.symbols.get_mut(func_id).st_size += GROWTH;
        if let SectionData::Relocation(rels) = &mut b.sections.get_mut(rel_id).data {
            rels.retain(|r| !(r.symbol == Some(placeholder) && r.r_offset == at));
            for r in rels.iter_mut().filter(|r| r.r_offset >= at + 16) {
                r.r_offset += GROWTH;
            }
            rels.push(Relocation {
                r_offset: at + MAP_LOAD * 8,
                symbol: Some(map),
                r_type: elf::R_BPF_64_64,
                r_addend: 0,
            });
            rels.sort_by_key(|r| r.r_offset);
        }
        let to_u32 =
            |v: u64| u32::try_from(v).map_err(|_| refuse("its section is over 4 GiB".into()));
        shifts.push(Shift {
            section: name,
            at: to_u32(at + 16)?,
            by: to_u32(GROWTH)?,
        });
    }
    indexes.reverse();
    Ok((indexes, shifts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prologue_returns_0_when_bypassed_and_restores_the_context() {
        let p = crate::insns::decode(&prologue(3));
        assert_eq!(p.len() as u64 * 8, GROWTH + 16);
        assert_eq!((p[1].code, p[1].imm), (0x62, 3), "stores the index");
        assert!(p[MAP_LOAD as usize].is_ld_imm64());
        assert!(p[6].is_helper_call() && p[6].imm == 1);
        // Both jumps land on `r0 = 0` / the restore.
        assert_eq!((p[7].off, p[10].code), (2, 0xb7));
        assert_eq!((p[9].off, p[12].code), (2, 0x62));
        assert_eq!((p[13].dst, p[13].src), (1, 6));
    }
}
