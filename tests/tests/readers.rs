//! Perf maps and ring buffers: readers started by `start`, stopped (and drained) by `stop`.
//!
//! ebpf-fixtures/src/readers.bpf.c emits one 56-byte record per getppid(2) of the thread named
//! by `filter_tid`, to `perf_events` (perf_emit) or `ring_events` (ring_emit), and counts in
//! `counts` what it produced and what the kernel refused.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use ebpf_manager::{CleanupType, Error, ManagerState, PerfMap, Probe, ProbeState, RingBuffer};
use integration_tests::{readers::*, *};

#[test]
fn readers_perf_data_arrives_with_its_cpu() {
    let cpu = pin_to_current_cpu();
    let seen = Arc::new(Seen::default());
    let mut m = manager(
        &["perf_emit"],
        gettid(),
        vec![seen.perf_map("perf_events")],
        vec![],
    );
    let prog_ids = program_ids(&m, &[probe("perf_emit", "perf_emit").id()]);
    let map_ids = [map_id(&m, "perf_events")];
    m.start().unwrap();
    assert!(
        m.get_map("perf_events").is_none(),
        "the reader takes its map"
    );
    assert_eq!(m.is_reader_running("perf_events"), Some(true));
    const N: usize = 200;
    emit(N);
    assert!(
        seen.wait_for(WAIT, |s| s.records.len() >= N),
        "received {} of {N}",
        seen.received()
    );
    assert_eq!(read_slot(&m, "counts", PERF_PRODUCED), N as u64);
    assert_eq!(read_slot(&m, "counts", PERF_FAILED), 0);
    m.stop(CleanupType::CleanAll).unwrap();
    let state = seen.state.lock().unwrap();
    assert_eq!(state.records.len(), N);
    assert_eq!(state.lost, 0);
    for (i, (handler_cpu, record, len)) in state.records.iter().enumerate() {
        assert_eq!(*handler_cpu, cpu, "record {i} came from another cpu");
        assert_eq!(record.cpu, cpu, "record {i}");
        assert_eq!(record.seq, i as u64, "records in order");
        assert_eq!(record.tid, gettid());
        assert_eq!(
            *len, PERF_RECORD,
            "a {RECORD}-byte record and the kernel's padding"
        );
    }
    assert_unloaded(&prog_ids);
    assert_maps_unloaded(&map_ids);
}

#[test]
fn readers_perf_lost_records_are_reported_when_the_buffer_is_tiny_and_the_consumer_slow() {
    pin_to_current_cpu();
    let seen = Arc::new(Seen::default());
    // The handler blocks on its first record until the burst is over.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let perf = {
        let data = Arc::clone(&seen);
        let gate = Arc::clone(&gate);
        PerfMap {
            data_handler: Some(Arc::new(move |cpu, bytes: &[u8]| {
                let (open, cv) = &*gate;
                let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
                data.record(cpu, bytes);
            })),
            perf_ring_pages: 1,
            ..seen.perf_map("perf_events")
        }
    };
    let mut m = manager(&["perf_emit"], gettid(), vec![perf], vec![]);
    m.start().unwrap();
    const BURST: usize = 2000;
    emit(BURST);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    // The kernel reports a loss when it next writes to that ring: emit one record at a time
    // until the accounting closes (the last record received means every loss was reported).
    let mut closed = false;
    for _ in 0..2000 {
        let produced = read_slot(&m, "counts", PERF_PRODUCED);
        if seen.received() as u64 + seen.lost_count() == produced {
            closed = true;
            break;
        }
        let before = seen.received();
        emit(1);
        seen.wait_for(Duration::from_millis(200), |s| s.records.len() > before);
    }
    let produced = read_slot(&m, "counts", PERF_PRODUCED);
    let failed = read_slot(&m, "counts", PERF_FAILED);
    let (received, lost) = (seen.received() as u64, seen.lost_count());
    assert!(
        closed,
        "received {received} + lost {lost} != produced {produced}"
    );
    assert!(lost > 0, "a 1-page ring took {BURST} records without loss");
    assert_eq!(lost, failed, "the kernel reports every record it refused");
    // The status counts what the handlers saw.
    let status = settled_status(&m, |r| (r.received, r.lost) == (received, lost));
    assert_eq!(status.len(), 1);
    let r = &status[0];
    assert_eq!(
        (r.map.as_str(), r.kind, r.running),
        ("perf_events", "perf map", true)
    );
    assert_eq!((r.received, r.lost, r.handler_errors), (received, lost, 0));
    assert_eq!((r.ring_size, r.ring_high_water), (None, None));
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(seen.received() as u64 + seen.lost_count(), produced);
}

