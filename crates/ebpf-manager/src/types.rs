//! Leaf types: the ids, states and kinds that every layer names (errors, the kernel layer,
//! declarations, the manager). This module imports nothing from the crate, so that the layers
//! above it stay one-way (docs/architecture.md, "Layers").

use std::fmt;

/// Identifies a probe: a `uid` (free text, `""` when one probe per function is enough) and the
/// name of the eBPF function it runs.
///
/// Two probes may run the same function at two hook points as long as their `uid`s differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct ProbeIdentificationPair {
    /// The probe's unique id among the probes of the same function.
    pub uid: String,
    /// The name of the program's function in the object.
    pub ebpf_func_name: String,
}

impl ProbeIdentificationPair {
    /// A pair from its two parts.
    pub fn new(uid: impl Into<String>, ebpf_func_name: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            ebpf_func_name: ebpf_func_name.into(),
        }
    }
}

impl fmt::Display for ProbeIdentificationPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{uid: {:?}, ebpf_func_name: {:?}}}",
            self.uid, self.ebpf_func_name
        )
    }
}

/// How a kprobe or kretprobe is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum KprobeAttachMethod {
    /// The probe's default is the manager's
    /// ([`Options::default_kprobe_attach_method`](crate::Options::default_kprobe_attach_method));
    /// the manager's default is [`PerfEventOpen`](Self::PerfEventOpen) when the kernel has
    /// the kprobe PMU, else [`Tracefs`](Self::Tracefs).
    ///
    /// Whatever the method (but `KprobeMulti`), a kretprobe with [`Probe::kprobe_max_active`](crate::Probe::kprobe_max_active)
    /// above 0 uses tracefs, since the PMU has no maxactive; and a method whose facility the
    /// kernel lacks gives way to the other one. Both are the Go library's behaviour
    /// (`AttachKprobeWithPerfEventOpen` with `KProbeMaxActive` attaches through
    /// `kprobe_events`); [`AttachInfo::method`](crate::AttachInfo::method) says which was used.
    #[default]
    Default,
    /// `perf_event_open` on the kprobe PMU (Linux 4.17). Events vanish with their fd.
    PerfEventOpen,
    /// A `kprobe_events` entry in tracefs opened as a tracepoint (Linux 4.1). The manager names
    /// its events `ebpf_manager_<token>/...` (see [`remove_leftovers`](crate::remove_leftovers)),
    /// removes them at stop, and removes those left by dead processes at start.
    Tracefs,
    /// One kprobe.multi BPF link (Linux 5.18 built with CONFIG_FPROBE), the program loaded
    /// with `BPF_TRACE_KPROBE_MULTI` by the manager (aya 0.14 cannot). Where the kernel lacks
    /// it, attaching fails with [`Error::KprobeMultiUnsupported`](crate::Error::KprobeMultiUnsupported).
    KprobeMulti,
}

/// How a uprobe or uretprobe is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum UprobeAttachMethod {
    /// The probe's default is the manager's
    /// ([`Options::default_uprobe_attach_method`](crate::Options::default_uprobe_attach_method));
    /// the manager's default is [`PerfEventOpen`](Self::PerfEventOpen).
    #[default]
    Default,
    /// `perf_event_open` on the uprobe PMU (Linux 4.17), through aya.
    PerfEventOpen,
    /// A `uprobe_events` entry in tracefs opened as a tracepoint (Linux 4.1): the event is
    /// visible in tracefs while the probe runs, named `<group>/<p|r>_<symbol>_<n>` in the
    /// manager's group (see [`KprobeAttachMethod::Tracefs`]).
    Tracefs,
}

/// The life cycle of one probe inside a manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum ProbeState {
    /// Declared; the manager is not initialized yet.
    Declared,
    /// The program is loaded into the kernel (after `init`), not attached.
    Loaded,
    /// Attached at its hook point and firing.
    Running,
    /// Detached by `pause`, still loaded; `resume` attaches it again.
    Paused,
    /// Detached and unloaded by `stop`.
    Stopped,
    /// Not enabled (no selector names it) and its program not loaded. A probe whose function
    /// is in [`Options::excluded_functions`](crate::Options::excluded_functions) is not even
    /// that: it vanishes at `init`, as in Go.
    Disabled,
    /// Its program failed to load or attach; [`Manager::probe_error`](crate::Manager::probe_error)
    /// says why. Only with selectors: without, a failure fails the whole call.
    Failed,
}

/// Where a manager is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum ManagerState {
    /// Declared, not initialized.
    #[default]
    New,
    /// Programs loaded, nothing attached.
    Initialized,
    /// Probes attached.
    Running,
    /// Probes detached by `pause`, programs still loaded.
    Paused,
    /// Everything detached and unloaded; the manager cannot be started again.
    Stopped,
}

impl fmt::Display for ManagerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::New => "not initialized",
            Self::Initialized => "initialized",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        })
    }
}

/// The kernel facility a probe was attached through.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachMethod {
    /// A kprobe or kretprobe opened on the kprobe PMU with `perf_event_open` (Linux 4.17).
    KprobePmu,
    /// A kprobe or kretprobe created in tracefs `kprobe_events` (Linux 4.1).
    KprobeTracefs,
    /// A kprobe.multi link (Linux 5.18, CONFIG_FPROBE).
    KprobeMulti,
    /// A uprobe.multi link (Linux 6.6).
    UprobeMulti,
    /// A tracepoint (Linux 4.7).
    Tracepoint,
    /// A raw tracepoint (Linux 4.17).
    RawTracepoint,
    /// A uprobe or uretprobe on the uprobe PMU (Linux 4.17).
    Uprobe,
    /// A uprobe or uretprobe created in tracefs `uprobe_events` (Linux 4.1).
    UprobeTracefs,
    /// A BPF trampoline or BTF link: fentry/fexit (5.5), tp_btf (5.5), LSM (5.7), iterator (5.8).
    BtfLink,
    /// One perf event per online CPU (Linux 4.9).
    PerfEvent,
    /// `SO_ATTACH_BPF` on a socket (Linux 3.19).
    SocketOption,
    /// A cgroup attachment (Linux 4.10; a link from 5.7).
    Cgroup,
    /// An XDP link (Linux 5.9) or netlink XDP.
    Xdp,
    /// A TCX link (Linux 6.6).
    Tcx,
    /// A clsact qdisc and a cls_bpf filter, through netlink.
    TcNetlink,
}

impl fmt::Display for AttachMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KprobePmu => "the kprobe PMU (perf_event_open)",
            Self::KprobeTracefs => "tracefs kprobe_events",
            Self::KprobeMulti => "a kprobe.multi link",
            Self::UprobeMulti => "a uprobe.multi link",
            Self::Tracepoint => "a tracepoint",
            Self::RawTracepoint => "a raw tracepoint",
            Self::Uprobe => "the uprobe PMU (perf_event_open)",
            Self::UprobeTracefs => "tracefs uprobe_events",
            Self::BtfLink => "a BTF link",
            Self::PerfEvent => "perf events",
            Self::SocketOption => "SO_ATTACH_BPF",
            Self::Cgroup => "a cgroup attachment",
            Self::Xdp => "XDP",
            Self::Tcx => "a TCX link",
            Self::TcNetlink => "netlink clsact + cls_bpf",
        })
    }
}
