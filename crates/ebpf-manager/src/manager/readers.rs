//! Starting and stopping the readers of perf maps and ring buffers by hand.

use super::{Manager, ManagerState};
use crate::Result;

impl Manager {
    /// Starts the reader of the perf map or ring buffer whose map is `map_name`: one declared
    /// with `skip_start`, one stopped by [`stop_reader`](Self::stop_reader), or one whose
    /// handler panicked. Does nothing when it already runs. Needs a started manager (running or paused).
    pub fn start_reader(&mut self, map_name: &str) -> Result<()> {
        self.expect(
            "start_reader",
            &[ManagerState::Running, ManagerState::Paused],
        )?;
        self.state.readers.start_one(map_name)
    }

    /// Stops the reader of the perf map or ring buffer whose map is `map_name`, after it has
    /// handled what its buffers hold (waiting up to
    /// [`Options::reader_stop_timeout`](crate::Options::reader_stop_timeout), else
    /// [`Error::ReaderStuck`](crate::Error::ReaderStuck)). Records the programs write while it is stopped are lost
    /// (perf maps do not report them). Does nothing when it is stopped already.
    pub fn stop_reader(&mut self, map_name: &str) -> Result<()> {
        self.expect(
            "stop_reader",
            &[ManagerState::Running, ManagerState::Paused],
        )?;
        self.state.readers.stop_one(map_name)
    }

    /// Stops every perf map and ring buffer reader at once (the Go `StopReaders`), each after
    /// handling what its buffers hold; the probes keep running and the maps stay open, so
    /// [`start_reader`](Self::start_reader) restarts a reader. Records written while a reader is
    /// stopped are lost. Needs a started manager (running or paused).
    pub fn stop_readers(&mut self) -> Result<()> {
        self.expect(
            "stop_readers",
            &[ManagerState::Running, ManagerState::Paused],
        )?;
        self.state.readers.stop()
    }

    /// Whether the reader of `map_name` runs (false once stopped, or once a handler of it
    /// panicked); `None` when the manager has not started or has no perf map or ring buffer of
    /// that name.
    pub fn is_reader_running(&self, map_name: &str) -> Option<bool> {
        self.state.readers.is_running(map_name)
    }
}

#[cfg(feature = "tokio")]
impl Manager {
    /// Takes the perf event array `perf_map.map_name` out of the loaded object and opens a
    /// ring per online CPU for reading from async code (cargo feature `tokio`; call it inside
    /// a tokio runtime with IO enabled). `perf_map` gives the ring settings
    /// (`perf_ring_pages`, `wakeup_events`, `watermark`); its handlers must be unset, since
    /// [`AsyncPerfMap::read`](crate::AsyncPerfMap::read) takes them. The map must not
    /// be declared in [`perf_maps`](Self::perf_maps), whose reader threads own their maps.
    ///
    /// Needs an initialized or started manager. From then on `get_map` returns `None` for it.
    pub fn async_perf_map(
        &mut self,
        perf_map: &crate::PerfMap,
    ) -> crate::Result<crate::maps::AsyncPerfMap> {
        use std::os::fd::AsFd;

        use crate::{maps::PERF, Error};

        let name = &perf_map.map_name;
        let invalid = |reason: &str| Error::InvalidReader {
            map: name.clone(),
            kind: PERF,
            reason: reason.into(),
        };
        if perf_map.data_handler.is_some() || perf_map.lost_handler.is_some() {
            return Err(invalid(
                "an async reader takes its handlers in read(): leave data_handler and lost_handler unset",
            ));
        }
        perf_map.check().map_err(|reason| invalid(&reason))?;
        let ebpf = self.async_source(name, PERF)?;
        let start = |e: std::io::Error| Error::ReaderStart {
            map: name.clone(),
            kind: PERF,
            source: Box::new(e),
        };
        // Set up through the object's map, and take it only once that worked.
        let Some(aya::maps::Map::PerfEventArray(map)) = ebpf.map(name) else {
            unreachable!("checked by async_source")
        };
        let map_fd = map.fd().as_fd();
        let rings = perf_map.open_rings(map_fd).map_err(start)?;
        let epoll = crate::maps::AsyncPerfMap::watch(&rings).map_err(|e| {
            crate::maps::clear_rings(map_fd, rings.iter().map(|(cpu, _)| *cpu));
            start(e)
        })?;
        let Some(aya::maps::Map::PerfEventArray(map)) = ebpf.take_map(name) else {
            unreachable!("checked by async_source")
        };
        Ok(crate::maps::AsyncPerfMap::new(
            name.clone(),
            map,
            rings,
            epoll,
        ))
    }

    /// Takes the ring buffer `map_name` out of the loaded object for reading from async code
    /// (cargo feature `tokio`; call it inside a tokio runtime with IO enabled). The map must not
    /// be declared in [`ring_buffers`](Self::ring_buffers), whose reader threads own their
    /// maps.
    ///
    /// Needs an initialized or started manager. From then on `get_map` returns `None` for it.
    pub fn async_ring_buffer(
        &mut self,
        map_name: &str,
    ) -> crate::Result<crate::maps::AsyncRingBuffer> {
        use std::os::fd::AsFd;

        use crate::{maps::RING, Error};

        let ebpf = self.async_source(map_name, RING)?;
        let Some(aya::maps::Map::RingBuf(map)) = ebpf.map(map_name) else {
            unreachable!("checked by async_source")
        };
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::ReaderStart {
            map: map_name.to_owned(),
            kind: RING,
            source,
        };
        // Set up through the object's map, and take it only once that worked.
        let size = map.info().map_err(|e| fail(Box::new(e)))?.max_entries() as usize;
        let ring = crate::maps::AsyncRingBuffer::watch(map.fd().as_fd(), size)
            .map_err(|e| fail(Box::new(e)))?;
        let Some(aya::maps::Map::RingBuf(map)) = ebpf.take_map(map_name) else {
            unreachable!("checked by async_source")
        };
        Ok(crate::maps::AsyncRingBuffer::new(
            map_name.to_owned(),
            map,
            ring,
            size,
        ))
    }

    /// The loaded object, once checked that it has an undeclared map `name` of `kind`'s type.
    fn async_source(&mut self, name: &str, kind: &'static str) -> crate::Result<&mut aya::Ebpf> {
        self.expect(
            "take an async reader from",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        let declared = self.perf_maps.iter().map(|p| &p.map_name);
        if declared
            .chain(self.ring_buffers.iter().map(|r| &r.map_name))
            .any(|n| n == name)
        {
            return Err(crate::Error::InvalidReader {
                map: name.to_owned(),
                kind,
                reason: "declared in the manager's perf_maps or ring_buffers, whose reader thread owns it: remove the declaration to read it from async code".into(),
            });
        }
        let ebpf = self
            .state
            .objects
            .get_mut(super::table::ObjectKey::MAIN)
            .expect("the main object lives until stop");
        crate::maps::check_map(ebpf, name, kind)?;
        // Before the map is taken, so that a call outside a runtime leaves it in place.
        crate::maps::check_runtime().map_err(|e| crate::Error::ReaderStart {
            map: name.to_owned(),
            kind,
            source: Box::new(e),
        })?;
        Ok(ebpf)
    }
}