/// The readers' status once `done` holds for the first, or after 5 s. A reader publishes its
/// counts once per ring read, after that read's handlers ran: for a moment they may trail what
/// the handlers saw (seen on 5.10 under TCG).
fn settled_status(
    m: &ebpf_manager::Manager,
    done: impl Fn(&ebpf_manager::ReaderStatus) -> bool,
) -> Vec<ebpf_manager::ReaderStatus> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = m.status().readers;
        if status.first().is_some_and(&done) || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn readers_ring_buffer_receives_every_record() {
    let seen = Arc::new(Seen::default());
    let mut m = manager(
        &["ring_emit"],
        gettid(),
        vec![],
        vec![seen.ring_buffer("ring_events")],
    );
    let prog_ids = program_ids(&m, &[probe("ring_emit", "ring_emit").id()]);
    let map_ids = [map_id(&m, "ring_events")];
    m.start().unwrap();
    assert!(m.get_map("ring_events").is_none());
    const N: usize = 1000;
    emit(N);
    assert!(
        seen.wait_for(WAIT, |s| s.records.len() >= N),
        "received {} of {N}",
        seen.received()
    );
    assert_eq!(read_slot(&m, "counts", RING_PRODUCED), N as u64);
    assert_eq!(read_slot(&m, "counts", RING_FAILED), 0);
    let status = settled_status(&m, |r| r.received == N as u64);
    let r = &status[0];
    assert_eq!((r.kind, r.received, r.lost), ("ring buffer", N as u64, 0));
    let (size, high) = (r.ring_size.unwrap(), r.ring_high_water.unwrap());
    // Each record takes its 8-byte header and RECORD bytes rounded up to 8.
    assert!(
        high >= (8 + RECORD as u64).next_multiple_of(8) && high <= size,
        "high water {high} of {size}"
    );
    m.stop(CleanupType::CleanAll).unwrap();
    let state = seen.state.lock().unwrap();
    assert_eq!(state.records.len(), N);
    for (i, (_, record, len)) in state.records.iter().enumerate() {
        assert_eq!(record.seq, i as u64, "records in order");
        assert_eq!(*len, RECORD);
    }
    assert_unloaded(&prog_ids);
    assert_maps_unloaded(&map_ids);
}

