//! Maps: the readers of perf and ring buffers.

pub mod perf;
pub mod ringbuf;

pub use perf::PerfMap;
pub use ringbuf::RingBuffer;

use aya::Ebpf;

use crate::Result;

/// The running readers of a manager.
#[derive(Debug, Default)]
pub(crate) struct Readers {}

impl Readers {
    /// Starts the readers of `perf_maps` and `ring_buffers` that do not opt out, taking their
    /// maps from `ebpf`. Called by `start` before any probe attaches, so no event is missed.
    pub(crate) fn start(
        &mut self,
        _ebpf: &mut Ebpf,
        _perf_maps: &[PerfMap],
        _ring_buffers: &[RingBuffer],
    ) -> Result<()> {
        Ok(())
    }

    /// Stops every reader: called by `stop` after every probe is detached.
    pub(crate) fn stop(&mut self) {}
}
