//! Probe declarations, and the attach code of each program family.
//!
//! A [`Probe`] is a plain struct with public fields and a `Default`, so that a Go
//! `manager.Probe{...}` literal translates line for line. The manager never writes to it: what
//! it derives (the program it matched, the resolved hook point, the link) lives in the
//! manager's own records and is read through getters such as
//! [`Manager::probe_state`](crate::Manager::probe_state).

pub(crate) mod binary_symbols;
pub(crate) mod cgroup;
pub(crate) mod kprobe;
pub(crate) mod net;
pub(crate) mod pattern;
pub(crate) mod perf_event;
pub(crate) mod resolve;
mod shared_fd;
pub(crate) mod tracepoint;
pub(crate) mod tracing;
pub(crate) mod uprobe;

use std::path::PathBuf;

pub use shared_fd::SharedFd;

pub use crate::types::{
    AttachMethod, KprobeAttachMethod, ProbeIdentificationPair, ProbeState, UprobeAttachMethod,
};

/// A probe: which program of the object to load, and where to attach it.
///
/// Only the fields that apply to the program's type are read; the hook point of a kprobe is,
/// in order: [`hook_func_name`](Self::hook_func_name), else
/// [`syscall_func_name`](Self::syscall_func_name), else
/// [`attach_to_func_name`](Self::attach_to_func_name), else the section's target
/// (`kprobe/<function>`).
///
/// ```
/// use ebpf_manager::Probe;
///
/// let probe = Probe {
///     uid: "MyVFSMkdir".into(),
///     ebpf_func_name: "kprobe_vfs_mkdir".into(),
///     ..Default::default()
/// };
/// assert_eq!(probe.id().to_string(), r#"{uid: "MyVFSMkdir", ebpf_func_name: "kprobe_vfs_mkdir"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Probe {
    /// Tells apart probes that run the same function; `""` when not needed.
    pub uid: String,
    /// The name of the program's function in the object.
    pub ebpf_func_name: String,
    /// Pick the program by ELF section instead of by function (when `ebpf_func_name` is empty,
    /// the section must hold exactly one program).
    pub section: Option<String>,
    /// A glob pattern (`*`, `?`, `[...]`) matched against the kernel's traceable functions:
    /// `available_filter_functions` with module suffixes stripped, or the text symbols of
    /// `/proc/kallsyms` when that file cannot be read. An exact name wins, else the first match
    /// in file order. No match is an error.
    pub attach_to_func_name: Option<String>,
    /// The exact kernel symbol to hook; overrides the fields below.
    pub hook_func_name: Option<String>,
    /// A syscall name (`"mkdirat"`): the manager adds the kernel's syscall prefix
    /// (`__x64_sys_`, `__ia32_sys_`, `__arm64_sys_` or `sys_`), never twice.
    pub syscall_func_name: Option<String>,
    /// For a kretprobe, the number of instances that may run at once (tracefs `r<N>:`);
    /// 0 leaves the kernel's default. Above 0, the kretprobe is attached through tracefs.
    pub kprobe_max_active: u32,
    /// How to attach a kprobe or kretprobe.
    pub kprobe_attach_method: KprobeAttachMethod,
    /// An unanchored regular expression (the `regex` crate's syntax) over the kernel's
    /// functions (kprobes) or the binary's symbols (uprobes), next to the glob
    /// `attach_to_func_name` (the Go `MatchFuncName`): the exact name wins, else the first match
    /// in file order. Resolved at `init` for enabled probes only.
    pub match_func_name: Option<String>,
    /// Attach a kprobe or kretprobe to every kernel function its pattern matches
    /// (`attach_to_func_name`, or the pattern of a `kprobe.multi/` section), not only the first
    /// (the Go library's behaviour, and the default). With the `Default` method it takes one
    /// kprobe.multi link where the kernel has them (Linux 5.18 with CONFIG_FPROBE), else one
    /// kprobe per function; with [`KprobeAttachMethod::KprobeMulti`] it takes the link or fails.
    /// [`AttachInfo::method`] says which it got.
    pub match_all_functions: bool,
    /// A BPF cookie per kernel function (`bpf_get_attach_cookie`, Linux 5.15) for kprobe.multi
    /// links, so one program tells the functions apart; functions not listed get 0. Per-function
    /// kprobes get none (aya 0.14 attaches them without cookies).
    pub function_cookies: Vec<(String, u64)>,
    /// A tracepoint's category, overriding the section's (`tracepoint/<category>/<name>`).
    pub tracepoint_category: Option<String>,
    /// A tracepoint's or raw tracepoint's name, overriding the section's.
    pub tracepoint_name: Option<String>,

    /// Uprobes: the executable or shared library to probe. Required, unless the section names
    /// it as libbpf's do: `uprobe/<path>:<function>`, or `uprobe.multi/<path>:<glob>`, which
    /// attaches every function of the glob (one uprobe.multi link from Linux 6.6, else one
    /// uprobe each) unless the probe names its own function.
    pub binary_path: Option<PathBuf>,
    /// Uprobes: a file offset. Above 0 with no symbol declared (no `hook_func_name`,
    /// `attach_to_func_name` or `match_func_name`), it is where the uprobe goes, and a section's
    /// target (`uprobe/<symbol>`) is not looked up: the Go `UprobeOffset`. With a declared
    /// symbol, it is added to the symbol's offset (aya's `SymbolOffset`), where Go would
    /// ignore the symbol.
    pub uprobe_offset: u64,
    /// Uprobes: fire for this process only (all processes when `None`). The Go `PerfEventPID`
    /// of a uprobe; [`perf_event_pid`](Self::perf_event_pid) is taken when this is `None`.
    pub uprobe_pid: Option<u32>,
    /// How to attach a uprobe or uretprobe.
    pub uprobe_attach_method: UprobeAttachMethod,

    /// XDP and TC: the interface by name (in [`netns`](Self::netns) when set).
    pub if_name: Option<String>,
    /// XDP and TC: the interface by index, instead of [`if_name`](Self::if_name).
    pub if_index: Option<u32>,
    /// XDP and TC: the network namespace of the interface; the caller's when `None`.
    #[cfg_attr(feature = "serde", serde(with = "netns_codec"))]
    pub netns: Option<Netns>,
    /// TC: ingress or egress.
    pub network_direction: NetworkDirection,
    /// TC through netlink: the filter's priority (0: the kernel picks).
    pub tc_filter_prio: u16,
    /// TC through netlink: the filter's handle (0: the kernel picks).
    pub tc_filter_handle: u32,
    /// TC through netlink: remove the clsact qdisc at stop when this probe added it and no
    /// other filter uses it.
    pub tc_cleanup_qdisc: bool,
    /// TC through netlink: the link-layer protocol the filter runs for, in host byte order
    /// (`libc::ETH_P_ARP as u16`, the Go `TCFilterProtocol`); 0 takes `ETH_P_ALL`. Another
    /// protocol makes the filter a netlink one, which the manager adds itself (aya 0.14's
    /// filter always matches `ETH_P_ALL`); TCX links have no protocol.
    pub tc_filter_protocol: u16,
    /// TC: TCX links or netlink clsact + cls_bpf.
    pub tc_attach_method: TcAttachMethod,
    /// XDP: the attach mode.
    pub xdp_attach_mode: XdpAttachMode,

    /// Cgroup programs: the cgroup (v2) directory. Required.
    pub cgroup_path: Option<PathBuf>,

    /// Socket filters: the socket to filter. Required. The declaration holds the socket open
    /// (a [`SharedFd`]), so the filter is detached from this socket and no other.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub socket_fd: Option<SharedFd>,

    /// perf_event programs: run every this many events (one of this and
    /// [`sample_frequency`](Self::sample_frequency) is required).
    pub sample_period: u64,
    /// perf_event programs: run this many times a second.
    pub sample_frequency: u64,
    /// perf_event programs: `PERF_TYPE_*` (0 hardware, 1 software).
    pub perf_event_type: u32,
    /// perf_event programs: the event of that type (`PERF_COUNT_SW_CPU_CLOCK` is 0).
    pub perf_event_config: u64,
    /// perf_event programs (and uprobes, when [`uprobe_pid`](Self::uprobe_pid) is `None`):
    /// count the events of this process only; every process when `None` (the Go
    /// `PerfEventPID`, where 0 meant every process).
    pub perf_event_pid: Option<u32>,
    /// perf_event programs: open the event on the first this-many online CPUs; 0 takes every
    /// online CPU (`/sys/devices/system/cpu/online`), the Go `PerfEventCPUCount`. With
    /// [`perf_event_pid`](Self::perf_event_pid) and 0, one event follows the process on any
    /// CPU.
    pub perf_event_cpu_count: u32,
    /// How many more times to try attaching when an attach fails (the Go `ProbeRetry`);
    /// 0 takes [`Options::default_probe_retry`](crate::Options::default_probe_retry). A failure
    /// that retrying cannot cure (an invalid declaration, a missing symbol, an unsupported
    /// facility) is returned at once. Each failed try leaves nothing attached.
    pub probe_retry: u32,
    /// The pause between two tries (the Go `ProbeRetryDelay`); zero takes
    /// [`Options::default_probe_retry_delay`](crate::Options::default_probe_retry_delay).
    #[cfg_attr(feature = "serde", serde(with = "crate::codec::duration"))]
    pub probe_retry_delay: std::time::Duration,
    /// Load this probe's program as a copy of its own, even when no
    /// [`ConstantEditor`](crate::ConstantEditor) tells it apart (the Go `CopyProgram`): two
    /// probes of one function then run two kernel programs, with their own program ids, that
    /// share the object's maps.
    pub copy_program: bool,
    /// Pin the program here on bpffs once loaded (its directory must exist). A program already
    /// pinned there (of the same type) is reused instead of loaded, so managers (and
    /// processes) declaring the same path run one kernel program; that program uses the maps
    /// of whoever loaded it, so share them too ([`Map::pin_path`](crate::Map::pin_path)) to
    /// see what it writes. [`CleanupType`](crate::CleanupType) decides whether `stop` removes
    /// the pin (`CleanAll` removes a reused one too); detaching never does.
    pub pin_path: Option<PathBuf>,
}

