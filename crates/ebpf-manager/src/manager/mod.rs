//! [`Manager`]: the state machine and the init/start/pause/resume/stop pipeline. The records
//! behind it (load, attach, validate, detach one probe) are in `records.rs`; changes at runtime
//! (selectors, hooks, clones) in `runtime.rs`.

mod access;
mod attach;
mod bypass;
mod dump;
mod init;
mod kfuncs;
#[cfg(feature = "metrics")]
mod metrics;
pub use dump::MapEntry;
pub(crate) use init::match_program;
pub use status::{ProbeStatus, Status};
mod multi;
mod pins;
mod readers;
mod records;
mod rollback;
mod router;
mod runtime;
mod status;
mod struct_ops;
mod table;

use std::fmt;

use aya::Ebpf;
use table::{ObjectKey, RecordKey, Table};

pub use crate::types::ManagerState;

use crate::{
    elf::ElfIndex,
    kernel::{self, symbols::LazyFunctions},
    loader,
    probe::{AttachInfo, Hook, Link, ProbeState},
    ConstantEditor, Error, KprobeAttachMethod, MapEditor, Probe, ProbeIdentificationPair,
    ProbesSelector, Result,
};

/// What `stop` cleans up besides detaching every probe and unloading every program and map:
/// which pins of [`Map::pin_path`](crate::Map::pin_path) and
/// [`Probe::pin_path`](crate::Probe::pin_path) it removes. Internal pins are those this
/// manager created; external ones existed before (made by another manager or tool) and were
/// reused. Nothing else removes pins: not `pause`, not `detach_hook`, not drop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CleanupType {
    /// Remove the pins this manager created.
    CleanInternal,
    /// Remove the pins this manager reused.
    CleanExternal,
    /// Remove every pin of this manager's maps and programs.
    #[default]
    CleanAll,
}

/// What the manager knows of one probe.
#[derive(Debug)]
struct Record {
    probe: Probe,
    id: ProbeIdentificationPair,
    /// The program's function in the object (from `ebpf_func_name`, or found by `section`).
    function: String,
    /// Its object in `State::objects`.
    object: ObjectKey,
    /// The program's section as the object names it (for hooks resolved later).
    section: String,
    hook: Hook,
    state: ProbeState,
    /// Why the probe is disabled or failed.
    error: Option<String>,
    attach: Option<AttachInfo>,
    link: Option<Link>,
    /// The program loaded by the manager for kprobe.multi links (aya's stays unloaded).
    multi: Option<std::os::fd::OwnedFd>,
}

/// Manages the whole life of a set of eBPF programs: declare [`Probe`]s, then
/// [`init`](Self::init) (load and verify), [`start`](Self::start) (attach),
/// [`pause`](Self::pause) / [`resume`](Self::resume), [`stop`](Self::stop) (detach and unload).
///
/// Every call that fails undoes what it did: a failed `start` detaches the probes it had
/// attached; a failed `init` unloads what it had loaded. Dropping the manager stops it.
///
/// ```no_run
/// use ebpf_manager::{CleanupType, Manager, Probe};
///
/// let mut m = Manager {
///     probes: vec![Probe {
///         uid: "MyVFSMkdir".into(),
///         ebpf_func_name: "kprobe_vfs_mkdir".into(),
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// m.init(&std::fs::read("helloworld.bpf.o")?)?;
/// m.start()?;
/// // ... the probe runs ...
/// m.stop(CleanupType::CleanAll)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct Manager {
    /// The probes to load and attach. Read by `init`; the manager works on its own copy after.
    pub probes: Vec<Probe>,
    /// Perf event arrays to read from `start` to `stop`.
    pub perf_maps: Vec<crate::PerfMap>,
    /// Ring buffers to read from `start` to `stop`.
    pub ring_buffers: Vec<crate::RingBuffer>,
    /// Maps of the object with options of their own (pinning).
    pub maps: Vec<crate::Map>,
    /// The manager's own records. Public only so that `Manager { probes, ..Default::default() }`
    /// compiles; its contents are private: leave it to `Default`.
    #[doc(hidden)]
    pub state: State,
}

