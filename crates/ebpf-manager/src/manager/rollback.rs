//! Putting the manager and the kernel back as they were when a call that loads programs fails
//! part way (`update_activated_probes`, `add_hook`, `clone_program`): the programs it loaded,
//! the kprobe.multi/uprobe.multi programs it made and the pins it created go again.

use std::collections::HashSet;

use super::{
    table::{ObjectKey, RecordKey},
    State,
};
use crate::loader;

/// What was loaded and pinned before a call.
pub(super) struct LoadMark {
    pins: usize,
    /// (object, function) of every program loaded then.
    loaded: HashSet<(ObjectKey, String)>,
    /// Records that had their multi-link program then.
    multi: HashSet<RecordKey>,
}

impl State {
    /// Notes what is loaded and pinned now, for [`undo_loads`](Self::undo_loads).
    pub(super) fn load_mark(&self) -> LoadMark {
        let mut loaded = HashSet::new();
        for (object, ebpf) in self.objects.iter() {
            for (function, prog) in ebpf.programs() {
                if loader::is_loaded(prog) {
                    loaded.insert((object, function.to_owned()));
                }
            }
        }
        LoadMark {
            pins: self.pins.len(),
            loaded,
            multi: self
                .records
                .keys()
                .filter(|&i| self.records[i].multi.is_some())
                .collect(),
        }
    }

    /// Unloads what was loaded since `mark` and removes the pins made since; call it after
    /// detaching what the failed call attached.
    pub(super) fn undo_loads(&mut self, mark: LoadMark) {
        for pin in self.pins.drain(mark.pins..).rev() {
            // A reused pin is another owner's: only the manager's use of it goes.
            if pin.created {
                if let Err(e) = std::fs::remove_file(&pin.path) {
                    log::warn!(
                        "removing the pin {}: {}",
                        pin.path.display(),
                        crate::error::chain(&e)
                    );
                }
            }
        }
        for (i, record) in self.records.iter_mut() {
            if !mark.multi.contains(&i) {
                record.multi = None;
            }
        }
        for (object, ebpf) in self.objects.iter_mut() {
            for (function, prog) in ebpf.programs_mut() {
                if loader::is_loaded(prog) && !mark.loaded.contains(&(object, function.to_owned()))
                {
                    if let Err(e) = loader::unload(prog) {
                        log::warn!("unloading `{function}`: {}", crate::error::chain(&e));
                    }
                }
            }
        }
    }
}
