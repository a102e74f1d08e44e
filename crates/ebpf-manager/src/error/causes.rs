//! The causes inside [`Error`](super::Error)s: the system calls the manager makes itself (aya
//! makes the others, and reports them as its `SyscallError`, the same shape) name the call and
//! keep the errno, so that [`Error::errno`](super::Error::errno) finds it; and the printer of a
//! chain of causes. They sit here, below the kernel layer that returns them.

use std::io;

use super::Error;

/// A failed system call: which call, and the kernel's errno as an [`io::Error`] (its
/// [`source`](std::error::Error::source)).
#[derive(Debug, thiserror::Error)]
#[error("`{call}` failed")]
pub struct SysError {
    /// The call (`perf_event_open`, `mmap`, `setns`, `BPF_MAP_UPDATE_ELEM`, ...).
    pub call: &'static str,
    /// The errno.
    #[source]
    pub io_error: io::Error,
}

/// A failed `bpf(2)` command: which, the errno, and the verifier's log for a load.
#[derive(Debug, thiserror::Error)]
#[error("{command} failed")]
pub struct BpfError {
    /// The command (`BPF_PROG_LOAD`, ...).
    pub command: &'static str,
    /// The errno.
    #[source]
    pub source: io::Error,
    /// The verifier's log (loads only; may be empty).
    pub log: String,
}

/// An [`Error`] with its causes, from [`Error::report`].
pub struct Report<'a>(pub(super) &'a Error);

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_chain(f, self.0)
    }
}

/// `error` and its causes on one line, for messages that carry another crate's error.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    struct Chain<'a>(&'a (dyn std::error::Error + 'static));
    impl std::fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write_chain(f, self.0)
        }
    }
    Chain(error).to_string()
}

fn write_chain(
    f: &mut std::fmt::Formatter<'_>,
    error: &(dyn std::error::Error + 'static),
) -> std::fmt::Result {
    {
        let mut last = error.to_string();
        f.write_str(&last)?;
        let mut cause = error.source();
        while let Some(e) = cause {
            let text = e.to_string();
            // Errors of other crates may print their source themselves as well.
            if !text.is_empty() && !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
