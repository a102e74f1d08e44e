//! Readers under stress: a producer thread emits perf and ring records at full speed into
//! small buffers (so that the kernel refuses some) while another thread stops the manager;
//! handlers that panic or block while records keep coming. Every record the kernel accepted
//! reaches its handler exactly once (received == produced - refused), perf losses reported
//! never exceed the refusals, and stop returns (within `reader_stop_timeout` when a handler
//! blocks).

use std::{
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use ebpf_manager::{
    CleanupType, ConstantEditor, Error, Manager, MapSpecEditor, Options, PerfMap, RingBuffer,
};
use integration_tests::{readers::*, *};

/// The u64 at `slot` of the array map behind `fd` (the map outlives its manager through it).
fn lookup(fd: &aya::maps::MapFd, slot: u32) -> u64 {
    let value = lookup_raw(fd.as_fd(), slot, 8).expect("an array slot");
    u64::from_ne_bytes(value[..8].try_into().unwrap())
}

/// A thread calling getppid(2) as fast as it can once told to, until told to stop.
struct Producer {
    tid: u32,
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Producer {
    fn spawn() -> Self {
        let go = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let (go, stop) = (Arc::clone(&go), Arc::clone(&stop));
            move || {
                tx.send(gettid()).unwrap();
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                let mut calls = 0;
                while !stop.load(Ordering::Relaxed) {
                    emit(1);
                    calls += 1;
                }
                calls
            }
        });
        let tid = rx.recv().unwrap();
        Self {
            tid,
            go,
            stop,
            thread,
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[derive(Default)]
struct Tally {
    perf: AtomicU64,
    perf_lost: AtomicU64,
    ring: AtomicU64,
}

fn manager(
    tid: u32,
    tally: &Arc<Tally>,
    perf: PerfMap,
    ring: RingBuffer,
    timeout: Duration,
) -> Manager {
    setup();
    let mut m = Manager {
        probes: vec![
            probe("perf_emit", "perf_emit"),
            probe("ring_emit", "ring_emit"),
        ],
        perf_maps: vec![PerfMap {
            map_name: "perf_events".into(),
            // One page per CPU: the kernel refuses records while the reader is behind.
            perf_ring_pages: 1,
            lost_handler: Some({
                let tally = Arc::clone(tally);
                Arc::new(move |_cpu, n| {
                    tally.perf_lost.fetch_add(n, Ordering::Relaxed);
                })
            }),
            ..perf
        }],
        ring_buffers: vec![RingBuffer {
            map_name: "ring_events".into(),
            ..ring
        }],
        ..Default::default()
    };
    m.init_with_options(
        READERS,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            // 16 KiB: about 250 records before the kernel refuses more.
            map_spec_editors: vec![MapSpecEditor {
                name: "ring_events".into(),
                max_entries: Some(1 << 14),
                ..Default::default()
            }],
            reader_stop_timeout: timeout,
            ..Default::default()
        },
    )
    .expect("init of readers.bpf.o");
    m
}

fn counting(tally: &Arc<Tally>) -> (PerfMap, RingBuffer) {
    let (p, r) = (Arc::clone(tally), Arc::clone(tally));
    (
        PerfMap {
            data_handler: Some(Arc::new(move |_cpu, _data: &[u8]| {
                p.perf.fetch_add(1, Ordering::Relaxed);
            })),
            ..Default::default()
        },
        RingBuffer {
            data_handler: Some(Arc::new(move |_data: &[u8]| {
                r.ring.fetch_add(1, Ordering::Relaxed);
            })),
            ..Default::default()
        },
    )
}

#[test]
fn readers_stress_stop_from_another_thread_while_producing_at_full_speed() {
    for round in 0..3 {
        let producer = Producer::spawn();
        let tally = Arc::new(Tally::default());
        let (perf, ring) = counting(&tally);
        let mut m = manager(producer.tid, &tally, perf, ring, Duration::from_secs(5));
        let counts = m
            .map_fd("counts")
            .expect("counts outlives the manager through its fd");
        m.start().unwrap();
        producer.go.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_millis(200));
        // Stopped from another thread while the producer runs on.
        let stopper = std::thread::spawn(move || m.stop(CleanupType::CleanAll));
        stopper
            .join()
            .expect("stop did not panic")
            .expect("stop succeeded");
        let calls = producer.finish();
        let produced = [
            lookup(&counts, PERF_PRODUCED),
            lookup(&counts, RING_PRODUCED),
        ];
        let refused = [lookup(&counts, PERF_FAILED), lookup(&counts, RING_FAILED)];
        let received = [
            tally.perf.load(Ordering::Relaxed),
            tally.ring.load(Ordering::Relaxed),
        ];
        let lost = tally.perf_lost.load(Ordering::Relaxed);
        println!(
            "round {round}: {calls} calls; perf: produced {}, refused {}, received {}, \
             losses reported {lost}; ring: produced {}, refused {}, received {}",
            produced[0], refused[0], received[0], produced[1], refused[1], received[1]
        );
        assert!(produced[0] > 0 && produced[1] > 0, "nothing was produced");
        for (i, what) in ["perf", "ring"].iter().enumerate() {
            assert_eq!(
                received[i],
                produced[i] - refused[i],
                "{what}: every record the kernel took reaches its handler once"
            );
        }
        assert!(
            lost <= refused[0],
            "perf: {lost} losses reported, {} refused",
            refused[0]
        );
    }
}

/// Under the same load, a perf handler that panics stops its reader only (reported as
/// `ReaderError::HandlerPanicked`), and a ring handler that blocks makes stop give up on it
/// after `reader_stop_timeout` with `Error::ReaderStuck`; the rest is stopped.
#[test]
fn readers_stress_panicking_and_blocking_handlers_under_load() {
    let producer = Producer::spawn();
    let tally = Arc::new(Tally::default());
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = std::sync::Mutex::new(blocked);
    let seen = Arc::clone(&tally);
    let perf = PerfMap {
        data_handler: Some(Arc::new(move |_cpu, _data: &[u8]| {
            if seen.perf.fetch_add(1, Ordering::Relaxed) == 100 {
                panic!("the 101st perf record: a handler bug (this panic is the test's)");
            }
        })),
        ..Default::default()
    };
    let seen = Arc::clone(&tally);
    let ring = RingBuffer {
        data_handler: Some(Arc::new(move |_data: &[u8]| {
            if seen.ring.fetch_add(1, Ordering::Relaxed) == 50 {
                let _ = blocked.lock().unwrap().recv();
            }
        })),
        ..Default::default()
    };
    let mut m = manager(producer.tid, &tally, perf, ring, Duration::from_millis(300));
    m.start().unwrap();
    producer.go.store(true, Ordering::Release);
    let waited = (0..3000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        tally.perf.load(Ordering::Relaxed) > 100 && tally.ring.load(Ordering::Relaxed) > 50
    });
    assert!(waited, "the handlers never reached their faults");
    // The panic hook prints a backtrace first, which takes seconds under QEMU's TCG.
    let perf_stopped = (0..3000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        m.is_reader_running("perf_events") == Some(false)
    });
    assert!(perf_stopped, "the panicking reader stopped");
    match m.stop(CleanupType::CleanAll).unwrap_err() {
        Error::ReaderStuck { map, waited, .. } => {
            assert_eq!(map, "ring_events");
            assert_eq!(waited, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.state(), ebpf_manager::ManagerState::Stopped);
    release.send(()).unwrap();
    producer.finish();
}