#[test]
fn readers_skip_start_then_start_reader_receives() {
    let perf_seen = Arc::new(Seen::default());
    let ring_seen = Arc::new(Seen::default());
    let mut m = manager(
        &["perf_emit", "ring_emit"],
        gettid(),
        vec![PerfMap {
            skip_start: true,
            ..perf_seen.perf_map("perf_events")
        }],
        vec![RingBuffer {
            skip_start: true,
            ..ring_seen.ring_buffer("ring_events")
        }],
    );
    match m.start_reader("ring_events").unwrap_err() {
        Error::InvalidState { state, .. } => assert_eq!(state, ManagerState::Initialized),
        other => panic!("{other:?}"),
    }
    m.start().unwrap();
    assert!(
        m.get_map("perf_events").is_none(),
        "taken even when skipped"
    );
    // The Go GetPerfMap / GetRingBuffer: the declarations, by map name.
    assert!(m.get_perf_map("perf_events").is_some_and(|p| p.skip_start));
    assert!(m
        .get_ring_buffer("ring_events")
        .is_some_and(|r| r.skip_start));
    assert!(m.get_perf_map("ring_events").is_none());
    assert!(m.get_ring_buffer("nope").is_none());
    assert_eq!(m.is_reader_running("perf_events"), Some(false));
    assert_eq!(m.is_reader_running("ring_events"), Some(false));
    // No perf ring is open yet: the program's output fails. The ring buffer keeps its records.
    emit(10);
    assert_eq!(read_slot(&m, "counts", PERF_FAILED), 10);
    m.start_reader("ring_events").unwrap();
    m.start_reader("perf_events").unwrap();
    m.start_reader("perf_events").unwrap(); // already running: nothing to do
    assert_eq!(m.is_reader_running("perf_events"), Some(true));
    assert!(ring_seen.wait_for(WAIT, |s| s.records.len() >= 10));
    emit(10);
    assert!(perf_seen.wait_for(WAIT, |s| s.records.len() >= 10));
    assert!(ring_seen.wait_for(WAIT, |s| s.records.len() >= 20));

    // Stopped by hand, then started again: the ring buffer keeps what came meanwhile.
    m.stop_reader("ring_events").unwrap();
    assert_eq!(m.is_reader_running("ring_events"), Some(false));
    emit(5);
    assert_eq!(ring_seen.received(), 20);
    m.start_reader("ring_events").unwrap();
    assert!(ring_seen.wait_for(WAIT, |s| s.records.len() >= 25));

    // A stopped perf reader leaves no ring in the map: the program's output fails, visibly.
    m.stop_reader("perf_events").unwrap();
    emit(5);
    assert_eq!(read_slot(&m, "counts", PERF_FAILED), 15);
    m.start_reader("perf_events").unwrap();

    // All readers at once (the Go `StopReaders`): the probes keep running, the maps stay.
    m.stop_readers().unwrap();
    assert_eq!(m.is_reader_running("perf_events"), Some(false));
    assert_eq!(m.is_reader_running("ring_events"), Some(false));
    m.start_reader("perf_events").unwrap();
    m.start_reader("ring_events").unwrap();
    assert_eq!(m.is_reader_running("ring_events"), Some(true));

    match m.start_reader("nope").unwrap_err() {
        Error::ReaderNotFound { map, declared } => {
            assert_eq!(map, "nope");
            assert!(declared.contains("perf_events") && declared.contains("ring_events"));
        }
        other => panic!("{other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
    // Perf: 10 refused before the reader started, 10 received, 5 received while the ring
    // reader was stopped, 5 refused while the perf reader was. Ring: all 30.
    assert_eq!(perf_seen.received(), 15);
    assert_eq!(ring_seen.received(), 30);
    assert_eq!(m.is_reader_running("ring_events"), None);
}

#[test]
fn readers_stop_while_events_flow_is_prompt_and_accounts_for_everything() {
    let perf_seen = Arc::new(Seen::default());
    let ring_seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let emitted = Arc::new(AtomicU64::new(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let producer = {
        let stop = Arc::clone(&stop);
        let emitted = Arc::clone(&emitted);
        std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                emit(1);
                emitted.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let tid = tid_rx.recv().unwrap();
    let mut m = manager(
        &["perf_emit", "ring_emit"],
        tid,
        vec![perf_seen.perf_map("perf_events")],
        vec![ring_seen.ring_buffer("ring_events")],
    );
    // Keep `counts` alive past stop, to read what was produced.
    let counts_id = match m.get_map("counts").unwrap() {
        aya::maps::Map::Array(d) => d.info().unwrap().id(),
        other => panic!("{other:?}"),
    };
    let counts = aya::maps::Array::<_, u64>::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_id(counts_id).unwrap(),
    ))
    .unwrap();
    m.start().unwrap();
    assert!(perf_seen.wait_for(WAIT, |s| s.records.len() >= 1000));
    assert!(ring_seen.wait_for(WAIT, |s| s.records.len() >= 1000));
    let started = Instant::now();
    m.stop(CleanupType::CleanAll).unwrap();
    let took = started.elapsed();
    let at_stop = emitted.load(Ordering::Relaxed);
    // Still flowing: the producer keeps calling getppid after the stop.
    while emitted.load(Ordering::Relaxed) < at_stop + 100 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert!(took < Duration::from_secs(10), "stop took {took:?}");

    let get = |slot| counts.get(&slot, 0).unwrap();
    let (perf_produced, perf_failed) = (get(PERF_PRODUCED), get(PERF_FAILED));
    let (ring_produced, ring_failed) = (get(RING_PRODUCED), get(RING_FAILED));
    let (perf_received, perf_lost) = (perf_seen.received() as u64, perf_seen.lost_count());
    assert_eq!(
        perf_received + perf_failed,
        perf_produced,
        "perf: received {perf_received}, refused {perf_failed} (reported lost {perf_lost})"
    );
    // A loss is reported when the kernel next writes to that ring: the last ones may not be.
    assert!(perf_lost <= perf_failed);
    assert_eq!(ring_seen.received() as u64 + ring_failed, ring_produced);
    for (name, seen) in [("perf", &perf_seen), ("ring", &ring_seen)] {
        let state = seen.state.lock().unwrap();
        let mut seqs: Vec<u64> = state.records.iter().map(|(_, r, _)| r.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), state.records.len(), "{name}: a record twice");
    }
}

#[test]
fn readers_wrong_map_name_or_type_is_a_typed_error_and_start_undoes_everything() {
    let seen = Arc::new(Seen::default());
    let cases: Vec<(Vec<PerfMap>, Vec<RingBuffer>)> = vec![
        (vec![seen.perf_map("nope")], vec![]),
        (vec![seen.perf_map("ring_events")], vec![]),
        (vec![], vec![seen.ring_buffer("counts")]),
        (
            vec![PerfMap {
                data_handler: None,
                ..seen.perf_map("perf_events")
            }],
            vec![],
        ),
        (
            vec![PerfMap {
                perf_ring_pages: 3,
                ..seen.perf_map("perf_events")
            }],
            vec![],
        ),
        // A good reader before a bad one: the good one is not left running.
        (
            vec![seen.perf_map("perf_events")],
            vec![seen.ring_buffer("perf_events")],
        ),
    ];
    for (i, (perf_maps, ring_buffers)) in cases.into_iter().enumerate() {
        let mut m = manager(&["perf_emit"], gettid(), perf_maps, ring_buffers);
        let id = probe("perf_emit", "perf_emit").id();
        let prog_ids = program_ids(&m, std::slice::from_ref(&id));
        let err = m.start().unwrap_err();
        let message = err.to_string();
        match (i, &err) {
            (
                0,
                Error::MapNotFound {
                    map,
                    kind,
                    available,
                },
            ) => {
                assert_eq!((map.as_str(), *kind), ("nope", "perf map"));
                assert!(available.contains("perf_events"), "{available}");
            }
            (
                1,
                Error::WrongMapType {
                    map,
                    expected,
                    found,
                    ..
                },
            ) => {
                assert_eq!(map, "ring_events");
                assert_eq!(*expected, "BPF_MAP_TYPE_PERF_EVENT_ARRAY");
                assert_eq!(found, "RingBuf map");
            }
            (
                2,
                Error::WrongMapType {
                    map, kind, found, ..
                },
            ) => {
                assert_eq!((map.as_str(), *kind), ("counts", "ring buffer"));
                assert_eq!(found, "Array map");
            }
            (3, Error::InvalidReader { reason, .. }) => assert!(reason.contains("data_handler")),
            (4, Error::InvalidReader { reason, .. }) => assert!(reason.contains("power of two")),
            (5, Error::InvalidReader { map, reason, .. }) => {
                assert_eq!(map, "perf_events");
                assert!(reason.contains("twice"), "{reason}");
            }
            _ => panic!("case {i}: {err:?}"),
        }
        assert!(!message.is_empty());
        assert_eq!(m.state(), ManagerState::Initialized, "case {i}");
        assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded), "case {i}");
        assert!(
            m.get_map("perf_events").is_some(),
            "case {i}: nothing taken"
        );
        m.stop(CleanupType::CleanAll).unwrap();
        assert_unloaded(&prog_ids);
    }
    assert_eq!(seen.received(), 0);
}

