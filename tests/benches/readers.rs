//! Reader throughput: this library's ring buffer and perf buffer readers, raw aya, and libbpf in
//! C, fed in one run by the same producer, interleaved. Prints events/s, the reader's time per
//! event and their ratios to libbpf reading the same kind of buffer.
//!
//! Run with `cargo xtask bench readers`, which builds the libbpf baseline
//! (ebpf-fixtures/bench/readers_libbpf.c) and names it in `EBPF_MANAGER_BENCH_LIBBPF`; without
//! it, `cargo bench -p integration-tests --bench readers` measures the Rust readers only.
//!
//! The producer is BPF_PROG_TEST_RUN of a tc program of ebpf-fixtures/src/bench.bpf.c that
//! emits `RECORDS_PER_RUN` records with bpf_loop: one syscall yields thousands of records, so
//! the producer outruns any reader. The main thread produces; a reader thread consumes.
//!
//! Producer and reader share one CPU (see `pin_to_one_cpu`), which stays busy from the first
//! record to the last one handled (the wall time). The reader's time is that wall time minus
//! the time the program ran, which the kernel measures for each test run: what is left is the
//! reader, its wakeups and context switches, and the syscalls' own overhead (the same in every
//! variant). Not a CPU clock: when a wakeup asks to preempt a thread that runs on in the kernel
//! (here the producer, until its next `cond_resched`), the scheduler charges the woken thread
//! from the wakeup on, so thread CPU clocks moved several times the reader's real time from
//! the producer to the reader (checked against sched_switch traces).

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use aya::{
    maps::{perf::PerfEvent, Array, MapData, PerfEventArray, RingBuf},
    programs::SchedClassifier,
    EbpfLoader,
};
use ebpf_manager::{
    CleanupType, ConstantEditor, Manager, Options, PerfMap, Probe, ProbesSelector, RingBuffer,
};
use integration_tests::setup;

const BENCH: &[u8] = include_bytes!("../../ebpf-fixtures/bench.bpf.o");
/// The same object, for the C baseline.
const BENCH_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf-fixtures/bench.bpf.o");
/// Where `cargo xtask bench readers` puts the path of the C baseline.
const LIBBPF_ENV: &str = "EBPF_MANAGER_BENCH_LIBBPF";
/// Records per program run (bpf_loop iterations).
const RECORDS_PER_RUN: u32 = 1024;
/// The perf ring of each CPU, in pages, for every perf variant (the library's default).
const PERF_PAGES: usize = 64;
/// Measured rounds, after one warm-up round.
const ROUNDS: usize = 5;
/// How long the consumer may take, after the producer is done, to handle what is left.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ring,
    Perf,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ring => "ring",
            Kind::Perf => "perf",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Ring => "bench_ring",
            Kind::Perf => "bench_perf",
        }
    }

    fn map(self) -> &'static str {
        match self {
            Kind::Ring => "bench_ring_events",
            Kind::Perf => "bench_perf_events",
        }
    }

    /// The bench_counts slot of records produced; the refused count follows it.
    fn produced_slot(self) -> u32 {
        match self {
            Kind::Ring => 0,
            Kind::Perf => 2,
        }
    }

    /// Program runs per BPF_PROG_TEST_RUN call: many, so that the syscalls' overhead stays
    /// small; fewer for perf, whose records are slow to produce.
    fn repeat(self) -> u32 {
        match self {
            Kind::Ring => 64,
            Kind::Perf => 4,
        }
    }

    /// BPF_PROG_TEST_RUN calls per measured run: about 0.6 s on the development host, a VM
    /// where each perf record costs the producer about 5 µs: with `wakeup_events = 1` (aya's
    /// and libbpf's default) the kernel raises an irq_work, a self-IPI, per record.
    fn calls(self) -> u64 {
        match self {
            Kind::Ring => 188,
            Kind::Perf => 30,
        }
    }

    fn records(self) -> u64 {
        self.calls() * u64::from(self.repeat() * RECORDS_PER_RUN)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    Manager,
    /// The manager with `PerfMap::wakeup_events`: perf only (a ring buffer has no such setting).
    ManagerBatched,
    Aya,
    Libbpf,
}

impl Reader {
    fn name(self) -> &'static str {
        match self {
            Reader::Manager => "ebpf-manager",
            Reader::ManagerBatched => "  wakeup 64",
            Reader::Aya => "raw aya",
            Reader::Libbpf => "libbpf (C)",
        }
    }
}

/// One measured run.
#[derive(Clone, Copy, Default)]
struct Run {
    produced: u64,
    /// Refused by a full buffer, as counted by the program.
    refused: u64,
    received: u64,
    /// Losses the perf buffer reported to the reader.
    lost: u64,
    /// From the first record produced to the last one handled.
    wall: Duration,
    /// How long the program ran, as the kernel measured it.
    producer: Duration,
}

