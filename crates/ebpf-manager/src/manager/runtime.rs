//! Changing a manager's probes after `init`: selectors, hooks, clones.

use super::table::{ObjectKey, RecordKey};
use super::{init::check_selectors, Manager, ManagerState};
use crate::{
    loader, ConstantEditor, Error, MapEditor, Probe, ProbeIdentificationPair, ProbeState,
    ProbesSelector, Result,
};

impl Manager {
    /// Replaces [`Options::activated_probes`](crate::Options::activated_probes) at runtime:
    /// attaches the probes the new selectors enable (loading their programs first if needed),
    /// validates the new selectors, then detaches the probes they no longer enable.
    ///
    /// If validation fails, the probes this call attached are detached again and the previous
    /// set keeps running: the manager is as it was, and the error lists each failing probe.
    /// On an initialized manager that has not started, it only changes what `start` will attach.
    pub fn update_activated_probes(&mut self, selectors: Vec<ProbesSelector>) -> Result<()> {
        self.expect(
            "update the activated probes of",
            &[ManagerState::Initialized, ManagerState::Running],
        )?;
        let state = &mut self.state;
        check_selectors(
            &selectors,
            state
                .records
                .values()
                .map(|r| r.id.clone())
                .chain(state.excluded_probes.iter().cloned()),
        )?;
        let previous = std::mem::replace(&mut state.selectors, selectors);
        let enabled: std::collections::BTreeMap<RecordKey, bool> = state
            .records
            .iter()
            .map(|(key, r)| (key, state.enabled(&r.id)))
            .collect();
        let usable =
            |state: &super::State, i: RecordKey| !state.is_excluded(&state.records[i].function);

        if self.state() == ManagerState::Initialized {
            let state = &mut self.state;
            for (&i, &on) in &enabled {
                state.records[i].state = match (on && usable(state, i), state.records[i].state) {
                    (true, ProbeState::Disabled) => ProbeState::Loaded,
                    (false, _) => ProbeState::Disabled,
                    (true, other) => other,
                };
            }
            return Ok(());
        }

        let state = &mut self.state;
        let additions: Vec<RecordKey> = state
            .records
            .keys()
            .filter(|i| enabled[i] && usable(state, *i))
            .filter(|&i| state.records[i].state != ProbeState::Running)
            .collect();
        let saved: Vec<(ProbeState, Option<String>)> = additions
            .iter()
            .map(|&i| (state.records[i].state, state.records[i].error.clone()))
            .collect();
        let before = state.attached.len();
        let mark = state.load_mark();
        for &i in &additions {
            if let Err(e) = state.ensure_loaded(i).and_then(|()| state.attach_one(i)) {
                state.fail(i, &e);
            }
        }
        // As after start: the BTF the new probes needed goes.
        if !state.keep_kernel_btf {
            state.btf.release();
        }
        if let Err(e) = state.validate(&state.selectors) {
            // Back to exactly the previous set: detach what this call attached, unload what
            // it loaded, remove the pins it made.
            state.detach_since(before, ProbeState::Disabled);
            state.undo_loads(mark);
            for (&i, (s, err)) in additions.iter().zip(saved) {
                state.records[i].state = s;
                if state.records[i].state != ProbeState::Failed {
                    state.records[i].error = err;
                }
            }
            state.selectors = previous;
            return Err(e);
        }
        // Probes the new selectors leave out: detached in reverse attach order, then disabled.
        let removals: Vec<RecordKey> = state
            .attached
            .iter()
            .rev()
            .copied()
            .filter(|i| !enabled[i])
            .collect();
        state.detach_many(&removals, ProbeState::Disabled);
        for (&i, &on) in &enabled {
            if !on && !state.is_excluded(&state.records[i].function) {
                state.records[i].state = ProbeState::Disabled;
                state.records[i].error = Some("no selector of activated_probes names it".into());
            }
        }
        Ok(())
    }

