//! libbpf's `__ksym` externs, which aya 0.14 does not resolve (it fails on the `.ksyms` DATASEC
//! it finds no section for): kfunc calls (`BPF_PSEUDO_KFUNC_CALL`, Linux 5.13; kfuncs for
//! tracing programs came in 6.0 to 6.2) and kernel variables (`BPF_PSEUDO_BTF_ID` for typed ones,
//! Linux 5.10; an address from `/proc/kallsyms` for `void` ones), resolved against the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`) and written into the instructions before aya sees
//! them. aya-obj leaves a call whose source register is not `BPF_PSEUDO_CALL`, and any reference
//! to an undefined symbol, as it finds them.
//!
//! As in libbpf, a `__weak` extern the kernel lacks reads as 0 (`bpf_ksym_exists()` is false) and
//! its calls become an invalid helper call (`unknown#2002000000 + n`) the verifier only sees if
//! it is reachable. A missing extern that is not weak is poisoned the same way, so only the
//! programs that use it fail, when they load, with [`Error::MissingKsym`] naming it (Go's
//! model: a probe nobody selects does not stop `init`). A kfunc vmlinux lacks is looked up in
//! the BTF of loaded modules ([`split_btf`](super::split_btf)); its call names the module by
//! its index in the fd array of `BPF_PROG_LOAD` (libbpf's numbering, from 1), which aya 0.14
//! does not pass: the manager loads such a program itself (`manager/kfuncs.rs`).

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionKind};

pub(crate) use super::btf_types::KsymKind as Kind;
use super::{btf_types::Types, invalid};
use crate::{insns, Error, Result};

/// The imm of the first poisoned call, as libbpf numbers them.
pub(crate) const POISON_BASE: i64 = 2_002_000_000;

const CALL: u8 = 0x85;
const BPF_PSEUDO_BTF_ID: u8 = 3;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// One `__ksym` extern of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extern {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// Declared `__weak`: may be missing.
    pub(crate) weak: bool,
}

/// What the running kernel has for an extern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Its id in vmlinux BTF (kfuncs, typed variables).
    BtfId(u32),
    /// Its address (untyped variables).
    Address(u64),
    /// A kfunc of a module: its id in the module's BTF, the module's index in the fd array of
    /// `BPF_PROG_LOAD` (from 1), and the fd of that BTF (what a 64-bit load of the kfunc's
    /// address names).
    ModuleFunc { id: u32, slot: u16, fd: i32 },
    /// The kernel cannot give it: why.
    Missing(&'static str),
}

pub(crate) const NO_KFUNC_UNLISTED: &str = "/sys/kernel/btf/vmlinux has no such kfunc, and the BTF of modules could not be listed (BPF_BTF_GET_NEXT_ID needs CAP_SYS_ADMIN, the BTF of modules Linux 5.11)";
pub(crate) const NO_KFUNC: &str = "neither /sys/kernel/btf/vmlinux nor the BTF of a loaded module has such a kfunc (it needs a later kernel, or its module loaded)";
const NO_VAR: &str = "/sys/kernel/btf/vmlinux has no such variable (the kernel's BTF describes per-CPU variables only)";
const NO_ADDRESS: &str = "/proc/kallsyms does not list it (a kernel built without CONFIG_KALLSYMS_ALL lists no variables)";

/// The object's `__ksym` externs: kinds from its BTF, weakness from its symbol table. None
/// without BTF (clang writes `.ksyms` only with `-g`).
pub(crate) fn list(object: &[u8]) -> Result<Vec<Extern>> {
    let file = object::File::parse(object).map_err(invalid)?;
    let Some(data) = file.section_by_name(".BTF").and_then(|s| s.data().ok()) else {
        return Ok(Vec::new());
    };
    if !data.windows(7).any(|w| w == b".ksyms\0") {
        return Ok(Vec::new());
    }
    let bad = |e: String| invalid(format!("its `.ksyms` externs: {e}"));
    let types = Types::parse(data).map_err(bad)?;
    Ok(types
        .ksyms()
        .map_err(bad)?
        .into_iter()
        .map(|(name, kind)| {
            let weak = file
                .symbols()
                .any(|s| s.is_undefined() && s.is_weak() && s.name() == Ok(name.as_str()));
            Extern { name, kind, weak }
        })
        .collect())
}

