//! tracefs: where it is, and the dynamic probe events (`kprobe_events`) the manager creates.
//!
//! Every event the manager creates lives in a group named `ebpf_manager_<pid>`, so that a later
//! process can tell which events were left behind by a dead process of this library, and remove
//! those, and only those.

use std::{
    fs::OpenOptions,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use crate::{Error, Result};

const ROOTS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The prefix of the group of every tracefs event this library creates.
pub const GROUP_PREFIX: &str = "ebpf_manager_";

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
        Err(io::Error::last_os_error())
    }
}

/// The group of this process's events.
pub fn own_group() -> String {
    format!("{GROUP_PREFIX}{}", std::process::id())
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

/// A dynamic probe event (`kprobe_events`) that this process created; removed on drop.
#[derive(Debug)]
pub(crate) struct ProbeEvent {
    control: PathBuf,
    group: String,
    event: String,
    /// The tracepoint id of the event, for `perf_event_open`.
    pub(crate) id: u64,
}

impl ProbeEvent {
    /// Writes `<definition prefix>:<group>/<event> <target>` to `<tracefs>/<control>` and
    /// reads back the event's id. `prefix` is `p`, `r` or `r<maxactive>`.
    pub(crate) fn create(
        tracefs: &Path,
        control: &str,
        prefix: &str,
        event: String,
        target: &str,
    ) -> io::Result<Self> {
        let control = tracefs.join(control);
        let group = own_group();
        append_line(&control, &format!("{prefix}:{group}/{event} {target}"))?;
        // From here on, drop removes the event, also when reading the id fails.
        let mut created = Self {
            control,
            group,
            event,
            id: 0,
        };
        let id_path = tracefs
            .join("events")
            .join(&created.group)
            .join(&created.event)
            .join("id");
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
            log::warn!("removing tracefs event {}/{}: {e}", self.group, self.event);
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

/// The events of `text` (a `kprobe_events` listing) that dead processes of this library left:
/// their group is `ebpf_manager_<pid>` and `is_alive(pid)` is false.
pub fn leftover_events(text: &str, is_alive: impl Fn(u32) -> bool) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(parse_event_line)
        .filter(|(group, _)| {
            group
                .strip_prefix(GROUP_PREFIX)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !is_alive(pid))
        })
        .collect()
}

/// Removes the events that dead processes of this library left in `<tracefs>/<control>`.
/// Returns how many were removed.
pub fn remove_leftover_events(tracefs: &Path, control: &str) -> io::Result<usize> {
    let path = tracefs.join(control);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // No such facility on this kernel: nothing can be left over.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let dead = leftover_events(&text, |pid| Path::new(&format!("/proc/{pid}")).exists());
    for (group, event) in &dead {
        log::info!("removing tracefs event {group}/{event} left by a dead process");
        append_line(&path, &format!("-:{group}/{event}"))?;
    }
    Ok(dead.len())
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
    fn leftovers_are_only_dead_processes_of_this_library() {
        let listing = "\
p:kprobes/p_vfs_mkdir_0 vfs_mkdir
p:ebpf_manager_100/p_vfs_mkdir_0 vfs_mkdir
r16:ebpf_manager_100/r_vfs_mkdir_1 vfs_mkdir
p:ebpf_manager_200/p_vfs_rmdir_2 vfs_rmdir
p:ebpf_manager_x/p_odd_3 vfs_rmdir
p:other_tool_100/p_vfs_mkdir_0 vfs_mkdir
";
        let dead = leftover_events(listing, |pid| pid == 200);
        assert_eq!(
            dead,
            vec![
                ("ebpf_manager_100", "p_vfs_mkdir_0"),
                ("ebpf_manager_100", "r_vfs_mkdir_1")
            ]
        );
    }
}
