//! bpffs: an instance of the manager's own for the pins it makes for itself, and what a user's
//! pin path is on.
//!
//! aya 0.14 reuses an existing map in a new load only by pin path, so sharing maps with object
//! copies and clones needs pins. Each `mount -t bpf` is a separate instance, and the new mount
//! API (`fsopen`/`fsconfig`/`fsmount`, Linux 5.2) makes one that is mounted nowhere: reached
//! through `/proc/self/fd/<fd>`, invisible to other processes, and gone with every pin in it
//! when its fd closes, however the process ends. So nothing depends on `/sys/fs/bpf` being a
//! bpffs, and nothing is left to sweep.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use super::sys::last_error;

/// `BPF_FS_MAGIC`, bpffs's `statfs` type.
pub(crate) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `SYSFS_MAGIC`: what `/sys/fs/bpf` is on when nothing is mounted there.
pub(crate) const SYSFS_MAGIC: i64 = 0x6265_6572;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// A bpffs instance mounted nowhere (Linux 5.2, `CAP_SYS_ADMIN`); dropping it releases the
/// instance and every pin in it.
#[derive(Debug)]
pub(crate) struct PrivateBpffs {
    mount: OwnedFd,
}

impl PrivateBpffs {
    /// Creates an instance.
    pub(crate) fn create() -> io::Result<Self> {
        // SAFETY: a NUL-terminated name and flags; the result is a new fd or -1.
        let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"bpf".as_ptr(), FSOPEN_CLOEXEC) };
        if fs < 0 {
            return Err(last_error("fsopen"));
        }
        // SAFETY: fsopen returned a new fd that nothing else owns.
        let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
        // SAFETY: a command without key or value on the fd fsopen returned.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if rc < 0 {
            return Err(last_error("fsconfig"));
        }
        // SAFETY: the configured fs context; the result is a new fd or -1.
        let mount = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
        if mount < 0 {
            return Err(last_error("fsmount"));
        }
        let instance = Self {
            // SAFETY: fsmount returned a new fd that nothing else owns.
            mount: unsafe { OwnedFd::from_raw_fd(mount as i32) },
        };
        // Reached through this process's /proc: without one (or with another pid namespace's),
        // the instance is of no use.
        if !instance.path().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/proc/self/fd does not reach the instance (is /proc this pid namespace's?)",
            ));
        }
        Ok(instance)
    }

    /// Its root, as a path this process can pin at and open pins from.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.mount.as_raw_fd()))
    }
}

/// The file system a pin at `path` would be made on: `statfs` of its directory, or of the
/// nearest ancestor that exists. Returns that directory and the file system's magic number.
pub(crate) fn fs_of_pin(path: &Path) -> io::Result<(PathBuf, i64)> {
    let mut dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) => Path::new("."),
        None => Path::new("/"),
    };
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all-zero is a valid `statfs`, filled in by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(last_error("statfs"));
    }
    // Through u32: the magic numbers are 32-bit, and `f_type` is signed on some targets.
    Ok((dir.to_owned(), i64::from(st.f_type as u32)))
}

/// A file system's name from its `statfs` magic number, for messages.
pub(crate) fn fs_name(magic: i64) -> &'static str {
    match magic {
        BPF_FS_MAGIC => "bpffs",
        0x0102_1994 => "tmpfs",
        0xef53 => "ext4",
        SYSFS_MAGIC => "sysfs",
        0x9fa0 => "proc",
        0x794c_7630 => "overlayfs",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x6367_7270 => "cgroup2",
        0x7472_6163 => "tracefs",
        0x6462_6720 => "debugfs",
        _ => "another file system",
    }
}

/// Mounts a bpffs instance at `dir` (`mount -t bpf bpf DIR`).
pub(crate) fn mount_at(dir: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(last_error("mount"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ancestors() {
        assert_eq!(fs_name(BPF_FS_MAGIC), "bpffs");
        assert_eq!(fs_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_name(1), "another file system");
        // A pin path under directories that do not exist is judged by the nearest that does.
        let (dir, magic) = fs_of_pin(Path::new("/proc/ebpf-manager-no-such/dir/pin")).unwrap();
        assert_eq!(dir, Path::new("/proc"));
        assert_eq!(fs_name(magic), "proc");
    }
}