/// A network namespace, for XDP and TC probes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Netns {
    /// A namespace file, such as `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
    /// An open namespace file (`/proc/PID/ns/net`, the Go `IfIndexNetns` handle), held open by
    /// the declaration.
    Fd(SharedFd),
}

/// The direction of a TC classifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum NetworkDirection {
    /// Packets received.
    #[default]
    Ingress,
    /// Packets sent.
    Egress,
}

/// How a TC classifier attaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum TcAttachMethod {
    /// TCX where the kernel has it (Linux 6.6), else netlink.
    #[default]
    Default,
    /// A TCX link (Linux 6.6).
    Tcx,
    /// A clsact qdisc and a cls_bpf filter through netlink (Linux 4.1), honouring
    /// [`Probe::tc_filter_prio`] and [`Probe::tc_filter_handle`].
    Netlink,
}

/// The XDP attach mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum XdpAttachMode {
    /// Let the kernel choose (driver mode where supported, else generic).
    #[default]
    Default,
    /// Generic (skb) mode: works on every interface.
    Skb,
    /// Native driver mode.
    Driver,
    /// Offloaded to the NIC.
    Hardware,
}

impl Probe {
    /// The probe's identification pair.
    pub fn id(&self) -> ProbeIdentificationPair {
        ProbeIdentificationPair::new(self.uid.clone(), self.ebpf_func_name.clone())
    }
}

