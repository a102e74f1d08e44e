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

/// The calling thread's network namespace.
pub(crate) fn current() -> io::Result<OwnedFd> {
    open(Path::new("/proc/thread-self/ns/net"))
}

/// Whether two namespace files name the same namespace.
fn same(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<bool> {
    let stat = |fd: BorrowedFd<'_>| {
        // SAFETY: stat is plain data, valid when zeroed.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and a stat buffer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(super::sys::last_error("fstat"));
        }
        Ok((st.st_dev, st.st_ino))
    };
    Ok(stat(a)? == stat(b)?)
}

/// While alive, the calling thread is in another network namespace; dropping it returns.
/// Not `Send`: dropped on another thread, it would move that thread instead.
pub(crate) struct Entered {
    /// `None` when the thread was in that namespace already.
    home: Option<OwnedFd>,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Moves the calling thread into `netns` (needs CAP_SYS_ADMIN), unless it is there already.
pub(crate) fn enter(netns: BorrowedFd<'_>) -> io::Result<Entered> {
    let home = current()?;
    if same(home.as_fd(), netns)? {
        return Ok(Entered {
            home: None,
            _not_send: std::marker::PhantomData,
        });
    }
    setns(netns)?;
    Ok(Entered {
        home: Some(home),
        _not_send: std::marker::PhantomData,
    })
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid fd and a namespace type.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(super::sys::last_error("setns"));
    }
    Ok(())
}

impl Drop for Entered {
    fn drop(&mut self) {
        let Some(home) = &self.home else { return };
        if let Err(e) = setns(home.as_fd()) {
            // The thread would stay in the other namespace: nothing sane can continue.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}
