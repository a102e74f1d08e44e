//! From a declaration and its section to a [`Hook`]: done once, at `init`, so that a bad
//! declaration fails before anything is loaded and `start` only attaches.

use aya::programs::{ProbeKind, Program};

use super::{cgroup, net, pattern::Pattern, perf_event, tracing, uprobe, Hook, Probe};
use crate::{
    elf::section_target, kernel, kernel::symbols::LazyFunctions, loader::type_name, pipeline,
    Error, ProbeIdentificationPair, Result,
};

/// A program's type, as far as resolving its hook goes: from the loaded object's aya
/// `Program` (`init`), or from aya-obj's reading of its section (`ObjectInfo`, nothing loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgKind {
    Kprobe {
        retprobe: bool,
    },
    Tracepoint,
    RawTracepoint,
    Uprobe,
    Tracing(tracing::Kind),
    PerfEvent,
    SocketFilter,
    Xdp,
    Tc,
    /// A cgroup program (sock_ops included), with its type's name.
    Cgroup(&'static str),
    /// A type the manager does not attach, with its name.
    Other(&'static str),
}

impl ProgKind {
    pub(crate) fn of(prog: &Program) -> Self {
        match prog {
            Program::KProbe(kp) => Self::Kprobe {
                retprobe: matches!(kp.kind(), ProbeKind::Return),
            },
            Program::TracePoint(_) => Self::Tracepoint,
            Program::RawTracePoint(_) => Self::RawTracepoint,
            Program::UProbe(_) => Self::Uprobe,
            Program::PerfEvent(_) => Self::PerfEvent,
            Program::SocketFilter(_) => Self::SocketFilter,
            Program::Xdp(_) => Self::Xdp,
            Program::SchedClassifier(_) => Self::Tc,
            p => match tracing::Kind::of(p) {
                Some(kind) => Self::Tracing(kind),
                None if cgroup::is_cgroup(p) => Self::Cgroup(type_name(p)),
                None => Self::Other(type_name(p)),
            },
        }
    }

    /// The kind aya would load `section` as.
    pub(crate) fn of_section(section: &aya_obj::ProgramSection) -> Self {
        use aya_obj::ProgramSection as S;
        match section {
            S::KProbe => Self::Kprobe { retprobe: false },
            S::KRetProbe => Self::Kprobe { retprobe: true },
            S::UProbe { .. } | S::URetProbe { .. } => Self::Uprobe,
            S::TracePoint => Self::Tracepoint,
            S::RawTracePoint => Self::RawTracepoint,
            S::FEntry { .. } => Self::Tracing(tracing::Kind::FEntry),
            S::FExit { .. } => Self::Tracing(tracing::Kind::FExit),
            S::BtfTracePoint => Self::Tracing(tracing::Kind::BtfTracepoint),
            S::Lsm { .. } => Self::Tracing(tracing::Kind::Lsm),
            S::Iter { .. } => Self::Tracing(tracing::Kind::Iter),
            S::PerfEvent => Self::PerfEvent,
            S::SocketFilter => Self::SocketFilter,
            S::Xdp { .. } => Self::Xdp,
            S::SchedClassifier => Self::Tc,
            S::CgroupSkb { .. } => Self::Cgroup("cgroup_skb"),
            S::CgroupSock { .. } => Self::Cgroup("cgroup sock"),
            S::CgroupSockAddr { .. } => Self::Cgroup("cgroup sock_addr"),
            S::CgroupSockopt { .. } => Self::Cgroup("cgroup sockopt"),
            S::CgroupSysctl => Self::Cgroup("cgroup sysctl"),
            S::CgroupDevice => Self::Cgroup("cgroup device"),
            S::SockOps => Self::Cgroup("sock_ops"),
            S::SkMsg => Self::Other("sk_msg"),
            S::SkSkbStream { .. } => Self::Other("sk_skb"),
            S::LircMode2 => Self::Other("lirc_mode2"),
            S::LsmCgroup => Self::Other("lsm_cgroup"),
            S::FlowDissector => Self::Other("flow dissector"),
            S::Extension => Self::Other("extension"),
            S::SkLookup => Self::Other("sk_lookup"),
            S::SkReuseport { .. } => Self::Other("sk_reuseport"),
        }
    }

    /// The type's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kprobe { .. } => "kprobe",
            Self::Tracepoint => "tracepoint",
            Self::RawTracepoint => "raw tracepoint",
            Self::Uprobe => "uprobe",
            Self::Tracing(kind) => kind.name(),
            Self::PerfEvent => "perf_event",
            Self::SocketFilter => "socket filter",
            Self::Xdp => "XDP",
            Self::Tc => "TC classifier",
            Self::Cgroup(name) | Self::Other(name) => name,
        }
    }
}

