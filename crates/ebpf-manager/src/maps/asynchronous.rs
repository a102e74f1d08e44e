//! Async readers (cargo feature `tokio`): a perf map or ring buffer read from async code
//! through tokio's `AsyncFd`, instead of a reader thread of the manager.

use std::{
    io,
    ops::ControlFlow,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
};

use aya::maps::MapData;
use tokio::io::{unix::AsyncFd, Interest};

use super::perf::clear_rings;
use crate::kernel::{
    epoll::Epoll,
    perf_ring::{PerfRing, Record},
    ringbuf::{RingConsumer, Stopped},
};

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

/// An error, not tokio's panic, outside a runtime.
pub(crate) fn check_runtime() -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other(
            "no tokio runtime: call this inside one, with IO enabled",
        )),
    }
}

/// Registers `inner` with the current tokio runtime for readability.
fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    check_runtime()?;
    // SAFETY: `T` is an Epoll or a RingConsumer, which own their fd for their whole life and always
    // return that same fd from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// A perf event array read from async code, made by
/// [`Manager::async_perf_map`](crate::Manager::async_perf_map).
///
/// It owns the map and a ring per online CPU: it keeps working after the manager stops, so
/// that [`drain`](Self::drain) can take what the programs wrote before they were detached.
/// Dropping it clears the map's entries and closes the rings.
///
/// ```no_run
/// # async fn run(manager: &mut ebpf_manager::Manager) -> Result<(), Box<dyn std::error::Error>> {
/// use ebpf_manager::PerfMap;
///
/// let mut events = manager.async_perf_map(&PerfMap {
///     map_name: "perf_events".into(),
///     ..Default::default()
/// })?;
/// loop {
///     events
///         .read(
///             |cpu, data| println!("cpu {cpu}: {} bytes", data.len()),
///             |cpu, lost| eprintln!("cpu {cpu}: {lost} lost"),
///         )
///         .await?;
/// }
/// # }
/// ```
pub struct AsyncPerfMap {
    name: String,
    map: MapData,
    rings: Vec<(u32, PerfRing)>,
    /// An epoll instance over the rings: one fd for tokio to watch.
    epoll: AsyncFd<Epoll>,
    scratch: Vec<u8>,
}

impl AsyncPerfMap {
    /// An epoll instance over `rings`, registered with the current tokio runtime.
    pub(crate) fn watch(rings: &[(u32, PerfRing)]) -> io::Result<AsyncFd<Epoll>> {
        let epoll = Epoll::new()?;
        for (i, (_, ring)) in rings.iter().enumerate() {
            epoll.add(ring.as_fd().as_raw_fd(), i as u64)?;
        }
        register(epoll)
    }

    pub(crate) fn new(
        name: String,
        map: MapData,
        rings: Vec<(u32, PerfRing)>,
        epoll: AsyncFd<Epoll>,
    ) -> Self {
        Self {
            name,
            map,
            rings,
            epoll,
            scratch: Vec::new(),
        }
    }

    /// The map's name in the object.
    pub fn map_name(&self) -> &str {
        &self.name
    }

    /// Waits until records or loss reports arrive, then hands every one there is to `data`
    /// (the CPU and the record's bytes, padded as in [`PerfDataHandler`](crate::PerfDataHandler))
    /// and `lost` (the CPU and a count). Returns how many records and reports it handled (at
    /// least 1). Cancel-safe: a record is handled once, by the call that takes it.
    pub async fn read(
        &mut self,
        mut data: impl FnMut(u32, &[u8]),
        mut lost: impl FnMut(u32, u64),
    ) -> io::Result<usize> {
        loop {
            let mut guard = self.epoll.readable().await?;
            // Take the pending notifications of the inner epoll, so that it reports only new
            // ones after this drain.
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
            while guard.get_inner().wait(&mut events, 0)?.count() == 8 {}
            let handled = drain_rings(&mut self.rings, &mut self.scratch, &mut data, &mut lost);
            if handled > 0 {
                return Ok(handled);
            }
            guard.clear_ready();
        }
    }

    /// Hands what the rings hold now to `data` and `lost`, without waiting; returns how many
    /// records and reports it handled. Call it after the manager stopped to take the rest.
    pub fn drain(
        &mut self,
        mut data: impl FnMut(u32, &[u8]),
        mut lost: impl FnMut(u32, u64),
    ) -> usize {
        drain_rings(&mut self.rings, &mut self.scratch, &mut data, &mut lost)
    }
}