impl Run {
    fn events_per_sec(&self) -> f64 {
        self.received as f64 / self.wall.as_secs_f64()
    }

    /// The reader's time per event handled: see the module's documentation.
    fn reader_ns_per_event(&self) -> f64 {
        self.wall.saturating_sub(self.producer).as_nanos() as f64 / self.received.max(1) as f64
    }
}

/// What a handler counts. One thread writes, another reads: plain loads and stores, no
/// read-modify-write, the same work as the C baseline's handler.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    seq_sum: AtomicU64,
    lost: AtomicU64,
}

impl Tally {
    fn record(&self, data: &[u8]) {
        let seq = u64::from_ne_bytes(data[..8].try_into().expect("a record has a seq"));
        bump(&self.seq_sum, seq);
        bump(&self.received, 1);
    }

    /// A perf sample that wraps around the ring's end comes in two pieces.
    fn record_split(&self, head: &[u8], tail: &[u8]) {
        if head.len() >= 8 {
            self.record(head);
        } else {
            let mut seq = [0; 8];
            seq[..head.len()].copy_from_slice(head);
            seq[head.len()..].copy_from_slice(&tail[..8 - head.len()]);
            self.record(&seq);
        }
    }

    fn lost(&self, count: u64) {
        bump(&self.lost, count);
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

/// Runs the program of `kind` on a zeroed 64-byte packet, `kind.calls()` times
/// `kind.repeat()`: each run emits `RECORDS_PER_RUN` records. Returns how long the program ran.
fn produce(prog: RawFd, kind: Kind) -> Duration {
    let packet = [0u8; 64];
    let mut ran = Duration::ZERO;
    for _ in 0..kind.calls() {
        let (_, duration) = integration_tests::test_run_repeat(prog, &packet, kind.repeat());
        // The mean time of one run, in ns, preemptions left out.
        ran += Duration::from_nanos(u64::from(duration) * u64::from(kind.repeat()));
    }
    ran
}

/// Pins the process (and the threads and children it starts from now on) to its last allowed
/// CPU: producer and consumer share it. On two CPUs the pipeline flips between two regimes
/// from run to run (the reader behind: large batches, no wakeups; the reader caught up: a
/// wakeup, and in a VM a self-IPI in the producer, every few records), so that a faster reader
/// can measure slower. On one CPU every reader gets the same schedule: the producer runs until
/// the scheduler hands the CPU to the woken reader.
fn pin_to_one_cpu() -> usize {
    // SAFETY: a zeroed cpu_set_t, read then written by the kernel for the calling thread,
    // which has no other threads yet.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(
            libc::sched_getaffinity(0, size, &mut set),
            0,
            "sched_getaffinity"
        );
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some allowed CPU");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size, &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
        cpu
    }
}

/// (produced, refused) from bench_counts.
fn counts(map: &aya::maps::Map, kind: Kind) -> (u64, u64) {
    let counts = Array::<&MapData, u64>::try_from(map).expect("bench_counts is an array");
    let slot = kind.produced_slot();
    (
        counts.get(&slot, 0).expect("produced"),
        counts.get(&(slot + 1), 0).expect("refused"),
    )
}

/// Produces from this thread, then waits until the reader has handled every record the
/// buffer took.
fn measure(kind: Kind, prog: RawFd, tally: &Tally, read_counts: impl Fn() -> (u64, u64)) -> Run {
    let started = Instant::now();
    let producer = produce(prog, kind);
    let (produced, refused) = read_counts();
    let deadline = Instant::now() + WAIT;
    while tally.received.load(Relaxed) < produced - refused && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(50));
    }
    Run {
        produced,
        refused,
        received: tally.received.load(Relaxed),
        lost: tally.lost.load(Relaxed),
        wall: started.elapsed(),
        producer,
    }
}

/// This library: a `RingBuffer` or `PerfMap` reader, the program loaded but never attached.
/// `wakeup_events` of the batched perf variant.
const BATCHED_WAKEUP: u32 = 64;

