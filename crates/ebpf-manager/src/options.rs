//! [`Options`]: everything that shapes `init`.

use std::path::PathBuf;

use crate::{KprobeAttachMethod, ProbeIdentificationPair, ProbesSelector};

/// Options of [`Manager::init_with_options`](crate::Manager::init_with_options).
///
/// ```
/// use ebpf_manager::{ConstantEditor, KprobeAttachMethod, Options};
///
/// let options = Options {
///     constant_editors: vec![ConstantEditor::new("filter_tid", std::process::id())],
///     default_kprobe_attach_method: KprobeAttachMethod::Tracefs,
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Options {
    /// Which probes to enable, and what must run for `start` to succeed. Empty: every declared
    /// probe is enabled and mandatory. Otherwise a probe is enabled when a selector names it;
    /// probes no selector names are not loaded (see
    /// [`load_unselected_probes`](Self::load_unselected_probes)).
    pub activated_probes: Vec<ProbesSelector>,
    /// Functions of the object never loaded; their probes are disabled.
    pub excluded_functions: Vec<String>,
    /// Load the programs of probes that no selector enables too, so that
    /// [`Manager::update_activated_probes`](crate::Manager::update_activated_probes) only attaches
    /// them. By default they are loaded when first enabled, sparing the verifier's time.
    pub load_unselected_probes: bool,
    /// Values written into `volatile const` globals (`.rodata`) before the programs load.
    pub constant_editors: Vec<ConstantEditor>,
    /// Maps pinned elsewhere used in place of the object's maps of the same name.
    pub map_editors: Vec<MapEditor>,
    /// Make the kernel count each program's runs and run time from `init` to `stop`
    /// (`BPF_ENABLE_STATS`, Linux 5.8), for [`Manager::status`](crate::Manager::status). The
    /// count costs a few nanoseconds per run; it is off by default, as in the kernel.
    pub enable_stats: bool,
    /// The bpffs directory of the maps the object pins by name (`__uint(pinning,
    /// LIBBPF_PIN_BY_NAME)` in the map's definition): each lives at `<directory>/<map name>`,
    /// reused when a pin is there (its type, key and value sizes, flags and max entries must
    /// match the definition, else [`Error::PinnedMapMismatch`](crate::Error::PinnedMapMismatch)),
    /// created and pinned otherwise. `None`: `/sys/fs/bpf`, as libbpf. The Go
    /// `VerifierOptions.Maps.PinPath`. As with libbpf, `stop` leaves these pins (sharing maps
    /// across restarts is what they are for); a failed `init` removes the ones it created.
    pub map_pin_directory: Option<std::path::PathBuf>,
    /// Mount a bpffs at `/sys/fs/bpf` when a pin of this manager needs it and nothing is
    /// mounted there (minimal VMs and containers have none). Off by default: the manager never
    /// mounts anything unasked, and `init` refuses a pin path off bpffs with
    /// [`Error::Bpffs`](crate::Error::Bpffs), naming the fix. The manager's own pins (map
    /// sharing with object copies and clones) need no mount: they live in a private bpffs
    /// instance.
    pub mount_bpffs: bool,
    /// Changes to the object's map definitions, applied before the maps are created.
    pub map_spec_editors: Vec<MapSpecEditor>,
    /// Programs put into program arrays at `start`, before any probe attaches.
    pub tail_call_router: Vec<TailCallRoute>,
    /// Maps put into maps of maps at `start`, before any probe attaches.
    pub map_router: Vec<MapRoute>,
    /// How kprobes whose own [`Probe::kprobe_attach_method`](crate::Probe::kprobe_attach_method)
    /// is `Default` attach.
    pub default_kprobe_attach_method: KprobeAttachMethod,
    /// How uprobes whose own [`Probe::uprobe_attach_method`](crate::Probe::uprobe_attach_method)
    /// is `Default` attach (the Go `DefaultUprobeAttachMethod`); `Default` here means the
    /// uprobe PMU.
    pub default_uprobe_attach_method: crate::UprobeAttachMethod,
    /// The [`Probe::probe_retry`](crate::Probe::probe_retry) of probes that leave theirs at 0
    /// (the Go `DefaultProbeRetry`): how many more times a failed attach is tried.
    pub default_probe_retry: u32,
    /// The [`Probe::probe_retry_delay`](crate::Probe::probe_retry_delay) of probes that leave
    /// theirs at zero (the Go `DefaultProbeRetryDelay`).
    #[cfg_attr(feature = "serde", serde(with = "crate::codec::duration"))]
    pub default_probe_retry_delay: std::time::Duration,
    /// The `kprobe_max_active` of kretprobes that leave theirs at 0 (the Go
    /// `DefaultKProbeMaxActive`); above 0 they attach through tracefs.
    pub default_kprobe_max_active: u32,
    /// The `perf_ring_pages` of perf maps that leave theirs at 0 (the Go
    /// `DefaultPerfRingBufferSize`, here in pages); 0 keeps the library's default.
    pub default_perf_ring_pages: usize,
    /// The `watermark` of perf maps that set neither a watermark nor `wakeup_events` (the Go
    /// `DefaultWatermark`), in bytes.
    pub default_watermark: u32,
    /// How long stopping a perf map or ring buffer reader (`stop`, `stop_reader`,
    /// `stop_readers`) waits for its handler to finish with the last records; zero means 5 s.
    /// A reader still busy then is [`Error::ReaderStuck`](crate::Error::ReaderStuck).
    #[cfg_attr(feature = "serde", serde(with = "crate::codec::duration"))]
    pub reader_stop_timeout: std::time::Duration,
    /// Leave the object's `AYA_LOGS` alone. By default, when the object has aya-log-ebpf
    /// 0.2's ring buffer (Rust programs that log with `aya_log_ebpf::info!` and the like),
    /// `start` takes it and a reader thread forwards its records to the `log` facade through
    /// aya-log 0.3, as `aya_log::EbpfLogger` does in an aya program; `stop` ends it after the
    /// last records. It shows in [`Manager::status`](crate::Manager::status) as the reader of
    /// `AYA_LOGS`. Set this to read the map yourself. A ring buffer (Linux 5.8) declared in
    /// [`Manager::ring_buffers`](crate::Manager::ring_buffers) under that name is never
    /// forwarded. aya-log decodes the records as the programs wrote them: it panics on bytes
    /// that are not aya-log-ebpf 0.2 records, which stops the reader (a handler error).
    pub skip_aya_log: bool,
    /// Keep the kernel's parsed BTF after `start` (for hooks and clones of fentry, fexit,
    /// tp_btf, LSM and iterator programs added later). By default it is released after `start`:
    /// it takes several megabytes.
    pub keep_kernel_btf: bool,
    /// Maps of the object that are not created (the Go `ExcludedMaps`), legacy or BTF-defined,
    /// for objects whose unused programs reference maps this kernel cannot create. Programs that
    /// use them must not be loaded (the kernel refuses them): exclude them too
    /// ([`excluded_functions`](Self::excluded_functions)). A struct_ops map (a variable of
    /// `SEC(".struct_ops")`) named here is neither made nor registered, and its programs are
    /// not loaded.
    pub excluded_maps: Vec<String>,
    /// Legacy maps of maps (`struct bpf_map_def` of type `ARRAY_OF_MAPS` or `HASH_OF_MAPS`)
    /// with the legacy map whose definition their inner maps follow (the Go
    /// `InnerOuterMapSpecs`). aya only knows inner maps from BTF, so the outer map is described
    /// in BTF: the object needs a `.BTF` section (compile with `-g`).
    pub inner_outer_map_specs: Vec<InnerOuterMapSpec>,
    /// Fail `init` when an asm constant (`asm("%0 = NAME ll" : "=r"(v))`, the Go world's
    /// `LOAD_CONSTANT`) is set by no [`ConstantEditor`]. By default it loads as 0 with a
    /// warning naming it, as in the Go library.
    pub strict_constants: bool,
    /// Bypass (the Go `BypassEnabled`, for objects with a `program_bypassed` array): programs
    /// that open with an `ld_imm64` of `bypass_program` get a prologue that returns 0 while their
    /// entry of `program_bypassed` is set, and [`Manager::pause`](crate::Manager::pause) /
    /// [`resume`](crate::Manager::resume) set and clear it instead of detaching them. Without
    /// it the placeholder loads as 0 and the map is not created.
    pub bypass_enabled: bool,
    /// Callbacks run over every program's instructions after constants are set and before
    /// load (the Go `InstructionPatchers`).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub instruction_patchers: Vec<crate::InstructionPatcher>,
    /// The kernel types CO-RE relocations and BTF-typed hooks (fentry, fexit, tp_btf, LSM,
    /// iterators) resolve against, instead of `/sys/kernel/btf/vmlinux` (the Go
    /// `VerifierOptions.Programs.KernelTypes`): for kernels without BTF (a BTFHub file) and for
    /// tests.
    #[cfg_attr(feature = "serde", serde(with = "kernel_types_codec"))]
    pub kernel_btf: Option<KernelTypes>,
    /// The verifier's log level (aya's default, `DEBUG | STATS`, when `None`). The log of a
    /// rejected program is in [`Error::Verifier`](crate::Error::Verifier); its buffer grows
    /// until the log fits (aya 0.14 sizes it, starting at 64 KiB).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub verifier_log_level: Option<aya::VerifierLogLevel>,
    /// Free the object's bytes once `start` succeeds (they are kept by default, as the Go
    /// library keeps its collection spec, so that `clone_program` works at any time). With it,
    /// `clone_program` and `program_instructions` fail with
    /// [`Error::ObjectReleased`](crate::Error::ObjectReleased).
    pub release_object_after_start: bool,
    /// Leave `RLIMIT_MEMLOCK` as it is. By default `init` lifts it, which kernels before 5.11
    /// need for anything but tiny maps (best effort: it needs `CAP_SYS_RESOURCE`).
    pub keep_memlock_rlimit: bool,
}

