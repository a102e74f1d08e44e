//! Program section names of the Go world (cilium/ebpf's ELF reader) against what aya-obj 0.3
//! parses. aya-obj refuses the whole object on one name it does not know, so every program
//! section gets one of three fates before aya sees it: kept, renamed to the aya name of the same
//! program type, or hidden (its program cannot be loaded by aya; only a probe that needs it
//! fails, with the reason given here).

use std::str::FromStr as _;

/// What the pipeline does with one program section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// aya parses the name as it is.
    Keep,
    /// aya parses this name, for the same program type.
    Rename(String),
    /// aya cannot load this program: hide the section from it.
    Hide(&'static str),
}

/// The fate of the program section `name`.
pub(crate) fn fate(name: &str) -> Fate {
    let (kind, rest) = name.split_once('/').unwrap_or((name, ""));
    let rename = |to: &str| Fate::Rename(to.to_owned());
    match kind {
        // Same program type, a prefix aya-obj does not list (cilium's names).
        "xdp" | "xdp.frags" if !matches!(rest, "" | "cpumap" | "devmap") => {
            if rest.starts_with("cpumap/") || rest.starts_with("devmap/") {
                Fate::Keep.or_parsed(name)
            } else {
                rename(kind)
            }
        }
        "xdp_devmap" => rename("xdp/devmap"),
        "xdp_cpumap" => rename("xdp/cpumap"),
        "xdp.frags_devmap" => rename("xdp.frags/devmap"),
        "xdp.frags_cpumap" => rename("xdp.frags/cpumap"),
        // A classifier of tc, TCX or an action: aya attaches SchedClassifier through TCX
        // (Linux 6.6) or netlink cls_bpf in direct-action mode, where return codes are TC_ACT_*.
        "tc" | "tcx" | "action" | "tc_packet_hook" => rename("classifier"),
        // Multi-attach programs load as their single-attach type; the manager attaches them
        // per function (aya 0.14 has no kprobe.multi or uprobe.multi links).
        "kprobe.multi" | "ksyscall" => rename("kprobe"),
        "kretprobe.multi" | "kretsyscall" => rename("kretprobe"),
        "uprobe.multi" => rename("uprobe"),
        "uprobe.multi.s" => rename("uprobe.s"),
        "uretprobe.multi" => rename("uretprobe"),
        "uretprobe.multi.s" => rename("uretprobe.s"),
        // Writable raw tracepoints load as plain ones: a program that writes to the
        // tracepoint's buffer is refused by the verifier.
        "raw_tracepoint.w" | "raw_tp.w" => rename("raw_tracepoint"),
        "fmod_ret" | "fmod_ret.s" => {
            Fate::Hide("BPF_MODIFY_RETURN tracing programs (fmod_ret) cannot be loaded by aya 0.14")
        }
        "usdt" => Fate::Hide("USDT programs need argument specs that aya 0.14 does not build"),
        "struct_ops" | "struct_ops.s" => {
            // The manager loads them for their struct_ops maps (manager/struct_ops.rs).
            Fate::Hide(
                "struct_ops programs are not probes: they run through the struct_ops map that \
                 points to them, which init makes and start registers",
            )
        }
        _ => Fate::Keep.or_parsed(name),
    }
}

impl Fate {
    /// `self` when aya-obj parses `name`, else a hidden section.
    fn or_parsed(self, name: &str) -> Fate {
        match aya_obj::ProgramSection::from_str(name) {
            Ok(_) => self,
            Err(_) => Fate::Hide("aya 0.14 knows no program type for this section name"),
        }
    }
}

/// The section kinds whose target (after the first `/`) names a syscall, not a kernel symbol.
pub(crate) fn targets_syscall(section: &str) -> bool {
    matches!(
        section.split_once('/').map(|(k, _)| k),
        Some("ksyscall" | "kretsyscall")
    )
}

/// The section kinds whose target is a pattern over the kernel's functions.
pub(crate) fn targets_pattern(section: &str) -> bool {
    matches!(
        section.split_once('/').map(|(k, _)| k),
        Some("kprobe.multi" | "kretprobe.multi")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_world_names_map_to_aya_names_of_the_same_type() {
        for (go, aya) in [
            ("xdp/ingress", "xdp"),
            ("xdp.frags/ingress", "xdp.frags"),
            ("xdp_devmap/redirect", "xdp/devmap"),
            ("classifier/egress", "classifier/egress"),
            ("tc/ingress", "classifier"),
            ("tcx/egress", "classifier"),
            ("action/drop", "classifier"),
            ("kprobe.multi/vfs_*", "kprobe"),
            ("kretprobe.multi/vfs_*", "kretprobe"),
            ("ksyscall/mkdirat", "kprobe"),
            ("kretsyscall/mkdirat", "kretprobe"),
            ("uprobe.multi/bin:fn*", "uprobe"),
            ("raw_tracepoint.w/sys_enter", "raw_tracepoint"),
        ] {
            let got = match fate(go) {
                Fate::Rename(to) => to,
                Fate::Keep => go.to_owned(),
                Fate::Hide(why) => panic!("{go} hidden: {why}"),
            };
            assert_eq!(got, aya, "{go}");
            assert!(
                aya_obj::ProgramSection::from_str(&got).is_ok(),
                "aya refuses {got}"
            );
        }
    }

    #[test]
    fn names_aya_knows_are_kept() {
        for name in [
            "kprobe/vfs_mkdir",
            "tracepoint/syscalls/sys_enter_mkdir",
            "tp/syscalls/sys_enter_mkdir",
            "socket/filter",
            "sockops",
            "sk_msg",
            "cgroup_skb/ingress",
            "cgroup/connect4",
            "fentry.s/vfs_mkdir",
            "lsm.s/file_open",
            "iter.s/task",
            "perf_event",
            "xdp/devmap",
            "uprobe.s/foo",
        ] {
            assert_eq!(fate(name), Fate::Keep, "{name}");
        }
    }

    #[test]
    fn what_aya_cannot_load_is_hidden_with_a_reason() {
        for name in [
            "fmod_ret/security_file_open",
            "usdt/libc:probe",
            "struct_ops/tcp_cong",
            "lwt_in/foo",
            "sk_skb/other",
            "cgroup/connect_unix",
            "nonsense",
        ] {
            assert!(matches!(fate(name), Fate::Hide(_)), "{name}");
        }
    }

    #[test]
    fn section_targets_of_syscalls_and_patterns() {
        assert!(targets_syscall("ksyscall/mkdirat"));
        assert!(targets_syscall("kretsyscall/mkdirat"));
        assert!(!targets_syscall("kprobe/mkdirat"));
        assert!(targets_pattern("kprobe.multi/vfs_*"));
        assert!(!targets_pattern("kprobe/vfs_mkdir"));
    }
}