#[test]
fn readers_are_clone_and_debug() {
    let seen = Arc::new(Seen::default());
    let p = PerfMap {
        perf_ring_pages: 8,
        ..seen.perf_map("perf_events")
    };
    let q = p.clone();
    let debug = format!("{q:?}");
    assert!(
        debug.contains("perf_events") && debug.contains("perf_ring_pages: 8"),
        "{debug}"
    );
    assert_eq!(p.ring_pages(), 8);
    assert_eq!(
        PerfMap::default().ring_pages(),
        ebpf_manager::DEFAULT_PERF_RING_PAGES
    );
    let r = RingBuffer {
        poll_timeout: Some(Duration::from_millis(5)),
        ..seen.ring_buffer("ring_events")
    };
    assert!(format!("{:?}", r.clone()).contains("ring_events"));
    let _ = Probe::default();
}

#[test]
fn readers_a_panicking_handler_stops_its_reader_and_start_reader_restarts_it() {
    let seen = Arc::new(Seen::default());
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ring = {
        let data = Arc::clone(&seen);
        RingBuffer {
            data_handler: Some(Arc::new(move |bytes: &[u8]| {
                let record = parse(bytes);
                assert_ne!(record.seq, 2, "the test's handler panics on record 2");
                data.record(u32::MAX, bytes);
            })),
            // The Go ErrChan: the panic reaches the user, not only the log.
            error_handler: Some(Arc::new({
                let errors = Arc::clone(&errors);
                move |e: &ebpf_manager::ReaderError| errors.lock().unwrap().push(e.to_string())
            })),
            ..seen.ring_buffer("ring_events")
        }
    };
    let mut m = manager(&["ring_emit"], gettid(), vec![], vec![ring]);
    m.start().unwrap();
    emit(5);
    let started = Instant::now();
    while m.is_reader_running("ring_events") == Some(true) {
        assert!(started.elapsed() < WAIT, "the reader survived its panic");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen.received(), 2, "records 0 and 1");
    let r = &m.status().readers[0];
    assert_eq!((r.running, r.received, r.handler_errors), (false, 3, 1));
    assert_eq!(
        errors.lock().unwrap().as_slice(),
        ["`ring_events`: a handler panicked; the reader stopped (start_reader starts it again)"]
    );
    m.start_reader("ring_events").unwrap();
    assert_eq!(m.is_reader_running("ring_events"), Some(true));
    // Record 2 was consumed by the panic; 3 and 4 wait in the ring.
    assert!(seen.wait_for(WAIT, |s| s.records.len() >= 4));
    m.stop(CleanupType::CleanAll).unwrap();
    let seqs: Vec<u64> = seen
        .state
        .lock()
        .unwrap()
        .records
        .iter()
        .map(|(_, r, _)| r.seq)
        .collect();
    assert_eq!(seqs, [0, 1, 3, 4]);
}