/// The hook point of a probe whose program, of `kind`, is in `section`.
pub(crate) fn hook(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    function: &str,
    section: &str,
    kind: ProgKind,
    functions: &mut LazyFunctions,
) -> Result<Hook> {
    let invalid = |reason: String| Error::InvalidProbe {
        id: id.clone(),
        reason,
    };
    use Field::*;
    let kprobe_only = [
        SyscallFuncName,
        KprobeMaxActive,
        KprobeAttachMethod,
        MatchAllFunctions,
        FunctionCookies,
    ];
    let tracepoint_only = [TracepointCategory, TracepointName];
    let uprobe_only = [
        BinaryPath,
        UprobeOffset,
        UprobePid,
        MatchAllFunctions,
        FunctionCookies,
    ];
    let tc_only = [
        NetworkDirection,
        TcFilterPrio,
        TcFilterHandle,
        TcCleanupQdisc,
        TcAttachMethod,
    ];
    let perf_only = [
        SamplePeriod,
        SampleFrequency,
        PerfEventType,
        PerfEventConfig,
    ];
    // The fields a program type reads; any other field set is a mistake worth an error.
    let allowed: Vec<Field> = match kind {
        ProgKind::Kprobe { .. } => [
            &kprobe_only[..],
            &[AttachToFuncName, HookFuncName, MatchFuncName],
        ]
        .concat(),
        ProgKind::Tracepoint => tracepoint_only.to_vec(),
        ProgKind::RawTracepoint => vec![TracepointName],
        ProgKind::Uprobe => [
            &uprobe_only[..],
            &[AttachToFuncName, HookFuncName, MatchFuncName],
        ]
        .concat(),
        ProgKind::Tracing(tracing::Kind::FEntry | tracing::Kind::FExit) => {
            vec![HookFuncName, SyscallFuncName]
        }
        ProgKind::Tracing(
            tracing::Kind::BtfTracepoint | tracing::Kind::Lsm | tracing::Kind::Iter,
        ) => vec![HookFuncName],
        ProgKind::PerfEvent => perf_only.to_vec(),
        ProgKind::SocketFilter => vec![SocketFd],
        ProgKind::Xdp => [IfName, IfIndex, Netns, XdpAttachMode].to_vec(),
        ProgKind::Tc => [&tc_only[..], &[IfName, IfIndex, Netns]].concat(),
        ProgKind::Cgroup(_) => vec![CgroupPath],
        ProgKind::Other(program_type) => {
            return Err(Error::UnsupportedProgramType {
                id: id.clone(),
                function: function.to_owned(),
                program_type,
            })
        }
    };
    if let Some(field) = Field::ALL
        .iter()
        .find(|f| f.is_set(probe) && !allowed.contains(f))
    {
        return Err(invalid(format!(
            "{} does not apply to `{function}`, a {} program",
            field.name(),
            kind.name()
        )));
    }
    let target = section_target(section);
    match kind {
        ProgKind::Kprobe { retprobe } => {
            if !retprobe && probe.kprobe_max_active > 0 {
                return Err(invalid(format!(
                    "kprobe_max_active applies to kretprobes only, and `{function}` is a kprobe"
                )));
            }
            // A `kprobe.multi/<glob>` section means every function its glob matches, as in
            // libbpf, unless the probe names its own hook.
            let names_a_hook = probe.hook_func_name.is_some()
                || probe.syscall_func_name.is_some()
                || probe.attach_to_func_name.is_some()
                || probe.match_func_name.is_some();
            let section_glob = pipeline::targets_pattern(section) && target.is_some();
            if probe.match_all_functions || (section_glob && !names_a_hook) {
                let (pattern, symbols) = kprobe_symbols(id, probe, section, functions)?;
                return Ok(Hook::Kprobes {
                    pattern,
                    symbols,
                    retprobe,
                });
            }
            let symbol = kprobe_symbol(id, probe, section, functions)?;
            check_kprobe_symbol(id, &symbol)?;
            Ok(Hook::Kprobe { symbol, retprobe })
        }
        ProgKind::Tracepoint => {
            let from_section = target.and_then(|t| t.split_once('/'));
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
        ProgKind::RawTracepoint => {
            let name = probe
                .tracepoint_name
                .clone()
                .or_else(|| target.map(str::to_owned));
            match name {
                Some(name) => Ok(Hook::RawTracepoint { name }),
                None => Err(invalid(format!(
                    "section `{section}` names no raw tracepoint: set tracepoint_name"
                ))),
            }
        }
        ProgKind::Uprobe => Ok(Hook::Uprobe(uprobe::resolve(id, probe, section, target)?)),
        ProgKind::Tracing(kind) => {
            // A section that names its target wins, as in Go (cilium loads the program against
            // it): `fexit/do_mkdirat` with syscall_func_name "mkdirat" attaches to do_mkdirat.
            // hook_func_name and syscall_func_name name the target of bare sections (`fentry`,
            // as aya-ebpf writes them).
            if let Some(target) = target {
                // A syscall name there is the Go example's own declaration; another function
                // named as the hook is more likely a mistake worth a warning.
                if let Some(ignored) = probe.hook_func_name.as_deref().filter(|h| *h != target) {
                    log::warn!(
                        "probe {id}: hook_func_name `{ignored}` not used: section `{section}` names the target, as the Go library reads it"
                    );
                } else if let Some(ignored) = &probe.syscall_func_name {
                    log::debug!(
                        "probe {id}: syscall_func_name `{ignored}` not used: section `{section}` names the target, as the Go library reads it"
                    );
                }
                return Ok(Hook::Btf {
                    kind,
                    target: target.to_owned(),
                });
            }
            let syscall = match &probe.syscall_func_name {
                // The arch's wrapper (`__x64_sys_mkdirat`), as for kprobes.
                Some(name) if probe.hook_func_name.is_none() => {
                    Some(functions.get()?.syscall(name).map_err(|tried| {
                        Error::SyscallNotFound {
                            id: id.clone(),
                            syscall: name.clone(),
                            tried: tried.join(", "),
                        }
                    })?)
                }
                _ => None,
            };
            match probe.hook_func_name.clone().or(syscall) {
                Some(target) => Ok(Hook::Btf { kind, target }),
                None => Err(invalid(format!(
                    "section `{section}` names no target: set hook_func_name or syscall_func_name"
                ))),
            }
        }
        ProgKind::PerfEvent => Ok(Hook::PerfEvent(perf_event::resolve(id, probe)?)),
        // Without a socket, an interface or a cgroup, the probe is a template that Go users
        // load and then clone or hook per target: no hook, and only attaching it fails.
        ProgKind::SocketFilter => match &probe.socket_fd {
            Some(fd) => Ok(Hook::Socket(fd.clone())),
            None => Ok(Hook::Unresolved("a socket filter needs socket_fd".into())),
        },
        ProgKind::Xdp | ProgKind::Tc => Ok(match net::resolve(id, probe)? {
            Some(target) => Hook::Net(target),
            None => Hook::Unresolved(format!(
                "{} probes need an interface: set if_name or if_index",
                if kind == ProgKind::Xdp { "XDP" } else { "TC" }
            )),
        }),
        ProgKind::Cgroup(name) => match &probe.cgroup_path {
            Some(path) if path.is_dir() => Ok(Hook::Cgroup(path.clone())),
            Some(path) => Err(invalid(format!(
                "cgroup_path {} is not a directory",
                path.display()
            ))),
            None => Ok(Hook::Unresolved(format!(
                "a {name} program needs cgroup_path"
            ))),
        },
        ProgKind::Other(_) => unreachable!("refused above"),
    }
}

/// The optional fields of [`Probe`], to tell which apply to a program type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    AttachToFuncName,
    HookFuncName,
    SyscallFuncName,
    KprobeMaxActive,
    KprobeAttachMethod,
    TracepointCategory,
    TracepointName,
    BinaryPath,
    UprobeOffset,
    UprobePid,
    IfName,
    IfIndex,
    Netns,
    NetworkDirection,
    TcFilterPrio,
    TcFilterHandle,
    TcCleanupQdisc,
    TcAttachMethod,
    XdpAttachMode,
    CgroupPath,
    SocketFd,
    SamplePeriod,
    SampleFrequency,
    PerfEventType,
    PerfEventConfig,
    MatchAllFunctions,
    FunctionCookies,
    MatchFuncName,
}