/// A legacy map of maps and the map its inner maps look like, for
/// [`Options::inner_outer_map_specs`].
///
/// ```
/// use ebpf_manager::{InnerOuterMapSpec, Options};
///
/// let options = Options {
///     inner_outer_map_specs: vec![InnerOuterMapSpec {
///         outer_map_name: "outer".into(),
///         inner_map_name: "inner_template".into(),
///     }],
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct InnerOuterMapSpec {
    /// The map of maps (a legacy `struct bpf_map_def`).
    pub outer_map_name: String,
    /// The legacy map whose definition the inner maps follow (created as a map of its own too).
    pub inner_map_name: String,
}

/// Kernel BTF given by the user, for [`Options::kernel_btf`].
///
/// ```no_run
/// use ebpf_manager::{KernelTypes, Options};
///
/// let options = Options {
///     kernel_btf: Some(KernelTypes::File("/var/lib/btfhub/5.4.0-generic.btf".into())),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub enum KernelTypes {
    /// A raw BTF file (as `/sys/kernel/btf/vmlinux`, or a BTFHub file), parsed at `init`.
    File(PathBuf),
    /// BTF already parsed.
    Parsed(std::sync::Arc<aya::Btf>),
}

/// A value for a constant of the object, set before load so the verifier sees it (dead branches
/// are pruned): a `volatile const` global (`.rodata`), or an asm constant
/// (`asm("%0 = NAME ll" : "=r"(v))`, the Go world's `LOAD_CONSTANT`, whose value is written into
/// the `ld_imm64` instructions that load it, zero-extended to 64 bits). A name of both kinds sets
/// both.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct ConstantEditor {
    /// The global's name in the object.
    pub name: String,
    /// Its new value, in the kernel's byte order, of the global's exact size.
    #[cfg_attr(feature = "serde", serde(with = "crate::codec::constant_value"))]
    pub value: Vec<u8>,
    /// Do not fail when the object has no such global.
    #[cfg_attr(feature = "serde", serde(default))]
    pub allow_missing: bool,
    /// The probes this value is for; empty: every probe. An asm constant that only these
    /// probes' programs load is written into those programs in place, as Go's `editConstant`
    /// does; otherwise (a data global, a site in a shared subprogram, a program other probes
    /// use too) the probes named here get their own copy of their program (sharing every map
    /// but the globals' with the others), since a loaded program has one value per constant.
    /// [`InitPhases::object_loads`](crate::diagnostics::InitPhases::object_loads) counts the
    /// copies.
    #[cfg_attr(feature = "serde", serde(default))]
    pub probes: Vec<ProbeIdentificationPair>,
}