/// Where and how a running probe is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachInfo {
    /// The hook point: a kernel symbol, `category/name` of a tracepoint, or a raw tracepoint.
    pub hook: String,
    /// The facility used.
    pub method: AttachMethod,
}

/// Where a probe attaches, resolved at `init` from its declaration and its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hook {
    /// A kernel function; `retprobe` for a kretprobe.
    Kprobe { symbol: String, retprobe: bool },
    /// No hook yet: the probe was not enabled at `init` (why, if resolving failed then), or
    /// it is a template declared without its socket, interface or cgroup (why it cannot
    /// attach). Such a probe loads; attaching it resolves again, or fails with the reason.
    Unresolved(String),
    /// Every kernel function `pattern` matches ([`Probe::match_all_functions`]).
    Kprobes {
        pattern: String,
        symbols: Vec<String>,
        retprobe: bool,
    },
    /// A tracepoint.
    Tracepoint { category: String, name: String },
    /// A raw tracepoint.
    RawTracepoint { name: String },
    /// A user-space function or offset in a binary.
    Uprobe(uprobe::Target),
    /// A BTF-typed target, resolved against the kernel's BTF when the program loads:
    /// fentry/fexit function, tp_btf tracepoint, LSM hook, or iterator type.
    Btf { kind: tracing::Kind, target: String },
    /// A software or hardware perf event on every CPU.
    PerfEvent(perf_event::Target),
    /// A socket.
    Socket(SharedFd),
    /// A cgroup.
    Cgroup(PathBuf),
    /// A network interface (XDP or TC).
    Net(net::Target),
}