impl Field {
    const ALL: [Field; 28] = [
        Self::MatchFuncName,
        Self::MatchAllFunctions,
        Self::FunctionCookies,
        Self::AttachToFuncName,
        Self::HookFuncName,
        Self::SyscallFuncName,
        Self::KprobeMaxActive,
        Self::KprobeAttachMethod,
        Self::TracepointCategory,
        Self::TracepointName,
        Self::BinaryPath,
        Self::UprobeOffset,
        Self::UprobePid,
        Self::IfName,
        Self::IfIndex,
        Self::Netns,
        Self::NetworkDirection,
        Self::TcFilterPrio,
        Self::TcFilterHandle,
        Self::TcCleanupQdisc,
        Self::TcAttachMethod,
        Self::XdpAttachMode,
        Self::CgroupPath,
        Self::SocketFd,
        Self::SamplePeriod,
        Self::SampleFrequency,
        Self::PerfEventType,
        Self::PerfEventConfig,
    ];

    fn is_set(self, p: &Probe) -> bool {
        use super::{
            KprobeAttachMethod as K, NetworkDirection as D, TcAttachMethod as T, XdpAttachMode as X,
        };
        match self {
            Self::AttachToFuncName => p.attach_to_func_name.is_some(),
            Self::HookFuncName => p.hook_func_name.is_some(),
            Self::SyscallFuncName => p.syscall_func_name.is_some(),
            Self::KprobeMaxActive => p.kprobe_max_active > 0,
            Self::KprobeAttachMethod => p.kprobe_attach_method != K::Default,
            Self::TracepointCategory => p.tracepoint_category.is_some(),
            Self::TracepointName => p.tracepoint_name.is_some(),
            Self::BinaryPath => p.binary_path.is_some(),
            Self::UprobeOffset => p.uprobe_offset > 0,
            Self::UprobePid => p.uprobe_pid.is_some(),
            Self::IfName => p.if_name.is_some(),
            Self::IfIndex => p.if_index.is_some(),
            Self::Netns => p.netns.is_some(),
            Self::NetworkDirection => p.network_direction != D::Ingress,
            Self::TcFilterPrio => p.tc_filter_prio > 0,
            Self::TcFilterHandle => p.tc_filter_handle > 0,
            Self::TcCleanupQdisc => p.tc_cleanup_qdisc,
            Self::TcAttachMethod => p.tc_attach_method != T::Default,
            Self::XdpAttachMode => p.xdp_attach_mode != X::Default,
            Self::CgroupPath => p.cgroup_path.is_some(),
            Self::SocketFd => p.socket_fd.is_some(),
            Self::SamplePeriod => p.sample_period > 0,
            Self::SampleFrequency => p.sample_frequency > 0,
            Self::PerfEventType => p.perf_event_type > 0,
            Self::PerfEventConfig => p.perf_event_config > 0,
            Self::MatchAllFunctions => p.match_all_functions,
            Self::FunctionCookies => !p.function_cookies.is_empty(),
            Self::MatchFuncName => p.match_func_name.is_some(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::AttachToFuncName => "attach_to_func_name",
            Self::HookFuncName => "hook_func_name",
            Self::SyscallFuncName => "syscall_func_name",
            Self::KprobeMaxActive => "kprobe_max_active",
            Self::KprobeAttachMethod => "kprobe_attach_method",
            Self::TracepointCategory => "tracepoint_category",
            Self::TracepointName => "tracepoint_name",
            Self::BinaryPath => "binary_path",
            Self::UprobeOffset => "uprobe_offset",
            Self::UprobePid => "uprobe_pid",
            Self::IfName => "if_name",
            Self::IfIndex => "if_index",
            Self::Netns => "netns",
            Self::NetworkDirection => "network_direction",
            Self::TcFilterPrio => "tc_filter_prio",
            Self::TcFilterHandle => "tc_filter_handle",
            Self::TcCleanupQdisc => "tc_cleanup_qdisc",
            Self::TcAttachMethod => "tc_attach_method",
            Self::XdpAttachMode => "xdp_attach_mode",
            Self::CgroupPath => "cgroup_path",
            Self::SocketFd => "socket_fd",
            Self::SamplePeriod => "sample_period",
            Self::SampleFrequency => "sample_frequency",
            Self::PerfEventType => "perf_event_type",
            Self::PerfEventConfig => "perf_event_config",
            Self::MatchAllFunctions => "match_all_functions",
            Self::FunctionCookies => "function_cookies",
            Self::MatchFuncName => "match_func_name",
        }
    }
}

/// A kprobe's hook is written to tracefs `kprobe_events` on the tracefs path: only a symbol
/// (letters, digits, `_`, `.`), optionally `+offset`, may go there, never a newline or a space
/// that would add a command of its own.
pub(crate) fn check_kprobe_symbol(id: &ProbeIdentificationPair, symbol: &str) -> Result<()> {
    let (name, offset) = symbol.split_once('+').unwrap_or((symbol, ""));
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let offset_ok = offset.is_empty() || {
        let digits = offset.strip_prefix("0x").unwrap_or(offset);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit())
    };
    if name_ok && offset_ok {
        return Ok(());
    }
    Err(Error::InvalidProbe {
        id: id.clone(),
        reason: format!(
            "{symbol:?} is not a kernel symbol (letters, digits, `_` and `.`, optionally +offset)"
        ),
    })
}