fn through_manager(kind: Kind, wakeup_events: u32) -> Run {
    let tally = Arc::new(Tally::default());
    let probe = Probe {
        ebpf_func_name: kind.program().into(),
        // A tc probe must name an interface; this one is never attached (see the selectors).
        if_name: Some("lo".into()),
        ..Default::default()
    };
    let id = probe.id();
    let mut m = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    let (data, lost) = (Arc::clone(&tally), Arc::clone(&tally));
    match kind {
        Kind::Ring => {
            m.ring_buffers = vec![RingBuffer {
                map_name: kind.map().into(),
                data_handler: Some(Arc::new(move |d: &[u8]| data.record(d))),
                ..Default::default()
            }]
        }
        Kind::Perf => {
            m.perf_maps = vec![PerfMap {
                map_name: kind.map().into(),
                data_handler: Some(Arc::new(move |_cpu, d: &[u8]| data.record(d))),
                lost_handler: Some(Arc::new(move |_cpu, count| lost.lost(count))),
                perf_ring_pages: PERF_PAGES,
                wakeup_events,
                ..Default::default()
            }]
        }
    }
    m.init_with_options(
        BENCH,
        Options {
            constant_editors: vec![ConstantEditor::new("records_per_run", RECORDS_PER_RUN)],
            // Select nothing, load everything: the program runs by test-run only.
            activated_probes: vec![ProbesSelector::BestEffort(Vec::new())],
            load_unselected_probes: true,
            ..Default::default()
        },
    )
    .expect("manager init");
    m.start().expect("manager start");
    let prog = m
        .get_program(&id)
        .expect("the manager has the program")
        .fd()
        .expect("the program is loaded")
        .as_fd()
        .as_raw_fd();
    let run = measure(kind, prog, &tally, || {
        counts(m.get_map("bench_counts").expect("bench_counts"), kind)
    });
    m.stop(CleanupType::CleanAll).expect("manager stop");
    run
}

/// An epoll instance watching `fds`, each with its index as data.
fn epoll_on(fds: &[RawFd]) -> OwnedFd {
    // SAFETY: no pointers; the fd is checked.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1");
    // SAFETY: a fresh fd that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    for (i, &fd) in fds.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: `event` is live; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        assert_eq!(rc, 0, "epoll_ctl");
    }
    epoll
}

/// Indices of the ready fds (none on timeout or signal).
fn epoll_wait<'a>(
    epoll: &OwnedFd,
    events: &'a mut [libc::epoll_event],
    timeout_ms: i32,
) -> impl Iterator<Item = usize> + 'a {
    // SAFETY: `events` is a live, writable array of its length.
    let n = unsafe {
        libc::epoll_wait(
            epoll.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as i32,
            timeout_ms,
        )
    };
    events[..n.max(0) as usize].iter().map(|e| e.u64 as usize)
}

/// Raw aya as a careful user writes it: one thread that drains the buffers and sleeps in
/// epoll_wait; the timeout is only how it notices `stop` once idle.
fn through_aya(kind: Kind) -> Run {
    let mut ebpf = EbpfLoader::new()
        .override_global("records_per_run", &RECORDS_PER_RUN, true)
        .load(BENCH)
        .expect("aya load");
    let classifier: &mut SchedClassifier = ebpf
        .program_mut(kind.program())
        .expect("program")
        .try_into()
        .expect("a tc classifier");
    classifier.load().expect("load");
    let prog = classifier.fd().expect("loaded").as_fd().as_raw_fd();
    let map = ebpf.take_map(kind.map()).expect("events map");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (Arc::clone(&tally), Arc::clone(&stop));
    let consumer = match kind {
        Kind::Ring => {
            let mut ring = RingBuf::try_from(map).expect("ring buffer");
            thread::spawn(move || {
                let epoll = epoll_on(&[ring.as_raw_fd()]);
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
                while !s.load(Relaxed) {
                    while let Some(item) = ring.next() {
                        t.record(&item);
                    }
                    epoll_wait(&epoll, &mut events, 10).for_each(drop);
                }
            })
        }
        Kind::Perf => {
            let mut array = PerfEventArray::try_from(map).expect("perf event array");
            let mut buffers: Vec<_> = aya::util::online_cpus()
                .expect("online cpus")
                .into_iter()
                .map(|cpu| array.open(cpu, Some(PERF_PAGES)).expect("perf buffer"))
                .collect();
            thread::spawn(move || {
                let fds: Vec<RawFd> = buffers.iter().map(|b| b.as_raw_fd()).collect();
                let epoll = epoll_on(&fds);
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
                while !s.load(Relaxed) {
                    for i in epoll_wait(&epoll, &mut events, 10) {
                        buffers[i].for_each(|event| match event {
                            PerfEvent::Sample { head, tail } => t.record_split(head, tail),
                            PerfEvent::Lost { count } => t.lost(count),
                        });
                    }
                }
            })
        }
    };
    let run = measure(kind, prog, &tally, || {
        counts(ebpf.map("bench_counts").expect("bench_counts"), kind)
    });
    stop.store(true, Relaxed);
    consumer.join().expect("aya consumer");
    run
}

