//! The manager's records: loading, attaching, validating and detaching probes one by one, in
//! an order that `stop`, a failed call and `Drop` can undo.

use super::table::{ObjectKey, RecordKey};
use aya::programs::Program;

use super::{pins::Pin, Record, State};
use crate::{
    kernel, loader,
    probe::{kprobe, resolve, Hook, ProbeState},
    Error, Probe, ProbeIdentificationPair, ProbesSelector, Result,
};

impl State {
    /// Records every matched probe (loading the object copies that per-probe constants need),
    /// then loads the programs of the enabled ones.
    pub(super) fn populate(
        &mut self,
        matched: Vec<(Probe, String, String)>,
        load_unselected: bool,
    ) -> Result<()> {
        // Probes with constants of their own load from a copy of the object; probes with the
        // same set of editors share one, unless they ask for their own program.
        let mut copies: Vec<(Vec<usize>, ObjectKey)> = Vec::new();
        for (probe, function, section) in matched {
            let id = probe.id();
            let own: Vec<usize> = (0..self.constant_editors.len())
                .filter(|&i| {
                    self.constant_editors[i].probes.contains(&id)
                        && !self.constants_in_place.contains(&i)
                })
                .collect();
            // copy_program (the Go `CopyProgram`): a copy of its own, shared with no probe.
            let object = if probe.copy_program {
                self.load_copy(&own)?
            } else if own.is_empty() {
                ObjectKey::MAIN
            } else if let Some((_, object)) = copies.iter().find(|(set, _)| *set == own) {
                *object
            } else {
                let object = self.load_copy(&own)?;
                copies.push((own, object));
                object
            };
            self.add_record(probe, function, &section, object, false)?;
        }
        let keys: Vec<RecordKey> = self.records.keys().collect();
        for index in keys {
            let record = &self.records[index];
            let wanted = self.enabled(&record.id) || load_unselected;
            if self.is_excluded(&record.function) || !wanted {
                continue;
            }
            if let Err(e) = self.load_only(index) {
                if self.selectors.is_empty() {
                    return Err(e);
                }
                self.fail(index, &e);
            }
        }
        Ok(())
    }

    /// Loads a copy of the object with the global constant editors, then the editors at
    /// `own` (indices into `constant_editors`), sharing the main object's other maps.
    /// Returns its key in `objects`.
    pub(super) fn load_copy(&mut self, own: &[usize]) -> Result<ObjectKey> {
        let mut maps = self.map_editors.clone();
        let shared = loader::SharedMaps::pin(&self.main_map_fds, &maps)?;
        maps.extend(shared.editors.iter().cloned());
        let every: Vec<&crate::ConstantEditor> = self
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .collect();
        let own_editors: Vec<&crate::ConstantEditor> =
            own.iter().map(|&i| &self.constant_editors[i]).collect();
        let ebpf = loader::load_object(
            &self.source,
            &mut self.btf,
            crate::pipeline::Constants {
                every: &every,
                own: &own_editors,
            },
            &maps,
            &self.map_spec_editors,
        )?;
        drop(shared);
        let object = self.objects.push(ebpf);
        let own = own
            .iter()
            .map(|&i| self.constant_editors[i].clone())
            .collect();
        self.own_constants.insert(object, own);
        Ok(object)
    }

    pub(super) fn record(&self, id: &ProbeIdentificationPair) -> Option<RecordKey> {
        self.records
            .iter()
            .find(|(_, r)| &r.id == id)
            .map(|(key, _)| key)
    }

    /// The state callers see: a probe that no selector enables but whose program is loaded
    /// anyway (`load_unselected_probes`, a tail-call route, a request by name) is
    /// [`Loaded`](ProbeState::Loaded), not [`Disabled`](ProbeState::Disabled); `start` still
    /// leaves it unattached.
    pub(super) fn visible_state(&self, key: RecordKey) -> ProbeState {
        match self.records[key].state {
            ProbeState::Disabled if self.is_program_loaded(key) => ProbeState::Loaded,
            state => state,
        }
    }

