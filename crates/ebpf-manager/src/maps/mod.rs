//! Maps: the readers of perf and ring buffers.
//!
//! Each declared [`PerfMap`] and [`RingBuffer`] gets one reader thread, which waits with epoll
//! on its buffers and on a stop eventfd: it sleeps until records arrive, and wakes at once
//! when it is stopped. Stopping drains what the buffers hold before it returns. The threads
//! and their start and stop are in `readers`; an object's aya-log ring buffer gets a reader
//! of the same kind that forwards its records to `log` (`aya_log`).

#[cfg(feature = "tokio")]
mod asynchronous;
mod aya_log;
pub(crate) mod perf;
mod readers;
pub(crate) mod ringbuf;
mod user_ringbuf;

#[cfg(feature = "tokio")]
pub(crate) use asynchronous::check_runtime;
#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncPerfMap, AsyncRingBuffer};
#[cfg(feature = "tokio")]
pub(crate) use perf::clear_rings;

pub use perf::{PerfDataHandler, PerfLostHandler, PerfMap, DEFAULT_PERF_RING_PAGES};
pub use ringbuf::{RingBuffer, RingDataHandler};
pub use user_ringbuf::{UserRingBuffer, UserRingBufferEntry};

pub(crate) use self::readers::Readers;

use std::{
    io,
    ops::ControlFlow,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{maps::Map, Ebpf};

use crate::{Error, Result};

pub(crate) const PERF: &str = "perf map";
pub(crate) const RING: &str = "ring buffer";
pub(crate) const AYA_LOG: &str = "aya-log ring buffer";
/// The epoll data of the stop eventfd.
pub(super) const STOP: u64 = u64::MAX;

/// What a reader thread counted, shared with the manager for
/// [`Manager::status`](crate::Manager::status); kept across restarts of the reader.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records handed to the data handler.
    pub(crate) received: AtomicU64,
    /// Records the kernel reported lost (perf maps: a CPU's buffer was full).
    pub(crate) lost: AtomicU64,
    /// Handler panics (each stopped the reader).
    pub(crate) handler_errors: AtomicU64,
    /// Ring buffers: the most bytes of records found at one wakeup.
    pub(crate) high_water: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The names of the object's maps, sorted, for messages.
pub(crate) fn map_names(ebpf: &Ebpf) -> String {
    let mut all: Vec<&str> = ebpf.maps().map(|(n, _)| n).collect();
    all.sort_unstable();
    all.join(", ")
}

/// Checks that `ebpf` has a map `name` of the type that `kind` reads.
pub(crate) fn check_map(ebpf: &Ebpf, name: &str, kind: &'static str) -> Result<()> {
    let map = ebpf.map(name).ok_or_else(|| Error::MapNotFound {
        map: name.to_owned(),
        kind,
        available: map_names(ebpf),
    })?;
    let (ok, expected) = match (kind, map) {
        (PERF, Map::PerfEventArray(_)) => (true, "BPF_MAP_TYPE_PERF_EVENT_ARRAY"),
        (PERF, _) => (false, "BPF_MAP_TYPE_PERF_EVENT_ARRAY"),
        (_, Map::RingBuf(_)) => (true, "BPF_MAP_TYPE_RINGBUF"),
        _ => (false, "BPF_MAP_TYPE_RINGBUF"),
    };
    if ok {
        return Ok(());
    }
    Err(Error::WrongMapType {
        map: name.to_owned(),
        kind,
        expected,
        found: type_name(map),
    })
}

/// The kind of `map` for messages, as aya names it: "PerfEventArray map".
pub(crate) fn type_name(map: &Map) -> String {
    format!("{map:?}")
        .split(['(', ' ', '{'])
        .next()
        .map_or_else(String::new, |variant| format!("{variant} map"))
}

/// A handler that panicked stops its reader (the panic hook has printed the panic already).
/// Inlined into the per-record loops: the common case is one test.
#[inline]
pub(super) fn handler_result(
    kind: &str,
    name: &str,
    handled: std::thread::Result<()>,
    errors: Option<&ReaderErrorHandler>,
    counters: &Counters,
) -> ControlFlow<()> {
    match handled {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => handler_panicked(kind, name, errors, counters),
    }
}

#[cold]
#[inline(never)]
fn handler_panicked(
    kind: &str,
    name: &str,
    errors: Option<&ReaderErrorHandler>,
    counters: &Counters,
) -> ControlFlow<()> {
    Counters::add(&counters.handler_errors, 1);
    log::error!(
        "{kind} `{name}`: a handler panicked; the reader stopped (start_reader starts it again)"
    );
    report(
        errors,
        &ReaderError::HandlerPanicked {
            map: name.to_owned(),
        },
    );
    ControlFlow::Break(())
}

/// Why a reader stopped, handed to its error handler (the Go `ErrChan` of perf maps and ring
/// buffers): [`PerfMap::error_handler`], [`RingBuffer::error_handler`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// A data or lost handler panicked: the reader stopped (the map keeps its records;
    /// [`Manager::start_reader`](crate::Manager::start_reader) starts it again).
    #[error("`{map}`: a handler panicked; the reader stopped (start_reader starts it again)")]
    HandlerPanicked {
        /// The map's name in the object.
        map: String,
    },
    /// Waiting for records failed: the reader stopped.
    #[error("`{map}`: waiting for records failed; the reader stopped")]
    Wait {
        /// The map's name in the object.
        map: String,
        /// The error of `epoll_wait`.
        #[source]
        source: io::Error,
    },
}

/// Receives the errors of a reader, on the reader's thread.
pub type ReaderErrorHandler = std::sync::Arc<dyn Fn(&ReaderError) + Send + Sync>;

/// Hands `error` to `errors`, if set; a handler that panics is logged, not propagated.
pub(super) fn report(errors: Option<&ReaderErrorHandler>, error: &ReaderError) {
    if let Some(handler) = errors {
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(error)));
        if handled.is_err() {
            log::error!("the error handler panicked on: {error}");
        }
    }
}

/// One reader of a [`Status`](crate::Status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ReaderStatus {
    /// The map it reads.
    pub map: String,
    /// "perf map", "ring buffer", or "aya-log ring buffer" (`AYA_LOGS` forwarded to `log`,
    /// see [`Options::skip_aya_log`](crate::Options::skip_aya_log)).
    pub kind: &'static str,
    /// Whether its thread runs.
    pub running: bool,
    /// Records handed to its data handler since `start`.
    pub received: u64,
    /// Records the kernel reported lost (perf maps: a CPU's buffer was full when a program
    /// wrote).
    pub lost: u64,
    /// Handler panics; each stopped the reader until `start_reader`.
    pub handler_errors: u64,
    /// Ring buffers: the size of the ring in bytes.
    pub ring_size: Option<u64>,
    /// Ring buffers: the most bytes of records waiting at one wakeup of the reader; near
    /// `ring_size`, the ring is about to overflow (programs then fail `bpf_ringbuf_reserve`).
    pub ring_high_water: Option<u64>,
}
