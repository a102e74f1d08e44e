//! The errors of the system calls the manager makes itself (aya makes the others, and reports
//! them as its `SyscallError`, the same shape): each names the call and keeps the errno, so
//! that [`Error::errno`](crate::Error::errno) finds it and a message says which call failed.

use std::io;

pub use crate::error::SysError;

/// The calling thread's errno after `call` failed, as an [`io::Error`] of the same kind that
/// carries a [`SysError`] naming the call. Read [`errno`] of it, not `raw_os_error`.
pub(crate) fn last_error(call: &'static str) -> io::Error {
    let io_error = io::Error::last_os_error();
    io::Error::new(io_error.kind(), SysError { call, io_error })
}

/// `bpf(cmd, attr)`: every `bpf(2)` command the manager makes itself goes through here.
/// Returns what the kernel returned (an fd, or 0), or the errno as it was right after the
/// call, as an error naming `call`.
pub(crate) fn bpf<T>(cmd: libc::c_long, call: &'static str, attr: &mut T) -> io::Result<i64> {
    // SAFETY: the callers pass a `#[repr(C)]` prefix of `union bpf_attr`, every byte of it
    // named (so zeroed), of the size passed; the pointers inside it point to buffers the
    // caller keeps alive across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(last_error(call));
    }
    Ok(rc)
}

/// The errno of `e`: its own, or that of the [`SysError`] inside it.
pub(crate) fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<SysError>())
            .and_then(|sys| sys.io_error.raw_os_error())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_keeps_its_name_kind_and_errno() {
        // SAFETY: closing an fd that is not open only sets errno.
        assert_ne!(unsafe { libc::close(-1) }, 0);
        let e = last_error("close");
        assert_eq!(errno(&e), Some(libc::EBADF));
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::EBADF).kind());
        assert_eq!(e.to_string(), "`close` failed");
        let cause = std::error::Error::source(&e).expect("the errno as the source");
        assert!(cause.to_string().contains("os error 9"), "{cause}");
        let plain = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(errno(&plain), Some(libc::ENOENT));
        assert_eq!(errno(&io::Error::other("no errno")), None);
    }
}
