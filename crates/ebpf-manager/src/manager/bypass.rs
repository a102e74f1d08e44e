//! Pausing through the bypass map (see `pipeline/bypass.rs`): a bypassed probe stays attached
//! and its program returns 0 at once, so pause and resume are one map write each instead of a
//! detach (an RCU grace period per link) and an attach.

use super::table::{ObjectKey, RecordKey};
use super::State;
use crate::{probe::ProbeState, Error, Result};

impl State {
    /// The bypass index of record `index`'s program, when the pipeline patched it.
    pub(super) fn bypass_index(&self, index: RecordKey) -> Option<u32> {
        self.source
            .object
            .bypass_index(&self.records[index].function)
    }

    /// Writes `value` (1: bypassed, 0: running) into the bypass entries of `indices`.
    pub(super) fn set_bypass(&mut self, indices: &[RecordKey], value: u32) -> Result<()> {
        let Some((name, _)) = self.source.object.bypass_map() else {
            return Ok(());
        };
        crate::fault::check("bypass")?;
        let entries: Vec<u32> = indices
            .iter()
            .filter_map(|&i| self.bypass_index(i))
            .collect();
        let fail = |reason: String| Error::InvalidOption {
            option: "bypass_enabled".into(),
            reason: format!("writing the `{name}` map: {reason}"),
        };
        let map = self
            .objects
            .get_mut(ObjectKey::MAIN)
            .and_then(|o| o.map_mut(name))
            .ok_or_else(|| fail("the map is not loaded".into()))?;
        let mut array =
            aya::maps::Array::<_, u32>::try_from(map).map_err(|e| fail(crate::error::chain(&e)))?;
        for entry in entries {
            array
                .set(entry, value, 0)
                .map_err(|e| fail(crate::error::chain(&e)))?;
        }
        Ok(())
    }

    /// Pauses every attached probe: bypassable ones by their map entry (they stay attached),
    /// the others by detaching them, in reverse attach order.
    pub(super) fn pause_all(&mut self) -> Result<()> {
        let (bypassed, others): (Vec<RecordKey>, Vec<RecordKey>) = self
            .attached
            .iter()
            .rev()
            .copied()
            .partition(|&i| self.bypass_index(i).is_some());
        self.set_bypass(&bypassed, 1)?;
        for &i in &bypassed {
            self.records[i].state = ProbeState::Paused;
        }
        self.detach_many(&others, ProbeState::Paused);
        Ok(())
    }

    /// The paused probes that are still attached (bypassed).
    pub(super) fn bypassed(&self) -> Vec<RecordKey> {
        self.records
            .keys()
            .filter(|&i| {
                self.records[i].state == ProbeState::Paused && self.records[i].link.is_some()
            })
            .collect()
    }
}

impl super::Manager {
    /// Pauses one running probe (the Go `Probe.Pause`): through its `program_bypassed` entry
    /// when bypass patched its program ([`Options::bypass_enabled`](crate::Options)), the
    /// probe staying attached; by detaching it otherwise. The other probes run on.
    pub fn pause_probe(&mut self, id: &crate::ProbeIdentificationPair) -> Result<()> {
        let index = self.running_record(id, "pause_probe", ProbeState::Running)?;
        let state = &mut self.state;
        if state.bypass_index(index).is_some() {
            state.set_bypass(&[index], 1)?;
            state.records[index].state = ProbeState::Paused;
        } else {
            state.detach_many(&[index], ProbeState::Paused);
        }
        Ok(())
    }

    /// Resumes one probe paused by [`pause_probe`](Self::pause_probe) (or by `pause`). If its
    /// attach fails, the probe stays detached, [`Failed`](ProbeState::Failed) with its error.
    pub fn resume_probe(&mut self, id: &crate::ProbeIdentificationPair) -> Result<()> {
        let index = self.running_record(id, "resume_probe", ProbeState::Paused)?;
        let state = &mut self.state;
        if state.records[index].link.is_some() {
            state.set_bypass(&[index], 0)?;
            state.records[index].state = ProbeState::Running;
            return Ok(());
        }
        if let Err(e) = state.attach_one(index) {
            state.fail(index, &e);
            return Err(e);
        }
        Ok(())
    }

    /// The record of `id`, which must be in `expected` state on a running or paused manager.
    fn running_record(
        &self,
        id: &crate::ProbeIdentificationPair,
        operation: &'static str,
        expected: ProbeState,
    ) -> Result<RecordKey> {
        self.expect(
            operation,
            &[super::ManagerState::Running, super::ManagerState::Paused],
        )?;
        let index = self
            .state
            .record(id)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        let state = self.state.records[index].state;
        if state != expected {
            return Err(Error::InvalidProbe {
                id: id.clone(),
                reason: format!("{operation} needs a probe that is {expected:?}; it is {state:?}"),
            });
        }
        Ok(index)
    }
}
