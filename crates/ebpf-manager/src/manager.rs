//! [`Manager`]: the state machine and the init/start/pause/resume/stop pipeline.

use std::fmt;

use aya::{programs::Program, Ebpf, EbpfError, EbpfLoader};

use crate::{
    elf::ElfIndex,
    kernel::{self, symbols::LazyFunctions, tracefs},
    probe::{kprobe, resolve, tracepoint, AttachInfo, Hook, Link, ProbeState},
    Error, KprobeAttachMethod, Options, Probe, ProbeIdentificationPair, Result,
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

/// What `stop` cleans up.
///
/// Every variant detaches every probe and unloads every program and map the manager created.
/// The variants will differ once pinned objects and maps handed in from outside exist: the
/// internal ones are the manager's own, the external ones are those it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CleanupType {
    /// Clean up what the manager created.
    CleanInternal,
    /// Clean up what the manager was given.
    CleanExternal,
    /// Clean up both.
    #[default]
    CleanAll,
}

/// What the manager knows of one declared probe.
#[derive(Debug)]
struct Record {
    probe: Probe,
    id: ProbeIdentificationPair,
    /// The program's function in the object (from `ebpf_func_name`, or found by `section`).
    function: String,
    hook: Hook,
    state: ProbeState,
    attach: Option<AttachInfo>,
    link: Option<Link>,
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
    ebpf: Option<Ebpf>,
    records: Vec<Record>,
    /// Indices into `records` of the attached probes, in attach order.
    attached: Vec<usize>,
    functions: LazyFunctions,
    default_kprobe_attach_method: KprobeAttachMethod,
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
    /// the maps and loads the programs into the kernel (the verifier runs here).
    ///
    /// `object` may have any alignment. On error, nothing stays loaded.
    pub fn init_with_options(&mut self, object: &[u8], options: Options) -> Result<()> {
        self.expect("init", &[ManagerState::New])?;
        let aligned = aligned_copy(object);
        let object = aligned.as_deref().unwrap_or(object);

        let elf = ElfIndex::parse(object).map_err(|reason| Error::InvalidObject { reason })?;
        let mut functions = LazyFunctions::default();
        let matched = self.match_programs(&elf)?;

        if !options.keep_memlock_rlimit {
            kernel::lift_memlock_rlimit();
        }
        let mut loader = EbpfLoader::new();
        for editor in &options.constant_editors {
            loader.override_global(
                editor.name.as_str(),
                editor.value.as_slice(),
                !editor.allow_missing,
            );
        }
        let mut ebpf = loader.load(object).map_err(object_error)?;

        let mut records = Vec::with_capacity(matched.len());
        let mut loaded = std::collections::HashSet::new();
        for (probe, function, section) in matched {
            let id = probe.id();
            let prog = ebpf
                .program_mut(&function)
                .ok_or_else(|| Error::ProgramNotFound {
                    id: id.clone(),
                    name: function.clone(),
                    available: elf.functions(),
                })?;
            let hook = resolve::hook(&id, &probe, &function, &section, prog, &mut functions)?;
            // Probes that share a function (different uids) share the loaded program.
            if loaded.insert(function.clone()) {
                load(prog, &id, &function)?;
            }
            records.push(Record {
                probe,
                id,
                function,
                hook,
                state: ProbeState::Loaded,
                attach: None,
                link: None,
            });
        }
        self.state = State {
            phase: ManagerState::Initialized,
            ebpf: Some(ebpf),
            records,
            attached: Vec::new(),
            functions,
            default_kprobe_attach_method: options.default_kprobe_attach_method,
        };
        Ok(())
    }

