//! The reader threads of a manager: the maps they took, their start and their stop.

use std::{
    fmt, io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::{atomic::Ordering, Arc, Mutex},
    thread::JoinHandle,
};

use aya::{
    maps::{Map, MapData},
    Ebpf,
};

use super::{
    aya_log::{self, AyaLogReader},
    check_map,
    perf::{self, PerfReader},
    ringbuf::RingReader,
    Counters, PerfMap, RingBuffer, AYA_LOG, PERF, RING, STOP,
};
use crate::{
    kernel::{
        epoll::{wait_for_running_programs, Epoll},
        ringbuf::RingConsumer,
    },
    Error, Result,
};

/// A declared reader and the map it took.
enum Source {
    Perf {
        decl: PerfMap,
        map: MapData,
        /// The CPUs whose entries the running reader set.
        cpus: Vec<u32>,
    },
    Ring {
        decl: RingBuffer,
        map: MapData,
        /// The ring's size in bytes: the most a final drain reads.
        size: usize,
    },
    /// The object's aya-log ring buffer, read by aya-log (shared with the running thread),
    /// and the ring's fd, which the logger owns (read once: the thread may hold the lock
    /// inside the process's logger for as long as that takes).
    AyaLog {
        logger: Arc<Mutex<aya_log::Logger>>,
        ring: std::os::fd::RawFd,
    },
}

/// A running reader thread.
struct Running {
    stop: OwnedFd,
    thread: JoinHandle<()>,
    /// Disconnected when the thread ends, however it ends (the sender drops with it).
    done: std::sync::mpsc::Receiver<()>,
}

