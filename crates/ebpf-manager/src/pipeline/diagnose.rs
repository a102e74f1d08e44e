//! Verifier rejections the pipeline can explain. aya-obj poisons a CO-RE relocation the kernel's
//! types cannot satisfy (a field or type that kernel lacks) as `call 0xBAD2310`, and the verifier
//! reports only `invalid func unknown#195896080`; the program's `.BTF.ext` record of that
//! instruction names the type, the field and what was asked of it.

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::{btf::Ext, btf_types::Types};

const POISON: &str = "unknown#195896080";

/// What each CO-RE relocation kind asks (`enum bpf_core_relo_kind`).
const KINDS: [&str; 13] = [
    "the byte offset of",
    "the byte size of",
    "the existence of",
    "the signedness of",
    "the left shift of",
    "the right shift of",
    "the local type id of",
    "the target type id of",
    "the existence of",
    "the size of",
    "the existence of",
    "the value of",
    "a match of",
];

/// The essential names (without a `___flavor`) of the types the CO-RE relocations of the
/// prepared `bytes` are rooted at, each once.
pub(crate) fn core_type_names(bytes: &[u8]) -> Vec<String> {
    let Ok(file) = object::File::parse(bytes) else {
        return Vec::new();
    };
    let section = |name: &str| file.section_by_name(name).and_then(|s| s.data().ok());
    let (Some(btf), Some(ext)) = (section(".BTF"), section(".BTF.ext")) else {
        return Vec::new();
    };
    let (Ok(btf), Ok(ext)) = (super::btf_read::BtfView::parse(btf), Ext::parse(ext)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut blocks = ext.core_sections();
    blocks.sort_unstable();
    blocks.dedup();
    for block in blocks {
        for rel in ext.core_relos(block) {
            let Some(t) = btf.get(btf.skip_mods(rel[1])) else {
                continue;
            };
            let name = match t.name.rfind("___") {
                Some(at) if at > 0 => &t.name[..at],
                _ => t.name,
            };
            if !name.is_empty() && seen.insert(name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The CO-RE relocation of `function` (in the prepared `bytes`) that a verifier `log` shows
/// poisoned, in words; `None` when the log shows none or the record cannot be found.
pub(crate) fn core_failure(bytes: &[u8], function: &str, log: &str) -> Option<String> {
    if !log.contains(POISON) {
        return None;
    }
    // `12: (85) call unknown#195896080`: the instruction's index in the loaded program, whose
    // main function comes first.
    let index = log.lines().rev().find_map(|l| {
        let (n, rest) = l.split_once(": (85) call ")?;
        rest.starts_with(POISON)
            .then(|| n.trim().parse::<u64>().ok())
            .flatten()
    });
    let file = object::File::parse(bytes).ok()?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(function) && s.kind() == object::SymbolKind::Text)?;
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let section_name = section.name().ok()?;
    let btf = Types::parse(file.section_by_name(".BTF")?.data().ok()?).ok()?;
    let ext = Ext::parse(file.section_by_name(".BTF.ext")?.data().ok()?).ok()?;
    let name_off = ext
        .core_sections()
        .into_iter()
        .find(|&o| btf.string_at(o) == section_name)?;
    let span = sym.address()..sym.address() + sym.size();
    let relos: Vec<[u32; 4]> = ext
        .core_relos(name_off)
        .into_iter()
        .filter(|r| span.contains(&u64::from(r[0])))
        .collect();
    let by_index = index.and_then(|n| {
        relos
            .iter()
            .find(|r| u64::from(r[0]) == sym.address() + n * 8)
    });
    let rel = by_index.or_else(|| (relos.len() == 1).then(|| &relos[0]))?;
    let kind = rel[3] as usize;
    let what = btf.describe_access(rel[1], btf.string_at(rel[2]), matches!(kind, 10 | 11));
    Some(format!(
        "{} {what} (CO-RE relocation kind {kind} at instruction {})",
        KINDS.get(kind).unwrap_or(&"a relocation of"),
        (u64::from(rel[0]) - sym.address()) / 8
    ))
}

#[cfg(test)]
mod tests {
    const CORE: &[u8] = include_bytes!("../../../../ebpf-fixtures/core.bpf.o");

    #[test]
    fn a_poisoned_relocation_is_named_from_its_record() {
        let bytes = CORE.to_vec();
        let log =
            "0: R1=ctx() R10=fp0\n0: (85) call unknown#195896080\ninvalid func unknown#195896080\n";
        assert_eq!(
            super::core_failure(&bytes, "core_pid_offset", log).as_deref(),
            Some("the byte offset of struct task_struct.pid (CO-RE relocation kind 0 at instruction 0)")
        );
        // Without the instruction's line (a terse log), the function's only record.
        let terse = "invalid func unknown#195896080\n";
        assert!(super::core_failure(&bytes, "core_pid_offset", terse).is_some());
        // Another rejection, or another function, is not explained.
        assert_eq!(
            super::core_failure(&bytes, "core_pid_offset", "R1 invalid mem access"),
            None
        );
        assert_eq!(super::core_failure(&bytes, "no_such_function", log), None);
    }
}