/// Emits `n` records, waits a moment, and asserts that the reader was not woken for them.
fn emit_below_threshold(seen: &Seen, n: usize) {
    emit(n);
    // Long enough for a woken reader to handle them; a slow machine can only make this pass
    // when it should fail, never the reverse.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.received(), 0, "woken below the threshold");
}

#[test]
fn readers_perf_wakeup_events_batches_wakeups_and_stop_drains_the_rest() {
    pin_to_current_cpu();
    let seen = Arc::new(Seen::default());
    let perf = PerfMap {
        wakeup_events: 50,
        ..seen.perf_map("perf_events")
    };
    let mut m = manager(&["perf_emit"], gettid(), vec![perf], vec![]);
    m.start().unwrap();
    emit_below_threshold(&seen, 20);
    emit(30);
    assert!(
        seen.wait_for(WAIT, |s| s.records.len() >= 50),
        "the 50th record did not wake the reader: {} received",
        seen.received()
    );
    emit(7);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(
        seen.received(),
        57,
        "stop drains what is below the threshold"
    );
}

#[test]
fn readers_perf_watermark_batches_wakeups_and_stop_drains_the_rest() {
    pin_to_current_cpu();
    let seen = Arc::new(Seen::default());
    // 8 KiB: a sample takes 72 bytes of the ring (header, size, 60 bytes), so about 114 records.
    let perf = PerfMap {
        perf_ring_pages: 8,
        watermark: 8192,
        ..seen.perf_map("perf_events")
    };
    let mut m = manager(&["perf_emit"], gettid(), vec![perf], vec![]);
    m.start().unwrap();
    emit_below_threshold(&seen, 100);
    emit(50);
    assert!(
        seen.wait_for(WAIT, |s| !s.records.is_empty()),
        "crossing the watermark did not wake the reader"
    );
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(seen.received(), 150);
    assert_eq!(seen.lost_count(), 0);
}