    /// Whether the record's program is loaded (by aya, or by the manager for a multi link).
    pub(super) fn is_program_loaded(&self, key: RecordKey) -> bool {
        let record = &self.records[key];
        record.multi.is_some()
            || self
                .objects
                .get(record.object)
                .and_then(|o| o.program(&record.function))
                .is_some_and(loader::is_loaded)
    }

    pub(super) fn is_excluded(&self, function: &str) -> bool {
        self.excluded.iter().any(|f| f == function)
    }

    /// Whether the selectors enable this probe (all probes are, without selectors).
    pub(super) fn enabled(&self, id: &ProbeIdentificationPair) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.probes().contains(&id))
    }

    /// Adds a record for `probe`, whose program is `function` of object `object`; its hook is
    /// resolved now, so a bad declaration fails before anything attaches (`added`: a probe
    /// enabled by being added, whatever the selectors say).
    pub(super) fn add_record(
        &mut self,
        probe: Probe,
        function: String,
        section: &str,
        object: ObjectKey,
        added: bool,
    ) -> Result<RecordKey> {
        let id = probe.id();
        let prog = self
            .objects
            .get(object)
            .and_then(|o| o.program(&function))
            .ok_or_else(|| Error::ProgramNotFound {
                id: id.clone(),
                name: function.clone(),
                available: self.elf.functions(),
            })?;
        let wanted = added || (self.enabled(&id) && !self.is_excluded(&function));
        // The manager's copy takes the default maxactive of kretprobes (the caller's probe is
        // left as declared).
        let mut probe = probe;
        let kretprobe = matches!(prog, Program::KProbe(p) if matches!(p.kind(), aya::programs::ProbeKind::Return));
        if kretprobe && probe.kprobe_max_active == 0 {
            probe.kprobe_max_active = self.default_kprobe_max_active;
        }
        if !self.maxactive_noted
            && kprobe::maxactive_overrides_pmu(&probe, self.default_kprobe_attach_method, kretprobe)
        {
            self.maxactive_noted = true;
            log::info!(
                "kretprobes with kprobe_max_active attach through tracefs kprobe_events, not the \
                 kprobe PMU asked for (it has no maxactive), as the Go library does; first: {id}"
            );
        }
        if probe.probe_retry == 0 {
            probe.probe_retry = self.default_probe_retry;
        }
        if probe.probe_retry_delay.is_zero() {
            probe.probe_retry_delay = self.default_probe_retry_delay;
        }
        if probe.uprobe_attach_method == crate::UprobeAttachMethod::Default {
            probe.uprobe_attach_method = self.default_uprobe_attach_method;
        }
        let hook = match resolve::hook(
            &id,
            &probe,
            &function,
            section,
            resolve::ProgKind::of(prog),
            &mut self.functions,
        ) {
            Ok(hook) => hook,
            // A probe no selector enables does not fail init over its hook (a pattern that
            // matches nothing on this kernel): it is resolved again if it gets enabled.
            Err(e) if !wanted => {
                let e = e.report().to_string();
                log::debug!("probe {id}: hook not resolved while disabled: {e}");
                Hook::Unresolved(e)
            }
            Err(e) => return Err(e),
        };
        let (state, error) = if self.is_excluded(&function) {
            (
                ProbeState::Disabled,
                Some(format!("`{function}` is in Options::excluded_functions")),
            )
        } else if !self.enabled(&id) {
            (
                ProbeState::Disabled,
                Some("no selector of activated_probes names it".into()),
            )
        } else {
            (ProbeState::Loaded, None)
        };
        Ok(self.records.push(Record {
            probe,
            id,
            function,
            object,
            section: section.to_owned(),
            hook,
            state,
            error,
            attach: None,
            link: None,
            multi: None,
        }))
    }

    /// Resolves the hook of a record that was disabled at `init` (see `add_record`); a
    /// template's (no socket, interface or cgroup) is its error.
    pub(super) fn resolve_pending(&mut self, index: RecordKey) -> Result<()> {
        if !matches!(self.records[index].hook, Hook::Unresolved(_)) {
            return Ok(());
        }
        let record = &self.records[index];
        let prog = self
            .objects
            .get(record.object)
            .and_then(|o| o.program(&record.function))
            .expect("records point at existing programs");
        let hook = resolve::hook(
            &record.id,
            &record.probe,
            &record.function,
            &record.section,
            resolve::ProgKind::of(prog),
            &mut self.functions,
        )?;
        if let Hook::Unresolved(reason) = hook {
            return Err(Error::InvalidProbe {
                id: record.id.clone(),
                reason,
            });
        }
        self.records[index].hook = hook;
        Ok(())
    }

    pub(super) fn program_mut(&mut self, index: RecordKey) -> Option<&mut Program> {
        let record = &self.records[index];
        self.objects
            .get_mut(record.object)?
            .program_mut(&record.function)
    }

    /// Resolves the record's hook and loads its program to attach it.
    pub(super) fn ensure_loaded(&mut self, index: RecordKey) -> Result<()> {
        self.resolve_pending(index)?;
        self.load_only(index)
    }

    /// Loads the record's program unless it already is (probes may share a program), without
    /// resolving its hook unless loading needs it (a BTF target): a probe that is only loaded
    /// (unselected, a tail-call target, a template) needs no attach target.
    pub(super) fn load_only(&mut self, index: RecordKey) -> Result<()> {
        let id = self.records[index].id.clone();
        let function = self.records[index].function.clone();
        if self.is_excluded(&function) {
            return Err(Error::InvalidProbe {
                id,
                reason: format!("`{function}` is in Options::excluded_functions"),
            });
        }
        let btf_typed = self
            .objects
            .get(self.records[index].object)
            .and_then(|o| o.program(&function))
            .is_some_and(|p| matches!(resolve::ProgKind::of(p), resolve::ProgKind::Tracing(_)));
        if btf_typed {
            self.resolve_pending(index)?;
        }
        if self.wants_multi(index) {
            return self.load_multi(index);
        }
        let State {
            objects,
            records,
            btf,
            pins,
            ..
        } = self;
        let record = &records[index];
        let prog = objects
            .get_mut(record.object)
            .and_then(|o| o.program_mut(&record.function))
            .expect("records point at existing programs");
        let pin_path = record.probe.pin_path.as_deref();
        let ours = |path: &std::path::Path| pins.iter().any(|p| p.path == path);
        if !loader::is_loaded(prog) {
            if let Some(path) = pin_path.filter(|p| p.exists() && !ours(p)) {
                // Pinned by another manager or process: run that program instead of loading.
                *prog = loader::from_pin(prog, path, &id)?;
                pins.push(Pin {
                    path: path.to_owned(),
                    created: false,
                });
                return Ok(());
            }
            let btf_target = match &record.hook {
                Hook::Btf { target, .. } => Some(target.as_str()),
                _ => None,
            };
            if let Err(e) = loader::load_program(prog, &id, &function, btf_target, btf) {
                let object = record.object;
                self.load_failed(object, &function, &id, e)?;
            }
        }
        self.pin_program(index)
    }

    /// Pins record `index`'s loaded program at its `pin_path`, unless that pin is its own.
    fn pin_program(&mut self, index: RecordKey) -> Result<()> {
        let State {
            objects,
            records,
            pins,
            ..
        } = self;
        let record = &records[index];
        let id = &record.id;
        let prog = objects
            .get_mut(record.object)
            .and_then(|o| o.program_mut(&record.function))
            .expect("records point at existing programs");
        let pin_path = record.probe.pin_path.as_deref();
        let ours = |path: &std::path::Path| pins.iter().any(|p| p.path == path);
        if let Some(path) = pin_path.filter(|p| !ours(p)) {
            crate::fault::check("pin")?;
            prog.pin(path).map_err(|e| Error::InvalidProbe {
                id: id.clone(),
                reason: format!(
                    "pin_path: pinning the program at {} failed: {} (the directory must exist on a bpffs; a probe sharing this function reuses its program, so give both the same pin_path)",
                    path.display(),
                    crate::error::chain(&e)
                ),
            })?;
            pins.push(Pin {
                path: path.to_owned(),
                created: true,
            });
        }
        Ok(())
    }

    /// Records a probe's failure.
    pub(super) fn fail(&mut self, index: RecordKey, error: &Error) {
        let error = error.report().to_string();
        log::info!("probe {} failed: {error}", self.records[index].id);
        self.records[index].state = ProbeState::Failed;
        self.records[index].error = Some(error);
    }

    /// Attaches the records at `indices`. Without selectors, all or nothing; with selectors,
    /// failures are recorded and the selectors decide. On error, what this call attached is
    /// detached again.
    pub(super) fn attach_enabled(&mut self, indices: &[RecordKey]) -> Result<()> {
        let before = self.attached.len();
        for &index in indices {
            let result = self
                .ensure_loaded(index)
                .and_then(|()| self.attach_one(index));
            match result {
                Ok(()) => {}
                Err(e) if self.selectors.is_empty() => {
                    self.detach_since(before, ProbeState::Loaded);
                    return Err(e);
                }
                Err(e) => self.fail(index, &e),
            }
        }
        if let Err(e) = self.validate(&self.selectors) {
            self.detach_since(before, ProbeState::Loaded);
            return Err(e);
        }
        Ok(())
    }

    /// Checks `selectors` against the running probes.
    pub(super) fn validate(&self, selectors: &[ProbesSelector]) -> Result<()> {
        let running = |id: &ProbeIdentificationPair| {
            self.record(id)
                .is_some_and(|i| self.records[i].state == ProbeState::Running)
        };
        let cause = |id: &ProbeIdentificationPair| match self.record(id) {
            Some(i) => self.records[i]
                .error
                .clone()
                .unwrap_or_else(|| format!("not running ({:?})", self.records[i].state)),
            None if self.excluded_probes.contains(id) => format!(
                "excluded: `{}` is in Options::excluded_functions",
                id.ebpf_func_name
            ),
            None => "not declared".into(),
        };
        for selector in selectors {
            if let Err(failures) = selector.validate(&running, &cause) {
                return Err(Error::SelectorValidation {
                    selector: selector.to_string(),
                    failures,
                });
            }
        }
        Ok(())
    }

    /// Detaches one attached record, leaving it in `state`.
    pub(super) fn detach_one(&mut self, index: RecordKey, state: ProbeState) {
        if let Some(pos) = self.attached.iter().position(|&i| i == index) {
            self.attached.remove(pos);
        }
        let record = &mut self.records[index];
        // Dropping the link detaches it (and removes a tracefs event).
        drop(record.link.take());
        record.attach = None;
        record.state = state;
    }

    /// Detaches, in reverse order, what was attached after the first `len` attachments.
    pub(super) fn detach_since(&mut self, len: usize, state: ProbeState) {
        let indices: Vec<RecordKey> = self
            .attached
            .drain(len.min(self.attached.len())..)
            .rev()
            .collect();
        self.detach_many(&indices, state);
    }

    /// Detaches the records at `indices`, in that order, except that perf-event links (whose
    /// close waits for an RCU grace period, about 40 ms each) close in parallel at the end on
    /// kernels where those waits overlap (see [`kernel::parallel_detach`]).
    pub(super) fn detach_many(&mut self, indices: &[RecordKey], state: ProbeState) {
        let parallel = kernel::parallel_detach();
        let mut slow = Vec::new();
        for &index in indices {
            if let Some(pos) = self.attached.iter().position(|&i| i == index) {
                self.attached.remove(pos);
            }
            let record = &mut self.records[index];
            match record.link.take() {
                Some(link) if parallel && link.waits_for_rcu() => slow.push(link),
                link => drop(link),
            }
            record.attach = None;
            record.state = state;
        }
        kernel::close_in_parallel(slow);
    }

    /// Detaches every attached probe, in reverse attach order.
    pub(super) fn detach_all(&mut self, state: ProbeState) {
        self.detach_since(0, state);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Links first, in reverse attach order; the programs and maps go with `objects` after.
        self.detach_all(ProbeState::Stopped);
        self.unregister_struct_ops(false);
        // Readers last: they drain what the probes wrote before they were detached. A stuck
        // one is logged: a drop cannot report it.
        let _ = self.readers.stop();
    }
}
