//! Reading the manager's records: probes, their state and hooks, programs and maps, and
//! running a program with `BPF_PROG_TEST_RUN`.

use std::os::fd::{AsFd as _, BorrowedFd};

use super::table::{ObjectKey, RecordKey};
use aya::programs::Program;

use super::{Manager, ManagerState, State};
use crate::{
    loader,
    probe::{
        resolve::{self, ProgKind},
        AttachInfo, Hook,
    },
    ConstantEditor, Error, Probe, ProbeIdentificationPair, ProbeState, Result,
};

impl Manager {
    /// The probe declared with this id (the manager's copy once initialized).
    pub fn get_probe(&self, id: &ProbeIdentificationPair) -> Option<&Probe> {
        match self.state.record(id) {
            Some(i) => Some(&self.state.records[i].probe),
            None if self.state() == ManagerState::New => self.probes.iter().find(|p| &p.id() == id),
            None => None,
        }
    }

    /// The state of the probe with this id.
    pub fn probe_state(&self, id: &ProbeIdentificationPair) -> Option<ProbeState> {
        match self.state.record(id) {
            Some(i) => Some(self.state.visible_state(i)),
            None if self.state() == ManagerState::New => self
                .probes
                .iter()
                .any(|p| &p.id() == id)
                .then_some(ProbeState::Declared),
            None => None,
        }
    }

    /// Why the probe with this id is [`Failed`](ProbeState::Failed) or
    /// [`Disabled`](ProbeState::Disabled).
    pub fn probe_error(&self, id: &ProbeIdentificationPair) -> Option<&str> {
        self.state.records[self.state.record(id)?].error.as_deref()
    }

    /// Where and how the probe with this id is attached, while it is.
    pub fn attach_info(&self, id: &ProbeIdentificationPair) -> Option<&AttachInfo> {
        self.state.records[self.state.record(id)?].attach.as_ref()
    }

    /// The program `id` names, as the Go `GetProgram` finds it: the probe with this pair;
    /// with an empty uid, the first probe of that function, else the object's program of that
    /// function that no probe declares. It is loaded if a probe, a route or a call that loads
    /// (below) loaded it; [`get_program_mut`](Self::get_program_mut) and
    /// [`load_program`](Self::load_program) load it on request.
    ///
    /// Go loads every program at `Init`; the port loads a program when something needs it, so a
    /// program nobody uses costs no verifier time. The calls that load: `init` (enabled
    /// probes, and with [`Options::load_unselected_probes`](crate::Options::load_unselected_probes)
    /// every declared one), `start` (tail-call routes), and on request [`load_program`](Self::load_program),
    /// [`get_program_mut`](Self::get_program_mut), [`program_fd`](Self::program_fd),
    /// [`test_run`](Self::test_run),
    /// [`update_tail_call_routes`](Self::update_tail_call_routes), [`add_hook`](Self::add_hook).
    pub fn get_program(&self, id: &ProbeIdentificationPair) -> Option<&Program> {
        let found = self.state.find_program(id)?;
        let (object, function) = self.state.located(&found);
        self.state.objects.get(object)?.program(function)
    }