#[test]
fn readers_perf_wakeup_settings_are_checked_at_start() {
    let seen = Arc::new(Seen::default());
    let cases = [
        (
            PerfMap {
                wakeup_events: 10,
                watermark: 100,
                ..seen.perf_map("perf_events")
            },
            "wakeup_events (10) and watermark (100) are both set: set one of them",
        ),
        (
            PerfMap {
                perf_ring_pages: 1,
                watermark: 1 << 20,
                ..seen.perf_map("perf_events")
            },
            "watermark is 1048576 bytes: it must be smaller than each CPU's ring",
        ),
    ];
    for (perf, expected) in cases {
        let mut m = manager(&["perf_emit"], gettid(), vec![perf], vec![]);
        let prog_ids = program_ids(&m, &[probe("perf_emit", "perf_emit").id()]);
        match m.start().unwrap_err() {
            Error::InvalidReader { map, reason, .. } => {
                assert_eq!(map, "perf_events");
                assert!(reason.starts_with(expected), "{reason}");
            }
            other => panic!("expected InvalidReader, got {other:?}"),
        }
        assert_eq!(
            m.probe_state(&probe("perf_emit", "perf_emit").id()),
            Some(ProbeState::Loaded)
        );
        drop(m);
        assert_unloaded(&prog_ids);
    }
}