/// Every function the probe's pattern (attach_to_func_name, or a `kprobe.multi/` section's)
/// matches, without the kprobe blacklist; at least one.
fn kprobe_symbols(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    section: &str,
    functions: &mut LazyFunctions,
) -> Result<(String, Vec<String>)> {
    let from_section = section_target(section).filter(|_| pipeline::targets_pattern(section));
    let declared = Pattern::of(id, probe)?;
    let compiled = match declared {
        Some(p) => p,
        None => match Pattern::of_section(id, from_section)? {
            Some(p) => p,
            None => {
                return Err(Error::InvalidProbe {
                    id: id.clone(),
                    reason: "match_all_functions needs a pattern: set attach_to_func_name or \
                             match_func_name, or use a kprobe.multi/<pattern> section"
                        .into(),
                })
            }
        },
    };
    let pattern = compiled.as_str();
    let index = functions.get()?;
    let matched = compiled.find_all(index);
    let blacklist = kernel::symbols::kprobe_blacklist();
    let symbols: Vec<String> = matched
        .iter()
        .filter(|f| !blacklist.contains(**f))
        .map(|f| (*f).to_owned())
        .collect();
    if matched.len() != symbols.len() {
        log::info!(
            "probe {id}: {} of the {} functions matching `{pattern}` are on the kprobe blacklist, left out",
            matched.len() - symbols.len(),
            matched.len()
        );
    }
    if symbols.is_empty() {
        return Err(compiled.no_match(id, index.len(), index.source()));
    }
    Ok((pattern.to_owned(), symbols))
}