/// How long `stop` waits for a reader to finish by default: its handler runs on the last
/// records meanwhile.
pub(crate) const DEFAULT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `body` on a new thread whose end (return or panic) disconnects the returned receiver.
fn spawn_reader(
    builder: std::thread::Builder,
    stop: OwnedFd,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<(JoinHandle<()>, std::sync::mpsc::Receiver<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let thread = builder.spawn(move || {
        let _done = tx;
        let _stop = stop;
        body();
    })?;
    Ok((thread, rx))
}

struct Reader {
    name: String,
    counters: std::sync::Arc<Counters>,
    source: Source,
    running: Option<Running>,
    /// A reader told to stop whose handler had not returned within the stop timeout: no new
    /// reader starts on the map until it has ended (two would share the ring).
    stuck: Option<Running>,
}

impl Reader {
    fn kind(&self) -> &'static str {
        match self.source {
            Source::Perf { .. } => PERF,
            Source::Ring { .. } => RING,
            Source::AyaLog { .. } => AYA_LOG,
        }
    }

    fn skip_start(&self) -> bool {
        match &self.source {
            Source::Perf { decl, .. } => decl.skip_start,
            Source::Ring { decl, .. } => decl.skip_start,
            Source::AyaLog { .. } => false,
        }
    }

    fn start(&mut self) -> Result<()> {
        crate::fault::check("reader")?;
        if let Some(stuck) = self.stuck.take() {
            if stuck.done.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                self.stuck = Some(stuck);
                return Err(Error::ReaderStuck {
                    map: self.name.clone(),
                    kind: self.kind(),
                    waited: std::time::Duration::ZERO,
                });
            }
            if stuck.thread.join().is_err() {
                log::error!(
                    "{} `{}`: its reader thread panicked",
                    self.kind(),
                    self.name
                );
            }
        }
        match &self.running {
            // Its handler panicked: collect the thread (and the ring) and start again.
            Some(running) if running.thread.is_finished() => self.stop(DEFAULT_STOP_TIMEOUT)?,
            Some(_) => return Ok(()),
            None => {}
        }
        let kind = self.kind();
        let name = self.name.clone();
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::ReaderStart {
            map: name.clone(),
            kind,
            source,
        };
        let epoll = Epoll::new().map_err(|e| fail(Box::new(e)))?;
        // SAFETY: eventfd has no memory preconditions; the fd is checked before use.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(fail(Box::new(crate::kernel::sys::last_error("eventfd"))));
        }
        // SAFETY: a fresh fd that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        epoll
            .add(stop.as_raw_fd(), STOP)
            .map_err(|e| fail(Box::new(e)))?;
        // The thread's own descriptor of the eventfd: epoll forgets a file once its last fd
        // closes, and the manager closes its own when it gives up waiting for a stuck reader
        // (the thread must still see the stop signal then).
        let stop_kept = stop.try_clone().map_err(|e| fail(Box::new(e)))?;
        let thread_name: String = format!("rd:{}", self.name).chars().take(15).collect();
        let builder = std::thread::Builder::new().name(thread_name);
        let thread = match &mut self.source {
            Source::Perf { decl, map, cpus } => {
                let map_fd = map.fd().as_fd();
                let own_fd = map_fd.try_clone_to_owned().map_err(|e| fail(Box::new(e)))?;
                let buffers = decl.open_rings(map_fd).map_err(|e| fail(Box::new(e)))?;
                let opened: Vec<u32> = buffers.iter().map(|(cpu, _)| *cpu).collect();
                let failed = buffers
                    .iter()
                    .enumerate()
                    .find_map(|(i, (_, ring))| epoll.add(ring.as_fd().as_raw_fd(), i as u64).err());
                if let Some(e) = failed {
                    perf::clear_rings(map_fd, opened.into_iter());
                    return Err(fail(Box::new(e)));
                }
                let reader = PerfReader {
                    name: self.name.clone(),
                    map: own_fd,
                    buffers,
                    data: decl.data_handler.clone().expect("checked at start"),
                    lost: decl.lost_handler.clone(),
                    errors: decl.error_handler.clone(),
                    scratch: Vec::new(),
                    counters: self.counters.clone(),
                };
                match spawn_reader(builder, stop_kept, move || reader.run(epoll)) {
                    Ok(thread) => {
                        *cpus = opened;
                        Ok(thread)
                    }
                    Err(e) => {
                        perf::clear_rings(map_fd, opened.into_iter());
                        Err(e)
                    }
                }
            }
            Source::Ring { decl, map, size } => {
                let ring =
                    RingConsumer::new(map.fd().as_fd(), *size).map_err(|e| fail(Box::new(e)))?;
                epoll
                    .add(ring.as_raw_fd(), 0)
                    .map_err(|e| fail(Box::new(e)))?;
                let reader = RingReader {
                    name: self.name.clone(),
                    ring,
                    data: decl.data_handler.clone().expect("checked at start"),
                    errors: decl.error_handler.clone(),
                    timeout: decl
                        .poll_timeout
                        .map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32),
                    size: *size,
                    counters: self.counters.clone(),
                };
                spawn_reader(builder, stop_kept, move || reader.run(epoll))
            }
            Source::AyaLog { logger, ring } => {
                epoll.add(*ring, 0).map_err(|e| fail(Box::new(e)))?;
                let reader = AyaLogReader {
                    logger: logger.clone(),
                    counters: self.counters.clone(),
                };
                spawn_reader(builder, stop_kept, move || reader.run(epoll))
            }
        }
        .map_err(|e| fail(Box::new(e)))?;
        let (thread, done) = thread;
        self.running = Some(Running { stop, thread, done });
        Ok(())
    }

    /// Stops the reader: unhooks its rings, lets running programs return, then joins it
    /// within `timeout`.
    fn stop(&mut self, timeout: std::time::Duration) -> Result<()> {
        if self.unhook() {
            wait_for_running_programs();
        }
        self.join(timeout)
    }

    /// Clears the perf map entries of a running perf reader, so that programs write nowhere
    /// from now on; returns whether it did (the caller then waits for running programs, and
    /// the drain sees the rest).
    fn unhook(&mut self) -> bool {
        match (&mut self.source, &self.running) {
            (Source::Perf { map, cpus, .. }, Some(_)) => {
                perf::clear_rings(map.fd().as_fd(), cpus.drain(..));
                true
            }
            _ => false,
        }
    }

    /// Wakes the thread and waits, up to `timeout`, until it has drained its buffers. A
    /// handler still busy then (blocked on the caller, say) makes it [`Error::ReaderStuck`]:
    /// the thread is left to end on its own once the handler returns (it has been told to
    /// stop). Called from the reader's own thread (a handler stopping or dropping the
    /// manager), it does not wait for itself.
    fn join(&mut self, timeout: std::time::Duration) -> Result<()> {
        let Some(Running { stop, thread, done }) = self.running.take() else {
            return Ok(());
        };
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        let written = unsafe { libc::write(stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if written != 8 {
            log::error!(
                "{} `{}`: cannot wake its reader: {}",
                self.kind(),
                self.name,
                io::Error::last_os_error()
            );
        }
        if thread.thread().id() == std::thread::current().id() {
            log::debug!(
                "{} `{}`: stopped from its own handler; the thread ends after it",
                self.kind(),
                self.name
            );
            // The thread has its own descriptor of the eventfd: it sees the stop signal once
            // the handler returns, and ends. Until then no other reader may start on the map
            // (two would share the ring).
            self.stuck = Some(Running { stop, thread, done });
            return Ok(());
        }
        match done.recv_timeout(timeout) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.stuck = Some(Running { stop, thread, done });
                return Err(Error::ReaderStuck {
                    map: self.name.clone(),
                    kind: self.kind(),
                    waited: timeout,
                });
            }
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if thread.join().is_err() {
            log::error!(
                "{} `{}`: its reader thread panicked",
                self.kind(),
                self.name
            );
        }
        Ok(())
    }
}