#[test]
fn readers_ring_buffer_of_one_page_wraps_around_without_losing_count() {
    setup();
    let seen = Arc::new(Seen::default());
    let mut m = ebpf_manager::Manager {
        probes: vec![probe("ring_emit", "ring_emit")],
        ring_buffers: vec![seen.ring_buffer("ring_events")],
        ..Default::default()
    };
    m.init_with_options(
        READERS,
        ebpf_manager::Options {
            constant_editors: vec![ebpf_manager::ConstantEditor::new("filter_tid", gettid())],
            // 4 KiB: 64 records of 64 bytes (header and 56-byte body), so 1000 wrap 15 times.
            map_spec_editors: vec![ebpf_manager::MapSpecEditor {
                name: "ring_events".into(),
                max_entries: Some(4096),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .unwrap();
    m.start().unwrap();
    const N: u64 = 1000;
    for produced in 1..=N {
        emit(1);
        // Let the reader keep up (a refusal is counted, not lost): past half a ring behind,
        // wait for it, up to a deadline, so that a slow guest still wraps the ring.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while produced - seen.received() as u64 - read_slot(&m, "counts", RING_FAILED) > 32
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    let failed = read_slot(&m, "counts", RING_FAILED);
    assert_eq!(read_slot(&m, "counts", RING_PRODUCED), N);
    m.stop(CleanupType::CleanAll).unwrap();
    let state = seen.state.lock().unwrap();
    assert_eq!(state.records.len() as u64 + failed, N, "received + refused");
    assert!(
        state.records.len() as u64 > 64,
        "more than one ring's worth went through"
    );
    for pair in state.records.windows(2) {
        assert!(pair[0].1.seq < pair[1].1.seq, "in order, none twice");
    }
    assert!(state.records.iter().all(|(_, _, len)| *len == RECORD));
}

/// A manager of ring_emit whose ring buffer reader is `ring`, stopped within `timeout`.
fn ring_manager_with_stop_timeout(ring: RingBuffer, timeout: Duration) -> ebpf_manager::Manager {
    setup();
    let mut m = ebpf_manager::Manager {
        probes: vec![probe("ring_emit", "ring_emit")],
        ring_buffers: vec![ring],
        ..Default::default()
    };
    m.init_with_options(
        READERS,
        ebpf_manager::Options {
            constant_editors: vec![ebpf_manager::ConstantEditor::new("filter_tid", gettid())],
            reader_stop_timeout: timeout,
            ..Default::default()
        },
    )
    .unwrap();
    m
}

/// A handler that blocks on the thread that stops the manager (issue 13): `stop` waits at most
/// `reader_stop_timeout`, says which reader is stuck, and stops everything else; the thread ends
/// by itself once the handler returns.
#[test]
fn readers_stop_with_a_blocked_handler_returns_within_its_bound() {
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = Mutex::new(blocked);
    let returned = Arc::new(AtomicBool::new(false));
    let reader_tid = Arc::new(AtomicU64::new(0));
    let ring = RingBuffer {
        map_name: "ring_events".into(),
        data_handler: Some({
            let returned = Arc::clone(&returned);
            let reader_tid = Arc::clone(&reader_tid);
            Arc::new(move |_: &[u8]| {
                reader_tid.store(u64::from(gettid()), Ordering::SeqCst);
                // Blocks until the test releases it, as a handler sending into a full channel
                // that the stopping thread would drain.
                let _ = blocked.lock().unwrap().recv();
                returned.store(true, Ordering::SeqCst);
            })
        }),
        ..Default::default()
    };
    let mut m = ring_manager_with_stop_timeout(ring, Duration::from_millis(300));
    let prog_ids = program_ids(&m, &[probe("ring_emit", "ring_emit").id()]);
    m.start().unwrap();
    emit(1);
    let started = Instant::now();
    match m.stop(CleanupType::CleanAll).unwrap_err() {
        Error::ReaderStuck { map, waited, .. } => {
            assert_eq!(map, "ring_events");
            assert_eq!(waited, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    println!("stop returned after {:?}", started.elapsed());
    // The rest stopped: the probe is detached and its program unloaded.
    assert_eq!(m.state(), ManagerState::Stopped);
    assert_unloaded(&prog_ids);
    assert!(!returned.load(Ordering::SeqCst));
    release.send(()).unwrap();
    let ended = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        returned.load(Ordering::SeqCst)
    });
    assert!(ended, "the handler never returned");
    // Told to stop, the reader thread ends once its handler returns (it must still see the
    // stop signal after stop gave up on it).
    let task = format!("/proc/self/task/{}", reader_tid.load(Ordering::SeqCst));
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !std::path::Path::new(&task).exists()
    });
    assert!(gone, "the reader thread {task} is still alive");
}

/// A handler that drops the last handle of the manager (issue 13): the reader does not wait
/// for itself (a deadlock, or a panic joining its own thread).
#[test]
fn readers_a_handler_may_drop_the_manager() {
    let slot: Arc<Mutex<Option<ebpf_manager::Manager>>> = Arc::new(Mutex::new(None));
    let dropped = Arc::new(AtomicBool::new(false));
    let ring = RingBuffer {
        map_name: "ring_events".into(),
        data_handler: Some({
            let slot = Arc::clone(&slot);
            let dropped = Arc::clone(&dropped);
            Arc::new(move |_: &[u8]| {
                // Taken out of the lock first: dropping it stops this very reader.
                let m = slot.lock().unwrap().take();
                if m.is_some() {
                    drop(m);
                    dropped.store(true, Ordering::SeqCst);
                }
            })
        }),
        ..Default::default()
    };
    let mut m = manager(&["ring_emit"], gettid(), vec![], vec![ring]);
    let prog_ids = program_ids(&m, &[probe("ring_emit", "ring_emit").id()]);
    m.start().unwrap();
    *slot.lock().unwrap() = Some(m);
    emit(1);
    let done = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        dropped.load(Ordering::SeqCst)
    });
    assert!(done, "the handler did not finish dropping the manager");
    assert_unloaded(&prog_ids);
}

/// A reader that `stop_reader` gave up on is not started a second time on the same ring
/// while its handler still runs (two consumers would share the ring); once it has ended,
/// `start_reader` starts a new one.
#[test]
fn readers_a_stuck_reader_is_not_started_twice() {
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = Mutex::new(blocked);
    let entered = Arc::new(AtomicU64::new(0));
    let ring = RingBuffer {
        map_name: "ring_events".into(),
        data_handler: Some({
            let entered = Arc::clone(&entered);
            Arc::new(move |_: &[u8]| {
                // Only the first record blocks.
                if entered.fetch_add(1, Ordering::SeqCst) == 0 {
                    let _ = blocked.lock().unwrap().recv();
                }
            })
        }),
        ..Default::default()
    };
    let mut m = ring_manager_with_stop_timeout(ring, Duration::from_millis(200));
    m.start().unwrap();
    emit(1);
    let waited = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        entered.load(Ordering::SeqCst) > 0
    });
    assert!(waited, "the handler never ran");
    assert!(matches!(
        m.stop_reader("ring_events"),
        Err(Error::ReaderStuck { .. })
    ));
    match m.start_reader("ring_events").unwrap_err() {
        Error::ReaderStuck { map, .. } => assert_eq!(map, "ring_events"),
        other => panic!("{other:?}"),
    }
    release.send(()).unwrap();
    let restarted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        m.start_reader("ring_events").is_ok()
    });
    assert!(
        restarted,
        "start_reader kept refusing after the handler returned"
    );
    assert_eq!(m.is_reader_running("ring_events"), Some(true));
    emit(1);
    let second = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        entered.load(Ordering::SeqCst) >= 2
    });
    assert!(second, "the new reader did not receive");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A handler that stops its own reader and starts it again: the start is refused