    /// Each declared probe with the function and section of its program.
    fn match_programs(&self, elf: &ElfIndex) -> Result<Vec<(Probe, String, String)>> {
        let mut seen = std::collections::HashSet::new();
        let mut matched = Vec::with_capacity(self.probes.len());
        for probe in &self.probes {
            let id = probe.id();
            if !seen.insert(id.clone()) {
                return Err(Error::DuplicateProbe { id });
            }
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
                (None, _) => unreachable!("empty name without section is handled above"),
            };
            matched.push((
                probe.clone(),
                program.function.clone(),
                program.section.clone(),
            ));
        }
        Ok(matched)
    }

    /// Attaches every probe, in declaration order. If one fails, the probes attached so far
    /// are detached, in reverse order, and the error names the probe, its hook point and the
    /// cause. Tracefs events left by dead processes of this library are removed first.
    pub fn start(&mut self) -> Result<()> {
        self.expect("start", &[ManagerState::Initialized])?;
        remove_leftover_tracefs_events();
        self.attach_all()?;
        self.state.phase = ManagerState::Running;
        Ok(())
    }

    /// Detaches every probe; programs and maps stay loaded, so [`resume`](Self::resume) is
    /// quick and no event of the paused probes reaches the programs meanwhile.
    pub fn pause(&mut self) -> Result<()> {
        self.expect("pause", &[ManagerState::Running])?;
        self.state.detach_all(ProbeState::Paused);
        self.state.phase = ManagerState::Paused;
        Ok(())
    }

    /// Attaches again what [`pause`](Self::pause) detached; atomic like `start`.
    pub fn resume(&mut self) -> Result<()> {
        self.expect("resume", &[ManagerState::Paused])?;
        self.attach_all()?;
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
        for record in &mut self.state.records {
            record.state = ProbeState::Stopped;
        }
        self.state.ebpf = None;
        self.state.phase = ManagerState::Stopped;
        Ok(())
    }

    fn attach_all(&mut self) -> Result<()> {
        for index in 0..self.state.records.len() {
            if let Err(e) = self.attach_one(index) {
                self.state.detach_all(ProbeState::Loaded);
                return Err(e);
            }
        }
        Ok(())
    }

    fn attach_one(&mut self, index: usize) -> Result<()> {
        let State {
            ebpf,
            records,
            attached,
            functions,
            default_kprobe_attach_method,
            ..
        } = &mut self.state;
        let record = &mut records[index];
        let ebpf = ebpf
            .as_mut()
            .expect("programs are loaded while the manager is initialized");
        let prog = ebpf
            .program_mut(&record.function)
            .expect("init checked that the program exists");
        let id = &record.id;
        let (link, info) = match (&record.hook, prog) {
            (Hook::Kprobe { symbol, .. }, Program::KProbe(p)) => kprobe::attach(
                p,
                id,
                &record.probe,
                symbol,
                *default_kprobe_attach_method,
                functions,
            )?,
            (Hook::Tracepoint { category, name }, Program::TracePoint(p)) => {
                tracepoint::attach(p, id, category, name)?
            }
            (Hook::RawTracepoint { name }, Program::RawTracePoint(p)) => {
                tracepoint::attach_raw(p, id, name)?
            }
            (hook, prog) => unreachable!(
                "init resolved {hook:?} for a {} program",
                resolve::type_name(prog)
            ),
        };
        log::debug!(
            "probe {id} attached to {} through {}",
            info.hook,
            info.method
        );
        record.link = Some(link);
        record.attach = Some(info);
        record.state = ProbeState::Running;
        attached.push(index);
        Ok(())
    }

    /// The probe declared with this id (the manager's copy once initialized).
    pub fn get_probe(&self, id: &ProbeIdentificationPair) -> Option<&Probe> {
        match self.record(id) {
            Some(record) => Some(&record.probe),
            None if self.state() == ManagerState::New => self.probes.iter().find(|p| &p.id() == id),
            None => None,
        }
    }

    /// The state of the probe with this id.
    pub fn probe_state(&self, id: &ProbeIdentificationPair) -> Option<ProbeState> {
        match self.record(id) {
            Some(record) => Some(record.state),
            None if self.state() == ManagerState::New => self
                .probes
                .iter()
                .any(|p| &p.id() == id)
                .then_some(ProbeState::Declared),
            None => None,
        }
    }

    /// Where and how the probe with this id is attached, while it is.
    pub fn attach_info(&self, id: &ProbeIdentificationPair) -> Option<&AttachInfo> {
        self.record(id)?.attach.as_ref()
    }

    /// The loaded program of the probe with this id.
    pub fn get_program(&self, id: &ProbeIdentificationPair) -> Option<&Program> {
        let function = &self.record(id)?.function;
        self.state.ebpf.as_ref()?.program(function)
    }

    /// The loaded program of the probe with this id, mutably.
    pub fn get_program_mut(&mut self, id: &ProbeIdentificationPair) -> Option<&mut Program> {
        let function = self.record(id)?.function.clone();
        self.state.ebpf.as_mut()?.program_mut(&function)
    }

    /// The map named `name`, once initialized.
    pub fn get_map(&self, name: &str) -> Option<&aya::maps::Map> {
        self.state.ebpf.as_ref()?.map(name)
    }

    /// The map named `name`, mutably, once initialized.
    pub fn get_map_mut(&mut self, name: &str) -> Option<&mut aya::maps::Map> {
        self.state.ebpf.as_mut()?.map_mut(name)
    }

    fn record(&self, id: &ProbeIdentificationPair) -> Option<&Record> {
        self.state.records.iter().find(|r| &r.id == id)
    }
}