/// Looks `externs` up in the running kernel's BTF (`vmlinux`) and, for variables, in `kallsyms`
/// (name -> address): the kernel finds a typed variable's address there too.
pub(crate) fn resolve(
    externs: &[Extern],
    vmlinux: &aya::Btf,
    kallsyms: &HashMap<String, u64>,
) -> Vec<(Extern, Resolved)> {
    use aya_obj::btf::BtfKind;
    externs
        .iter()
        .map(|e| {
            let address = kallsyms.get(&e.name).copied();
            let resolved = match e.kind {
                Kind::Func => vmlinux
                    .id_by_type_name_kind(&e.name, BtfKind::Func)
                    .map_or(Resolved::Missing(NO_KFUNC), Resolved::BtfId),
                Kind::TypedVar => match vmlinux.id_by_type_name_kind(&e.name, BtfKind::Var) {
                    Err(_) => Resolved::Missing(NO_VAR),
                    Ok(_) if address.is_none() => Resolved::Missing(NO_ADDRESS),
                    Ok(id) => Resolved::BtfId(id),
                },
                Kind::UntypedVar => {
                    address.map_or(Resolved::Missing(NO_ADDRESS), Resolved::Address)
                }
            };
            (e.clone(), resolved)
        })
        .collect()
}

/// The `.BTF` of an object with externs, made loadable (see [`Types::fix_ksyms`]).
pub(crate) fn fix_btf(btf: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: String| invalid(format!("its `.ksyms` externs: {e}"));
    let mut types = Types::parse(btf).map_err(bad)?;
    types.fix_ksyms().map_err(bad)?;
    Ok(types.to_bytes())
}

