//! tracefs: where it is, and the dynamic probe events (`kprobe_events`, `uprobe_events`) the
//! manager creates.
//!
//! Every event the manager creates lives in the group `ebpf_manager_<token>` of its process
//! and is locked while in use ([`super::instance`]), so that a later process, in any
//! pid namespace, can tell which events a dead process of this library left, and remove those,
//! and only those.

use std::{
    fs::OpenOptions,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use super::instance::{self, Alive};
use crate::{Error, Result};

const ROOTS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The prefix of the group of every tracefs event this library creates.
pub const GROUP_PREFIX: &str = instance::PREFIX;

/// The kernel's limit on an event name (MAX_EVENT_NAME_LEN), terminator included.
const MAX_EVENT_NAME: usize = 64;

static EVENT_INDEX: AtomicUsize = AtomicUsize::new(0);

/// Where tracefs is mounted: `/sys/kernel/tracing`, else `/sys/kernel/debug/tracing`.
pub fn root() -> Result<&'static Path> {
    ROOTS
        .iter()
        .map(Path::new)
        .find(|p| p.join("trace").exists() || p.join("events").exists())
        .ok_or(Error::TracefsNotMounted)
}

/// Mounts tracefs at `/sys/kernel/tracing` unless it is already mounted there or under debugfs.
///
/// Needs `CAP_SYS_ADMIN`. aya looks for tracefs once per process, so call this before the
/// first tracepoint is attached.
pub fn mount_if_needed() -> io::Result<()> {
    if root().is_ok() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(super::sys::last_error("mount"))
    }
}

/// The group of this process's events: `ebpf_manager_<token>`.
pub fn own_group() -> String {
    instance::own_group()
}

/// A unique event name for a probe on `symbol`: `<p|r>_<symbol>_<n>`, cut to the kernel's limit
/// and to the characters an event name may hold.
pub(crate) fn event_name(retprobe: bool, symbol: &str) -> String {
    let n = EVENT_INDEX.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{n}");
    let kind = if retprobe { "r_" } else { "p_" };
    let room = MAX_EVENT_NAME - 1 - kind.len() - suffix.len();
    let clean: String = symbol
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(room)
        .collect();
    format!("{kind}{clean}{suffix}")
}

/// A dynamic probe event (`kprobe_events`, `uprobe_events`) that this process created and
/// holds locked; removed on drop.
#[derive(Debug)]
pub(crate) struct ProbeEvent {
    control: PathBuf,
    group: String,
    event: String,
    /// The tracepoint id of the event, for `perf_event_open`.
    pub(crate) id: u64,
    /// Declared last: dropped after the event is removed, so no sweeper sees it unlocked.
    _alive: Alive,
}

impl ProbeEvent {
    /// The event's name in its group.
    pub(crate) fn name(&self) -> &str {
        &self.event
    }

    /// Writes `<prefix>:<group>/<event> <target>` to `<tracefs>/<control>` (the event named by
    /// [`event_name`] after `retprobe` and `symbol`), locks it and reads back its id. `prefix`
    /// is `p`, `r` or `r<maxactive>`.
    pub(crate) fn create(
        tracefs: &Path,
        control: &str,
        prefix: &str,
        (retprobe, symbol): (bool, &str),
        target: &str,
    ) -> io::Result<Self> {
        let mut last = None;
        // A sweeper may lock and remove an event between its creation and its lock: then it
        // is made again under a new name.
        for _ in 0..3 {
            match Self::create_once(
                tracefs,
                control,
                prefix,
                event_name(retprobe, symbol),
                target,
            ) {
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotFound =>
                {
                    last = Some(e)
                }
                done => return done,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no event")))
    }

    fn create_once(
        tracefs: &Path,
        control: &str,
        prefix: &str,
        event: String,
        target: &str,
    ) -> io::Result<Self> {
        let control = tracefs.join(control);
        let group = own_group();
        append_line(&control, &format!("{prefix}:{group}/{event} {target}"))?;
        let id_path = tracefs.join("events").join(&group).join(&event).join("id");
        let alive = match Alive::claim(&id_path) {
            Ok(alive) => alive,
            Err(e) => {
                // Not ours to keep: remove it unless a sweeper already did.
                let _ = append_line(&control, &format!("-:{group}/{event}"));
                return Err(e);
            }
        };
        // From here on, drop removes the event, also when reading the id fails.
        let mut created = Self {
            control,
            group,
            event,
            id: 0,
            _alive: alive,
        };
        let text = std::fs::read_to_string(&id_path)?;
        created.id = text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", id_path.display()),
            )
        })?;
        Ok(created)
    }
}