/// The readers of a manager: the maps they took and their threads.
#[derive(Default)]
pub(crate) struct Readers {
    readers: Vec<Reader>,
    /// How long stopping waits for each reader (zero: [`DEFAULT_STOP_TIMEOUT`]).
    pub(crate) stop_timeout: std::time::Duration,
    /// Forward the records of the object's aya-log ring buffer to `log`.
    aya_log: bool,
}

impl fmt::Debug for Readers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.readers
                    .iter()
                    .map(|r| (&r.name, r.kind(), r.running.is_some())),
            )
            .finish()
    }
}

impl Readers {
    /// No readers yet; stopping one waits up to `stop_timeout` (zero: the default). With
    /// `aya_log`, `start` also reads the object's aya-log ring buffer, unless it is declared.
    pub(crate) fn new(stop_timeout: std::time::Duration, aya_log: bool) -> Self {
        Self {
            readers: Vec::new(),
            stop_timeout,
            aya_log,
        }
    }

    /// Starts the readers of `perf_maps` and `ring_buffers` that do not opt out, taking their
    /// maps from `ebpf`. Called by `start` before any probe attaches, so no event is missed.
    ///
    /// Every declaration is checked before any map is taken; if a reader fails to start, the
    /// ones started before it are stopped (their maps stay taken, so `start` can be retried).
    pub(crate) fn start(
        &mut self,
        ebpf: &mut Ebpf,
        perf_maps: &[PerfMap],
        ring_buffers: &[RingBuffer],
    ) -> Result<()> {
        if self.readers.is_empty() {
            self.take(ebpf, perf_maps, ring_buffers)?;
        }
        let mut started = Vec::new();
        for i in 0..self.readers.len() {
            let reader = &mut self.readers[i];
            if reader.skip_start() || reader.running.is_some() {
                continue;
            }
            if let Err(e) = reader.start() {
                let timeout = self.timeout();
                for &j in started.iter().rev() {
                    let r: &mut Reader = &mut self.readers[j];
                    // The start error is the one to report; a stuck reader is logged.
                    if let Err(stuck) = r.stop(timeout) {
                        log::error!("{stuck}");
                    }
                }
                return Err(e);
            }
            started.push(i);
        }
        Ok(())
    }

    fn take(
        &mut self,
        ebpf: &mut Ebpf,
        perf_maps: &[PerfMap],
        ring_buffers: &[RingBuffer],
    ) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        let declared = perf_maps
            .iter()
            .map(|p| (PERF, &p.map_name, p.data_handler.is_some(), Some(p)))
            .chain(
                ring_buffers
                    .iter()
                    .map(|r| (RING, &r.map_name, r.data_handler.is_some(), None)),
            );
        for (kind, name, has_handler, perf) in declared {
            let invalid = |reason: &str| Error::InvalidReader {
                map: name.clone(),
                kind,
                reason: reason.into(),
            };
            if !names.insert(name.as_str()) {
                return Err(invalid(
                    "declared twice: declare each map once, as a perf map or a ring buffer",
                ));
            }
            if !has_handler {
                return Err(invalid("no data_handler: set one to receive the records"));
            }
            if let Some(p) = perf {
                p.check().map_err(|reason| invalid(&reason))?;
            }
            check_map(ebpf, name, kind)?;
        }
        // Every fallible step comes before the first map is taken: a failure leaves them all.
        let mut sizes = Vec::with_capacity(ring_buffers.len());
        for decl in ring_buffers {
            let info = match ebpf.map(&decl.map_name) {
                Some(Map::RingBuf(data)) => data.info(),
                _ => unreachable!("checked above"),
            };
            let info = info.map_err(|e| Error::ReaderStart {
                map: decl.map_name.clone(),
                kind: RING,
                source: Box::new(e),
            })?;
            sizes.push(info.max_entries() as usize);
        }
        // First of the maps taken: aya-log maps the ring in taking it, which can fail (and
        // then the map is gone from the object, with no other map taken).
        let log_counters = Arc::<Counters>::default();
        let logger = match self.aya_log && !names.contains(aya_log::MAP) {
            true => aya_log::take(ebpf, &log_counters).inspect_err(|_| {
                log::warn!(
                    "`{}` left the object in this failed start: its records will not reach \
                     `log` if start is tried again (set Options::skip_aya_log to read it \
                     yourself)",
                    aya_log::MAP
                )
            })?,
            false => None,
        };

