//! [`PerfMap`]: a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` and its reader.

use std::{
    fmt, io,
    ops::ControlFlow,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use super::{handler_result, PERF, STOP};
use crate::kernel::{
    bpf_map,
    epoll::Epoll,
    perf::Wakeup,
    perf_ring::{PerfRing, Record},
};

/// Receives each record of a perf buffer: the CPU it was written on, and its bytes.
///
/// The bytes borrow the kernel's ring (or a scratch buffer of the reader when a record wraps
/// around the ring's end): no allocation per record. They include the padding the kernel adds
/// so that the record, with its 4-byte size, is a multiple of 8 bytes (a 56-byte struct arrives
/// as 60 bytes), like the Go library's `RawSample`.
pub type PerfDataHandler = Arc<dyn Fn(u32, &[u8]) + Send + Sync>;

/// Receives the kernel's reports of records lost because a CPU's buffer was full: the CPU and
/// how many were lost. The kernel reports a loss when it next writes to that CPU's buffer.
pub type PerfLostHandler = Arc<dyn Fn(u32, u64) + Send + Sync>;

/// The default size of each CPU's perf ring, in pages.
pub const DEFAULT_PERF_RING_PAGES: usize = 64;

/// A perf event array of the object, and how to read it.
///
/// From [`Manager::start`](crate::Manager::start) to [`Manager::stop`](crate::Manager::stop), one
/// thread per `PerfMap` reads the rings of every online CPU (epoll on their perf fds) and calls
/// [`data_handler`](Self::data_handler) for each record and [`lost_handler`](Self::lost_handler)
/// for each loss report. `stop` detaches the probes first, then drains what the rings still hold
/// before it returns, so every record the programs wrote is either handled or reported lost.
///
/// A handler runs on the reader's thread; if it panics, the reader stops (the panic is
/// caught and logged) and [`Manager::start_reader`](crate::Manager::start_reader) starts it
/// again.
///
/// The reader takes the map out of the loaded object: from `start` on,
/// [`Manager::get_map`](crate::Manager::get_map) returns `None` for it.
///
/// Wakeups: by default the kernel wakes the reader for every record. Under a high event rate,
/// [`wakeup_events`](Self::wakeup_events) or [`watermark`](Self::watermark) batch the wakeups
/// (fewer context switches, many times the throughput); the price is latency: records below
/// the threshold wait for the next wakeup of that CPU's ring, or for `stop`, which drains them.
/// While a reader is stopped, its CPUs' entries of the map are cleared, so
/// `bpf_perf_event_output` fails with `-ENOENT` instead of filling rings that nobody reads.
///
/// ```no_run
/// use std::sync::Arc;
/// use ebpf_manager::PerfMap;
///
/// let events = PerfMap {
///     map_name: "perf_events".into(),
///     data_handler: Some(Arc::new(|cpu, data: &[u8]| println!("cpu {cpu}: {} bytes", data.len()))),
///     lost_handler: Some(Arc::new(|cpu, count| eprintln!("cpu {cpu}: {count} lost"))),
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct PerfMap {
    /// The map's name in the object.
    pub map_name: String,
    /// Called for each record (required: `start` fails without it), on the reader's own
    /// thread. A handler may take its time and may drop the manager, but must not wait on
    /// the thread that stops it (a lock it holds, a channel it drains after `stop`): `stop`
    /// waits at most [`Options::reader_stop_timeout`](crate::Options::reader_stop_timeout),
    /// then returns [`Error::ReaderStuck`](crate::Error::ReaderStuck).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub data_handler: Option<PerfDataHandler>,
    /// Called for each loss report; without it, losses are logged at `warn` level.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub lost_handler: Option<PerfLostHandler>,
    /// Receives the reader's errors (a handler that panicked, a failed wait), as the Go
    /// `PerfMapOptions.ErrChan`; they are logged either way.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub error_handler: Option<super::ReaderErrorHandler>,
    /// Size of each CPU's ring in pages, a power of two; 0 means
    /// [`DEFAULT_PERF_RING_PAGES`].
    pub perf_ring_pages: usize,
    /// Wake the reader after this many records instead of after each one (the Go library's
    /// `WakeupEvents`); 0 means 1. Exclusive with [`watermark`](Self::watermark).
    pub wakeup_events: u32,
    /// Wake the reader once this many bytes wait in a CPU's ring (the Go library's
    /// `Watermark`); 0 means no watermark. Must be smaller than the ring. Exclusive with
    /// [`wakeup_events`](Self::wakeup_events).
    pub watermark: u32,
    /// Do not start this reader in `start`: start it later with
    /// [`Manager::start_reader`](crate::Manager::start_reader). Its map is taken all the same.
    pub skip_start: bool,
}

impl PerfMap {
    /// The ring size in pages that the reader uses.
    pub fn ring_pages(&self) -> usize {
        if self.perf_ring_pages == 0 {
            DEFAULT_PERF_RING_PAGES
        } else {
            self.perf_ring_pages
        }
    }

    /// What is wrong with the ring settings, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        let pages = self.ring_pages();
        if !pages.is_power_of_two() {
            return Err(format!(
                "perf_ring_pages is {}: it must be a power of two (or 0 for the default, {DEFAULT_PERF_RING_PAGES})",
                self.perf_ring_pages
            ));
        }
        if self.wakeup_events > 0 && self.watermark > 0 {
            return Err(format!(
                "wakeup_events ({}) and watermark ({}) are both set: set one of them",
                self.wakeup_events, self.watermark
            ));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // The kernel takes at most 2^31 bytes a ring (and mmap one page more).
        let ring = pages
            .checked_mul(page)
            .filter(|&r| r <= 1 << 31)
            .ok_or_else(|| {
                format!(
                    "perf_ring_pages is {}: a ring of that many {page}-byte pages is larger than the kernel allows (2 GiB)",
                    self.perf_ring_pages
                )
            })?;
        if self.watermark as usize >= ring {
            return Err(format!(
                "watermark is {} bytes: it must be smaller than each CPU's ring ({ring} bytes, {pages} pages)",
                self.watermark
            ));
        }
        Ok(())
    }

    fn wakeup(&self) -> Wakeup {
        if self.watermark > 0 {
            Wakeup::Watermark(self.watermark)
        } else {
            Wakeup::Events(self.wakeup_events.max(1))
        }
    }

    /// Opens a ring per online CPU and stores each in `map`; on failure, clears what it
    /// stored.
    pub(crate) fn open_rings(&self, map: BorrowedFd<'_>) -> io::Result<Vec<(u32, PerfRing)>> {
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        let mut rings = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let opened = PerfRing::open(cpu, self.ring_pages(), self.wakeup())
                .and_then(|ring| bpf_map::set_perf_event(map, cpu, ring.as_fd()).map(|()| ring));
            match opened {
                Ok(ring) => rings.push((cpu, ring)),
                Err(e) => {
                    clear_rings(map, rings.iter().map(|(cpu, _)| *cpu));
                    return Err(io::Error::new(
                        e.kind(),
                        format!("opening the ring of cpu {cpu}: {}", crate::error::chain(&e)),
                    ));
                }
            }
        }
        Ok(rings)
    }
}