impl ConstantEditor {
    /// An editor setting `name` to `value` (in native byte order).
    ///
    /// ```
    /// use ebpf_manager::ConstantEditor;
    ///
    /// let e = ConstantEditor::new("filter_tid", 42u32);
    /// assert_eq!(e.value, 42u32.to_ne_bytes());
    /// ```
    pub fn new<T: aya::Pod>(name: impl Into<String>, value: T) -> Self {
        // SAFETY: `Pod` types are plain bytes without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts((&value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        Self {
            name: name.into(),
            value: bytes.to_vec(),
            allow_missing: false,
            probes: Vec::new(),
        }
    }
}

/// A map from elsewhere used in place of the object's map named `name` (the Go `MapEditors`):
/// pinned on bpffs by another manager or tool, or open in this process (another manager's map,
/// from [`Manager::map_fd`](crate::Manager::map_fd), or any map fd). It must have the same type,
/// key and value sizes and flags ([`Error::PinnedMapMismatch`](crate::Error::PinnedMapMismatch)
/// otherwise).
///
/// ```no_run
/// # fn main() -> Result<(), ebpf_manager::Error> {
/// # let other = ebpf_manager::Manager::default();
/// use ebpf_manager::{MapEditor, Options};
///
/// let options = Options {
///     map_editors: vec![
///         MapEditor::pinned("shared_counts", "/sys/fs/bpf/agent/shared_counts"),
///         // A map of a manager running in this process.
///         MapEditor::live("events", other.map_fd("events")?),
///     ],
///     ..Default::default()
/// };
/// # let _ = options;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct MapEditor {
    /// The map's name in the object.
    pub name: String,
    /// Where the map to use is pinned; ignored when [`map`](Self::map) is set.
    pub pin_path: PathBuf,
    /// An open map to use instead of a pinned one (the Go `MapEditors` value, a `*ebpf.Map`).
    /// The manager pins it for the time of the load in a private bpffs instance (aya 0.14
    /// reuses maps only by pin), and removes the pin right after.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub map: Option<std::sync::Arc<aya::maps::MapFd>>,
}