        for decl in perf_maps {
            let Some(Map::PerfEventArray(map)) = ebpf.take_map(&decl.map_name) else {
                unreachable!("checked above")
            };
            self.readers.push(Reader {
                name: decl.map_name.clone(),
                counters: Default::default(),
                source: Source::Perf {
                    decl: decl.clone(),
                    map,
                    cpus: Vec::new(),
                },
                running: None,
                stuck: None,
            });
        }
        for (decl, size) in ring_buffers.iter().zip(sizes) {
            let Some(Map::RingBuf(map)) = ebpf.take_map(&decl.map_name) else {
                unreachable!("checked above")
            };
            self.readers.push(Reader {
                name: decl.map_name.clone(),
                counters: Default::default(),
                source: Source::Ring {
                    decl: decl.clone(),
                    map,
                    size,
                },
                running: None,
                stuck: None,
            });
        }
        if let Some(logger) = logger {
            let ring = logger.as_fd().as_raw_fd();
            self.readers.push(Reader {
                name: aya_log::MAP.to_owned(),
                counters: log_counters,
                source: Source::AyaLog {
                    logger: Arc::new(Mutex::new(logger)),
                    ring,
                },
                running: None,
                stuck: None,
            });
        }
        Ok(())
    }

    /// Stops every reader, in reverse order, each after draining its buffers; the maps stay
    /// taken. Called by `stop` after every probe is detached.
    ///
    /// Each reader gets its own wait (see [`Reader::join`]); the first that is stuck is the
    /// error, after the others were stopped.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let running = self.readers.iter().any(|r| r.running.is_some());
        for reader in &mut self.readers {
            reader.unhook();
        }
        // Once for all readers: a record written during the detach is in the buffers after it.
        if running {
            wait_for_running_programs();
        }
        let timeout = self.timeout();
        let mut first = Ok(());
        for reader in self.readers.iter_mut().rev() {
            if let Err(e) = reader.join(timeout) {
                log::error!("{}", crate::error::chain(&e));
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn timeout(&self) -> std::time::Duration {
        if self.stop_timeout.is_zero() {
            DEFAULT_STOP_TIMEOUT
        } else {
            self.stop_timeout
        }
    }

    /// Stops every reader and releases the maps they took.
    pub(crate) fn release(&mut self) -> Result<()> {
        let stopped = self.stop();
        self.readers.clear();
        stopped
    }

    fn find(&mut self, name: &str) -> Result<&mut Reader> {
        let declared = self
            .readers
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.readers
            .iter_mut()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::ReaderNotFound {
                map: name.to_owned(),
                declared,
            })
    }

    /// Starts the reader of `name` (no-op when it runs).
    pub(crate) fn start_one(&mut self, name: &str) -> Result<()> {
        self.find(name)?.start()
    }

    /// Stops the reader of `name` after draining its buffers (no-op when it is stopped).
    pub(crate) fn stop_one(&mut self, name: &str) -> Result<()> {
        let timeout = self.timeout();
        self.find(name)?.stop(timeout)
    }

    /// Each reader's map, kind, whether it runs, its counts and (ring buffers) size.
    pub(crate) fn status(&self) -> Vec<super::ReaderStatus> {
        self.readers
            .iter()
            .map(|r| {
                let c = &r.counters;
                let ring_size = match &r.source {
                    Source::Ring { size, .. } => Some(*size as u64),
                    Source::Perf { .. } | Source::AyaLog { .. } => None,
                };
                super::ReaderStatus {
                    map: r.name.clone(),
                    kind: r.kind(),
                    running: r.running.as_ref().is_some_and(|r| !r.thread.is_finished()),
                    received: c.received.load(Ordering::Relaxed),
                    lost: c.lost.load(Ordering::Relaxed),
                    handler_errors: c.handler_errors.load(Ordering::Relaxed),
                    ring_size,
                    ring_high_water: ring_size.map(|_| c.high_water.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }

    /// Whether the reader of `name` runs; `None` when no reader has that map.
    pub(crate) fn is_running(&self, name: &str) -> Option<bool> {
        self.readers
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.running.as_ref().is_some_and(|r| !r.thread.is_finished()))
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // A stuck reader is logged by `stop`; nothing else can be done from a drop.
        let _ = self.stop();
    }
}