impl Drop for ProbeEvent {
    fn drop(&mut self) {
        let line = format!("-:{}/{}", self.group, self.event);
        if let Err(e) = append_line(&self.control, &line) {
            log::warn!(
                "removing tracefs event {}/{}: {}",
                self.group,
                self.event,
                crate::error::chain(&e)
            );
        }
    }
}

/// Appends one line to a tracefs control file. Never truncates: opening `kprobe_events` with
/// O_TRUNC would remove every probe event on the system, other tools' included.
fn append_line(control: &Path, line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(control)?;
    f.write_all(line.as_bytes())
}

/// Parses one line of `kprobe_events` (`p:group/event target`) into (group, event).
pub fn parse_event_line(line: &str) -> Option<(&str, &str)> {
    let def = line.split_whitespace().next()?;
    let (_kind, name) = def.split_once(':')?;
    name.split_once('/')
}

/// The events of `text` (a `kprobe_events` or `uprobe_events` listing) that a process of this
/// library made: their group is `ebpf_manager_<token>`. Whether their maker is alive is told
/// by their lock, not by their name.
pub fn events_of_this_library(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(parse_event_line)
        .filter(|(group, _)| {
            instance::owner_token(group)
                .is_some_and(|t| group.len() == GROUP_PREFIX.len() + t.len())
        })
        .collect()
}

/// Removes the events that dead processes of this library left in `<tracefs>/<control>`
/// (`kprobe_events` or `uprobe_events`): each one whose lock nobody holds, removed while this
/// process holds it. Never an event of a live process, in any pid namespace, nor another
/// tool's. Returns the events removed; one that cannot be removed is logged and skipped.
pub fn remove_leftover_events(tracefs: &Path, control: &str) -> io::Result<Vec<String>> {
    leftover_events(tracefs, control, true)
}

/// The events [`remove_leftover_events`] would remove, without removing them.
pub fn find_leftover_events(tracefs: &Path, control: &str) -> io::Result<Vec<String>> {
    leftover_events(tracefs, control, false)
}

fn leftover_events(tracefs: &Path, control: &str, remove: bool) -> io::Result<Vec<String>> {
    let path = tracefs.join(control);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // No such facility on this kernel: nothing can be left over.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dead = Vec::new();
    for (group, event) in events_of_this_library(&text) {
        let id = tracefs.join("events").join(group).join(event).join("id");
        let _lock = match Alive::of_dead(&id) {
            Ok(Some(lock)) => lock,
            Ok(None) => continue,
            Err(e) => {
                log::warn!(
                    "cannot tell whether tracefs event {group}/{event} is in use: {}",
                    crate::error::chain(&e)
                );
                continue;
            }
        };
        let name = format!("{group}/{event}");
        if remove {
            if let Err(e) = append_line(&path, &format!("-:{name}")) {
                log::warn!(
                    "cannot remove tracefs event {name} left by a dead process: {}",
                    crate::error::chain(&e)
                );
                continue;
            }
            log::info!("removed tracefs event {name} left by a dead process");
        }
        dead.push(name);
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_unique_valid_and_short() {
        let long = "a".repeat(200);
        let a = event_name(false, "vfs_mkdir");
        let b = event_name(false, "vfs_mkdir");
        assert_ne!(a, b);
        assert!(a.starts_with("p_vfs_mkdir_"));
        assert!(event_name(true, "x").starts_with("r_x_"));
        let n = event_name(false, &long);
        assert!(n.len() < MAX_EVENT_NAME, "{n}");
        let dotted = event_name(false, "do_sys_open.isra.0");
        assert!(dotted
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn only_groups_of_this_library_are_candidates() {
        let listing = "\
p:kprobes/p_vfs_mkdir_0 vfs_mkdir
p:ebpf_manager_0123456789abcdef/p_vfs_mkdir_0 vfs_mkdir
r16:ebpf_manager_0123456789abcdef/r_vfs_mkdir_1 vfs_mkdir
p:ebpf_manager_200/p_vfs_rmdir_2 vfs_rmdir
p:ebpf_manager_0123456789abcdef_x/p_odd_3 vfs_rmdir
p:other_tool_0123456789abcdef/p_vfs_mkdir_0 vfs_mkdir
";
        assert_eq!(
            events_of_this_library(listing),
            vec![
                ("ebpf_manager_0123456789abcdef", "p_vfs_mkdir_0"),
                ("ebpf_manager_0123456789abcdef", "r_vfs_mkdir_1")
            ]
        );
    }
}