/// Writes what the kernel has for each extern into the instructions that reference it;
/// returns the externs whose calls or loads were poisoned (the kernel lacks them), in the order
/// of their poison numbers.
pub(crate) fn patch(
    bytes: &mut [u8],
    externs: &[(Extern, Resolved)],
) -> Result<Vec<(Extern, &'static str)>> {
    if externs.is_empty() {
        return Ok(Vec::new());
    }
    let mut sites = Vec::new();
    {
        let file = object::File::parse(&*bytes).map_err(invalid)?;
        for section in file.sections() {
            if section.kind() != SectionKind::Text {
                continue;
            }
            let Some((file_off, size)) = section.file_range() else {
                continue;
            };
            for (offset, rel) in section.relocations() {
                let object::RelocationTarget::Symbol(si) = rel.target() else {
                    continue;
                };
                let Ok(sym) = file.symbol_by_index(si) else {
                    continue;
                };
                let Some(found) = externs
                    .iter()
                    .find(|(e, _)| sym.is_undefined() && sym.name() == Ok(e.name.as_str()))
                else {
                    continue;
                };
                if offset.checked_add(8).is_none_or(|end| end > size) {
                    continue; // validate.rs refuses it
                }
                sites.push(((file_off + offset) as usize, found.clone()));
            }
        }
    }
    let mut poisoned: Vec<(Extern, &'static str)> = Vec::new();
    for (at, (ext, resolved)) in sites {
        let code = bytes[at];
        let is_call = code == CALL;
        if !is_call && code != insns::LD_IMM64 {
            return Err(invalid(format!(
                "`{}` is a `__ksym` extern referenced by an instruction that is neither a call nor a 64-bit load (opcode {code:#04x})",
                ext.name
            )));
        }
        if is_call && ext.kind != Kind::Func {
            return Err(invalid(format!(
                "`{}` is called but its `__ksym` extern is a variable",
                ext.name
            )));
        }
        if !is_call && at + 16 > bytes.len() {
            return Err(invalid(format!("the load of `{}` is truncated", ext.name)));
        }
        let dst = bytes[at + 1] & 0x0f;
        match (is_call, resolved) {
            (true, Resolved::BtfId(id)) => {
                set(bytes, at, CALL, BPF_PSEUDO_KFUNC_CALL << 4, id as i32);
            }
            (true, Resolved::ModuleFunc { id, slot, .. }) => {
                set(bytes, at, CALL, BPF_PSEUDO_KFUNC_CALL << 4, id as i32);
                bytes[at + 2..at + 4].copy_from_slice(&(slot as i16).to_le_bytes());
            }
            (false, Resolved::ModuleFunc { id, fd, .. }) => btf_id_load(bytes, at, dst, id, fd),
            (false, Resolved::BtfId(id)) => btf_id_load(bytes, at, dst, id, 0),
            (false, Resolved::Address(addr)) => {
                set(bytes, at, insns::LD_IMM64, dst, addr as u32 as i32);
                set(bytes, at + 8, 0, 0, (addr >> 32) as u32 as i32);
            }
            (false, Resolved::Missing(_)) if ext.weak => {
                set(bytes, at, insns::LD_IMM64, dst, 0);
                set(bytes, at + 8, 0, 0, 0);
            }
            (_, Resolved::Missing(why)) => {
                let n = match poisoned.iter().position(|(p, _)| p.name == ext.name) {
                    Some(n) => n,
                    None => {
                        poisoned.push((ext.clone(), why));
                        poisoned.len() - 1
                    }
                };
                let imm = (POISON_BASE + n as i64) as i32;
                set(bytes, at, CALL, 0, imm);
                if !is_call {
                    // The load's second slot becomes `dst = 0`, so the register stays defined
                    // for the verifier's walk up to the poisoned call.
                    set(bytes, at + 8, 0xb7, dst, 0);
                }
            }
            (true, Resolved::Address(_)) => unreachable!("only variables have addresses"),
        }
    }
    Ok(poisoned)
}

/// Writes a `BPF_PSEUDO_BTF_ID` load of BTF id `id` into register `dst`; the second half's imm
/// is the fd of the BTF the id is in (0: vmlinux).
fn btf_id_load(bytes: &mut [u8], at: usize, dst: u8, id: u32, btf_fd: i32) {
    let regs = (BPF_PSEUDO_BTF_ID << 4) | dst;
    set(bytes, at, insns::LD_IMM64, regs, id as i32);
    set(bytes, at + 8, 0, 0, btf_fd);
}

/// Writes one instruction: opcode, registers byte, offset 0, imm.
fn set(bytes: &mut [u8], at: usize, code: u8, regs: u8, imm: i32) {
    bytes[at] = code;
    bytes[at + 1] = regs;
    bytes[at + 2..at + 4].copy_from_slice(&0i16.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&imm.to_le_bytes());
}

/// The poisoned extern a verifier log reports (`invalid func unknown#<n>`), if any.
pub(crate) fn in_verifier_log<'a>(
    poisoned: &'a [(Extern, &'static str)],
    log: &str,
) -> Option<&'a (Extern, &'static str)> {
    log.match_indices("unknown#").find_map(|(i, m)| {
        let digits: String = log[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let n = digits.parse::<i64>().ok()?.checked_sub(POISON_BASE)?;
        poisoned.get(usize::try_from(n).ok()?)
    })
}

/// The error of a program that failed to load because it uses `ext`.
pub(crate) fn missing_error(
    id: &crate::ProbeIdentificationPair,
    function: &str,
    (ext, why): &(Extern, &'static str),
) -> Error {
    Error::MissingKsym {
        id: id.clone(),
        function: function.to_owned(),
        symbol: ext.name.clone(),
        reason: why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{elf::ElfIndex, pipeline::Settings};

    const KFUNCS: &[u8] = include_bytes!("../../../../ebpf-fixtures/kfuncs.bpf.o");

    fn ext(name: &str, kind: Kind, weak: bool) -> Extern {
        Extern {
            name: name.into(),
            kind,
            weak,
        }
    }

    /// The instruction of `function` at `index` in the prepared bytes.
    fn insn(bytes: &[u8], function: &str, index: usize) -> [u8; 8] {
        let file = object::File::parse(bytes).unwrap();
        let sym = file.symbols().find(|s| s.name() == Ok(function)).unwrap();
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let at = (section.file_range().unwrap().0 + sym.address()) as usize + index * 8;
        bytes[at..at + 8].try_into().unwrap()
    }

    /// Indexes of the instructions of `function` with a relocation against `symbol`.
    fn sites(function: &str, symbol: &str) -> Vec<usize> {
        let bytes = KFUNCS.to_vec();
        let file = object::File::parse(bytes.as_slice()).unwrap();
        let sym = file.symbols().find(|s| s.name() == Ok(function)).unwrap();
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        section
            .relocations()
            .filter(|(_, r)| {
                let object::RelocationTarget::Symbol(i) = r.target() else {
                    return false;
                };
                file.symbol_by_index(i).unwrap().name() == Ok(symbol)
            })
            .map(|(off, _)| ((off - sym.address()) / 8) as usize)
            .collect()
    }

    #[test]
    fn externs_are_listed_with_their_kind_and_weakness() {
        let bytes = KFUNCS.to_vec();
        let mut got = list(&bytes).unwrap();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            got,
            vec![
                ext("bpf_ebpf_manager_no_such_kfunc", Kind::Func, true),
                ext("bpf_prog_active", Kind::TypedVar, false),
                ext("bpf_rcu_read_lock", Kind::Func, true),
                ext("bpf_rcu_read_unlock", Kind::Func, true),
                ext("bpf_task_from_pid", Kind::Func, false),
                ext("bpf_task_release", Kind::Func, false),
                ext("init_task", Kind::UntypedVar, false),
            ]
        );
        let probes = include_bytes!("../../../../ebpf-fixtures/probes.bpf.o");
        let probes = probes.to_vec();
        assert_eq!(list(&probes).unwrap(), vec![]);
    }

    #[test]
    fn instructions_get_what_the_kernel_has_and_the_rest_is_poisoned() {
        let resolved = vec![
            (
                ext("bpf_rcu_read_lock", Kind::Func, true),
                Resolved::BtfId(101),
            ),
            (
                ext("bpf_rcu_read_unlock", Kind::Func, true),
                Resolved::BtfId(102),
            ),
            (
                ext("bpf_ebpf_manager_no_such_kfunc", Kind::Func, true),
                Resolved::Missing(NO_KFUNC),
            ),
            (
                ext("bpf_task_from_pid", Kind::Func, false),
                Resolved::Missing(NO_KFUNC),
            ),
            (
                ext("bpf_task_release", Kind::Func, false),
                Resolved::BtfId(104),
            ),
            (
                ext("bpf_prog_active", Kind::TypedVar, false),
                Resolved::BtfId(105),
            ),
            (
                ext("init_task", Kind::UntypedVar, false),
                Resolved::Address(0xffff_ffff_8260_0000),
            ),
        ];
        let aligned = KFUNCS.to_vec();
        let elf = ElfIndex::parse(&aligned).unwrap();
        let settings = Settings {
            ksyms: &resolved,
            ..Default::default()
        };
        let p = crate::pipeline::prepare(&aligned, &elf, settings).unwrap();
        let (bytes, _) = p
            .instantiate(crate::pipeline::Constants::default())
            .unwrap();
        let imm = |i: [u8; 8]| i32::from_le_bytes(i[4..].try_into().unwrap());
        // A kfunc the kernel has: a kfunc call of its BTF id; its address, a BTF id load.
        let call = insn(
            &bytes,
            "kfunc_weak",
            sites("kfunc_weak", "bpf_rcu_read_lock")[1],
        );
        assert_eq!((call[0], call[1] >> 4, imm(call)), (0x85, 2, 101));
        let load = insn(
            &bytes,
            "kfunc_weak",
            sites("kfunc_weak", "bpf_rcu_read_lock")[0],
        );
        assert_eq!((load[0], load[1] >> 4, imm(load)), (0x18, 3, 101));
        // A weak one it lacks: address 0, and a call the verifier never reaches.
        let absent = sites("kfunc_weak", "bpf_ebpf_manager_no_such_kfunc");
        let load = insn(&bytes, "kfunc_weak", absent[0]);
        assert_eq!((load[0], load[1] >> 4, imm(load)), (0x18, 0, 0));
        let call = insn(&bytes, "kfunc_weak", absent[1]);
        assert_eq!((call[0], call[1], imm(call)), (0x85, 0, POISON_BASE as i32));
        // A strong one it lacks: poisoned, and a verifier report of it names it.
        let call = insn(
            &bytes,
            "kfunc_strong",
            sites("kfunc_strong", "bpf_task_from_pid")[0],
        );
        assert_eq!((call[0], imm(call)), (0x85, POISON_BASE as i32 + 1));
        let id = crate::ProbeIdentificationPair::new("u", "kfunc_strong");
        let log = "12: (85) call unknown#2002000001\ninvalid func unknown#2002000001\n";
        let err = p.name_load_error(Error::Verifier {
            id: id.clone(),
            function: "kfunc_strong".into(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
            log: log.into(),
        });
        assert!(
            matches!(&err, Error::MissingKsym { symbol, reason, .. } if symbol == "bpf_task_from_pid" && reason.contains("has such a kfunc")),
            "{err:?}"
        );
        // Variables: a typed one by BTF id, an untyped one by address.
        let load = insn(
            &bytes,
            "ksym_vars",
            sites("ksym_vars", "bpf_prog_active")[0],
        );
        assert_eq!((load[0], load[1] >> 4, imm(load)), (0x18, 3, 105));
        let at = sites("ksym_vars", "init_task")[0];
        let (lo, hi) = (
            insn(&bytes, "ksym_vars", at),
            insn(&bytes, "ksym_vars", at + 1),
        );
        assert_eq!((imm(lo) as u32, imm(hi) as u32), (0x8260_0000, 0xffff_ffff));
        // The `.BTF` aya-obj now fixes up (before: "Unable to determine the size of section
        // `.ksyms`").
        let mut obj = aya_obj::Object::parse(&bytes).unwrap();
        let features =
            aya_obj::btf::BtfFeatures::new(true, true, true, true, true, true, true, true);
        obj.fixup_and_sanitize_btf(&features).unwrap();
        let original_bytes = KFUNCS.to_vec();
        let mut original = aya_obj::Object::parse(&original_bytes).unwrap();
        let err = original.fixup_and_sanitize_btf(&features).unwrap_err();
        assert!(err.to_string().contains(".ksyms"), "{err}");
    }

    #[test]
    fn a_garbage_ksyms_entry_is_a_typed_error() {
        // Point the first `.ksyms` entry at type 1 (not a FUNC or VAR).
        let original = KFUNCS.to_vec();
        let file = object::File::parse(original.as_slice()).unwrap();
        let btf = file.section_by_name(".BTF").unwrap();
        let (off, _) = btf.file_range().unwrap();
        let data = btf.data().unwrap();
        let mut types = Types::parse(data).unwrap();
        let names: Vec<String> = types.ksyms().unwrap().into_iter().map(|(n, _)| n).collect();
        assert!(!names.is_empty());
        types.point_first_entry_for_tests(".ksyms", 1);
        let edited = types.to_bytes();
        assert_eq!(edited.len(), data.len());
        let mut bytes = KFUNCS.to_vec();
        bytes[off as usize..off as usize + edited.len()].copy_from_slice(&edited);
        let err = list(&bytes).unwrap_err();
        assert!(
            err.to_string()
                .contains("only kfuncs (FUNC) and variables (VAR)"),
            "{err}"
        );
    }

    #[test]
    fn only_poison_numbers_of_this_object_are_named() {
        let poisoned = vec![(ext("a", Kind::Func, false), NO_KFUNC)];
        assert!(in_verifier_log(&poisoned, "invalid func unknown#2002000000").is_some());
        assert!(in_verifier_log(&poisoned, "invalid func unknown#2002000001").is_none());
        assert!(in_verifier_log(&poisoned, "invalid func unknown#195896080").is_none());
        assert!(in_verifier_log(&poisoned, "unknown#").is_none());
    }
}