impl MapEditor {
    /// An editor that takes the map pinned at `pin_path`.
    pub fn pinned(name: impl Into<String>, pin_path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            pin_path: pin_path.into(),
            map: None,
        }
    }

    /// An editor that takes an open map.
    pub fn live(name: impl Into<String>, map: aya::maps::MapFd) -> Self {
        Self {
            name: name.into(),
            pin_path: PathBuf::new(),
            map: Some(std::sync::Arc::new(map)),
        }
    }
}

impl PartialEq for MapEditor {
    /// Editors are equal when they name the same map and take the same pin or the same open
    /// map (the same shared fd).
    fn eq(&self, other: &Self) -> bool {
        let same_map = same_shared(&self.map, &other.map)
            && (self.map.is_some() || self.pin_path == other.pin_path);
        self.name == other.name && same_map
    }
}

impl Eq for MapEditor {}

/// A change to a map's definition before the map is created (the Go `MapSpecEditor`; each
/// `Some` field is one of its `EditorFlag`s).
///
/// Every field applies to legacy maps (`struct bpf_map_def` in `SEC("maps")`, edited in the
/// definition) and to BTF-defined maps (`SEC(".maps")`, edited in the map's BTF struct, where
/// aya 0.14 reads them). A combination the kernel refuses fails `init` with
/// [`Error::Object`](crate::Error::Object) naming the map; programs must still agree with the
/// new sizes (the verifier checks their accesses).
///
/// ```
/// use ebpf_manager::{MapSpecEditor, Options};
///
/// let options = Options {
///     map_spec_editors: vec![MapSpecEditor {
///         name: "events".into(),
///         max_entries: Some(4096),
///         map_type: Some(aya::maps::MapType::LruHash as u32),
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct MapSpecEditor {
    /// The map's name in the object.
    pub name: String,
    /// The new number of entries (for a ring buffer: its size in bytes, a power of two
    /// multiple of the page size).
    pub max_entries: Option<u32>,
    /// The new map type, a `BPF_MAP_TYPE_*` value (`aya::maps::MapType::LruHash as u32`).
    pub map_type: Option<u32>,
    /// The new key size in bytes.
    pub key_size: Option<u32>,
    /// The new value size in bytes.
    pub value_size: Option<u32>,
    /// The new `map_flags` (`BPF_F_*`).
    pub flags: Option<u32>,
}