/// Clears the map's entries of these CPUs (best effort: a failure is logged).
pub(crate) fn clear_rings(map: BorrowedFd<'_>, cpus: impl Iterator<Item = u32>) {
    for cpu in cpus {
        if let Err(e) = bpf_map::clear_perf_event(map, cpu) {
            log::warn!(
                "perf map: clearing the entry of cpu {cpu}: {}",
                crate::error::chain(&e)
            );
        }
    }
}

impl fmt::Debug for PerfMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfMap")
            .field("map_name", &self.map_name)
            .field("data_handler", &self.data_handler.as_ref().map(|_| "Fn"))
            .field("lost_handler", &self.lost_handler.as_ref().map(|_| "Fn"))
            .field("error_handler", &self.error_handler.as_ref().map(|_| "Fn"))
            .field("perf_ring_pages", &self.perf_ring_pages)
            .field("wakeup_events", &self.wakeup_events)
            .field("watermark", &self.watermark)
            .field("skip_start", &self.skip_start)
            .finish()
    }
}

/// The thread of one perf map: waits on every CPU's buffer and the stop eventfd.
pub(super) struct PerfReader {
    pub(super) name: String,
    /// A descriptor of the map, to clear the rings' entries when a handler panics.
    pub(super) map: OwnedFd,
    pub(super) buffers: Vec<(u32, PerfRing)>,
    pub(super) data: PerfDataHandler,
    pub(super) lost: Option<PerfLostHandler>,
    pub(super) errors: Option<super::ReaderErrorHandler>,
    /// Where a record that wraps around the ring's end is made contiguous.
    pub(super) scratch: Vec<u8>,
    pub(super) counters: std::sync::Arc<super::Counters>,
}

