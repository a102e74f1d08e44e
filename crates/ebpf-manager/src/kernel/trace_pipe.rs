//! Reading `trace_pipe`, where `bpf_printk` writes.

use std::{
    fs::File,
    io::{self, Read},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    time::{Duration, Instant},
};

/// A non-blocking reader of `<tracefs>/trace_pipe`.
///
/// `trace_pipe` is consumed by whoever reads it: two readers split the lines between them.
///
/// ```no_run
/// use std::time::Duration;
/// use ebpf_manager::TracePipe;
///
/// let mut pipe = TracePipe::open()?;
/// let lines = pipe.read_until(Duration::from_secs(5), |line| line.contains("mkdir"))?;
/// for line in lines {
///     println!("{line}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TracePipe {
    file: File,
    pending: Vec<u8>,
}

impl TracePipe {
    /// Opens `trace_pipe` under the mounted tracefs.
    pub fn open() -> crate::Result<Self> {
        let path = super::tracefs::root()?.join("trace_pipe");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|source| crate::Error::Io { path, source })?;
        Ok(Self {
            file,
            pending: Vec::new(),
        })
    }

    /// Reads lines until one satisfies `done` or `timeout` passes. Returns the lines that
    /// satisfied `done` (at most one) or, at the time limit, none.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> io::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if done(&line) {
                    return Ok(vec![line]);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(100) as libc::c_int;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            match self.file.read(&mut buf) {
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
