//! [`PerfMap`]: a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` and its reader.

use std::{
    fmt,
    ops::ControlFlow,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use aya::maps::{
    perf::{PerfEvent, PerfEventArrayBuffer},
    MapData,
};

use super::{handler_result, PERF, STOP};
use crate::kernel::epoll::Epoll;

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
/// Wakeups: aya 0.14 opens each ring with `wakeup_events = 1` (the reader wakes for every record)
/// and does not let the caller set `wakeup_events` or a watermark in bytes, so this version has
/// no such setting (the Go library's `Watermark` / `WakeupEvents`).
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
pub struct PerfMap {
    /// The map's name in the object.
    pub map_name: String,
    /// Called for each record (required: `start` fails without it).
    pub data_handler: Option<PerfDataHandler>,
    /// Called for each loss report; without it, losses are logged at `warn` level.
    pub lost_handler: Option<PerfLostHandler>,
    /// Size of each CPU's ring in pages, a power of two; 0 means
    /// [`DEFAULT_PERF_RING_PAGES`].
    pub perf_ring_pages: usize,
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
}

impl fmt::Debug for PerfMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfMap")
            .field("map_name", &self.map_name)
            .field("data_handler", &self.data_handler.as_ref().map(|_| "Fn"))
            .field("lost_handler", &self.lost_handler.as_ref().map(|_| "Fn"))
            .field("perf_ring_pages", &self.perf_ring_pages)
            .field("skip_start", &self.skip_start)
            .finish()
    }
}

/// The thread of one perf map: waits on every CPU's buffer and the stop eventfd.
pub(super) struct PerfReader {
    pub(super) name: String,
    pub(super) buffers: Vec<(u32, PerfEventArrayBuffer<MapData>)>,
    pub(super) data: PerfDataHandler,
    pub(super) lost: Option<PerfLostHandler>,
    /// Where a record that wraps around the ring's end is made contiguous.
    pub(super) scratch: Vec<u8>,
}

impl PerfReader {
    pub(super) fn run(mut self, epoll: Epoll) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 32];
        loop {
            let ready = match epoll.wait(&mut events, -1) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("perf map `{}`: epoll_wait failed: {e}", self.name);
                    break;
                }
            };
            let mut stopping = false;
            for data in ready {
                if data == STOP {
                    stopping = true;
                } else {
                    if self.read(data as usize).is_break() {
                        return;
                    }
                }
            }
            if stopping {
                break;
            }
        }
        // Drain: the probes are detached (or the caller stops this reader on purpose).
        for i in 0..self.buffers.len() {
            if self.read(i).is_break() {
                return;
            }
        }
    }

    /// Hands the records of one ring to the handlers; breaks when a handler panicked.
    fn read(&mut self, index: usize) -> ControlFlow<()> {
        let Self {
            name,
            buffers,
            data,
            lost,
            scratch,
        } = self;
        let Some((cpu, buffer)) = buffers.get_mut(index) else {
            return ControlFlow::Continue(());
        };
        let cpu = *cpu;
        buffer.try_fold((), |(), event| {
            let handled = catch_unwind(AssertUnwindSafe(|| match event {
                PerfEvent::Sample { head, tail: [] } => data(cpu, head),
                PerfEvent::Sample { head, tail } => {
                    scratch.clear();
                    scratch.extend_from_slice(head);
                    scratch.extend_from_slice(tail);
                    data(cpu, scratch);
                }
                PerfEvent::Lost { count } => match lost {
                    Some(lost) => lost(cpu, count),
                    None => log::warn!("perf map `{name}`: {count} records lost on cpu {cpu}"),
                },
            }));
            handler_result(PERF, name, handled)
        })
    }
}