/// Puts a program into a program array (`BPF_MAP_TYPE_PROG_ARRAY`, Linux 4.2), for
/// `bpf_tail_call`: a program of the object, loaded when needed and attached nowhere, or one from
/// elsewhere (another manager's, through [`Manager::program_fd`](crate::Manager::program_fd)).
#[derive(Debug, Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct TailCallRoute {
    /// The program array's name in the object.
    pub prog_array_name: String,
    /// The index to write.
    pub key: u32,
    /// The program's function in the object (its `uid` is not used); only for messages when
    /// [`program`](Self::program) is set.
    pub probe_identification_pair: ProbeIdentificationPair,
    /// A program from elsewhere to route instead of the object's (the Go
    /// `TailCallRoute.Program`). Its type must be the one the program array holds.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub program: Option<std::sync::Arc<aya::programs::ProgramFd>>,
}

impl PartialEq for TailCallRoute {
    /// Routes are equal when they write the same entry with the same program (the same shared
    /// fd).
    fn eq(&self, other: &Self) -> bool {
        let same_program = same_shared(&self.program, &other.program);
        self.prog_array_name == other.prog_array_name
            && self.key == other.key
            && self.probe_identification_pair == other.probe_identification_pair
            && same_program
    }
}

impl Eq for TailCallRoute {}

/// Puts a map into a map of maps (`BPF_MAP_TYPE_ARRAY_OF_MAPS` or `HASH_OF_MAPS`, Linux 4.12):
/// a map of the object, or one from elsewhere (another manager's, through
/// [`Manager::map_fd`](crate::Manager::map_fd)).
///
/// ```no_run
/// # fn run(other: &ebpf_manager::Manager) -> ebpf_manager::Result<()> {
/// use std::sync::Arc;
/// use ebpf_manager::MapRoute;
///
/// let route = MapRoute {
///     routing_map_name: "outer".into(),
///     key: 0,
///     map_name: "shared_counts".into(),
///     map: Some(Arc::new(other.map_fd("shared_counts")?)),
/// };
/// # let _ = route;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct MapRoute {
    /// The map of maps' name in the object.
    pub routing_map_name: String,
    /// The index (array) or key (hash, a `u32` key) to write.
    pub key: u32,
    /// The inner map's name: in the object, or only for messages when [`map`](Self::map) is
    /// set.
    pub map_name: String,
    /// A map from elsewhere to route instead of the object's `map_name` (the Go library's
    /// `MapRoute.Map`). It must match the map of maps' inner definition.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub map: Option<std::sync::Arc<aya::maps::MapFd>>,
}

