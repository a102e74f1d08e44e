//! Async readers (feature `tokio`): `Manager::async_perf_map` and `async_ring_buffer`, read
//! with tokio's `AsyncFd` on a current-thread runtime whose thread also produces the records.

use std::{future::Future, time::Duration};

use ebpf_manager::{CleanupType, Error, ManagerState, PerfMap};
use integration_tests::{readers::*, *};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

#[test]
fn readers_async_ring_buffer_reads_every_record_and_drains_after_stop() {
    let mut m = manager(&["ring_emit"], gettid(), vec![], vec![]);
    m.start().unwrap();
    block_on(async {
        let mut ring = m.async_ring_buffer("ring_events").unwrap();
        assert_eq!(ring.map_name(), "ring_events");
        assert!(
            m.get_map("ring_events").is_none(),
            "the reader took its map"
        );
        const N: usize = 500;
        emit(N);
        let mut seqs = Vec::new();
        while seqs.len() < N {
            let read = tokio::time::timeout(WAIT, ring.read(|d| seqs.push(parse(d).seq)))
                .await
                .expect("records within the time limit")
                .unwrap();
            assert!(read >= 1);
        }
        assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>());
        // What comes just before the stop is taken by drain.
        emit(3);
        m.stop(CleanupType::CleanAll).unwrap();
        let mut rest = 0;
        assert_eq!(ring.drain(|d| rest += d.len()), 3);
        assert_eq!(rest, 3 * RECORD);
    });
}

#[test]
fn readers_async_perf_map_reads_with_batched_wakeups() {
    let cpu = pin_to_current_cpu();
    let mut m = manager(&["perf_emit"], gettid(), vec![], vec![]);
    let prog_ids = program_ids(&m, &[probe("perf_emit", "perf_emit").id()]);
    let map_id = match m.get_map("perf_events").unwrap() {
        aya::maps::Map::PerfEventArray(d) => d.info().unwrap().id(),
        other => panic!("{other:?}"),
    };
    m.start().unwrap();
    block_on(async {
        let mut perf = m
            .async_perf_map(&PerfMap {
                map_name: "perf_events".into(),
                wakeup_events: 20,
                ..Default::default()
            })
            .unwrap();
        let mut records = Vec::new();
        emit(10);
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            perf.read(|c, d| records.push((c, d.len())), |_, _| {}),
        )
        .await;
        assert!(early.is_err(), "woken for 10 records of 20: {early:?}");
        emit(10);
        while records.len() < 20 {
            tokio::time::timeout(
                WAIT,
                perf.read(|c, d| records.push((c, d.len())), |_, n| panic!("{n} lost")),
            )
            .await
            .expect("the 20th record wakes the reader")
            .unwrap();
        }
        assert_eq!(records, vec![(cpu, PERF_RECORD); 20]);
        emit(4);
        m.stop(CleanupType::CleanAll).unwrap();
        assert_eq!(perf.drain(|_, _| {}, |_, _| {}), 4);
    });
    // The reader held the map past stop; dropped with the runtime's future, it is gone.
    drop(m);
    assert_unloaded(&prog_ids);
    assert_maps_unloaded(&[map_id]);
}

#[test]
fn readers_async_bad_requests_are_typed_errors_that_leave_the_map() {
    let seen = std::sync::Arc::new(Seen::default());
    let mut m = manager(
        &["ring_emit"],
        gettid(),
        vec![seen.perf_map("perf_events")],
        vec![],
    );
    // Outside a runtime: an error, and the map stays in the object.
    match m.async_ring_buffer("ring_events").unwrap_err() {
        Error::ReaderStart { map, source, .. } => {
            assert_eq!(map, "ring_events");
            assert!(source.to_string().contains("no tokio runtime"), "{source}");
        }
        other => panic!("expected ReaderStart, got {other:?}"),
    }
    assert!(m.get_map("ring_events").is_some());
    block_on(async {
        match m.async_perf_map(&seen.perf_map("perf_events")).unwrap_err() {
            Error::InvalidReader { reason, .. } => {
                assert!(reason.contains("leave data_handler"), "{reason}")
            }
            other => panic!("expected InvalidReader, got {other:?}"),
        }
        let declared = PerfMap {
            map_name: "perf_events".into(),
            ..Default::default()
        };
        match m.async_perf_map(&declared).unwrap_err() {
            Error::InvalidReader { reason, .. } => {
                assert!(reason.contains("declared in the manager"), "{reason}")
            }
            other => panic!("expected InvalidReader, got {other:?}"),
        }
        match m.async_ring_buffer("counts").unwrap_err() {
            Error::WrongMapType { map, expected, .. } => {
                assert_eq!((map.as_str(), expected), ("counts", "BPF_MAP_TYPE_RINGBUF"))
            }
            other => panic!("expected WrongMapType, got {other:?}"),
        }
        match m.async_ring_buffer("nope").unwrap_err() {
            Error::MapNotFound { map, available, .. } => {
                assert_eq!(map, "nope");
                assert!(available.contains("ring_events"), "{available}");
            }
            other => panic!("expected MapNotFound, got {other:?}"),
        }
        m.stop(CleanupType::CleanAll).unwrap();
        match m.async_ring_buffer("ring_events").unwrap_err() {
            Error::InvalidState { state, .. } => assert_eq!(state, ManagerState::Stopped),
            other => panic!("expected InvalidState, got {other:?}"),
        }
    });
}
