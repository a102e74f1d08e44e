//! [`Manager`]: the state machine and the init/start/pause/resume/stop pipeline. The records
//! behind it (load, attach, validate, detach one probe) are in `records.rs`; changes at runtime
//! (selectors, hooks, clones) in `runtime.rs`.

mod access;
mod bypass;
mod dump;
pub use dump::MapEntry;
mod multi;
mod pins;
mod readers;
mod records;
mod router;
mod runtime;

use std::{collections::HashSet, fmt};

use aya::Ebpf;

use crate::{
    elf::ElfIndex,
    kernel::{symbols::LazyFunctions, tracefs},
    loader, pipeline,
    probe::{AttachInfo, Hook, Link, ProbeState},
    ConstantEditor, Error, KprobeAttachMethod, MapEditor, Options, Probe, ProbeIdentificationPair,
    ProbesSelector, Result,
};

/// Where a manager is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
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
    /// Index in `State::objects`: 0 is the object given to `init`, others are clones.
    object: usize,
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
    /// The constant editors of each object copy (index in `objects`) beyond the global ones.
    own_constants: std::collections::HashMap<usize, Vec<ConstantEditor>>,
    elf: ElfIndex,
    /// Loaded objects: 0 is the one given to `init`; clones add theirs; `None` once unused.
    objects: Vec<Option<Ebpf>>,
    records: Vec<Record>,
    /// Indices into `records` of the attached probes, in attach order.
    attached: Vec<usize>,
    functions: LazyFunctions,
    btf: loader::KernelBtf,
    keep_kernel_btf: bool,
    release_object_after_start: bool,
    default_kprobe_attach_method: KprobeAttachMethod,
    default_kprobe_max_active: u32,
    selectors: Vec<ProbesSelector>,
    readers: crate::maps::Readers,
    perf_maps: Vec<crate::PerfMap>,
    ring_buffers: Vec<crate::RingBuffer>,
    excluded: Vec<String>,
    constant_editors: Vec<ConstantEditor>,
    map_editors: Vec<MapEditor>,
    map_spec_editors: Vec<crate::MapSpecEditor>,
    tail_call_router: Vec<crate::TailCallRoute>,
    map_router: Vec<crate::MapRoute>,
    pins: Vec<pins::Pin>,
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

    /// Loads the object with default [`Options`]. See [`init_with_options`](Self::init_with_options).
    pub fn init(&mut self, object: &[u8]) -> Result<()> {
        self.init_with_options(object, Options::default())
    }

    /// Parses the object, matches every probe to a program, resolves its hook point, creates
    /// the maps and loads the enabled programs into the kernel (the verifier runs here).
    ///
    /// `object` may have any alignment. On error, nothing stays loaded. With
    /// [`Options::activated_probes`], a program that fails to load only fails its probe, and
    /// `start` decides through the selectors; without, it fails `init`.
    pub fn init_with_options(&mut self, object: &[u8], options: Options) -> Result<()> {
        self.expect("init", &[ManagerState::New])?;
        let object = loader::aligned_copy(object).unwrap_or_else(|| object.to_vec());
        let elf = ElfIndex::parse(&object).map_err(|reason| Error::InvalidObject { reason })?;
        let matched = match_programs(&self.probes, &elf)?;
        check_selectors(
            &options.activated_probes,
            matched.iter().map(|(p, ..)| p.id()),
        )?;
        let prepared = pipeline::prepare(
            &object,
            &elf,
            pipeline::Settings {
                spec_editors: &options.map_spec_editors,
                excluded_maps: &options.excluded_maps,
                inner_outer: &options.inner_outer_map_specs,
                patchers: options.instruction_patchers.clone(),
                strict_constants: options.strict_constants,
                bypass_enabled: options.bypass_enabled,
            },
        )?;
        let matched = without_hidden(matched, &prepared, &options)?;
        let mut btf = loader::KernelBtf::given(options.kernel_btf.as_ref())?;
        let source = loader::Source {
            object: prepared,
            verifier_log_level: options.verifier_log_level,
        };

        if !options.keep_memlock_rlimit {
            crate::kernel::lift_memlock_rlimit();
        }
        log_unmatched_constant_editors(&options.constant_editors, &matched);
        // Per-probe editors apply to those probes' own copies, below.
        let constants: Vec<&ConstantEditor> = options
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .collect();
        // Declared pins: reused when present (external), created by aya otherwise (internal).
        let pins: Vec<pins::Pin> = self
            .maps
            .iter()
            .filter_map(|m| m.pin_path.clone())
            .map(|path| pins::Pin {
                created: !path.exists(),
                path,
            })
            .collect();
        let pinned: Vec<MapEditor> = self
            .maps
            .iter()
            .filter_map(|m| {
                m.pin_path.clone().map(|pin_path| MapEditor {
                    name: m.name.clone(),
                    pin_path,
                })
            })
            .collect();
        let ebpf = loader::load_object_pinning(
            &source,
            &mut btf,
            &constants,
            &options.map_editors,
            &options.map_spec_editors,
            &pinned,
        )
        .inspect_err(|_| {
            // A failed init removes the pins it created, and only those.
            pins::remove(&pins, CleanupType::CleanInternal)
        })?;

        let mut state = State {
            phase: ManagerState::New,
            main_map_fds: dump::map_fds(&ebpf),
            source,
            own_constants: Default::default(),
            elf,
            objects: vec![Some(ebpf)],
            records: Vec::with_capacity(matched.len()),
            attached: Vec::new(),
            functions: LazyFunctions::default(),
            btf,
            keep_kernel_btf: options.keep_kernel_btf,
            release_object_after_start: options.release_object_after_start,
            default_kprobe_attach_method: options.default_kprobe_attach_method,
            default_kprobe_max_active: options.default_kprobe_max_active,
            selectors: options.activated_probes,
            readers: Default::default(),
            perf_maps: self
                .perf_maps
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    if p.perf_ring_pages == 0 {
                        p.perf_ring_pages = options.default_perf_ring_pages;
                    }
                    if p.watermark == 0 && p.wakeup_events == 0 {
                        p.watermark = options.default_watermark;
                    }
                    p
                })
                .collect(),
            ring_buffers: self.ring_buffers.clone(),
            excluded: options.excluded_functions,
            constant_editors: options.constant_editors,
            map_editors: options.map_editors,
            map_spec_editors: options.map_spec_editors,
            tail_call_router: options.tail_call_router,
            map_router: options.map_router,
            pins,
        };
        if let Err(e) = state.populate(matched, options.load_unselected_probes) {
            // Dropping `state` unloads what it loaded; the pins it created go too.
            pins::remove(&state.pins, CleanupType::CleanInternal);
            return Err(e);
        }
        state.phase = ManagerState::Initialized;
        self.state = state;
        Ok(())
    }

    /// Attaches every enabled probe, in declaration order.
    ///
    /// Without selectors, the first probe that fails detaches the ones attached before it, in
    /// reverse order, and its error (naming the probe, the hook point and the cause) is returned.
    /// With selectors, every enabled probe is tried, then the selectors validate what runs; if
    /// one fails, everything is detached and [`Error::SelectorValidation`] lists each failing
    /// probe with its own cause. Tracefs events left by dead processes of this library are
    /// removed first.
    pub fn start(&mut self) -> Result<()> {
        self.expect("start", &[ManagerState::Initialized])?;
        remove_leftover_tracefs_events();
        {
            let routes = (
                std::mem::take(&mut self.state.tail_call_router),
                std::mem::take(&mut self.state.map_router),
            );
            let applied = self.state.apply_routes(&routes.0, &routes.1);
            (self.state.tail_call_router, self.state.map_router) = routes;
            applied?;
        }
        {
            let State {
                objects,
                readers,
                perf_maps,
                ring_buffers,
                ..
            } = &mut self.state;
            let main = objects[0]
                .as_mut()
                .expect("the main object lives until stop");
            readers.start(main, perf_maps, ring_buffers)?;
        }
        let indices: Vec<usize> = (0..self.state.records.len())
            .filter(|&i| self.state.records[i].state != ProbeState::Disabled)
            .collect();
        let result = self.state.attach_enabled(&indices);
        if !self.state.keep_kernel_btf {
            self.state.btf.release();
        }
        // Patterns are resolved: the function list (megabytes) goes unless another manager
        // holds it; a hook added later reads it again.
        self.state.functions.release();
        if result.is_ok() && self.state.release_object_after_start {
            self.state.source.object.release_bytes();
        }
        if result.is_err() {
            self.state.readers.stop();
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
        self.state.btf.is_held()
    }

    /// Pauses every probe; programs and maps stay loaded, so [`resume`](Self::resume) is
    /// quick. Probes whose program bypass patched ([`Options::bypass_enabled`]) stay attached
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
        let indices: Vec<usize> = (0..self.state.records.len())
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
        // After the detach, so the readers drain everything the programs wrote.
        self.state.readers.release();
        for record in &mut self.state.records {
            record.state = ProbeState::Stopped;
            record.multi = None;
        }
        self.state.objects.clear();
        self.state.main_map_fds.clear();
        pins::remove(&self.state.pins, cleanup);
        self.state.btf.release();
        self.state.functions.release();
        self.state.phase = ManagerState::Stopped;
        Ok(())
    }
}

