//! struct_ops maps as libbpf defines them: a variable of a kernel struct of function pointers
//! (`struct tcp_congestion_ops`, `struct sched_ext_ops`, ...) in `SEC(".struct_ops")` (Linux
//! 5.6) or `SEC(".struct_ops.link")` (6.4), whose pointer members are relocated to programs of
//! `struct_ops/` sections. aya-obj 0.3 reads neither, so [`specs`] reads them from the ELF and
//! the object's BTF, and [`plan`] lays one out as the running kernel's value type
//! (`struct bpf_struct_ops_<name>`) wants it, member by member, by name as libbpf does: the
//! object's struct need not have the kernel's layout.

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

use super::btf_read::{kind, BtfView};

/// The sections that hold struct_ops variables, and whether their maps register by link.
const SECTIONS: [(&str, bool); 2] = [(".struct_ops", false), (".struct_ops.link", true)];

/// One member of a struct_ops variable, as the object sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalMember {
    /// The member's name.
    pub(crate) name: String,
    /// Its bytes in the variable (zeros under a program).
    pub(crate) data: Vec<u8>,
    /// The program the member points to, by function name.
    pub(crate) program: Option<String>,
    /// Whether it is a bitfield.
    pub(crate) bitfield: bool,
}

/// A struct_ops map of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The variable's name: the map's.
    pub(crate) name: String,
    /// The kernel struct it implements (`tcp_congestion_ops`).
    pub(crate) type_name: String,
    /// In `.struct_ops.link`: registered by a `BPF_LINK_CREATE` (Linux 6.4), not by the update.
    pub(crate) link: bool,
    /// The object's struct's size (the kernel's may differ).
    pub(crate) size: u32,
    pub(crate) members: Vec<LocalMember>,
}

/// The names of the struct_ops variables of `object` (its symbols in struct_ops sections).
pub(crate) fn names(object: &[u8]) -> Vec<String> {
    let Ok(file) = object::File::parse(object) else {
        return Vec::new();
    };
    let sections: Vec<_> = SECTIONS
        .iter()
        .filter_map(|&(name, _)| file.section_by_name(name).map(|s| s.index()))
        .collect();
    file.symbols()
        .filter(|s| s.section_index().is_some_and(|i| sections.contains(&i)) && s.size() > 0)
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .collect()
}

