//! aya-log records to the `log` facade: the object's `AYA_LOGS` ring buffer, written by
//! programs built with aya-log-ebpf 0.2, read by aya-log 0.3's `EbpfLogger` on a reader
//! thread of the manager, like a declared ring buffer's.

use std::{
    ops::ControlFlow,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Mutex},
};

use aya::{maps::Map, Ebpf};

use super::{handler_result, Counters, AYA_LOG, STOP};
use crate::kernel::epoll::Epoll;

/// The map aya-log-ebpf writes its records to.
pub(crate) const MAP: &str = "AYA_LOGS";

/// Hands each record to the process's logger (`log::logger()`), counting it.
pub(super) struct Forward {
    counters: Arc<Counters>,
}

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        Counters::add(&self.counters.received, 1);
        // aya-log calls the logger directly: the `log` macros' level filter, applied here.
        if record.level() <= log::max_level() {
            log::logger().log(record);
        }
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

pub(super) type Logger = aya_log::EbpfLogger<Forward>;

/// Takes `AYA_LOGS` out of `ebpf` with a logger on it when it is a ring buffer. An
/// `AYA_LOGS` of another type (aya-log-ebpf 0.1 wrote to a perf event array) is left in place
/// with a warning: aya-log 0.3 reads ring buffers only.
pub(super) fn take(ebpf: &mut Ebpf, counters: &Arc<Counters>) -> crate::Result<Option<Logger>> {
    match ebpf.map(MAP) {
        None => return Ok(None),
        Some(Map::RingBuf(_)) => {}
        Some(other) => {
            log::warn!(
                "the object's `{MAP}` is a {}, not a ring buffer: it was built with aya-log-ebpf \
                 0.1, whose records aya-log 0.3 cannot read; they are not forwarded to `log` \
                 (build the programs with aya-log-ebpf 0.2)",
                super::type_name(other)
            );
            return Ok(None);
        }
    }
    let forward = Forward {
        counters: counters.clone(),
    };
    aya_log::EbpfLogger::init_with_logger(ebpf, forward)
        .map(Some)
        .map_err(|e| crate::Error::ReaderStart {
            map: MAP.to_owned(),
            kind: AYA_LOG,
            source: Box::new(e),
        })
}

/// The thread of the aya-log reader: waits on the ring and the stop eventfd, and flushes the
/// records to `log` each time the ring has some.
pub(super) struct AyaLogReader {
    pub(super) logger: Arc<Mutex<Logger>>,
    pub(super) counters: Arc<Counters>,
}

impl AyaLogReader {
    pub(super) fn run(self, epoll: Epoll) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        loop {
            if self.flush().is_break() {
                return;
            }
            match epoll.wait(&mut events, -1) {
                Ok(mut ready) => {
                    if ready.any(|d| d == STOP) {
                        break;
                    }
                }
                Err(e) => {
                    log::error!(
                        "{AYA_LOG} `{MAP}`: epoll_wait failed: {}",
                        crate::error::chain(&e)
                    );
                    return;
                }
            }
        }
        let _ = self.flush();
    }

    /// Forwards every record the ring holds. aya-log panics on a record it cannot decode (one
    /// not written by aya-log-ebpf 0.2): that stops the reader, as a panicking handler does.
    fn flush(&self) -> ControlFlow<()> {
        let mut logger = self.logger.lock().unwrap_or_else(|p| p.into_inner());
        let handled = catch_unwind(AssertUnwindSafe(|| logger.flush()));
        handler_result(AYA_LOG, MAP, handled, None, &self.counters)
    }
}