/// The manager's own records (derived state, loaded objects, links); opaque.
#[doc(hidden)]
#[derive(Default)]
pub struct State {
    phase: ManagerState,
    /// The object through the pipeline, kept for clones and per-probe copies.
    source: loader::Source,
    /// Fds of the main object's maps, taken at `init`: readers take maps out of the object at
    /// `start`, and programs loaded later (kprobe.multi) must still be relocated against them.
    main_map_fds: std::collections::HashMap<String, std::os::fd::OwnedFd>,
    /// The constant editors of each object copy beyond the global ones.
    own_constants: std::collections::HashMap<ObjectKey, Vec<ConstantEditor>>,
    elf: ElfIndex,
    /// Loaded objects: [`ObjectKey::MAIN`] is the one given to `init`; clones and per-probe
    /// copies add theirs, removed once unused.
    objects: Table<ObjectKey, Ebpf>,
    records: Table<RecordKey, Record>,
    /// The attached probes, in attach order.
    attached: Vec<RecordKey>,
    functions: LazyFunctions,
    btf: loader::KernelBtf,
    keep_kernel_btf: bool,
    release_object_after_start: bool,
    default_kprobe_attach_method: KprobeAttachMethod,
    default_kprobe_max_active: u32,
    /// Whether the log said once that max active moves PMU kretprobes to tracefs.
    maxactive_noted: bool,
    default_uprobe_attach_method: crate::UprobeAttachMethod,
    default_probe_retry: u32,
    default_probe_retry_delay: std::time::Duration,
    selectors: Vec<ProbesSelector>,
    readers: crate::maps::Readers,
    perf_maps: Vec<crate::PerfMap>,
    ring_buffers: Vec<crate::RingBuffer>,
    excluded: Vec<String>,
    /// The declared probes whose function is excluded: gone, as in Go, but selectors may
    /// still name them (and fail, saying why).
    excluded_probes: Vec<ProbeIdentificationPair>,
    constant_editors: Vec<ConstantEditor>,
    /// Per-probe editors written in place into the object (indices into `constant_editors`):
    /// their probes take no copy for them.
    constants_in_place: Vec<usize>,
    map_editors: Vec<MapEditor>,
    map_spec_editors: Vec<crate::MapSpecEditor>,
    tail_call_router: Vec<crate::TailCallRoute>,
    map_router: Vec<crate::MapRoute>,
    pins: Vec<pins::Pin>,
    /// The `BPF_ENABLE_STATS` fd of [`Options::enable_stats`](crate::Options::enable_stats):
    /// the kernel counts program runs while it is open.
    stats: Option<std::os::fd::OwnedFd>,
    /// The module BTFs kfunc calls of the object name, in fd array order (slot 1 first): the
    /// raw fds are written into the instructions, so they live as long as the manager.
    kfunc_btfs: Vec<std::os::fd::OwnedFd>,
    /// vmlinux's BTF with a module's, for CO-RE relocations of types vmlinux lacks: `None`
    /// until first needed, then `Some(None)` when no module is needed or has them.
    module_core: Option<Option<kfuncs::ModuleTypes>>,
    /// The object's struct_ops maps, registered from `start` to `stop`.
    struct_ops: Vec<struct_ops::StructOps>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("probes", &self.probes)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Where the manager is in its life.
    pub fn state(&self) -> ManagerState {
        self.state.phase
    }

    fn expect(&self, operation: &'static str, allowed: &[ManagerState]) -> Result<()> {
        let state = self.state();
        if allowed.contains(&state) {
            return Ok(());
        }
        let hint = match state {
            ManagerState::New => "call init first",
            ManagerState::Initialized => "call start first",
            ManagerState::Running => "it is already running; stop it first",
            ManagerState::Paused => "call resume or stop",
            ManagerState::Stopped => "a stopped manager cannot be reused; build a new one",
        };
        Err(Error::InvalidState {
            operation,
            state,
            hint,
        })
    }

    /// Attaches every enabled probe, in declaration order.
    ///
    /// Without selectors, the first probe that fails detaches the ones attached before it, in
    /// reverse order, and its error (naming the probe, the hook point and the cause) is returned.
    /// With selectors, every enabled probe is tried, then the selectors validate what runs; if
    /// one fails, everything is detached and [`Error::SelectorValidation`] lists each failing
    /// probe with its own cause. What dead processes of this library left (tracefs events,
    /// private bpffs directories) is removed first:
    /// [`remove_leftovers`](crate::remove_leftovers). A probe whose attach fails is tried again
    /// [`Probe::probe_retry`](crate::Probe::probe_retry) times first.
    ///
    /// The object's struct_ops maps (`SEC(".struct_ops")`, Linux 5.6, e.g. a TCP congestion
    /// control) are registered first, `SEC(".struct_ops.link")` ones (Linux 6.4) by a link;
    /// [`stop`](Self::stop) and dropping the manager unregister them, `pause` does not.
    ///
    /// A failed `start` leaves the manager [`Initialized`](ManagerState::Initialized), its
    /// programs loaded, nothing attached and every route slot it wrote as it was before: fix the cause and call `start` again, or `stop`
    /// it. (The Go manager is reset by a failed `Start` and needs `Init` again; here `init`
    /// is not called twice.)
    pub fn start(&mut self) -> Result<()> {
        self.expect("start", &[ManagerState::Initialized])?;
        kernel::leftovers::remove_leftovers();
        let routes = {
            let routes = (
                std::mem::take(&mut self.state.tail_call_router),
                std::mem::take(&mut self.state.map_router),
            );
            let applied = self.state.apply_routes(&routes.0, &routes.1);
            (self.state.tail_call_router, self.state.map_router) = routes;
            applied?
        };
        {
            let State {
                objects,
                readers,
                perf_maps,
                ring_buffers,
                ..
            } = &mut self.state;
            let main = objects
                .get_mut(ObjectKey::MAIN)
                .expect("the main object lives until stop");
            if let Err(e) = readers.start(main, perf_maps, ring_buffers) {
                routes.undo();
                return Err(e);
            }
        }
        if let Err(e) = self.state.register_struct_ops() {
            let _ = self.state.readers.stop();
            routes.undo();
            return Err(e);
        }
        let indices: Vec<RecordKey> = self
            .state
            .records
            .keys()
            .filter(|&i| self.state.records[i].state != ProbeState::Disabled)
            .collect();
        let result = self.state.attach_enabled(&indices);
        if !self.state.keep_kernel_btf {
            self.state.btf.release();
            self.state.module_core = None;
        }
        // Patterns are resolved: the function list (megabytes) goes unless another manager
        // holds it; a hook added later reads it again.
        self.state.functions.release();
        if result.is_ok() && self.state.release_object_after_start {
            self.state.source.object.release_bytes();
        }
        if result.is_err() {
            // Made again, so that `start` can be called again: the kernel registers a
            // struct_ops map once.
            self.state.unregister_struct_ops(true);
            // The attach error is the one to report; a stuck reader is logged.
            let _ = self.state.readers.stop();
            routes.undo();
        }
        result?;
        self.state.phase = ManagerState::Running;
        Ok(())
    }