fn drain_rings(
    rings: &mut [(u32, PerfRing)],
    scratch: &mut Vec<u8>,
    data: &mut impl FnMut(u32, &[u8]),
    lost: &mut impl FnMut(u32, u64),
) -> usize {
    let mut handled = 0;
    for (cpu, ring) in rings {
        let cpu = *cpu;
        let _ = ring.read(scratch, |record| {
            handled += 1;
            match record {
                Record::Sample(bytes) => data(cpu, bytes),
                Record::Lost(count) => lost(cpu, count),
            }
            ControlFlow::Continue(())
        });
    }
    handled
}

impl std::fmt::Debug for AsyncPerfMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncPerfMap")
            .field("map_name", &self.name)
            .field(
                "cpus",
                &self.rings.iter().map(|(cpu, _)| cpu).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Drop for AsyncPerfMap {
    fn drop(&mut self) {
        clear_rings(
            self.map.fd().as_fd(),
            self.rings.iter().map(|(cpu, _)| *cpu),
        );
    }
}

/// A ring buffer (Linux 5.8) read from async code, made by
/// [`Manager::async_ring_buffer`](crate::Manager::async_ring_buffer).
///
/// It owns the map: it keeps working after the manager stops, so that
/// [`drain`](Self::drain) can take what the programs wrote before they were detached.
///
/// ```no_run
/// # async fn run(manager: &mut ebpf_manager::Manager) -> Result<(), Box<dyn std::error::Error>> {
/// let mut events = manager.async_ring_buffer("ring_events")?;
/// loop {
///     events.read(|data| println!("{} bytes", data.len())).await?;
/// }
/// # }
/// ```
pub struct AsyncRingBuffer {
    name: String,
    ring: AsyncFd<RingConsumer>,
    size: usize,
    /// Kept so that the map lives as long as the reader.
    _map: MapData,
}

impl AsyncRingBuffer {
    /// The ring buffer `map` (of `size` bytes) mapped, and registered with the current tokio
    /// runtime.
    pub(crate) fn watch(map: BorrowedFd<'_>, size: usize) -> io::Result<AsyncFd<RingConsumer>> {
        register(RingConsumer::new(map, size)?)
    }

    pub(crate) fn new(
        name: String,
        map: MapData,
        ring: AsyncFd<RingConsumer>,
        size: usize,
    ) -> Self {
        Self {
            name,
            ring,
            size,
            _map: map,
        }
    }

    /// The map's name in the object.
    pub fn map_name(&self) -> &str {
        &self.name
    }

    /// Waits until records arrive, then hands those there are (at most one ring's worth) to
    /// `data`; returns how many (at least 1). Cancel-safe: a record is handled once, by the
    /// call that takes it.
    ///
    /// It waits for the kernel's notifications: records a program writes with
    /// `BPF_RB_NO_WAKEUP` are taken only along with later ones, or by [`drain`](Self::drain).
    pub async fn read(&mut self, mut data: impl FnMut(&[u8])) -> io::Result<usize> {
        let batch = self.size;
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let (handled, stopped) = read_ring(guard.get_inner_mut(), &mut data, batch);
            if handled > 0 {
                return Ok(handled);
            }
            // A batch of discarded records only: more may follow, with no notification to come.
            if stopped != Stopped::Limit {
                guard.clear_ready();
            }
        }
    }

    /// Hands what the ring holds now (at most one ring's worth, in case a program still writes)
    /// to `data`, without waiting; returns how many records. Call it after the manager stopped
    /// to take the rest.
    pub fn drain(&mut self, mut data: impl FnMut(&[u8])) -> usize {
        read_ring(self.ring.get_mut(), &mut data, self.size).0
    }
}

impl std::fmt::Debug for AsyncRingBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRingBuffer")
            .field("map_name", &self.name)
            .finish()
    }
}

/// Hands up to `max_bytes` of records to `data` (a bound, so that a busy ring does not keep the
/// task from yielding).
fn read_ring(
    ring: &mut RingConsumer,
    data: &mut impl FnMut(&[u8]),
    max_bytes: usize,
) -> (usize, Stopped) {
    ring.read(max_bytes, |record| {
        data(record);
        ControlFlow::Continue(())
    })
}
