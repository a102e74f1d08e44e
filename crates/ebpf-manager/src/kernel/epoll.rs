//! epoll, and waiting for running eBPF programs to return (membarrier): what the readers need
//! from the kernel beyond aya.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

/// Waits until every eBPF program that is running now has returned, so that the drain sees
/// what a program running during the detach wrote: `membarrier(MEMBARRIER_CMD_GLOBAL)` is a
/// `synchronize_rcu()` in the kernel (Linux 4.3), and non-sleepable programs run under RCU.
pub(crate) fn wait_for_running_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) };
    if rc < 0 {
        log::debug!(
            "membarrier: {}: a record written during the detach may be missed",
            io::Error::last_os_error()
        );
    }
}

/// An epoll instance.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the fd is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(super::sys::last_error("epoll_create1"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub(crate) fn add(&self, fd: RawFd, data: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: `event` is a live epoll_event; the kernel copies it.
        let rc =
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(super::sys::last_error("epoll_ctl"));
        }
        Ok(())
    }

    /// Waits for events (`timeout` in ms, -1 for ever) and returns their data; `None` when
    /// epoll failed for another reason than a signal.
    pub(crate) fn wait<'a>(
        &self,
        events: &'a mut [libc::epoll_event],
        timeout: i32,
    ) -> io::Result<impl Iterator<Item = u64> + 'a> {
        loop {
            // SAFETY: `events` is a live, writable array of its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n >= 0 {
                return Ok(events[..n as usize].iter().map(|e| e.u64));
            }
            let e = super::sys::last_error("epoll_wait");
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
