//! Reading the manager's records: probes, their state and hooks, programs and maps, and
//! running a program with `BPF_PROG_TEST_RUN`.

use super::table::ObjectKey;
use aya::programs::Program;

use super::{Manager, ManagerState};
use crate::{
    probe::AttachInfo, ConstantEditor, Error, Probe, ProbeIdentificationPair, ProbeState, Result,
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
            Some(i) => Some(self.state.records[i].state),
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

    /// The program of the probe with this id (loaded once the probe is enabled).
    pub fn get_program(&self, id: &ProbeIdentificationPair) -> Option<&Program> {
        let record = &self.state.records[self.state.record(id)?];
        self.state
            .objects
            .get(record.object)?
            .program(&record.function)
    }

    /// The kernel's id of the probe's loaded program (`bpftool prog show id N`), whether aya
    /// loaded it or the manager did (kprobe.multi and uprobe.multi programs, which
    /// [`get_program`](Self::get_program) shows unloaded).
    pub fn program_id(&self, id: &ProbeIdentificationPair) -> Option<u32> {
        let record = &self.state.records[self.state.record(id)?];
        if let Some(fd) = &record.multi {
            use std::os::fd::AsRawFd;
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
            return info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok());
        }
        self.get_program(id)?.info().ok().map(|info| info.id())
    }

    /// Runs the probe's loaded program with `BPF_PROG_TEST_RUN` (the Go `Probe.Test`, and
    /// `Probe.Benchmark` with `input.repeat`): XDP and TC programs on a packet (Linux 4.12), with a
    /// context (5.2); raw tracepoints and tracing programs on a context (5.10).
    ///
    /// ```no_run
    /// # fn run(m: &ebpf_manager::Manager) -> ebpf_manager::Result<()> {
    /// use ebpf_manager::{ProbeIdentificationPair, TestRunInput};
    ///
    /// let id = ProbeIdentificationPair::new("ingress", "xdp_ingress");
    /// let out = m.test_run(&id, &TestRunInput { data: vec![0; 64], repeat: 1000, ..Default::default() })?;
    /// println!("XDP verdict {} in {:?} a run", out.retval, out.duration);
    /// # Ok(())
    /// # }
    /// ```
    pub fn test_run(
        &self,
        id: &ProbeIdentificationPair,
        input: &crate::TestRunInput,
    ) -> Result<crate::TestRunOutput> {
        use std::os::fd::AsFd;
        let index = self
            .state
            .record(id)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        let record = &self.state.records[index];
        let not_loaded = || Error::InvalidProbe {
            id: id.clone(),
            reason: "test_run needs its program loaded: init the manager with the probe enabled"
                .into(),
        };
        let aya_fd;
        let fd = match &record.multi {
            Some(fd) => fd.as_fd(),
            None => {
                aya_fd = self
                    .get_program(id)
                    .ok_or_else(not_loaded)?
                    .fd()
                    .map_err(|_| not_loaded())?;
                aya_fd.as_fd()
            }
        };
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

    /// The program of the probe with this id, mutably.
    pub fn get_program_mut(&mut self, id: &ProbeIdentificationPair) -> Option<&mut Program> {
        let index = self.state.record(id)?;
        self.state.program_mut(index)
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
        let constants: Vec<&ConstantEditor> = self
            .state
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .chain(
                self.state
                    .own_constants
                    .get(&record.object)
                    .into_iter()
                    .flatten(),
            )
            .collect();
        self.state
            .source
            .object
            .instructions(&record.function, &constants)
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
            .filter_map(|(_, r)| Some((r.id.clone(), self.program_id(&r.id)?)))
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
