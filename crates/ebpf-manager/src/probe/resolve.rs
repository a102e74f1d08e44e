//! From a declaration and its section to a [`Hook`]: done once, at `init`, so that a bad
//! declaration fails before anything is loaded and `start` only attaches.

use aya::programs::{ProbeKind, Program};

use super::{Hook, Probe};
use crate::{
    elf::section_target, kernel::symbols::LazyFunctions, Error, ProbeIdentificationPair, Result,
};

/// aya's name of a program's type, for messages.
pub(crate) fn type_name(prog: &Program) -> &'static str {
    match prog {
        Program::KProbe(_) => "kprobe",
        Program::UProbe(_) => "uprobe",
        Program::TracePoint(_) => "tracepoint",
        Program::SocketFilter(_) => "socket filter",
        Program::ReusePortSocketFilter(_) => "reuseport socket filter",
        Program::Xdp(_) => "XDP",
        Program::SkMsg(_) => "sk_msg",
        Program::SkSkb(_) => "sk_skb",
        Program::CgroupSockAddr(_) => "cgroup sock_addr",
        Program::SockOps(_) => "sock_ops",
        Program::SchedClassifier(_) => "TC classifier",
        Program::CgroupSkb(_) => "cgroup_skb",
        Program::CgroupSysctl(_) => "cgroup sysctl",
        Program::CgroupSockopt(_) => "cgroup sockopt",
        Program::LircMode2(_) => "lirc_mode2",
        Program::PerfEvent(_) => "perf_event",
        Program::RawTracePoint(_) => "raw tracepoint",
        Program::Lsm(_) => "LSM",
        Program::LsmCgroup(_) => "LSM cgroup",
        Program::BtfTracePoint(_) => "tp_btf",
        Program::FEntry(_) => "fentry",
        Program::FExit(_) => "fexit",
        Program::FlowDissector(_) => "flow dissector",
        Program::Extension(_) => "freplace extension",
        Program::SkLookup(_) => "sk_lookup",
        Program::SkReuseport(_) => "sk_reuseport",
        Program::CgroupSock(_) => "cgroup sock",
        Program::CgroupDevice(_) => "cgroup device",
        Program::Iter(_) => "iterator",
    }
}

/// The hook point of a probe whose program is `prog` in `section`.
pub(crate) fn hook(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    function: &str,
    section: &str,
    prog: &Program,
    functions: &mut LazyFunctions,
) -> Result<Hook> {
    let invalid = |reason: String| Error::InvalidProbe {
        id: id.clone(),
        reason,
    };
    let kprobe_fields = [
        ("attach_to_func_name", probe.attach_to_func_name.is_some()),
        ("hook_func_name", probe.hook_func_name.is_some()),
        ("syscall_func_name", probe.syscall_func_name.is_some()),
        ("kprobe_max_active", probe.kprobe_max_active > 0),
        (
            "kprobe_attach_method",
            probe.kprobe_attach_method != super::KprobeAttachMethod::Default,
        ),
    ];
    let tracepoint_fields = [
        ("tracepoint_category", probe.tracepoint_category.is_some()),
        ("tracepoint_name", probe.tracepoint_name.is_some()),
    ];
    let refuse = |fields: &[(&str, bool)], kind: &str| -> Result<()> {
        match fields.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(invalid(format!(
                "{field} does not apply to `{function}`, a {kind} program"
            ))),
            None => Ok(()),
        }
    };
    match prog {
        Program::KProbe(kp) => {
            refuse(&tracepoint_fields, "kprobe")?;
            let retprobe = matches!(kp.kind(), ProbeKind::Return);
            if !retprobe && probe.kprobe_max_active > 0 {
                return Err(invalid(format!(
                    "kprobe_max_active applies to kretprobes only, and `{function}` is a kprobe"
                )));
            }
            let symbol = kprobe_symbol(id, probe, section, functions)?;
            Ok(Hook::Kprobe { symbol, retprobe })
        }
        Program::TracePoint(_) => {
            refuse(&kprobe_fields, "tracepoint")?;
            let from_section = section_target(section).and_then(|t| t.split_once('/'));
            let category = probe
                .tracepoint_category
                .clone()
                .or_else(|| from_section.map(|(c, _)| c.to_owned()));
            let name = probe
                .tracepoint_name
                .clone()
                .or_else(|| from_section.map(|(_, n)| n.to_owned()));
            match (category, name) {
                (Some(category), Some(name)) => Ok(Hook::Tracepoint { category, name }),
                _ => Err(invalid(format!(
                    "section `{section}` names no tracepoint: set tracepoint_category and tracepoint_name"
                ))),
            }
        }
        Program::RawTracePoint(_) => {
            refuse(&kprobe_fields, "raw tracepoint")?;
            refuse(&tracepoint_fields[..1], "raw tracepoint")?;
            let name = probe
                .tracepoint_name
                .clone()
                .or_else(|| section_target(section).map(str::to_owned));
            match name {
                Some(name) => Ok(Hook::RawTracepoint { name }),
                None => Err(invalid(format!(
                    "section `{section}` names no raw tracepoint: set tracepoint_name"
                ))),
            }
        }
        other => Err(Error::UnsupportedProgramType {
            id: id.clone(),
            function: function.to_owned(),
            program_type: type_name(other),
        }),
    }
}

/// hook_func_name, else syscall_func_name, else attach_to_func_name, else the section's target.
fn kprobe_symbol(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    section: &str,
    functions: &mut LazyFunctions,
) -> Result<String> {
    if let Some(symbol) = &probe.hook_func_name {
        return Ok(symbol.clone());
    }
    if let Some(syscall) = &probe.syscall_func_name {
        return functions
            .get()?
            .syscall(syscall)
            .map_err(|tried| Error::SyscallNotFound {
                id: id.clone(),
                syscall: syscall.clone(),
                tried: tried.join(", "),
            });
    }
    if let Some(pattern) = &probe.attach_to_func_name {
        let compiled = glob::Pattern::new(pattern).map_err(|e| Error::InvalidPattern {
            id: id.clone(),
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
        let index = functions.get()?;
        return index
            .find(&compiled)
            .map(str::to_owned)
            .ok_or_else(|| Error::NoMatchingFunction {
                id: id.clone(),
                pattern: pattern.clone(),
                searched: index.len(),
                source_file: index.source().to_owned(),
            });
    }
    section_target(section)
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidProbe {
            id: id.clone(),
            reason: format!(
                "section `{section}` names no kernel function: set hook_func_name, \
                 syscall_func_name or attach_to_func_name"
            ),
        })
}