/// Each declared probe with the function and section of its program.
fn match_programs(probes: &[Probe], elf: &ElfIndex) -> Result<Vec<(Probe, String, String)>> {
    let mut seen = HashSet::new();
    let mut matched = Vec::with_capacity(probes.len());
    for probe in probes {
        let id = probe.id();
        if !seen.insert(id.clone()) {
            return Err(Error::DuplicateProbe { id });
        }
        let (function, section) = match_program(probe, elf)?;
        matched.push((probe.clone(), function, section));
    }
    Ok(matched)
}

/// The function and section of a probe's program.
fn match_program(probe: &Probe, elf: &ElfIndex) -> Result<(String, String)> {
    let id = probe.id();
    let program = match (&probe.section, probe.ebpf_func_name.as_str()) {
        (None, "") => return Err(Error::NoProgramName { id }),
        (section, name) if !name.is_empty() => {
            let found = elf
                .by_function(name)
                .ok_or_else(|| Error::ProgramNotFound {
                    id: id.clone(),
                    name: name.to_owned(),
                    available: elf.functions(),
                })?;
            if let Some(section) = section.as_deref().filter(|s| *s != found.section) {
                return Err(Error::InvalidProbe {
                    id,
                    reason: format!(
                        "`{name}` is in section `{}`, not `{section}`",
                        found.section
                    ),
                });
            }
            found
        }
        (Some(section), _) => {
            let mut in_section = elf.in_section(section);
            let first = in_section.next().ok_or_else(|| Error::SectionNotFound {
                id: id.clone(),
                section: section.clone(),
                available: elf.sections(),
            })?;
            if in_section.next().is_some() {
                return Err(Error::AmbiguousSection {
                    id,
                    section: section.clone(),
                    functions: elf
                        .in_section(section)
                        .map(|p| p.function.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            first
        }
        (None, _) => unreachable!("an empty name without a section is handled above"),
    };
    Ok((program.function.clone(), program.section.clone()))
}

/// The matched probes without those whose program aya cannot load (see `pipeline`): an
/// enabled one is an error; a disabled or excluded one is left out with a log line.
fn without_hidden(
    matched: Vec<(Probe, String, String)>,
    prepared: &pipeline::Prepared,
    options: &Options,
) -> Result<Vec<(Probe, String, String)>> {
    let mut kept = Vec::with_capacity(matched.len());
    for (probe, function, section) in matched {
        let Some((_, reason)) = prepared.hidden(&function) else {
            kept.push((probe, function, section));
            continue;
        };
        let id = probe.id();
        let enabled = options.activated_probes.is_empty()
            || options
                .activated_probes
                .iter()
                .any(|s| s.probes().contains(&&id));
        if enabled && !options.excluded_functions.contains(&function) {
            return Err(Error::UnsupportedSection {
                id,
                function,
                section,
                reason,
            });
        }
        log::info!("probe {id} left out: `{function}` in `{section}` cannot be loaded ({reason})");
    }
    Ok(kept)
}

/// Constant editors may name probes that a later `clone_program` declares (as in Go): those
/// wait for it; a debug line says so, for typos.
fn log_unmatched_constant_editors(editors: &[ConstantEditor], matched: &[(Probe, String, String)]) {
    for editor in editors {
        for id in &editor.probes {
            if !matched.iter().any(|(p, ..)| &p.id() == id) {
                log::debug!(
                    "constant editor `{}` names {id}, which is not declared: it applies when clone_program declares it",
                    editor.name
                );
            }
        }
    }
}

/// Selectors may only name declared probes: a typo would otherwise pass silently in a
/// `BestEffort`.
fn check_selectors(
    selectors: &[ProbesSelector],
    declared: impl Iterator<Item = ProbeIdentificationPair>,
) -> Result<()> {
    let declared: HashSet<ProbeIdentificationPair> = declared.collect();
    for selector in selectors {
        if let Some(unknown) = selector
            .probes()
            .into_iter()
            .find(|id| !declared.contains(id))
        {
            return Err(Error::InvalidOption {
                option: "activated_probes".into(),
                reason: format!("{selector} names {unknown}, which is not declared"),
            });
        }
    }
    Ok(())
}

fn remove_leftover_tracefs_events() {
    let Ok(root) = tracefs::root() else { return };
    if let Err(e) = tracefs::remove_leftover_events(root, "kprobe_events") {
        log::warn!("cannot remove tracefs events left by dead processes: {e}");
    }
}
