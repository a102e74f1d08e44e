//! Finding a function in a module's BTF. The kernel gives each module's types as split BTF
//! over vmlinux's (Linux 5.11): its type ids continue after vmlinux's last, and its string
//! offsets after vmlinux's strings. So a module kfunc's id is vmlinux's type count plus its
//! position in the module, and its name is at `name_off` minus vmlinux's string length.

const FUNC: u32 = 12;

use super::btf_read::{layout, walk};

/// What split BTF continues: the base's type count (void excluded) and its strings (a module's
/// names may be among them: pahole reuses the base's strings).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Base<'a> {
    pub(crate) types: u32,
    pub(crate) strings: &'a [u8],
}

/// The [`Base`] of vmlinux's BTF.
pub(crate) fn base(vmlinux: &[u8]) -> Option<Base<'_>> {
    let l = layout(vmlinux)?;
    let types = walk(&vmlinux[l.types], |_, _, _, _| {})?;
    Some(Base {
        types,
        strings: &vmlinux[l.strings],
    })
}

/// The type id of the function `name` in the split BTF `module` over `base`.
pub(crate) fn func_id(module: &[u8], base: Base<'_>, name: &str) -> Option<u32> {
    type_id(module, base, name, &[FUNC])
}

/// The kinds a CO-RE relocation's root type can be found as: struct, union, enum, typedef,
/// enum64.
pub(crate) const NAMED_TYPES: [u32; 5] = [4, 5, 6, 8, 19];

/// The type id of the first type named `name` of one of `kinds` in the split BTF `module` over
/// `base`.
pub(crate) fn type_id(module: &[u8], base: Base<'_>, name: &str, kinds: &[u32]) -> Option<u32> {
    let l = layout(module)?;
    let strings = &module[l.strings];
    let base_len = base.strings.len() as u32;
    let name_at = |off: u32| -> Option<&[u8]> {
        let rest = match off.checked_sub(base_len) {
            Some(own) => strings.get(own as usize..)?,
            None => base.strings.get(off as usize..)?,
        };
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    };
    let mut found = None;
    walk(&module[l.types], |n, kind, name_off, _| {
        if found.is_none() && kinds.contains(&kind) && name_at(name_off) == Some(name.as_bytes()) {
            found = Some(base.types + 1 + n);
        }
    })?;
    found
}

