//! A randomized soak: random sequences of API calls on a 20-probe manager (probes.bpf.o:
//! tracepoints, raw tracepoints, kprobes and a tracefs kretprobe where the kernel has them) and
//! a reader manager (readers.bpf.o: perf and ring readers), with kernel refusals injected at
//! random steps (the `fault-injection` feature's load, object, attach and reader points fire
//! here; pins, routes and bypass have faults.rs). Every sequence ends (a `stop` or a drop)
//! with the kernel exactly as it began: programs, maps, this process's fds by kind, tracefs
//! events, bpffs entries, threads. The comparison is system-wide for programs and maps: run
//! it where nothing else loads BPF meanwhile.
//!
//! `EBPFM_SOAK_SEQUENCES` (default 25) and `EBPFM_SOAK_SEED` (default fixed) choose the run;
//! `cargo xtask soak --sequences N --seed S` runs long ones. A failure prints the seed, the
//! sequence number and every call of the sequence, so it replays.
//!
//! One test in its own binary: nothing else loads programs while it compares.

use std::sync::Arc;

use ebpf_manager::{
    fault, CleanupType, ConstantEditor, KprobeAttachMethod, Manager, Options, Probe,
    ProbeIdentificationPair as Id, ProbesSelector,
};
use integration_tests::{
    readers::{Seen, READERS},
    state::{settled, wait_nothing_more},
    *,
};

/// xorshift64*: small, and the same sequence from the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The 20 probes of manager A.
fn probes() -> Vec<Probe> {
    let syscalls = [
        "mkdir", "rmdir", "getppid", "getpid", "gettid", "getuid", "umask", "sync", "chdir", "dup",
        "getgid", "geteuid", "getegid", "getpgrp", "setsid", "pause",
    ];
    let mut probes: Vec<Probe> = syscalls
        .iter()
        .map(|s| Probe {
            uid: format!("tp-{s}"),
            tracepoint_category: Some("syscalls".into()),
            tracepoint_name: Some(format!("sys_enter_{s}")),
            ..probe("", "tracepoint_sys_enter_mkdir")
        })
        .collect();
    probes.push(probe("raw", "raw_tracepoint_sys_enter"));
    probes.push(probe("tagged", "tagged_sys_enter_mkdir"));
    if kernel_has_kprobes() {
        probes.push(probe("kp", "kprobe_vfs_mkdir"));
        probes.push(Probe {
            kprobe_attach_method: KprobeAttachMethod::Tracefs,
            ..probe("krp", "kretprobe_vfs_mkdir")
        });
    } else {
        probes.push(probe("raw-2", "raw_tracepoint_sys_enter"));
        probes.push(Probe {
            uid: "tp-close".into(),
            tracepoint_category: Some("syscalls".into()),
            tracepoint_name: Some("sys_enter_close".into()),
            ..probe("", "tracepoint_sys_enter_mkdir")
        });
    }
    probes
}

/// The manager under soak: A (probes) or B (readers), with what the sequence added to it.
struct Subject {
    manager: Manager,
    initialized: bool,
    /// Probes added by add_hook or clone_program, which detach_hook may remove.
    added: Vec<Id>,
}

fn new_subject(readers: bool, seen: &Arc<Seen>) -> Subject {
    let manager = if readers {
        Manager {
            probes: vec![
                probe("perf_emit", "perf_emit"),
                probe("ring_emit", "ring_emit"),
            ],
            perf_maps: vec![seen.perf_map("perf_events")],
            ring_buffers: vec![seen.ring_buffer("ring_events")],
            ..Default::default()
        }
    } else {
        Manager {
            probes: probes(),
            ..Default::default()
        }
    };
    Subject {
        manager,
        initialized: false,
        added: Vec::new(),
    }
}