    /// Gives the probe `old` the identification pair `new` (the Go
    /// `RenameProbeIdentificationPair`): only its uid may change, since the pair names its
    /// program. Selectors and per-probe editors keep naming the old pair.
    pub fn rename_probe_identification_pair(
        &mut self,
        old: &ProbeIdentificationPair,
        new: &ProbeIdentificationPair,
    ) -> Result<()> {
        self.expect(
            "rename a probe of",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        let index = self
            .state
            .record(old)
            .ok_or_else(|| Error::ProbeNotFound { id: old.clone() })?;
        if old.ebpf_func_name != new.ebpf_func_name {
            return Err(Error::InvalidProbe {
                id: old.clone(),
                reason: format!(
                    "a rename keeps the program: {new} names `{}`, not `{}`",
                    new.ebpf_func_name, old.ebpf_func_name
                ),
            });
        }
        if self.state.record(new).is_some() {
            return Err(Error::DuplicateProbe { id: new.clone() });
        }
        let record = &mut self.state.records[index];
        record.id = new.clone();
        record.probe.uid = new.uid.clone();
        Ok(())
    }

    /// Attaches the program of the probe `{uid, probe.ebpf_func_name}` at a second hook point,
    /// described by `probe` (which needs its own `uid`). The same kernel program runs at both.
    /// With an empty `uid` the program may also be one that no probe declares: the object's,
    /// by its function, as the Go library accepts. On a running manager the new
    /// probe attaches now; otherwise at `start`.
    pub fn add_hook(&mut self, uid: &str, probe: Probe) -> Result<()> {
        self.expect(
            "add a hook to",
            &[ManagerState::Initialized, ManagerState::Running],
        )?;
        let source = ProbeIdentificationPair::new(uid, probe.ebpf_func_name.clone());
        let (function, object, section) = self.existing(&source, &probe)?;
        self.add_and_attach(probe, function, &section, object)
    }

    /// Loads a new kernel program from the function of the probe
    /// `{uid, probe.ebpf_func_name}`, with `constant_editors` applied over the manager's own
    /// constants, and `map_editors` over its maps (the clone shares every other map of the
    /// manager's object, through temporary pins in a private bpffs instance: no bpffs needs to
    /// be mounted, Linux 5.2 and `CAP_SYS_ADMIN`, else a bpffs at
    /// `/sys/fs/bpf`).
    /// The clone is described by `probe`, which needs its own `uid`; on a running manager it
    /// attaches now.
    pub fn clone_program(
        &mut self,
        uid: &str,
        probe: Probe,
        constant_editors: Vec<ConstantEditor>,
        map_editors: Vec<MapEditor>,
    ) -> Result<()> {
        self.expect(
            "clone a program of",
            &[ManagerState::Initialized, ManagerState::Running],
        )?;
        if self.state.source.object.is_released() {
            return Err(Error::ObjectReleased);
        }
        let source = ProbeIdentificationPair::new(uid, probe.ebpf_func_name.clone());
        let (function, _, section) = self.existing(&source, &probe)?;
        let state = &mut self.state;
        let mut maps = map_editors;
        maps.extend(state.map_editors.iter().cloned());
        let shared = loader::SharedMaps::pin(&state.main_map_fds, &maps)?;
        maps.extend(shared.editors.iter().cloned());
        // The manager's editors for every probe, then those naming this clone (the Go library
        // accepts editors for pairs a later clone declares), then the clone's own.
        let clone_id = probe.id();
        let every: Vec<&ConstantEditor> = state
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .collect();
        let own: Vec<&ConstantEditor> = state
            .constant_editors
            .iter()
            .filter(|e| e.probes.contains(&clone_id))
            .chain(constant_editors.iter())
            .collect();
        let ebpf = loader::load_object(
            &state.source,
            &mut state.btf,
            crate::pipeline::Constants {
                every: &every,
                own: &own,
            },
            &maps,
            &state.map_spec_editors,
        )?;
        drop(shared);
        let object = state.objects.push(ebpf);
        let own: Vec<ConstantEditor> = state
            .constant_editors
            .iter()
            .filter(|e| e.probes.contains(&clone_id))
            .chain(constant_editors.iter())
            .cloned()
            .collect();
        state.own_constants.insert(object, own);
        let result = self.add_and_attach(probe, function, &section, object);
        if result.is_err() {
            self.state.objects.remove(object);
            self.state.own_constants.remove(&object);
        }
        result
    }

    /// Detaches the probe with this id and forgets it. A clone's program is unloaded with its
    /// last probe.
    pub fn detach_hook(&mut self, id: &ProbeIdentificationPair) -> Result<()> {
        self.expect(
            "detach a hook of",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        let state = &mut self.state;
        let index = state
            .record(id)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        state.detach_one(index, ProbeState::Stopped);
        let record = state.records.remove(index).expect("the key was just found");
        let still_used = state.records.values().any(|r| r.object == record.object);
        if record.object != ObjectKey::MAIN && !still_used {
            state.objects.remove(record.object);
            state.own_constants.remove(&record.object);
        }
        Ok(())
    }

    /// The function, object and section of the probe `source`, checking that `probe` names a
    /// new id.
    fn existing(
        &self,
        source: &ProbeIdentificationPair,
        probe: &Probe,
    ) -> Result<(String, ObjectKey, String)> {
        if self.state.record(&probe.id()).is_some() {
            return Err(Error::DuplicateProbe { id: probe.id() });
        }
        // With an empty uid, the program may be one no probe declares (the Go library accepts
        // it): found as `get_program` finds it. A uid names a probe, which must exist.
        let found = self
            .state
            .find_program(source)
            .ok_or_else(|| Error::ProbeNotFound { id: source.clone() })?;
        let (object, function) = self.state.located(&found);
        let section = self
            .state
            .elf
            .by_function(function)
            .map(|p| p.section.clone())
            .unwrap_or_default();
        Ok((function.to_owned(), object, section))
    }

    fn add_and_attach(
        &mut self,
        probe: Probe,
        function: String,
        section: &str,
        object: ObjectKey,
    ) -> Result<()> {
        let running = self.state() == ManagerState::Running;
        let state = &mut self.state;
        let mark = state.load_mark();
        let index = state.add_record(probe, function, section, object, true)?;
        // A hook or clone is enabled by being added, whatever the selectors say.
        state.records[index].state = ProbeState::Loaded;
        state.records[index].error = None;
        // Before start, the new probe is only loaded: a template (no socket, interface or
        // cgroup yet) fails only when attached.
        let result = if running {
            state
                .ensure_loaded(index)
                .and_then(|()| state.attach_one(index))
        } else {
            state.load_only(index)
        };
        // After start, the BTF a hook or clone needed is released as start releases it.
        if running && !state.keep_kernel_btf {
            state.btf.release();
        }
        if let Err(e) = result {
            state.records.remove(index);
            state.undo_loads(mark);
            return Err(e);
        }
        Ok(())
    }
}