/// libbpf in C: a child process per run, which prints its own measurement.
fn through_libbpf(kind: Kind, program: &str) -> Run {
    let out = Command::new(program)
        .args([
            BENCH_PATH,
            kind.name(),
            &RECORDS_PER_RUN.to_string(),
            &kind.repeat().to_string(),
            &kind.calls().to_string(),
            &PERF_PAGES.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("{program} printed no result line: {stdout}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in `{line}`"))
    };
    Run {
        produced: field("produced"),
        refused: field("refused"),
        received: field("received"),
        lost: field("lost"),
        wall: Duration::from_nanos(field("wall_ns")),
        producer: Duration::from_nanos(field("producer_ns")),
    }
}

fn run_one(kind: Kind, reader: Reader, libbpf: Option<&str>) -> Run {
    let run = match reader {
        Reader::Manager => through_manager(kind, 0),
        Reader::ManagerBatched => through_manager(kind, BATCHED_WAKEUP),
        Reader::Aya => through_aya(kind),
        Reader::Libbpf => through_libbpf(kind, libbpf.expect("only run with the baseline")),
    };
    if run.received + run.refused != run.produced {
        println!(
            "warning: {} {}: received {} + refused {} != produced {}",
            kind.name(),
            reader.name(),
            run.received,
            run.refused,
            run.produced
        );
    }
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    setup();
    let cpu = pin_to_one_cpu();
    let libbpf = std::env::var(LIBBPF_ENV).ok();
    let mut readers = vec![Reader::Manager, Reader::ManagerBatched, Reader::Aya];
    if libbpf.is_some() {
        readers.push(Reader::Libbpf);
    } else {
        println!("{LIBBPF_ENV} is not set: no libbpf baseline (run `cargo xtask bench readers`)");
    }
    let kinds = [Kind::Ring, Kind::Perf];
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); kinds.len() * readers.len()];
    for round in 0..=ROUNDS {
        for (k, &kind) in kinds.iter().enumerate() {
            // Rotate which reader goes first, so none always runs on a warmer machine.
            for i in 0..readers.len() {
                let r = (i + round) % readers.len();
                if kind == Kind::Ring && readers[r] == Reader::ManagerBatched {
                    continue;
                }
                let run = run_one(kind, readers[r], libbpf.as_deref());
                // Round 0 warms up.
                if round > 0 {
                    runs[k * readers.len() + r].push(run);
                }
            }
        }
    }

    println!(
        "readers: median of {ROUNDS} interleaved rounds, producer and readers on CPU {cpu}, \
         Linux {}",
        release.trim()
    );
    for kind in kinds {
        println!(
            "  {}: {} records per run, {RECORDS_PER_RUN} per bpf_loop, {} program runs per \
             BPF_PROG_TEST_RUN{}",
            kind.name(),
            kind.records(),
            kind.repeat(),
            if kind == Kind::Perf {
                format!(", rings of {PERF_PAGES} pages per CPU")
            } else {
                ", a 1 MiB ring".into()
            }
        );
    }
    println!(
        "{:<5} {:<13} {:>10} {:>12} {:>14} {:>14} {:>9} {:>6}",
        "kind",
        "reader",
        "Mevents/s",
        "reader ns/ev",
        "rate x libbpf",
        "time x libbpf",
        "refused",
        "lost"
    );
    for (k, &kind) in kinds.iter().enumerate() {
        let stats = |r: usize| {
            let v = &runs[k * readers.len() + r];
            (
                median(v.iter().map(Run::events_per_sec).collect()),
                median(v.iter().map(Run::reader_ns_per_event).collect()),
                median(v.iter().map(|r| r.refused as f64).collect()),
                median(v.iter().map(|r| r.lost as f64).collect()),
            )
        };
        let baseline = readers
            .iter()
            .position(|&r| r == Reader::Libbpf)
            .map(&stats);
        for (r, reader) in readers.iter().enumerate() {
            if runs[k * readers.len() + r].is_empty() {
                continue;
            }
            let (rate, time, refused, lost) = stats(r);
            let (rate_ratio, time_ratio) = match baseline {
                Some((base_rate, base_time, ..)) => (
                    format!("{:.2}", rate / base_rate),
                    format!("{:.2}", time / base_time),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:<5} {:<13} {:>10.2} {:>12.1} {:>14} {:>14} {:>9} {:>6}",
                kind.name(),
                reader.name(),
                rate / 1e6,
                time,
                rate_ratio,
                time_ratio,
                refused,
                lost
            );
        }
    }
    println!(
        "Mevents/s: records handled per second of wall time (first record produced to last one \
         handled)\nreader ns/ev: wall time minus the program's run time, per record handled\n\
         at least as good as libbpf: rate x libbpf >= 1 and time x libbpf <= 1\n\
         refused: records a full buffer refused to the program; lost: losses perf reported\n\
         wakeup 64: the manager's perf reader with PerfMap::wakeup_events = 64 (one wakeup \
         per 64 records)"
    );
}