/// The struct_ops variables of `object`, in section then offset order; none without a
/// struct_ops section. An error says what in the object is wrong.
pub(crate) fn specs(object: &[u8]) -> Result<Vec<Spec>, String> {
    let file = object::File::parse(object).map_err(|e| e.to_string())?;
    let sections: Vec<_> = SECTIONS
        .iter()
        .filter_map(|&(name, link)| Some((file.section_by_name(name)?, name, link)))
        .collect();
    if sections.is_empty() {
        return Ok(Vec::new());
    }
    let btf = file
        .section_by_name(".BTF")
        .and_then(|s| s.data().ok())
        .ok_or("its struct_ops variables need the object's BTF: compile it with clang -g")?;
    let btf = BtfView::parse(btf).map_err(|e| format!(".BTF: {e}"))?;
    let mut specs = Vec::new();
    for (section, section_name, link) in sections {
        let data = section.data().map_err(|e| e.to_string())?;
        // Pointer members are relocated to their programs' symbols.
        let mut programs: HashMap<u64, String> = HashMap::new();
        for (offset, rel) in section.relocations() {
            let RelocationTarget::Symbol(index) = rel.target() else {
                continue;
            };
            let symbol = file.symbol_by_index(index).map_err(|e| e.to_string())?;
            let name = symbol.name().map_err(|e| e.to_string())?;
            programs.insert(offset, name.to_owned());
        }
        let datasec = btf
            .find(section_name, kind::DATASEC)
            .ok_or(format!("its BTF describes no `{section_name}` section"))?;
        let mut variables: Vec<(u64, String)> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()) && s.size() > 0)
            .filter_map(|s| Some((s.address(), s.name().ok()?.to_owned())))
            .collect();
        variables.sort();
        for (var_id, ..) in btf.datasec_entries(datasec) {
            let var = btf
                .get(var_id)
                .filter(|t| t.kind == kind::VAR)
                .ok_or(format!(
                    "`{section_name}` lists a type that is not a variable"
                ))?;
            let &(at, ref name) = variables
                .iter()
                .find(|(_, n)| n == var.name)
                .ok_or(format!("no symbol for struct_ops variable `{}`", var.name))?;
            let struct_id = btf.skip_mods(btf.target(var_id).unwrap_or(0));
            let ty = btf
                .get(struct_id)
                .filter(|t| t.kind == kind::STRUCT)
                .ok_or(format!("struct_ops variable `{name}` is not a struct"))?;
            let size = btf.size_of(struct_id).unwrap_or(0) as u64;
            let bytes = usize::try_from(at)
                .ok()
                .and_then(|at| data.get(at..at.checked_add(size as usize)?))
                .ok_or(format!(
                    "struct_ops variable `{name}` overruns `{section_name}`"
                ))?;
            let mut members = Vec::new();
            for m in btf.members(struct_id) {
                let off = u64::from(m.bit_offset / 8);
                let msize = btf.size_of(m.type_id).unwrap_or(0) as usize;
                let data = bytes
                    .get(off as usize..(off as usize).saturating_add(msize))
                    .ok_or(format!("member `{}` of `{name}` overruns it", m.name))?;
                members.push(LocalMember {
                    name: m.name.to_owned(),
                    data: if m.bitfield_size > 0 {
                        vec![u8::from(data.iter().any(|&b| b != 0))]
                    } else {
                        data.to_vec()
                    },
                    program: programs.get(&at.saturating_add(off)).cloned(),
                    bitfield: m.bitfield_size > 0,
                });
            }
            specs.push(Spec {
                name: name.clone(),
                type_name: ty.name.to_owned(),
                link,
                size: size as u32,
                members,
            });
        }
    }
    Ok(specs)
}

/// A struct_ops map laid out for the running kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `bpf_struct_ops_<type>`: the map's `btf_vmlinux_value_type_id`.
    pub(crate) value_type_id: u32,
    /// The kernel struct: the programs' `attach_btf_id`.
    pub(crate) type_id: u32,
    /// The map's value, program slots zero.
    pub(crate) value: Vec<u8>,
    /// Each program: its function, the member's index (its expected attach type), the offset
    /// of its fd in `value`.
    pub(crate) programs: Vec<(String, u32, usize)>,
}

