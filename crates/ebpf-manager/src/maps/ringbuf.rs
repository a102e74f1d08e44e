//! [`RingBuffer`]: a `BPF_MAP_TYPE_RINGBUF` (Linux 5.8) and its reader.

use std::{
    fmt,
    ops::ControlFlow,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::Duration,
};

use super::{handler_result, RING, STOP};
use crate::kernel::{
    epoll::Epoll,
    ringbuf::{RingConsumer, Stopped},
};

/// Receives each record of a ring buffer. The bytes borrow the kernel's ring: no allocation per
/// record; the record is released to the kernel when the handler returns.
pub type RingDataHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A ring buffer of the object (Linux 5.8), and how to read it.
///
/// From [`Manager::start`](crate::Manager::start) to [`Manager::stop`](crate::Manager::stop), one
/// thread per `RingBuffer` waits on the map's fd (epoll) and calls
/// [`data_handler`](Self::data_handler) for each record. `stop` detaches the probes first, then
/// drains what the ring still holds before it returns. A ring buffer never reports losses to
/// user space: `bpf_ringbuf_output` / `bpf_ringbuf_reserve` fail in the program instead.
///
/// A handler runs on the reader's thread; if it panics, the reader stops (the panic is
/// caught and logged) and [`Manager::start_reader`](crate::Manager::start_reader) starts it
/// again.
///
/// The reader takes the map out of the loaded object: from `start` on,
/// [`Manager::get_map`](crate::Manager::get_map) returns `None` for it.
///
/// ```no_run
/// use std::sync::Arc;
/// use ebpf_manager::RingBuffer;
///
/// let events = RingBuffer {
///     map_name: "ring_events".into(),
///     data_handler: Some(Arc::new(|data: &[u8]| println!("{} bytes", data.len()))),
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RingBuffer {
    /// The map's name in the object.
    pub map_name: String,
    /// Called for each record (required: `start` fails without it), on the reader's own
    /// thread. A handler may take its time and may drop the manager, but must not wait on
    /// the thread that stops it (a lock it holds, a channel it drains after `stop`): `stop`
    /// waits at most [`Options::reader_stop_timeout`](crate::Options::reader_stop_timeout),
    /// then returns [`Error::ReaderStuck`](crate::Error::ReaderStuck).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub data_handler: Option<RingDataHandler>,
    /// Receives the reader's errors (a handler that panicked, a failed wait), as the Go
    /// `RingBufferOptions.ErrChan`; they are logged either way.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub error_handler: Option<super::ReaderErrorHandler>,
    /// Also look for records every `poll_timeout`, without waiting for the kernel's
    /// notification: for programs that write with `BPF_RB_NO_WAKEUP`. `None` (the default)
    /// waits for notifications only.
    #[cfg_attr(feature = "serde", serde(with = "crate::codec::option_duration"))]
    pub poll_timeout: Option<Duration>,
    /// Do not start this reader in `start`: start it later with
    /// [`Manager::start_reader`](crate::Manager::start_reader). Its map is taken all the same.
    pub skip_start: bool,
}

impl fmt::Debug for RingBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuffer")
            .field("map_name", &self.map_name)
            .field("data_handler", &self.data_handler.as_ref().map(|_| "Fn"))
            .field("error_handler", &self.error_handler.as_ref().map(|_| "Fn"))
            .field("poll_timeout", &self.poll_timeout)
            .field("skip_start", &self.skip_start)
            .finish()
    }
}

/// The thread of one ring buffer: waits on the ring and the stop eventfd.
pub(super) struct RingReader {
    pub(super) name: String,
    pub(super) ring: RingConsumer,
    pub(super) data: RingDataHandler,
    pub(super) errors: Option<super::ReaderErrorHandler>,
    pub(super) timeout: i32,
    pub(super) size: usize,
    pub(super) counters: std::sync::Arc<super::Counters>,
}

impl RingReader {
    pub(super) fn run(mut self, epoll: Epoll) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        loop {
            // At most one ring's worth between checks of the stop eventfd, so that a producer
            // faster than the handler cannot keep stop_reader waiting; what is left keeps the
            // (level-triggered) ring fd ready.
            if self.drain(self.size).is_break() {
                return;
            }
            match epoll.wait(&mut events, self.timeout) {
                Ok(mut ready) => {
                    if ready.any(|d| d == STOP) {
                        break;
                    }
                }
                Err(e) => {
                    log::error!(
                        "ring buffer `{}`: epoll_wait failed: {}",
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
            }
        }
        // Drain what is there, at most one ring's worth in case the producer still runs.
        let _ = self.drain(self.size);
    }

    /// Hands up to `limit` bytes of records to the handler; breaks when it panicked.
    fn drain(&mut self, limit: usize) -> ControlFlow<()> {
        let Self {
            name,
            ring,
            data,
            errors,
            counters,
            ..
        } = self;
        counters
            .high_water
            .fetch_max(ring.pending(), std::sync::atomic::Ordering::Relaxed);
        // Counted once per drain, not per record: a locked add per record waited for the
        // store buffer each time and was two thirds of the reader's time (perf annotate).
        let (handed, stopped) = ring.read(limit, |record| {
            let handled = catch_unwind(AssertUnwindSafe(|| data(record)));
            handler_result(RING, name, handled, errors.as_ref(), counters)
        });
        super::Counters::add(&counters.received, handed as u64);
        match stopped {
            Stopped::Broke => ControlFlow::Break(()),
            Stopped::Empty | Stopped::Busy | Stopped::Limit => ControlFlow::Continue(()),
        }
    }
}