/// hook_func_name, else syscall_func_name, else attach_to_func_name, else the section's target:
/// a syscall for `ksyscall/`/`kretsyscall/`, a symbol otherwise (a `kprobe.multi/` glob with
/// no hook of the probe's means every match: `kprobe_symbols`).
fn kprobe_symbol(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    section: &str,
    functions: &mut LazyFunctions,
) -> Result<String> {
    if let Some(symbol) = &probe.hook_func_name {
        return Ok(symbol.clone());
    }
    let target = section_target(section).map(str::to_owned);
    let syscall = probe.syscall_func_name.clone().or_else(|| {
        target
            .clone()
            .filter(|_| pipeline::targets_syscall(section))
    });
    if let Some(syscall) = &syscall {
        return functions
            .get()?
            .syscall(syscall)
            .map_err(|tried| Error::SyscallNotFound {
                id: id.clone(),
                syscall: syscall.clone(),
                tried: tried.join(", "),
            });
    }
    let from_section = target
        .as_deref()
        .filter(|_| pipeline::targets_pattern(section));
    let pattern = match Pattern::of(id, probe)? {
        Some(p) => Some(p),
        None => Pattern::of_section(id, from_section)?,
    };
    if let Some(compiled) = &pattern {
        let index = functions.get()?;
        return compiled
            .find(index)
            .map(str::to_owned)
            .ok_or_else(|| compiled.no_match(id, index.len(), index.source()));
    }
    target.ok_or_else(|| Error::InvalidProbe {
        id: id.clone(),
        reason: format!(
            "section `{section}` names no kernel function: set hook_func_name, \
             syscall_func_name or attach_to_func_name"
        ),
    })
}
