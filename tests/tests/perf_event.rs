//! perf_event programs on the software cpu-clock event (`PERF_TYPE_SOFTWARE`,
//! `PERF_COUNT_SW_CPU_CLOCK`), one event per online CPU, sampled by period or by frequency.
//! Every kernel of the project has them.

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use ebpf_manager::{AttachMethod, CleanupType, Error, Manager, Probe, ProbeState};
use integration_tests::{user::*, *};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;

/// The tests of this file count the attachment descriptors of the process: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu_clock(uid: &str, period: u64, frequency: u64) -> Probe {
    Probe {
        perf_event_type: PERF_TYPE_SOFTWARE,
        perf_event_config: PERF_COUNT_SW_CPU_CLOCK,
        sample_period: period,
        sample_frequency: frequency,
        ..probe(uid, "perf_event_cpu_clock")
    }
}

fn samples(m: &Manager, cpu: u32) -> u64 {
    slot_of(m, "cpu_samples", cpu)
}

/// Starts `m`, keeps every online CPU busy in turn, and checks each was sampled; then stops
/// and checks that no perf event and no program is left.
fn run_on_every_cpu(mut m: Manager, probe: Probe) {
    let id = probe.id();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    let fds_before = attachment_fds();
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.method, AttachMethod::PerfEvent);
    assert_eq!(info.hook, "perf event type 1 config 0");
    let cpus = online_cpus();
    assert_eq!(
        attachment_fds() - fds_before,
        cpus.len(),
        "one perf event per online CPU"
    );
    for &cpu in &cpus {
        spin_on_cpu(cpu, Duration::from_millis(100));
        assert!(samples(&m, cpu) > 0, "no sample on CPU {cpu}");
    }
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Stopped));
    assert_eq!(attachment_fds(), fds_before, "a perf event stayed open");
    assert_unloaded(&prog_ids);
}

#[test]
fn perf_event_cpu_clock_by_period_samples_every_cpu() {
    let _serial = serial();
    // Every 100 µs of CPU time: about 1000 samples in the 100 ms each CPU spins.
    let p = cpu_clock("period", 100_000, 0);
    let m = user_manager(vec![p.clone()], user_filters(0, 0)).unwrap();
    run_on_every_cpu(m, p);
}

#[test]
fn perf_event_cpu_clock_by_frequency_samples_every_cpu() {
    let _serial = serial();
    let p = cpu_clock("frequency", 0, 1000);
    let m = user_manager(vec![p.clone()], user_filters(0, 0)).unwrap();
    run_on_every_cpu(m, p);
}