impl Hook {
    /// The hook point in a few words, for status reports; `None` where only the attachment
    /// tells (sockets, cgroups, interfaces, perf events, binaries).
    pub(crate) fn summary(&self) -> Option<String> {
        match self {
            Self::Kprobe { symbol, .. } => Some(symbol.clone()),
            Self::Kprobes {
                pattern, symbols, ..
            } => Some(format!("{} functions matching {pattern}", symbols.len())),
            Self::Tracepoint { category, name } => Some(format!("{category}/{name}")),
            Self::RawTracepoint { name } => Some(name.clone()),
            Self::Btf { target, .. } => Some(target.clone()),
            Self::Uprobe(target) => Some(target.describe()),
            Self::Unresolved(_)
            | Self::PerfEvent(_)
            | Self::Socket(_)
            | Self::Cgroup(_)
            | Self::Net(_) => None,
        }
    }
}

impl Link {
    /// The tracefs kprobe events behind it (their names in `kprobe_profile`).
    pub(crate) fn kprobe_events(&self) -> Vec<&str> {
        match self {
            Self::KprobeTracefs(link) => vec![link.event_name()],
            Self::Many(links) => links.iter().flat_map(Link::kprobe_events).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether closing it waits for an RCU tasks-trace grace period (perf-event links:
    /// kprobes, tracepoints, uprobes).
    pub(crate) fn waits_for_rcu(&self) -> bool {
        match self {
            Self::KprobePmu(_)
            | Self::KprobeTracefs(_)
            | Self::Tracepoint(_)
            | Self::Uprobe(_)
            | Self::UprobeTracefs(_) => true,
            Self::Many(links) => links.iter().any(Link::waits_for_rcu),
            _ => false,
        }
    }
}

/// An attachment the manager owns; dropping it detaches.
#[expect(dead_code, reason = "each link is held for its Drop, which detaches")]
#[derive(Debug)]
pub(crate) enum Link {
    KprobePmu(aya::programs::kprobe::KProbeLink),
    KprobeTracefs(kprobe::TracefsLink),
    /// A kprobe.multi or uprobe.multi link's fd; closing it detaches.
    KprobeMulti(std::os::fd::OwnedFd),
    /// One link per function, detached in reverse order.
    Many(Vec<Link>),
    Tracepoint(aya::programs::trace_point::TracePointLink),
    RawTracepoint(aya::programs::raw_trace_point::RawTracePointLink),
    Uprobe(aya::programs::uprobe::UProbeLink),
    UprobeTracefs(kprobe::TracefsLink),
    FEntry(aya::programs::fentry::FEntryLink),
    FExit(aya::programs::fexit::FExitLink),
    BtfTracepoint(aya::programs::tp_btf::BtfTracePointLink),
    Lsm(aya::programs::lsm::LsmLink),
    Iter(aya::programs::iter::IterLink),
    PerfEvent(Vec<aya::programs::perf_event::PerfEventLink>),
    Socket(net::SocketLink),
    Cgroup(cgroup::CgroupLink),
    Xdp(net::InNetns<aya::programs::xdp::XdpLink>),
    Tc(net::TcLink),
}

/// `error` behind `hint`, a sentence that names its likely cause in the user's terms
/// ("uprobe_pid 7 names no running process"): the hint prints first and the error is its
/// source, so [`Error::report`](crate::Error::report) reads "…failed: <hint>: `perf_event_open`
/// failed: No such process" and [`Error::errno`](crate::Error::errno) still finds the errno.
/// Without a hint, the error itself.
pub(crate) fn with_hint<E>(
    error: E,
    hint: Option<String>,
) -> Box<dyn std::error::Error + Send + Sync>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match hint {
        Some(hint) => Box::new(Hinted {
            hint,
            error: Box::new(error),
        }),
        None => Box::new(error),
    }
}

/// See [`with_hint`].
#[derive(Debug)]
struct Hinted {
    hint: String,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hint)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// The errno of a failed system call behind `error`, if that is what it is.
pub(crate) fn syscall_errno(error: &aya::programs::ProgramError) -> Option<i32> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(c) = cause {
        if let Some(errno) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(errno);
        }
        cause = c.source();
    }
    None
}

/// A network namespace as its file's path (an open fd cannot be written in a file).
#[cfg(feature = "serde")]
pub(crate) mod netns_codec {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::Netns;

    pub(crate) fn serialize<S: serde::Serializer>(
        n: &Option<Netns>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match n {
            None => s.serialize_none(),
            Some(Netns::Path(p)) => s.serialize_some(p),
            Some(Netns::Fd(_)) => Err(serde::ser::Error::custom(
                "netns: an open namespace fd cannot be declared in a file; use its path",
            )),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Netns>, D::Error> {
        Ok(Option::<PathBuf>::deserialize(d)?.map(Netns::Path))
    }
}