/// Lays `spec` out as `kernel` (the running kernel's BTF) wants it, leaving out the programs
/// in `skip` (excluded functions: their members stay null).
pub(crate) fn plan(spec: &Spec, kernel: &BtfView<'_>, skip: &[String]) -> Result<Plan, String> {
    let t = &spec.type_name;
    let type_id = kernel.find(t, kind::STRUCT).ok_or(format!(
        "the running kernel has no `struct {t}` (its BTF lacks it): it predates this struct_ops \
         type, or was built without the subsystem that defines it"
    ))?;
    let wrapper = format!("bpf_struct_ops_{t}");
    let value_type_id = kernel.find(&wrapper, kind::STRUCT).ok_or(format!(
        "the running kernel cannot take `struct {t}` from BPF: its BTF has no `{wrapper}` \
         (struct_ops came in Linux 5.6; each type with the kernel that made it BPF's)"
    ))?;
    let data_off = kernel
        .members(value_type_id)
        .iter()
        .find(|m| m.name == "data")
        .map(|m| (m.bit_offset / 8) as usize)
        .ok_or(format!("the kernel's `{wrapper}` has no `data` member"))?;
    let size = kernel.size_of(value_type_id).unwrap_or(0) as usize;
    // 64 KiB is far more than any struct_ops value (sched_ext's is under 1 KiB).
    if size > 1 << 16 {
        return Err(format!(
            "the kernel's `{wrapper}` is {size} bytes: not a struct_ops value"
        ));
    }
    let mut value = vec![0u8; size];
    let mut programs = Vec::new();
    let kernel_members = kernel.members(type_id);
    for m in &spec.members {
        let program = m.program.as_ref().filter(|p| !skip.contains(p));
        let zero = m.data.iter().all(|&b| b == 0);
        let Some((index, km)) = kernel_members
            .iter()
            .enumerate()
            .find(|(_, k)| k.name == m.name)
        else {
            if program.is_none() && zero {
                continue;
            }
            return Err(format!(
                "member `{}` is set, and the running kernel's `struct {t}` has no such member",
                m.name
            ));
        };
        let at = data_off + (km.bit_offset / 8) as usize;
        if let Some(function) = program {
            if !kernel.is_func_ptr(km.type_id) {
                return Err(format!(
                    "member `{}` points to program `{function}`, and it is not a function \
                     pointer in the running kernel's `struct {t}`",
                    m.name
                ));
            }
            if at + 8 > size {
                return Err(format!("member `{}` lies outside `{wrapper}`", m.name));
            }
            programs.push((function.clone(), index as u32, at));
            continue;
        }
        // A pointer without a program stays null, as libbpf leaves it.
        if zero || kernel.is_func_ptr(km.type_id) {
            continue;
        }
        if m.bitfield || km.bitfield_size > 0 {
            return Err(format!(
                "member `{}` is a bitfield: a struct_ops value cannot set one",
                m.name
            ));
        }
        let ksize = kernel.size_of(km.type_id).unwrap_or(0) as usize;
        if ksize != m.data.len() {
            return Err(format!(
                "member `{}` is {} bytes in the object and {ksize} in the running kernel's \
                 `struct {t}`",
                m.name,
                m.data.len()
            ));
        }
        value
            .get_mut(at..at.saturating_add(ksize))
            .ok_or(format!("member `{}` lies outside `{wrapper}`", m.name))?
            .copy_from_slice(&m.data);
    }
    Ok(Plan {
        value_type_id,
        type_id,
        value,
        programs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CC: &[u8] = include_bytes!("../../../../ebpf-fixtures/struct_ops.bpf.o");
    const CC_LINK: &[u8] = include_bytes!("../../../../ebpf-fixtures/struct_ops_link.bpf.o");

    /// A BTF blob of `types` (words) and `strings`.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        super::super::btf_read::blob(&types, strings)
    }

    const STRINGS: &[u8] = b"\0u32\0char\0tcp_congestion_ops\0bpf_struct_ops_tcp_congestion_ops\0ssthresh\0name\0flags\0refcnt\0data\0";

    /// Offset of `name` in [`STRINGS`].
    fn s(name: &str) -> u32 {
        let needle = format!("\0{name}\0");
        STRINGS
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("in STRINGS") as u32
            + 1
    }

    /// A kernel whose `struct tcp_congestion_ops` is { ssthresh; char name[16]; u32 flags }
    /// (32 bytes) and whose value type puts it at 8; `wrapper` false leaves the value type out.
    fn kernel(wrapper: bool) -> Vec<u8> {
        let mut t = vec![
            s("u32"),
            1 << 24,
            4,
            32, // 1: INT u32
            0,
            13 << 24,
            1, // 2: FUNC_PROTO returning u32
            0,
            2 << 24,
            2, // 3: PTR -> 2
            s("char"),
            1 << 24,
            1,
            8, // 4: INT char
            0,
            3 << 24,
            0,
            4,
            1,
            16, // 5: char[16]
            s("tcp_congestion_ops"),
            (4 << 24) | 3,
            32, // 6: STRUCT
            s("ssthresh"),
            3,
            0,
            s("name"),
            5,
            64,
            s("flags"),
            1,
            192,
        ];
        if wrapper {
            t.extend([
                s("bpf_struct_ops_tcp_congestion_ops"),
                (4 << 24) | 2,
                40, // 7: STRUCT
                s("refcnt"),
                1,
                0,
                s("data"),
                6,
                64,
            ]);
        }
        blob(&t, STRINGS)
    }

    fn member(name: &str, data: &[u8], program: Option<&str>) -> LocalMember {
        LocalMember {
            name: name.into(),
            data: data.to_vec(),
            program: program.map(str::to_owned),
            bitfield: false,
        }
    }

    fn spec(members: Vec<LocalMember>) -> Spec {
        Spec {
            name: "cc".into(),
            type_name: "tcp_congestion_ops".into(),
            link: false,
            size: 0,
            members,
        }
    }

    #[test]
    fn the_fixtures_variables_are_read_with_their_programs() {
        let read = specs(CC).unwrap();
        assert_eq!(read.len(), 1);
        let cc = &read[0];
        assert_eq!(
            (cc.name.as_str(), cc.type_name.as_str(), cc.link),
            ("ebpfm_cc", "tcp_congestion_ops", false)
        );
        let program = |m: &str| {
            cc.members
                .iter()
                .find(|x| x.name == m)
                .and_then(|x| x.program.clone())
        };
        assert_eq!(program("ssthresh").as_deref(), Some("ebpfm_cc_ssthresh"));
        assert_eq!(program("init").as_deref(), Some("ebpfm_cc_init"));
        assert_eq!(program("release"), None);
        let name = cc.members.iter().find(|m| m.name == "name").unwrap();
        assert!(name.data.starts_with(b"ebpfm_cc\0"), "{:?}", name.data);
        assert!(specs(CC_LINK).unwrap()[0].link);
        assert_eq!(names(CC), ["ebpfm_cc"]);
        assert!(
            specs(include_bytes!("../../../../ebpf-fixtures/helloworld.bpf.o"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_value_is_laid_out_by_member_name_as_the_kernel_wants_it() {
        let k = kernel(true);
        let k = BtfView::parse(&k).unwrap();
        let mut name = [0u8; 16];
        name[..5].copy_from_slice(b"ebpfm");
        let spec = spec(vec![
            member("init", &[0; 8], Some("f_init")), // the kernel has no `init` here
            member("name", &name, None),
            member("ssthresh", &[0; 8], Some("f_ssthresh")),
        ]);
        let e = plan(&spec, &k, &[]).unwrap_err();
        assert!(
            e.contains("member `init`") && e.contains("no such member"),
            "{e}"
        );
        // Excluded, the member is null and may be missing.
        let p = plan(&spec, &k, &["f_init".into()]).unwrap();
        assert_eq!((p.value_type_id, p.type_id, p.value.len()), (7, 6, 40));
        assert_eq!(p.programs, [("f_ssthresh".to_owned(), 0, 8)]);
        assert_eq!(&p.value[16..32], &name);
        assert!(p.value[..16].iter().chain(&p.value[32..]).all(|&b| b == 0));
    }

    #[test]
    fn what_the_kernel_cannot_take_is_named() {
        let with = kernel(true);
        let with = BtfView::parse(&with).unwrap();
        let e = plan(&spec(vec![member("flags", &[1, 0], None)]), &with, &[]).unwrap_err();
        assert!(e.contains("2 bytes in the object and 4"), "{e}");
        let e = plan(&spec(vec![member("name", &[0; 16], Some("f"))]), &with, &[]).unwrap_err();
        assert!(e.contains("not a function pointer"), "{e}");
        let without = kernel(false);
        let without = BtfView::parse(&without).unwrap();
        let e = plan(&spec(vec![]), &without, &[]).unwrap_err();
        assert!(
            e.contains("bpf_struct_ops_tcp_congestion_ops") && e.contains("5.6"),
            "{e}"
        );
        let mut other = spec(vec![]);
        other.type_name = "sched_ext_ops".into();
        let e = plan(&other, &with, &[]).unwrap_err();
        assert!(e.contains("no `struct sched_ext_ops`"), "{e}");
        assert!(BtfView::parse(&with_truncated()).is_err());
    }

    fn with_truncated() -> Vec<u8> {
        let mut k = kernel(true);
        k.truncate(40);
        k
    }
}