impl State {
    /// Detaches the attached probes in reverse attach order, leaving them in `state`.
    fn detach_all(&mut self, state: ProbeState) {
        while let Some(index) = self.attached.pop() {
            let record = &mut self.records[index];
            // Dropping the link detaches it (and removes a tracefs event).
            drop(record.link.take());
            record.attach = None;
            record.state = state;
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Links first, in reverse attach order; the programs and maps go with `ebpf` after.
        self.detach_all(ProbeState::Stopped);
    }
}

/// A copy of `object` aligned for ELF parsing, when it is not already.
fn aligned_copy(object: &[u8]) -> Option<Vec<u8>> {
    // object's ELF reader needs 8-byte alignment; a Vec<u8> from the allocator has at least 8.
    (object.as_ptr() as usize % 8 != 0).then(|| object.to_vec())
}

fn load(prog: &mut Program, id: &ProbeIdentificationPair, function: &str) -> Result<()> {
    use aya::programs::ProgramError;
    let result = match prog {
        Program::KProbe(p) => p.load(),
        Program::TracePoint(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        other => {
            return Err(Error::UnsupportedProgramType {
                id: id.clone(),
                function: function.to_owned(),
                program_type: resolve::type_name(other),
            })
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            if is_permission_error(&io_error) {
                return Err(Error::PermissionDenied {
                    operation: format!("loading `{function}` of probe {id}"),
                    source: Box::new(io_error),
                });
            }
            Err(Error::Verifier {
                id: id.clone(),
                function: function.to_owned(),
                source: io_error,
                log: verifier_log.to_string(),
            })
        }
        Err(e) => Err(Error::Load {
            id: id.clone(),
            function: function.to_owned(),
            source: Box::new(e),
        }),
    }
}

/// EPERM means missing capabilities only when the process has neither CAP_BPF nor
/// CAP_SYS_ADMIN; with them, it is the kernel refusing the program itself (as fentry under
/// lockdown).
fn is_permission_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EPERM) && !kernel::has_bpf_capabilities()
}

fn object_error(e: EbpfError) -> Error {
    // Without BPF capabilities aya fails in many places (feature probes, relocations, map
    // creation), each with its own message; the cause to report is the missing privilege.
    if let EbpfError::ParseError(_) = &e {
        return Error::InvalidObject {
            reason: e.to_string(),
        };
    }
    if !kernel::has_bpf_capabilities() {
        return Error::PermissionDenied {
            operation: "loading the object".into(),
            source: Box::new(e),
        };
    }
    Error::Object {
        source: Box::new(e),
    }
}

fn remove_leftover_tracefs_events() {
    let Ok(root) = tracefs::root() else { return };
    if let Err(e) = tracefs::remove_leftover_events(root, "kprobe_events") {
        log::warn!("cannot remove tracefs events left by dead processes: {e}");
    }
}
