//! The sweep of what dead processes of this library left in the kernel: tracefs probe events
//! ([`super::tracefs`]) and private bpffs directories, each removed only while this process
//! holds its lock ([`super::instance`]).

use std::path::PathBuf;

use super::{instance, tracefs};

/// What a sweep of dead processes' leftovers found (or removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Tracefs probe events, as `<group>/<event>`.
    pub tracefs_events: Vec<String>,
    /// Private bpffs directories (clone and map editor pins).
    pub bpffs_dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.tracefs_events.is_empty() && self.bpffs_dirs.is_empty()
    }
}

/// Removes what dead processes of this library left in the kernel: their tracefs probe events
/// and their private bpffs directories. An object is removed only while this process holds its
/// lock, so a live process's objects (in any pid namespace) and other tools' objects are never
/// touched. [`Manager::start`](crate::Manager::start) runs this first.
///
/// ```no_run
/// let removed = ebpf_manager::remove_leftovers();
/// println!("removed {} events", removed.tracefs_events.len());
/// ```
pub fn remove_leftovers() -> Leftovers {
    sweep(true)
}

/// What [`remove_leftovers`] would remove now, without removing it.
pub fn find_leftovers() -> Leftovers {
    sweep(false)
}

fn sweep(remove: bool) -> Leftovers {
    let mut found = Leftovers::default();
    if let Ok(root) = tracefs::root() {
        for control in ["kprobe_events", "uprobe_events"] {
            let listed = if remove {
                tracefs::remove_leftover_events(root, control)
            } else {
                tracefs::find_leftover_events(root, control)
            };
            match listed {
                Ok(events) => found.tracefs_events.extend(events),
                Err(e) => log::warn!("cannot read tracefs {control}: {}", crate::error::chain(&e)),
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(instance::BPFFS) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let private = instance::owner_token(name)
            .is_some_and(|t| name.len() > instance::PREFIX.len() + t.len());
        if !private || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let _lock = match instance::Alive::of_dead(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => continue,
            Err(e) => {
                log::warn!(
                    "cannot tell whether {} is in use: {}",
                    path.display(),
                    crate::error::chain(&e)
                );
                continue;
            }
        };
        if remove {
            instance::remove_dir_and_entries(&path);
            log::info!("removed {} left by a dead process", path.display());
        }
        found.bpffs_dirs.push(path);
    }
    found
}
