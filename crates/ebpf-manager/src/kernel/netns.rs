//! Entering a network namespace on the calling thread, and coming back.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

/// An open network namespace.
pub(crate) fn open(path: &Path) -> io::Result<OwnedFd> {
    Ok(File::open(path)?.into())
}

/// Duplicates a namespace fd the caller owns.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// While alive, the calling thread is in another network namespace; dropping it returns.
pub(crate) struct Entered {
    home: OwnedFd,
}

/// Moves the calling thread into `netns` (needs CAP_SYS_ADMIN).
pub(crate) fn enter(netns: BorrowedFd<'_>) -> io::Result<Entered> {
    let home = open(Path::new("/proc/thread-self/ns/net"))?;
    setns(netns)?;
    Ok(Entered { home })
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid fd and a namespace type.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home.as_fd()) {
            // The thread would stay in the other namespace: nothing sane can continue.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}
