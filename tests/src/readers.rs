//! The reader tests' fixture: ebpf-fixtures/src/readers.bpf.c emits one 56-byte record per
//! getppid(2) of the thread named by `filter_tid`, to `perf_events` (perf_emit) or
//! `ring_events` (ring_emit), and counts in `counts` what it produced and what the kernel
//! refused. `Seen` collects what handlers receive.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use ebpf_manager::{ConstantEditor, Manager, Options, PerfMap, RingBuffer};

use crate::{probe, setup};

pub const READERS: &[u8] = include_bytes!("../../ebpf-fixtures/readers.bpf.o");
pub const PERF_PRODUCED: u32 = 0;
pub const PERF_FAILED: u32 = 1;
pub const RING_PRODUCED: u32 = 2;
pub const RING_FAILED: u32 = 3;
/// The record's size in the program, and what a perf reader gets (with the kernel's padding).
pub const RECORD: usize = 56;
pub const PERF_RECORD: usize = 60;
pub const WAIT: Duration = Duration::from_secs(20);

/// One record as the program writes it.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub seq: u64,
    pub cpu: u32,
    pub tid: u32,
}

pub fn parse(data: &[u8]) -> Record {
    Record {
        seq: u64::from_ne_bytes(data[0..8].try_into().unwrap()),
        cpu: u32::from_ne_bytes(data[8..12].try_into().unwrap()),
        tid: u32::from_ne_bytes(data[12..16].try_into().unwrap()),
    }
}

/// What a handler saw, and a condition variable to wait on it.
#[derive(Default)]
pub struct Seen {
    /// What was seen.
    pub state: Mutex<SeenState>,
    changed: Condvar,
}

#[derive(Default)]
pub struct SeenState {
    /// (handler cpu, record, length)
    pub records: Vec<(u32, Record, usize)>,
    /// Losses reported.
    pub lost: u64,
}

impl Seen {
    pub fn record(&self, cpu: u32, data: &[u8]) {
        self.state
            .lock()
            .unwrap()
            .records
            .push((cpu, parse(data), data.len()));
        self.changed.notify_all();
    }

    pub fn lost(&self, count: u64) {
        self.state.lock().unwrap().lost += count;
        self.changed.notify_all();
    }

    pub fn received(&self) -> usize {
        self.state.lock().unwrap().records.len()
    }

    pub fn lost_count(&self) -> u64 {
        self.state.lock().unwrap().lost
    }

    /// Waits until `done` holds, at most `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&SeenState) -> bool) -> bool {
        let guard = self.state.lock().unwrap();
        let (_guard, result) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .unwrap();
        !result.timed_out()
    }

    pub fn perf_map(self: &Arc<Self>, name: &str) -> PerfMap {
        let data = Arc::clone(self);
        let lost = Arc::clone(self);
        PerfMap {
            map_name: name.into(),
            data_handler: Some(Arc::new(move |cpu, bytes: &[u8]| data.record(cpu, bytes))),
            lost_handler: Some(Arc::new(move |_cpu, count| lost.lost(count))),
            ..Default::default()
        }
    }

    pub fn ring_buffer(self: &Arc<Self>, name: &str) -> RingBuffer {
        let data = Arc::clone(self);
        RingBuffer {
            map_name: name.into(),
            data_handler: Some(Arc::new(move |bytes: &[u8]| data.record(u32::MAX, bytes))),
            ..Default::default()
        }
    }
}

/// Pins the calling thread to the CPU it runs on, so that all its records go to one perf ring.
pub fn pin_to_current_cpu() -> u32 {
    // SAFETY: plain syscalls on a zeroed, then filled, cpu_set_t of this thread.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
        cpu as u32
    }
}

/// `n` records from the calling thread.
pub fn emit(n: usize) {
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
}

pub fn manager(
    functions: &[&str],
    tid: u32,
    perf_maps: Vec<PerfMap>,
    ring_buffers: Vec<RingBuffer>,
) -> Manager {
    setup();
    let mut m = Manager {
        probes: functions.iter().map(|f| probe(f, f)).collect(),
        perf_maps,
        ring_buffers,
        ..Default::default()
    };
    m.init_with_options(
        READERS,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            ..Default::default()
        },
    )
    .expect("init of readers.bpf.o");
    m
}

pub fn map_id(m: &Manager, name: &str) -> u32 {
    match m.get_map(name).expect("the object has this map") {
        aya::maps::Map::PerfEventArray(d) | aya::maps::Map::RingBuf(d) => {
            d.info().expect("map info").id()
        }
        other => panic!("{name}: {other:?}"),
    }
}