/// Runs one call on `s`, chosen by `rng`; returns its description and outcome.
fn step(s: &mut Subject, readers: bool, rng: &mut Rng, n: usize) -> String {
    let m = &mut s.manager;
    if !s.initialized {
        let mut options = Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
            ..Default::default()
        };
        let selected = !readers && rng.chance(50);
        if selected {
            let ids: Vec<Id> = m.probes.iter().map(Probe::id).collect();
            options.activated_probes = ids
                .into_iter()
                .filter(|_| rng.chance(60))
                .map(ProbesSelector::Probe)
                .collect();
        }
        let object = if readers { READERS } else { PROBES };
        let r = m.init_with_options(object, options);
        s.initialized = r.is_ok();
        return format!("init (selectors: {selected}) -> {}", outcome(&r));
    }
    let all: Vec<Id> = m.get_probes().iter().map(|p| p.id()).collect();
    let pick = |rng: &mut Rng| all[rng.below(all.len().max(1)) % all.len().max(1)].clone();
    let choice = rng.below(if readers { 5 } else { 11 });
    match (readers, choice) {
        (_, 0) => format!("start -> {}", outcome(&m.start())),
        (_, 1) => format!("stop -> {}", outcome(&m.stop(CleanupType::CleanAll))),
        (true, 2) => format!("stop_readers -> {}", outcome(&m.stop_readers())),
        (true, 3) => {
            let map = if rng.chance(50) {
                "perf_events"
            } else {
                "ring_events"
            };
            format!("start_reader({map}) -> {}", outcome(&m.start_reader(map)))
        }
        (true, _) => format!("pause -> {}", outcome(&m.pause())),
        (false, 2) => format!("pause -> {}", outcome(&m.pause())),
        (false, 3) => format!("resume -> {}", outcome(&m.resume())),
        (false, 4) if !all.is_empty() => {
            let id = pick(rng);
            format!("pause_probe({id}) -> {}", outcome(&m.pause_probe(&id)))
        }
        (false, 5) if !all.is_empty() => {
            let id = pick(rng);
            format!("resume_probe({id}) -> {}", outcome(&m.resume_probe(&id)))
        }
        (false, 6) => {
            let chosen: Vec<ProbesSelector> = all
                .iter()
                .filter(|_| rng.chance(40))
                .cloned()
                .map(ProbesSelector::Probe)
                .collect();
            let n_sel = chosen.len();
            format!(
                "update_activated_probes({n_sel} probes) -> {}",
                outcome(&m.update_activated_probes(chosen))
            )
        }
        (false, 7) => {
            let id = Id::new(format!("hook-{n}"), "tracepoint_sys_enter_mkdir");
            let r = m.add_hook(
                "tp-mkdir",
                Probe {
                    tracepoint_category: Some("syscalls".into()),
                    tracepoint_name: Some("sys_enter_rmdir".into()),
                    ..probe(&id.uid, &id.ebpf_func_name)
                },
            );
            if r.is_ok() {
                s.added.push(id.clone());
            }
            format!("add_hook({id}) -> {}", outcome(&r))
        }
        (false, 8) => {
            let id = Id::new(format!("clone-{n}"), "tracepoint_sys_enter_mkdir");
            let r = m.clone_program(
                "tp-mkdir",
                probe(&id.uid, &id.ebpf_func_name),
                vec![ConstantEditor::new("filter_tid", 1u32)],
                vec![],
            );
            if r.is_ok() {
                s.added.push(id.clone());
            }
            format!("clone_program({id}) -> {}", outcome(&r))
        }
        (false, 9) if !s.added.is_empty() => {
            let id = s.added.remove(rng.below(s.added.len()));
            format!("detach_hook({id}) -> {}", outcome(&m.detach_hook(&id)))
        }
        _ => {
            // A program no probe declares, loaded on request (kprobe_generic loads on every
            // kernel; attaching it is what needs kprobes), or one the object lacks.
            let name = if rng.chance(70) {
                "kprobe_generic"
            } else {
                "no_such_program"
            };
            let id = Id::new("", name);
            format!(
                "load_program({id}) -> {}",
                outcome(&m.load_program(&id).map(drop))
            )
        }
    }
}

fn outcome(r: &ebpf_manager::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Prints the sequence when the thread panics in it, in a call or in the comparison (the seed
/// replays it).
struct Replay {
    seed: u64,
    sequence: usize,
    calls: std::cell::RefCell<Vec<String>>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "soak failed: EBPFM_SOAK_SEED={} sequence {}; its calls:\n  {}",
                self.seed,
                self.sequence,
                self.calls.borrow().join("\n  ")
            );
        }
    }
}

#[test]
fn soak_random_sequences_leave_the_kernel_as_they_found_it() {
    setup();
    let sequences: usize = std::env::var("EBPFM_SOAK_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let seed: u64 = std::env::var("EBPFM_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_50a4);
    let mut rng = Rng(seed | 1);
    let seen = Arc::new(Seen::default());
    let (mut calls_total, mut injected_total, mut fired_total) = (0, 0, 0);
    for sequence in 0..sequences {
        let before = settled();
        let readers = rng.chance(25);
        let mut subject = new_subject(readers, &seen);
        let replay = Replay {
            seed,
            sequence,
            calls: Default::default(),
        };
        let length = 2 + rng.below(10);
        for n in 0..length {
            let armed = rng.chance(30).then(|| {
                // The points these calls reach (pins, routes and bypass are faults.rs's).
                const REACHED: [&str; 4] = ["load", "object", "attach", "reader"];
                let point = REACHED[rng.below(REACHED.len())];
                let nth = 1 + rng.below(2);
                fault::arm(point, nth);
                format!("{point} #{nth}")
            });
            let call = step(&mut subject, readers, &mut rng, n);
            let fired = fault::fired();
            fault::reset();
            calls_total += 1;
            if armed.is_some() {
                injected_total += 1;
                fired_total += usize::from(fired);
            }
            replay.calls.borrow_mut().push(match armed {
                Some(point) => format!("[fault {point}, fired: {fired}] {call}"),
                None => call,
            });
        }
        let end = if rng.chance(50) {
            let r = subject.manager.stop(CleanupType::CleanAll);
            drop(subject);
            format!("stop, then drop -> {}", outcome(&r))
        } else {
            drop(subject);
            "drop".to_owned()
        };
        replay.calls.borrow_mut().push(end);
        if let Err(e) = wait_nothing_more(&before) {
            panic!("sequence {sequence}: {e}");
        }
    }
    println!(
        "soak: {sequences} sequences, {calls_total} calls, {injected_total} faults armed \
         ({fired_total} fired), seed {seed}: the kernel as before after each"
    );
    assert!(fired_total > 0 || sequences < 5, "no fault ever fired");
}
