//! Pausing through the bypass map (see `pipeline/bypass.rs`): a bypassed probe stays attached
//! and its program returns 0 at once, so pause and resume are one map write each instead of a
//! detach (an RCU grace period per link) and an attach.

use super::State;
use crate::{probe::ProbeState, Error, Result};

impl State {
    /// The bypass index of record `index`'s program, when the pipeline patched it.
    pub(super) fn bypass_index(&self, index: usize) -> Option<u32> {
        self.source
            .object
            .bypass_index(&self.records[index].function)
    }

    /// Writes `value` (1: bypassed, 0: running) into the bypass entries of `indices`.
    pub(super) fn set_bypass(&mut self, indices: &[usize], value: u32) -> Result<()> {
        let Some((name, _)) = self.source.object.bypass_map() else {
            return Ok(());
        };
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
            .first_mut()
            .and_then(Option::as_mut)
            .and_then(|o| o.map_mut(name))
            .ok_or_else(|| fail("the map is not loaded".into()))?;
        let mut array =
            aya::maps::Array::<_, u32>::try_from(map).map_err(|e| fail(e.to_string()))?;
        for entry in entries {
            array
                .set(entry, value, 0)
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    /// Pauses every attached probe: bypassable ones by their map entry (they stay attached),
    /// the others by detaching them, in reverse attach order.
    pub(super) fn pause_all(&mut self) -> Result<()> {
        let (bypassed, others): (Vec<usize>, Vec<usize>) = self
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
    pub(super) fn bypassed(&self) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&i| {
                self.records[i].state == ProbeState::Paused && self.records[i].link.is_some()
            })
            .collect()
    }
}