    /// Loads the program `id` names (see [`get_program`](Self::get_program)) unless it is
    /// loaded, and returns it: the Go library's programs are all loaded after `Init`, and this
    /// is the call that gives the same on request. A verifier rejection is the error
    /// ([`Error::Verifier`]), nothing stays loaded then. A kprobe.multi or uprobe.multi
    /// probe's program is the manager's own ([`program_fd`](Self::program_fd) reaches it);
    /// aya's copy returned here stays unloaded.
    ///
    /// ```no_run
    /// # fn run(m: &mut ebpf_manager::Manager) -> ebpf_manager::Result<()> {
    /// use ebpf_manager::ProbeIdentificationPair;
    ///
    /// // A program no probe declares (a tail-call target, a test program), as Go's GetProgram.
    /// let prog = m.load_program(&ProbeIdentificationPair::new("", "my_func_test"))?;
    /// if let Ok(info) = prog.info() {
    ///     println!("loaded as id {}", info.id());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn load_program(&mut self, id: &ProbeIdentificationPair) -> Result<&mut Program> {
        self.expect(
            "load a program of",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        let found = self.state.load_by_name(id)?;
        let (object, function) = self.state.located(&found);
        let function = function.to_owned();
        self.state
            .objects
            .get_mut(object)
            .and_then(|o| o.program_mut(&function))
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })
    }

    /// The kernel's id of the program `id` names (`bpftool prog show id N`; see
    /// [`get_program`](Self::get_program)) once it is loaded, whether aya loaded it or the
    /// manager did (kprobe.multi and uprobe.multi programs). It loads nothing: `None` for a
    /// program not loaded yet ([`load_program`](Self::load_program) loads it).
    pub fn program_id(&self, id: &ProbeIdentificationPair) -> Option<u32> {
        self.loaded_program_id(id)
    }

    /// The id of the program `id` names if it is loaded; loads nothing.
    fn loaded_program_id(&self, id: &ProbeIdentificationPair) -> Option<u32> {
        let found = self.state.find_program(id)?;
        let fd = self.state.found_fd(&found)?;
        crate::kernel::stats::fdinfo(fd)
            .get("prog_id")
            .map(|&v| v as u32)
    }

    /// Runs the probe's loaded program with `BPF_PROG_TEST_RUN` (the Go `Probe.Test`, and
    /// `Probe.Benchmark` with `input.repeat`): XDP and TC programs on a packet (Linux 4.12), with a
    /// context (5.2); raw tracepoints and tracing programs on a context (5.10). The program is
    /// any [`get_program`](Self::get_program) finds, declared or not, loaded on this first
    /// request if needed.
    ///
    /// ```no_run
    /// # fn run(m: &mut ebpf_manager::Manager) -> ebpf_manager::Result<()> {
    /// use ebpf_manager::{ProbeIdentificationPair, TestRunInput};
    ///
    /// let id = ProbeIdentificationPair::new("ingress", "xdp_ingress");
    /// let out = m.test_run(&id, &TestRunInput { data: vec![0; 64], repeat: 1000, ..Default::default() })?;
    /// println!("XDP verdict {} in {:?} a run", out.retval, out.duration);
    /// # Ok(())
    /// # }
    /// ```
    pub fn test_run(
        &mut self,
        id: &ProbeIdentificationPair,
        input: &crate::TestRunInput,
    ) -> Result<crate::TestRunOutput> {
        self.load_program(id)?;
        let found = self
            .state
            .find_program(id)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        let fd = self
            .state
            .found_fd(&found)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        let mut data = vec![0u8; input.data_out_size.unwrap_or(input.data.len() + 256)];
        let mut context = vec![0u8; input.context_out_size.unwrap_or(input.context.len())];
        let ran = crate::kernel::bpf_prog::prog_test_run(
            fd,
            &input.data,
            &mut data,
            &input.context,
            &mut context,
            input.repeat.max(1),
        )
        .map_err(|e| Error::TestRun {
            id: id.clone(),
            source: Box::new(e),
        })?;
        data.truncate(ran.data_len);
        context.truncate(ran.context_len);
        Ok(crate::TestRunOutput {
            retval: ran.retval,
            data,
            context,
            duration: std::time::Duration::from_nanos(u64::from(ran.duration_ns)),
        })
    }

    /// The program `id` names (see [`get_program`](Self::get_program)), mutably, loaded on
    /// this first request if needed; `None` when nothing is named so, or when it fails to
    /// load (logged: [`load_program`](Self::load_program) returns the verifier's error).
    pub fn get_program_mut(&mut self, id: &ProbeIdentificationPair) -> Option<&mut Program> {
        if self.state() == ManagerState::New || self.state() == ManagerState::Stopped {
            return None;
        }
        match self.load_program(id) {
            Ok(prog) => Some(prog),
            Err(Error::ProbeNotFound { .. }) => None,
            Err(e) => {
                log::warn!("get_program_mut({id}): {}", e.report());
                None
            }
        }
    }

    /// The instructions of the probe's program as they load: the object's after the pipeline,
    /// with its constants written and the instruction patchers run (the Go
    /// `GetProgramSpec(...).Instructions`). `None` for an unknown probe.
    pub fn program_instructions(
        &self,
        id: &ProbeIdentificationPair,
    ) -> Result<Option<Vec<crate::Instruction>>> {
        let Some(index) = self.state.record(id) else {
            return Ok(None);
        };
        let record = &self.state.records[index];
        let every: Vec<&ConstantEditor> = self
            .state
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .collect();
        let own: Vec<&ConstantEditor> = self
            .state
            .own_constants
            .get(&record.object)
            .into_iter()
            .flatten()
            .collect();
        self.state.source.object.instructions(
            &record.function,
            crate::pipeline::Constants {
                every: &every,
                own: &own,
            },
        )
    }

    /// A new reader of the output of the iterator probe with this id (`iter/...` programs,
    /// Linux 5.8): each call runs the iterator again from the start.
    pub fn open_iterator(&mut self, id: &ProbeIdentificationPair) -> Result<std::fs::File> {
        let index = self
            .state
            .record(id)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        if self.state.records[index].state != ProbeState::Running {
            return Err(Error::InvalidProbe {
                id: id.clone(),
                reason: "open_iterator needs a running iterator probe: start the manager".into(),
            });
        }
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Attach {
            id: id.clone(),
            hook: "iterator".into(),
            method: crate::AttachMethod::BtfLink,
            source,
        };
        match self.state.program_mut(index) {
            Some(Program::Iter(p)) => {
                let link_id = p.attach().map_err(|e| fail(Box::new(e)))?;
                let link = p.take_link(link_id).map_err(|e| fail(Box::new(e)))?;
                // The iterator's fd keeps its own link alive.
                link.into_file().map_err(|e| fail(Box::new(e)))
            }
            _ => Err(Error::InvalidProbe {
                id: id.clone(),
                reason: "open_iterator applies to iter/ programs only".into(),
            }),
        }
    }

    /// The map named `name` of the object given to `init`. `None` for a perf map or ring
    /// buffer a reader holds while it runs ([`get_perf_map`](Self::get_perf_map),
    /// [`get_ring_buffer`](Self::get_ring_buffer) and [`map_fd`](Self::map_fd) still reach it).
    ///
    /// `init` creates every map of the object, as Go does, each as aya's map of its type; the
    /// types aya 0.14 has no wrapper for are `Map::Unsupported` (reach them by
    /// [`map_fd`](Self::map_fd)): task storage (Linux 5.11), user ring buffers (6.1; write to
    /// them with [`user_ring_buffer`](Self::user_ring_buffer)), arenas (6.9) and struct_ops
    /// maps (5.6). The other types and the kernels that added them: hash and array (3.19),
    /// prog array (4.2), perf event array (4.3), per-CPU hash and array, stack trace (4.6),
    /// cgroup array (4.8), LRU hashes (4.10), LPM trie (4.11), maps of maps (4.12), devmap and
    /// sockmap (4.14), cpumap (4.15), xskmap and sockhash (4.18), cgroup storage and reuseport
    /// array (4.19), per-CPU cgroup storage, queue and stack (4.20), sk storage (5.2), devmap
    /// hash (5.4), ring buffer (5.8), inode storage (5.10), bloom filter (5.16), cgroup
    /// storage by cgroup (6.2). A map of a type the running kernel predates fails `init` with
    /// [`Error::MapTypeUnsupported`] naming the map, its type and that kernel; exclude it
    /// ([`Options::excluded_maps`](crate::Options)) with the programs that use it.
    pub fn get_map(&self, name: &str) -> Option<&aya::maps::Map> {
        self.state.objects.get(ObjectKey::MAIN)?.map(name)
    }

    /// The map named `name` of the object given to `init`, mutably.
    pub fn get_map_mut(&mut self, name: &str) -> Option<&mut aya::maps::Map> {
        self.state.objects.get_mut(ObjectKey::MAIN)?.map_mut(name)
    }

    /// The perf map that reads the map `map_name` (the Go `GetPerfMap`): the manager's copy once
    /// initialized, with the `Options` defaults applied, the declaration before. Its reader
    /// is controlled by map name ([`start_reader`](Self::start_reader),
    /// [`stop_reader`](Self::stop_reader)).
    pub fn get_perf_map(&self, map_name: &str) -> Option<&crate::PerfMap> {
        let all = if self.state() == ManagerState::New {
            &self.perf_maps
        } else {
            &self.state.perf_maps
        };
        all.iter().find(|p| p.map_name == map_name)
    }

    /// The ring buffer that reads the map `map_name` (the Go `GetRingBuffer`); see
    /// [`get_perf_map`](Self::get_perf_map).
    pub fn get_ring_buffer(&self, map_name: &str) -> Option<&crate::RingBuffer> {
        let all = if self.state() == ManagerState::New {
            &self.ring_buffers
        } else {
            &self.state.ring_buffers
        };
        all.iter().find(|r| r.map_name == map_name)
    }

    /// The producer of the user ring buffer `name` (`BPF_MAP_TYPE_USER_RINGBUF`, Linux 6.1):
    /// records written to it reach the program that drains the map with
    /// `bpf_user_ringbuf_drain()`. One producer per map in a process at a time. Its capacity
    /// is the map's size rounded up to a power-of-two number of pages, as libbpf creates it.
    pub fn user_ring_buffer(&self, name: &str) -> Result<crate::UserRingBuffer> {
        use std::os::fd::AsFd;
        let map = self.get_map(name).ok_or_else(|| Error::MapNotFound {
            map: name.to_owned(),
            kind: "user ring buffer",
            available: self
                .get_maps()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let data = crate::kernel::bpf_map::map_data(map);
        let failed = |reason: String| Error::InvalidReader {
            map: name.to_owned(),
            kind: "user ring buffer",
            reason,
        };
        let id = data
            .info()
            .map_err(|e| failed(crate::error::chain(&e)))?
            .id();
        let map_type = crate::kernel::bpf_map::map_fd_info(data.fd().as_fd())
            .map_err(|e| failed(e.to_string()))?
            .map_or(0, |i| i.map_type);
        const USER_RINGBUF: u32 = 31;
        if map_type != USER_RINGBUF {
            return Err(Error::WrongMapType {
                map: name.to_owned(),
                kind: "user ring buffer",
                expected: "BPF_MAP_TYPE_USER_RINGBUF",
                found: crate::kernel::map_types::map_type(map_type)
                    .map_or_else(|| map_type.to_string(), |(n, _)| n.to_owned()),
            });
        }
        crate::UserRingBuffer::new(name, id, data.fd().as_fd())
    }

    /// Every probe: the manager's copies once initialized, the declarations before.
    pub fn get_probes(&self) -> Vec<&Probe> {
        if self.state() == ManagerState::New {
            return self.probes.iter().collect();
        }
        self.state.records.values().map(|r| &r.probe).collect()
    }

    /// Every probe whose program is loaded, with its program's kernel id.
    pub fn get_programs(&self) -> Vec<(ProbeIdentificationPair, u32)> {
        self.state
            .records
            .iter()
            .filter_map(|(_, r)| Some((r.id.clone(), self.loaded_program_id(&r.id)?)))
            .collect()
    }

    /// The program of the object whose function is `function`, declared by a probe or not
    /// (the Go `GetProgram` by section or function).
    pub fn get_program_by_function(&self, function: &str) -> Option<&Program> {
        self.state.objects.get(ObjectKey::MAIN)?.program(function)
    }

    /// Every map of the object given to `init`, those readers hold included, with its kernel
    /// id (`bpftool map show id N`), sorted by name.
    pub fn get_maps(&self) -> Vec<(String, u32)> {
        use std::os::fd::AsRawFd;
        let mut maps: Vec<(String, u32)> = self
            .state
            .main_map_fds
            .iter()
            .filter_map(|(name, fd)| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                    .ok()?;
                let id = info
                    .lines()
                    .find_map(|l| l.strip_prefix("map_id:"))?
                    .trim()
                    .parse()
                    .ok()?;
                Some((name.clone(), id))
            })
            .collect();
        maps.sort();
        maps
    }
}

