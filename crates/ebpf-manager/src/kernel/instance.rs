//! Who made a tracefs event or a bpffs directory, and whether it is still alive.
//!
//! Every name this library gives a kernel object that outlives a crash (tracefs probe events,
//! private bpffs directories) starts with `ebpf_manager_<token>`, where the token is 16 random
//! hex digits drawn once per process. Pids would not do: an agent restarted in its container
//! is PID 1 again, and a pid seen from another pid namespace names another process.
//!
//! Liveness is a `flock` held on the object itself (the event's `id` file in tracefs, the
//! directory in bpffs) for as long as the object is in use. The kernel drops the lock when the
//! process dies, however it dies, and tracefs is a single instance shared by every mount and
//! namespace, so a sweeper anywhere sees the same lock. A sweeper removes an object only while
//! holding its lock: never a live one, and never a name outside this library's format.

use super::bpffs::PrivateBpffs;
use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The prefix of every name this library gives a tracefs event group or a bpffs directory.
pub const PREFIX: &str = "ebpf_manager_";

/// The length of a token: 16 lowercase hex digits.
const TOKEN_LEN: usize = 16;

/// This process's token: 16 random hex digits, the same for every manager of the process.
pub fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| format!("{:016x}", random_u64()))
}

/// The tracefs event group of this process: `ebpf_manager_<token>`.
pub fn own_group() -> String {
    format!("{PREFIX}{}", token())
}

/// The token of a name this library made (`ebpf_manager_<token>` or
/// `ebpf_manager_<token>_<anything>`), or `None` for any other name.
pub fn owner_token(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let token = rest.get(..TOKEN_LEN)?;
    let tail = &rest[TOKEN_LEN..];
    let hex = token
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && (tail.is_empty() || tail.starts_with('_'))).then_some(token)
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        return u64::from_ne_bytes(buf);
    }
    // No getrandom (before Linux 3.17): the time, the pid and an address still differ between
    // two processes that start together.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let here = &buf as *const _ as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(32) ^ here.rotate_left(17)
}

/// An exclusive `flock` on a file or directory: the mark that its maker is alive. Dropping it
/// (or the process dying) releases the lock.
#[derive(Debug)]
pub(crate) struct Alive {
    _file: File,
}

impl Alive {
    /// Takes the lock on `path` without waiting, and checks that `path` still names the locked
    /// file afterwards (a sweeper may have removed it in between). Fails with
    /// [`io::ErrorKind::WouldBlock`] when another process holds it, and
    /// [`io::ErrorKind::NotFound`] when it was removed.
    pub(crate) fn claim(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(super::sys::last_error("flock"));
        }
        let locked = file.metadata()?;
        let named = std::fs::metadata(path)?;
        if (locked.dev(), locked.ino()) != (named.dev(), named.ino()) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} was replaced while being locked", path.display()),
            ));
        }
        Ok(Self { _file: file })
    }

    /// The lock of a dead maker: `Some` (and the lock is now held) when nobody holds it,
    /// `None` when its maker is alive or the object is gone.
    pub(crate) fn of_dead(path: &Path) -> io::Result<Option<Self>> {
        match Self::claim(path) {
            Ok(alive) => Ok(Some(alive)),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A directory of the manager's own for the pins it makes for itself (map sharing with copies
/// and clones, open maps given as editors): the root of a private bpffs instance
/// ([`PrivateBpffs`], Linux 5.2, `CAP_SYS_ADMIN`), or where none can be made,
/// `/sys/fs/bpf/ebpf_manager_<token>_<kind>_<n>` locked while it lives (when `/sys/fs/bpf` is a
/// bpffs). Dropping it removes what it holds.
#[derive(Debug)]
pub(crate) struct PrivateDir {
    path: PathBuf,
    backing: Backing,
}

#[derive(Debug)]
enum Backing {
    /// Released with every pin in it when dropped (or when the process dies).
    Instance(#[allow(dead_code)] PrivateBpffs),
    /// A directory of the shared bpffs, swept by the next start if the process dies.
    Shared(#[allow(dead_code)] Alive),
}

/// Where bpffs is mounted.
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// Why the manager has nowhere to make its own pins: no private instance, and `/sys/fs/bpf`
/// is not a bpffs.
#[derive(Debug, thiserror::Error)]
#[error("a private bpffs instance could not be made ({private}), and {BPFFS} is on {found}")]
pub(crate) struct NoBpffs {
    /// Why `fsopen("bpf")`/`fsmount` failed.
    pub(crate) private: io::Error,
    /// What `/sys/fs/bpf` is on.
    pub(crate) found: &'static str,
}

impl PrivateDir {
    /// A private bpffs instance, else a fresh locked directory in the shared bpffs.
    pub(crate) fn create(kind: &str) -> io::Result<Self> {
        let private = match PrivateBpffs::create() {
            Ok(instance) => {
                return Ok(Self {
                    path: instance.path(),
                    backing: Backing::Instance(instance),
                })
            }
            Err(e) => e,
        };
        let found = match super::bpffs::fs_of_pin(&Path::new(BPFFS).join("pin")) {
            Ok((dir, magic)) if magic == super::bpffs::BPF_FS_MAGIC && dir == Path::new(BPFFS) => {
                None
            }
            Ok((_, magic)) => Some(super::bpffs::fs_name(magic)),
            Err(_) => Some("nothing readable"),
        };
        if let Some(found) = found {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                NoBpffs { private, found },
            ));
        }
        log::debug!(
            "no private bpffs instance ({}): pins in {BPFFS}",
            crate::error::chain(&private)
        );
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut last = None;
        // A sweeper can remove a directory between its mkdir and its lock; a new name then.
        for _ in 0..3 {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = Path::new(BPFFS).join(format!("{}_{kind}_{n}", own_group()));
            std::fs::create_dir(&path)?;
            match Alive::claim(&path) {
                Ok(alive) => {
                    return Ok(Self {
                        path,
                        backing: Backing::Shared(alive),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no directory")))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // A shared directory is removed before its lock goes, so no sweeper ever sees it
        // unlocked; a private instance goes with its fd.
        if let Backing::Shared(_) = self.backing {
            remove_dir_and_entries(&self.path);
        }
    }
}

/// Removes the entries of a private directory (pins) and the directory; best effort.
pub(crate) fn remove_dir_and_entries(path: &Path) -> usize {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(path) {
        log::warn!("removing {}: {}", path.display(), crate::error::chain(&e));
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_names_parse_back() {
        let t = token();
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(owner_token(&own_group()), Some(t));
        let dir = format!("{}_clone_3", own_group());
        assert_eq!(owner_token(&dir), Some(t));
        assert_ne!(random_u64(), random_u64());
    }

    #[test]
    fn names_of_others_have_no_owner() {
        for name in [
            "ebpf_manager_100",
            "ebpf_manager_0123456789abcdeg",
            "ebpf_manager_0123456789ABCDEF",
            "ebpf_manager_0123456789abcdefx",
            "kprobes",
            "not_ebpf_manager_0123456789abcdef",
            "ebpf_manager_",
        ] {
            assert_eq!(owner_token(name), None, "{name}");
        }
        assert_eq!(
            owner_token("ebpf_manager_0123456789abcdef_editor_0"),
            Some("0123456789abcdef")
        );
    }
}