/// (`ReaderStuck`) while that handler runs, for two readers would consume one ring; once the
/// handler has returned, `start_reader` starts one, which receives. (Before, the second start
/// succeeded from inside the handler.)
#[test]
fn readers_a_reader_stopped_by_its_own_handler_is_not_started_twice() {
    let slot: Arc<Mutex<Option<ebpf_manager::Manager>>> = Arc::new(Mutex::new(None));
    let restart: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let received = Arc::new(AtomicU64::new(0));
    let ring = RingBuffer {
        map_name: "ring_events".into(),
        data_handler: Some({
            let (slot, restart, received) = (slot.clone(), restart.clone(), received.clone());
            Arc::new(move |_: &[u8]| {
                if received.fetch_add(1, Ordering::SeqCst) > 0 {
                    return;
                }
                let mut held = slot.lock().unwrap();
                let m = held
                    .as_mut()
                    .expect("the manager is in the slot before any record");
                m.stop_reader("ring_events").unwrap();
                let again = match m.start_reader("ring_events") {
                    Ok(()) => "started".to_owned(),
                    Err(e) => format!("{e:?}"),
                };
                *restart.lock().unwrap() = Some(again);
            })
        }),
        ..Default::default()
    };
    let mut m = ring_manager_with_stop_timeout(ring, Duration::from_secs(5));
    m.start().unwrap();
    *slot.lock().unwrap() = Some(m);
    emit(1);
    let handled = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        restart.lock().unwrap().is_some()
    });
    assert!(handled, "the handler never ran");
    let again = restart.lock().unwrap().clone().unwrap();
    assert!(again.starts_with("ReaderStuck"), "{again}");
    let restarted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let mut held = slot.lock().unwrap();
        held.as_mut().unwrap().start_reader("ring_events").is_ok()
    });
    assert!(
        restarted,
        "start_reader kept refusing after the handler returned"
    );
    emit(1);
    let second = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        received.load(Ordering::SeqCst) >= 2
    });
    assert!(second, "the restarted reader did not receive");
    let mut m = slot.lock().unwrap().take().unwrap();
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A clone made after `start`, when the readers hold the perf and ring maps, writes to those
/// maps (it got private ones nobody read); `map_fd` still answers for a map a reader holds.
#[test]
fn readers_a_clone_made_after_start_writes_to_the_running_readers() {
    let _bpffs = bpffs_lock();
    let seen = Arc::new(Seen::default());
    let mut m = manager(
        &["perf_emit", "ring_emit"],
        gettid(),
        vec![seen.perf_map("perf_events")],
        vec![seen.ring_buffer("ring_events")],
    );
    let perf_id = map_id(&m, "perf_events");
    m.start().unwrap();
    for function in ["perf_emit", "ring_emit"] {
        m.clone_program(
            function,
            Probe {
                uid: "clone".into(),
                ebpf_func_name: function.into(),
                ..Default::default()
            },
            vec![],
            vec![],
        )
        .unwrap_or_else(|e| panic!("clone of {function}: {e}"));
    }
    assert_eq!(
        map_fdinfo(&m, "perf_events").get("map_id").copied(),
        Some(u64::from(perf_id)),
        "map_fd opens the map a reader holds"
    );
    const N: usize = 50;
    emit(N);
    // Each getppid runs the two programs of each map: the original and its clone.
    assert!(
        seen.wait_for(WAIT, |s| s.records.len() >= 4 * N),
        "received {} of {}: a clone wrote to a map nobody reads",
        seen.received(),
        4 * N
    );
    assert_eq!(read_slot(&m, "counts", PERF_PRODUCED), 2 * N as u64);
    assert_eq!(read_slot(&m, "counts", RING_PRODUCED), 2 * N as u64);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(seen.received(), 4 * N);
    assert!(own_bpffs_entries().is_empty(), "{:?}", own_bpffs_entries());
}