impl PerfReader {
    pub(super) fn run(mut self, epoll: Epoll) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 32];
        loop {
            let ready = match epoll.wait(&mut events, -1) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!(
                        "perf map `{}`: epoll_wait failed: {}",
                        self.name,
                        crate::error::chain(&e)
                    );
                    super::report(
                        self.errors.as_ref(),
                        &super::ReaderError::Wait {
                            map: self.name.clone(),
                            source: e,
                        },
                    );
                    break;
                }
            };
            let mut stopping = false;
            for data in ready {
                if data == STOP {
                    stopping = true;
                } else if self.read(data as usize).is_break() {
                    return self.abandon();
                }
            }
            if stopping {
                break;
            }
        }
        // Drain: the probes are detached (or the caller stops this reader on purpose).
        for i in 0..self.buffers.len() {
            if self.read(i).is_break() {
                return self.abandon();
            }
        }
    }

    /// After a handler panicked: the rings close with this thread, so their entries go too,
    /// and programs get ENOENT rather than write to rings nobody reads.
    fn abandon(self) {
        clear_rings(self.map.as_fd(), self.buffers.iter().map(|(cpu, _)| *cpu));
    }

    /// Hands the records of one ring to the handlers; breaks when a handler panicked.
    fn read(&mut self, index: usize) -> ControlFlow<()> {
        let Self {
            name,
            buffers,
            map: _,
            data,
            lost,
            errors,
            scratch,
            counters,
        } = self;
        let Some((cpu, buffer)) = buffers.get_mut(index) else {
            return ControlFlow::Continue(());
        };
        let cpu = *cpu;
        // Counted once per ring read, not per record (see RingReader::drain).
        let (mut received, mut lost_count) = (0, 0);
        let flow = buffer.read(scratch, |record| {
            match &record {
                Record::Sample(_) => received += 1,
                Record::Lost(count) => lost_count += *count,
            }
            let handled = catch_unwind(AssertUnwindSafe(|| match record {
                Record::Sample(bytes) => data(cpu, bytes),
                Record::Lost(count) => match lost {
                    Some(lost) => lost(cpu, count),
                    None => log::warn!("perf map `{name}`: {count} records lost on cpu {cpu}"),
                },
            }));
            handler_result(PERF, name, handled, errors.as_ref(), counters)
        });
        super::Counters::add(&counters.received, received);
        super::Counters::add(&counters.lost, lost_count);
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perf(pages: usize, wakeup_events: u32, watermark: u32) -> PerfMap {
        PerfMap {
            map_name: "events".into(),
            perf_ring_pages: pages,
            wakeup_events,
            watermark,
            ..Default::default()
        }
    }

    #[test]
    fn ring_settings_are_checked() {
        assert_eq!(perf(0, 0, 0).check(), Ok(()));
        assert_eq!(perf(0, 0, 0).wakeup(), Wakeup::Events(1));
        assert_eq!(perf(4, 64, 0).wakeup(), Wakeup::Events(64));
        assert_eq!(perf(4, 0, 4096).check(), Ok(()));
        assert_eq!(perf(4, 0, 4096).wakeup(), Wakeup::Watermark(4096));
        let err = |p: PerfMap| p.check().unwrap_err();
        assert!(err(perf(3, 0, 0)).contains("power of two"));
        assert!(err(perf(4, 8, 8)).contains("set one of them"));
        assert!(err(perf(1, 0, 1 << 20)).contains("smaller than each CPU's ring"));
    }
}