/// Where the program a pair names is, as the Go library looks it up.
#[derive(Debug, Clone)]
pub(super) enum Found {
    /// A declared probe's program.
    Record(RecordKey),
    /// The object's program of this function, which no probe declares.
    Undeclared(String),
}

impl State {
    /// The program `id` names, as Go's `GetProgram` finds it: the probe with this pair; with
    /// an empty uid, the first probe of that function, else the object's program of that
    /// function that no probe declares (unless excluded, or of a type aya cannot load).
    pub(super) fn find_program(&self, id: &ProbeIdentificationPair) -> Option<Found> {
        if let Some(key) = self.record(id) {
            return Some(Found::Record(key));
        }
        if !id.uid.is_empty() {
            return None;
        }
        let function = &id.ebpf_func_name;
        if let Some((key, _)) = self.records.iter().find(|(_, r)| &r.function == function) {
            return Some(Found::Record(key));
        }
        let usable = self.elf.by_function(function).is_some()
            && !self.is_excluded(function)
            && self.source.object.hidden(function).is_none();
        usable.then(|| Found::Undeclared(function.clone()))
    }

    /// Loads the program `id` names unless it is loaded (Go loads every program at `Init`;
    /// here the first request does), and says where it is. Loading runs the verifier: its
    /// rejection is this call's error.
    pub(super) fn load_by_name(&mut self, id: &ProbeIdentificationPair) -> Result<Found> {
        let found = self.find_program(id).ok_or_else(|| self.not_found(id))?;
        match &found {
            Found::Record(key) => self.load_only(*key)?,
            Found::Undeclared(function) => {
                let section = self
                    .elf
                    .by_function(function)
                    .map(|p| p.section.clone())
                    .unwrap_or_default();
                let State {
                    objects,
                    btf,
                    functions,
                    ..
                } = self;
                let prog = objects
                    .get_mut(ObjectKey::MAIN)
                    .and_then(|o| o.program_mut(function))
                    .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
                if !loader::is_loaded(prog) {
                    // Only a BTF-typed program needs its target to load: the section's.
                    let kind = ProgKind::of(prog);
                    let target = match kind {
                        ProgKind::Tracing(_) => {
                            let probe = Probe {
                                uid: id.uid.clone(),
                                ebpf_func_name: function.clone(),
                                ..Default::default()
                            };
                            match resolve::hook(id, &probe, function, &section, kind, functions)? {
                                Hook::Btf { target, .. } => Some(target),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    if let Err(e) = loader::load_program(prog, id, function, target.as_deref(), btf)
                    {
                        self.load_failed(ObjectKey::MAIN, function, id, e)?;
                    }
                }
            }
        }
        Ok(found)
    }

    /// The error for a pair that names no program.
    fn not_found(&self, id: &ProbeIdentificationPair) -> Error {
        if self.excluded_probes.contains(id) || self.is_excluded(&id.ebpf_func_name) {
            return Error::InvalidProbe {
                id: id.clone(),
                reason: format!("`{}` is in Options::excluded_functions", id.ebpf_func_name),
            };
        }
        Error::ProbeNotFound { id: id.clone() }
    }

    /// The object and function of a found program.
    pub(super) fn located<'a>(&'a self, found: &'a Found) -> (ObjectKey, &'a str) {
        match found {
            Found::Record(key) => {
                let r = &self.records[*key];
                (r.object, r.function.as_str())
            }
            Found::Undeclared(function) => (ObjectKey::MAIN, function.as_str()),
        }
    }

    /// A program's fd: the manager's own for a multi link, else aya's (loaded).
    pub(super) fn found_fd(&self, found: &Found) -> Option<BorrowedFd<'_>> {
        if let Found::Record(key) = found {
            if let Some(fd) = &self.records[*key].multi {
                return Some(fd.as_fd());
            }
        }
        let (object, function) = self.located(found);
        let prog = self.objects.get(object)?.program(function)?;
        // aya's ProgramFd borrows from the program; its raw fd lives as long as `self`.
        prog.fd().ok().map(|fd| fd.as_fd())
    }
}