#[test]
fn perf_event_pause_stops_the_samples() {
    let _serial = serial();
    let p = cpu_clock("pause", 100_000, 0);
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    let fds_before = attachment_fds();
    m.start().unwrap();
    m.pause().unwrap();
    assert_eq!(
        attachment_fds(),
        fds_before,
        "paused, the events are closed"
    );
    let total = |m: &Manager| online_cpus().iter().map(|&c| samples(m, c)).sum::<u64>();
    let paused = total(&m);
    spin(Duration::from_millis(100));
    assert_eq!(total(&m), paused, "sampled while paused");
    m.resume().unwrap();
    spin(Duration::from_millis(100));
    assert!(total(&m) > paused, "no sample after resume");
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn perf_event_needs_a_period_or_a_frequency() {
    let p = cpu_clock("neither", 0, 0);
    let id = p.id();
    match user_manager(vec![p], Default::default()).unwrap_err() {
        Error::InvalidProbe { id: got, reason } => {
            assert_eq!(got, id);
            assert_eq!(
                reason,
                "a perf_event probe needs sample_period or sample_frequency"
            );
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

#[test]
fn perf_event_period_and_frequency_are_exclusive() {
    let p = cpu_clock("both", 100_000, 1000);
    let id = p.id();
    match user_manager(vec![p], Default::default()).unwrap_err() {
        Error::InvalidProbe { id: got, reason } => {
            assert_eq!(got, id);
            assert_eq!(reason, "set sample_period or sample_frequency, not both");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

#[test]
fn perf_event_fields_of_other_families_are_refused() {
    let p = Probe {
        binary_path: Some("/bin/sh".into()),
        ..cpu_clock("uprobe-field", 100_000, 0)
    };
    match user_manager(vec![p], Default::default()).unwrap_err() {
        Error::InvalidProbe { reason, .. } => {
            assert!(reason.starts_with("binary_path does not apply"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

/// Hardware events need the CPU's PMU (`/sys/bus/event_source/devices/cpu`), which the
/// development host and the QEMU guests lack: there, start fails on `perf_event_open`
/// (ENOENT) with a message that says so, and nothing stays attached. With a PMU, the
/// cycles event samples every CPU.
#[test]
fn perf_event_hardware_cycles_sample_or_name_the_missing_pmu() {
    let _serial = serial();
    let p = Probe {
        perf_event_type: 0,   // PERF_TYPE_HARDWARE
        perf_event_config: 0, // PERF_COUNT_HW_CPU_CYCLES
        sample_period: 1_000_000,
        ..probe("cycles", "perf_event_cpu_clock")
    };
    let id = p.id();
    let mut m = user_manager(vec![p.clone()], user_filters(0, 0)).unwrap();
    if std::path::Path::new("/sys/bus/event_source/devices/cpu").exists() {
        return run_on_every_cpu(m, p);
    }
    let fds_before = attachment_fds();
    let e = m.start().unwrap_err();
    let message = e.report().to_string();
    match e {
        Error::Attach {
            id: got,
            hook,
            method,
            ..
        } => {
            assert_eq!(got, id);
            assert_eq!(hook, "perf event type 0 config 0");
            assert_eq!(method, AttachMethod::PerfEvent);
        }
        other => panic!("expected Error::Attach, got {other:?}"),
    }
    assert!(
        message.ends_with(
            "failed: on CPU 0: the kernel has no such event; hardware events need a PMU, which \
             virtual machines often lack: `perf_event_open` failed: No such file or directory \
             (os error 2)"
        ),
        "{message}"
    );
    assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
    assert_eq!(attachment_fds(), fds_before);
}

/// A thread that tells its tid, then spins on `cpu` for 200 ms each time it is told to.
struct Spinner {
    tid: u32,
    go: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Spinner {
    fn new(cpu: u32) -> Self {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            while go_rx.recv().is_ok() {
                spin_on_cpu(cpu, Duration::from_millis(200));
                let _ = done_tx.send(());
            }
        });
        Self {
            tid: tid_rx.recv().unwrap(),
            go,
            done,
        }
    }

    fn spin(&self) {
        self.go.send(()).unwrap();
        self.done.recv().unwrap();
    }
}

/// The Go `PerfEventPID`: the program runs for that thread's events only, through one event
/// that follows it on any CPU.
#[test]
fn perf_event_pid_samples_only_that_thread() {
    let _serial = serial();
    let cpu = online_cpus()[0];
    let target = Spinner::new(cpu);
    let other = Spinner::new(cpu);
    let p = Probe {
        perf_event_pid: Some(target.tid),
        ..cpu_clock("pid", 100_000, 0)
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    let fds_before = attachment_fds();
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().hook,
        format!("perf event type 1 config 0 pid {}", target.tid)
    );
    assert_eq!(attachment_fds() - fds_before, 1, "one event, any CPU");
    other.spin();
    assert_eq!(samples(&m, cpu), 0, "another thread was sampled");
    target.spin();
    assert!(samples(&m, cpu) > 0, "the thread was not sampled");
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(attachment_fds(), fds_before, "a perf event stayed open");
    assert_unloaded(&prog_ids);
}

/// The Go `PerfEventCPUCount`: events on the first N online CPUs only.
#[test]
fn perf_event_cpu_count_opens_the_first_cpus_only() {
    let _serial = serial();
    let cpus = online_cpus();
    let p = Probe {
        perf_event_cpu_count: 1,
        ..cpu_clock("cpu-count", 100_000, 0)
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    let fds_before = attachment_fds();
    m.start().unwrap();
    assert_eq!(attachment_fds() - fds_before, 1, "one event: the first CPU");
    spin_on_cpu(cpus[0], Duration::from_millis(100));
    assert!(samples(&m, cpus[0]) > 0, "no sample on CPU {}", cpus[0]);
    if let Some(&second) = cpus.get(1) {
        spin_on_cpu(second, Duration::from_millis(100));
        assert_eq!(samples(&m, second), 0, "CPU {second} has no event");
    } else {
        println!("one online CPU: only the first-CPU half of this test runs here");
    }
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);

    // More CPUs than are online: the error says how many are.
    let p = Probe {
        perf_event_cpu_count: cpus.len() as u32 + 1,
        ..cpu_clock("too-many", 100_000, 0)
    };
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    let fds_before = attachment_fds();
    let err = m.start().unwrap_err();
    assert!(
        err.report().to_string().contains(&format!(
            "perf_event_cpu_count is {}, but only {} CPUs are online",
            cpus.len() + 1,
            cpus.len()
        )),
        "{err}"
    );
    assert_eq!(attachment_fds(), fds_before, "nothing attached");
}