    /// Whether the manager holds the kernel's parsed BTF: its own (for BTF-typed hooks), or
    /// aya's loader's, kept from `init` so that per-probe copies and clones do not parse it
    /// again. `start` releases both unless
    /// [`Options::keep_kernel_btf`](crate::Options::keep_kernel_btf).
    pub fn holds_kernel_btf(&self) -> bool {
        self.state.btf.is_held() || matches!(self.state.module_core, Some(Some(_)))
    }

    /// Pauses every probe; programs and maps stay loaded, so [`resume`](Self::resume) is
    /// quick. Probes whose program bypass patched ([`Options::bypass_enabled`](crate::Options::bypass_enabled)) stay attached
    /// and their programs return at once (one map write, their
    /// [`attach_info`](Self::attach_info) stays); the others are detached, so no event of
    /// theirs reaches the programs meanwhile.
    pub fn pause(&mut self) -> Result<()> {
        self.expect("pause", &[ManagerState::Running])?;
        self.state.pause_all()?;
        self.state.phase = ManagerState::Paused;
        Ok(())
    }

    /// Attaches again what [`pause`](Self::pause) detached; it fails, and detaches again, like
    /// `start`.
    pub fn resume(&mut self) -> Result<()> {
        self.expect("resume", &[ManagerState::Paused])?;
        let bypassed = self.state.bypassed();
        let indices: Vec<RecordKey> = self
            .state
            .records
            .keys()
            .filter(|&i| self.state.records[i].state == ProbeState::Paused)
            .filter(|i| !bypassed.contains(i))
            .collect();
        self.state.set_bypass(&bypassed, 0)?;
        for &i in &bypassed {
            self.state.records[i].state = ProbeState::Running;
        }
        if let Err(e) = self.state.attach_enabled(&indices) {
            // Back to paused, bypassed ones included.
            let _ = self.state.set_bypass(&bypassed, 1);
            for &i in &bypassed {
                self.state.records[i].state = ProbeState::Paused;
            }
            for &i in &indices {
                if self.state.records[i].state == ProbeState::Loaded {
                    self.state.records[i].state = ProbeState::Paused;
                }
            }
            return Err(e);
        }
        self.state.phase = ManagerState::Running;
        Ok(())
    }

    /// Detaches every probe in reverse attach order, then unloads the programs and maps.
    pub fn stop(&mut self, cleanup: CleanupType) -> Result<()> {
        self.expect(
            "stop",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        log::debug!("stopping ({cleanup:?})");
        self.state.detach_all(ProbeState::Stopped);
        self.state.unregister_struct_ops(false);
        self.state.struct_ops.clear();
        self.state.module_core = None;
        // After the detach, so the readers drain everything the programs wrote. A stuck reader
        // does not keep the rest from stopping; it is the error, at the end.
        let readers = self.state.readers.release();
        for record in self.state.records.values_mut() {
            record.state = ProbeState::Stopped;
            record.multi = None;
        }
        self.state.objects.clear();
        self.state.main_map_fds.clear();
        pins::remove(&self.state.pins, cleanup);
        self.state.btf.release();
        self.state.functions.release();
        self.state.stats = None;
        self.state.phase = ManagerState::Stopped;
        readers
    }
}