/// One BTF of `vmlinux` and the split BTF `module` over it, with the module's types after
/// vmlinux's and its strings after vmlinux's: split BTF's ids and string offsets already count
/// from there, so the module's types read the same in it. aya-obj relocates CO-RE against one
/// BTF: this one finds the module's types too. The module's struct, union, enum and typedef
/// types named in `shadowed` (vmlinux's names) lose their name, so that they are no candidates
/// where vmlinux has one.
pub(crate) fn merged(
    vmlinux: &[u8],
    module: &[u8],
    shadowed: &std::collections::HashSet<&str>,
) -> Option<Vec<u8>> {
    let (v, m) = (layout(vmlinux)?, layout(module)?);
    let mut module_types = module[m.types.clone()].to_vec();
    let base_strings = &vmlinux[v.strings.clone()];
    let own = &module[m.strings.clone()];
    let name = |off: u32| -> Option<&str> {
        let rest = match (off as usize).checked_sub(base_strings.len()) {
            Some(o) => own.get(o..)?,
            None => base_strings.get(off as usize..)?,
        };
        std::str::from_utf8(&rest[..rest.iter().position(|&b| b == 0)?]).ok()
    };
    let mut anonymous = Vec::new();
    walk(&module_types, |_, kind, name_off, at| {
        if NAMED_TYPES.contains(&kind) && name(name_off).is_some_and(|n| shadowed.contains(n)) {
            anonymous.push(at);
        }
    })?;
    for at in anonymous {
        module_types[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    }
    let types = v.types.len() + m.types.len();
    let strings = v.strings.len() + m.strings.len();
    let mut out = Vec::with_capacity(24 + types + strings);
    out.extend_from_slice(&vmlinux[..4]);
    for field in [24, 0, types, types, strings] {
        out.extend_from_slice(&u32::try_from(field).ok()?.to_le_bytes());
    }
    out.extend_from_slice(&vmlinux[v.types]);
    out.extend_from_slice(&module_types);
    out.extend_from_slice(&vmlinux[v.strings]);
    out.extend_from_slice(&module[m.strings]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pipeline::btf_read::blob;

    fn ty(name_off: u32, kind: u32, vlen: u32, size_or_type: u32, tail: &[u32]) -> Vec<u8> {
        let mut t = Vec::new();
        for w in [name_off, (kind << 24) | vlen, size_or_type]
            .iter()
            .chain(tail)
        {
            t.extend_from_slice(&w.to_le_bytes());
        }
        t
    }

    #[test]
    fn a_module_function_is_found_after_the_base_types_and_strings() {
        // Base: "\0int\0" with INT (1) and a FUNC_PROTO of 1 param (2).
        let base_btf = blob(
            &[ty(1, 1, 0, 4, &[32]), ty(0, 13, 1, 1, &[0, 1])].concat(),
            b"\0int\0",
        );
        let b = base(&base_btf).expect("a base");
        assert_eq!((b.types, b.strings), (2, &b"\0int\0"[..]));
        // Module strings continue at 5: "\0mod_fn\0other\0" -> mod_fn at 5 + 1; a third FUNC
        // is named by the base's "int" (offset 1), as pahole shares strings.
        let module = blob(
            &[
                ty(5 + 8, 12, 0, 2, &[]), // FUNC other (id 3)
                ty(5 + 1, 12, 0, 2, &[]), // FUNC mod_fn (id 4)
                ty(1, 12, 0, 2, &[]),     // FUNC int (id 5)
            ]
            .concat(),
            b"\0mod_fn\0other\0",
        );
        assert_eq!(func_id(&module, b, "mod_fn"), Some(4));
        assert_eq!(func_id(&module, b, "other"), Some(3));
        assert_eq!(func_id(&module, b, "int"), Some(5));
        assert_eq!(func_id(&module, b, "nope"), None);
        // Garbage is no match, not a panic.
        assert_eq!(func_id(&module[..30], b, "mod_fn"), None);
        assert_eq!(func_id(b"\x9f\xeb", b, "mod_fn"), None);
        assert!(base(&[0u8; 3]).is_none());
    }

    #[test]
    fn a_merged_blob_reads_the_modules_types_at_their_split_ids() {
        use crate::pipeline::btf_read::{kind, BtfView};
        // vmlinux: INT int (1), STRUCT s { int a; } (2).
        let vmlinux = blob(
            &[ty(1, 1, 0, 4, &[32]), ty(5, 4, 1, 4, &[7, 1, 0])].concat(),
            b"\0int\0s\0a\0",
        );
        // The module's strings continue at 9: "\0m\0b\0" -> m at 10, b at 12. STRUCT s (its
        // own, named by vmlinux's string) (3), STRUCT m { s b; } (4).
        let module = blob(
            &[ty(5, 4, 1, 4, &[7, 1, 0]), ty(10, 4, 1, 4, &[12, 2, 0])].concat(),
            b"\0m\0b\0",
        );
        let shadowed = ["s"].into_iter().collect();
        let blob = merged(&vmlinux, &module, &shadowed).expect("merged");
        let view = BtfView::parse(&blob).expect("one valid blob");
        assert_eq!(view.find("m", kind::STRUCT), Some(4));
        let m = view.members(4);
        assert_eq!((m[0].name, m[0].type_id), ("b", 2));
        // The module's `s` lost its name: vmlinux's is the only one.
        assert_eq!(view.find("s", kind::STRUCT), Some(2));
        assert_eq!(view.get(3).map(|t| t.name), Some(""));
        assert!(merged(&vmlinux, &module[..20], &shadowed).is_none());
    }
}
