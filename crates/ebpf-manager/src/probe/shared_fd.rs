//! [`SharedFd`]: a descriptor a probe declaration holds open, instead of a raw number.

use std::{
    hash::{Hash, Hasher},
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    sync::Arc,
};

/// An open file descriptor that a probe declaration owns a share of: a socket to filter
/// ([`Probe::socket_fd`](crate::Probe::socket_fd)) or a network namespace
/// ([`Netns::Fd`](crate::Netns::Fd)).
///
/// A raw fd number would let the manager act on whatever file later takes the number once the
/// caller closes theirs (detaching another socket's filter, entering another namespace); a
/// `SharedFd` keeps its file open for as long as a declaration or a link needs it. Clones
/// share the one descriptor.
///
/// ```no_run
/// use ebpf_manager::{Probe, SharedFd};
///
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let probe = Probe {
///     socket_fd: Some(SharedFd::dup(&socket)?),
///     ..Default::default()
/// };
/// // The probe keeps its own descriptor of the socket: closing `socket` leaves it valid.
/// drop(socket);
/// # let _ = probe;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SharedFd(Arc<OwnedFd>);

impl SharedFd {
    /// A new descriptor of the same file as `fd` (`F_DUPFD_CLOEXEC`).
    pub fn dup(fd: impl AsFd) -> io::Result<Self> {
        Ok(Self(Arc::new(fd.as_fd().try_clone_to_owned()?)))
    }
}

impl From<OwnedFd> for SharedFd {
    /// Takes `fd` over.
    fn from(fd: OwnedFd) -> Self {
        Self(Arc::new(fd))
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl PartialEq for SharedFd {
    /// The same shared descriptor (not merely the same file).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedFd {}

impl Hash for SharedFd {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_raw_fd().hash(state);
    }
}