impl PartialEq for MapRoute {
    /// Routes are equal when they write the same entry with the same map (the same shared fd).
    fn eq(&self, other: &Self) -> bool {
        let same_map = same_shared(&self.map, &other.map);
        self.routing_map_name == other.routing_map_name
            && self.key == other.key
            && self.map_name == other.map_name
            && same_map
    }
}

impl Eq for MapRoute {}

/// A map of the object with options of its own, declared in
/// [`Manager::maps`](crate::Manager::maps).
///
/// ```
/// use ebpf_manager::Map;
///
/// let map = Map { name: "hits".into(), pin_path: Some("/sys/fs/bpf/my_tool_hits".into()) };
/// # let _ = map;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Map {
    /// The map's name in the object.
    pub name: String,
    /// Pin the map here on bpffs (its directory must exist). A map already pinned there is
    /// reused instead of created, so managers (and processes) declaring the same path share it.
    /// [`CleanupType`](crate::CleanupType) decides whether `stop` removes the pin.
    pub pin_path: Option<PathBuf>,
}

/// What [`Manager::test_run`](crate::Manager::test_run) runs a program on (the Go
/// `TestInput`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRunInput {
    /// The packet (XDP, TC, socket filters: 14 bytes at least).
    pub data: Vec<u8>,
    /// The room for the packet the program leaves (default: the packet's length plus 256, for
    /// programs that grow it).
    pub data_out_size: Option<usize>,
    /// The context (`struct __sk_buff`, `struct xdp_md`, a raw tracepoint's arguments...).
    pub context: Vec<u8>,
    /// The room for the context the program leaves (default: the context's length).
    pub context_out_size: Option<usize>,
    /// How many times to run it (the Go `Benchmark`); 0 means once.
    pub repeat: u32,
}

/// What [`Manager::test_run`](crate::Manager::test_run) gives back (the Go `TestOutput`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (an XDP verdict, a TC action...).
    pub retval: u32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
    /// The context as the program left it.
    pub context: Vec<u8>,
    /// The mean time of one run, as the kernel measured it.
    pub duration: std::time::Duration,
}

/// Whether two optional shared fds are both absent, or the same one (not merely the same
/// kernel object): what the equality of editors and routes that hold one compares.
fn same_shared<T>(a: &Option<std::sync::Arc<T>>, b: &Option<std::sync::Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Kernel types as the path of a BTF file (parsed BTF cannot be written in a file).
#[cfg(feature = "serde")]
pub(crate) mod kernel_types_codec {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::KernelTypes;

    pub(crate) fn serialize<S: serde::Serializer>(
        k: &Option<KernelTypes>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match k {
            None => s.serialize_none(),
            Some(KernelTypes::File(p)) => s.serialize_some(p),
            Some(KernelTypes::Parsed(_)) => Err(serde::ser::Error::custom(
                "kernel_btf: parsed BTF cannot be declared in a file; use the file's path",
            )),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<KernelTypes>, D::Error> {
        Ok(Option::<PathBuf>::deserialize(d)?.map(KernelTypes::File))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editors_and_routes_compare_their_shared_fds_by_identity() {
        assert_eq!(MapEditor::pinned("a", "/p"), MapEditor::pinned("a", "/p"));
        assert_ne!(MapEditor::pinned("a", "/p"), MapEditor::pinned("a", "/q"));
        assert_ne!(MapEditor::pinned("a", "/p"), MapEditor::pinned("b", "/p"));
        let one = std::sync::Arc::new(7u8);
        assert!(same_shared(&Some(one.clone()), &Some(one.clone())));
        assert!(!same_shared(
            &Some(one.clone()),
            &Some(std::sync::Arc::new(7u8))
        ));
        assert!(!same_shared(&Some(one), &None));
        assert!(same_shared::<u8>(&None, &None));
        assert_eq!(MapRoute::default(), MapRoute::default());
    }
}
