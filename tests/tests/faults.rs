//! Fault injection: managers of mixed families (tracepoints, a raw tracepoint, kprobes where
//! the kernel has them, uprobes through the PMU and tracefs, a pinned program, perf and ring
//! readers, tail-call and map routes, bypass); each step that can fail in the kernel is made
//! to fail in turn through the `fault-injection` feature's failure points
//! (`ebpf_manager::fault`), and after each failure the kernel's state is compared with the
//! state before the call: programs, maps, this process's fds by kind (links, perf events,
//! epoll, eventfd), its tracefs events, bpffs entries and threads.
//!
//! One test in its own binary: nothing else loads programs while it compares.

use std::{path::PathBuf, time::Duration};

use ebpf_manager::{
    fault, CleanupType, ConstantEditor, KprobeAttachMethod, Manager, MapRoute, Options, Probe,
    ProbeIdentificationPair as Id, ProbesSelector, TailCallRoute, UprobeAttachMethod,
};
use integration_tests::{
    readers,
    state::{assert_same, settled, snapshot, Snapshot},
    user::*,
    *,
};

const ROUTER: &[u8] = include_bytes!("../../ebpf-fixtures/router.bpf.o");
const BYPASS: &[u8] = include_bytes!("../../ebpf-fixtures/bypass.bpf.o");

/// One kind of manager, built fresh for every run.
struct Scenario {
    name: &'static str,
    object: &'static [u8],
    probes: Vec<Probe>,
    options: fn() -> Options,
    readers: bool,
}

fn pin_path() -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/bpf/mgr_test_{}_faults",
        std::process::id()
    ))
}

fn scenarios(target: &std::path::Path) -> Vec<Scenario> {
    let syscalls = [
        "mkdir", "rmdir", "getppid", "getpid", "gettid", "getuid", "umask", "sync", "chdir", "dup",
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
    probes.push(Probe {
        pin_path: Some(pin_path()),
        ..probe("pinned", "tagged_sys_enter_mkdir")
    });
    if kernel_has_kprobes() {
        probes.push(probe("kp", "kprobe_vfs_mkdir"));
        probes.push(Probe {
            kprobe_attach_method: KprobeAttachMethod::Tracefs,
            ..probe("krp", "kretprobe_vfs_mkdir")
        });
        probes.push(Probe {
            hook_func_name: Some("vfs_rmdir".into()),
            ..probe("kp-generic", "kprobe_generic")
        });
    }
    let uprobe = |uid: &str, function: &str, method| Probe {
        binary_path: Some(target.to_owned()),
        uprobe_attach_method: method,
        ..probe(uid, function)
    };
    vec![
        Scenario {
            name: "probes.bpf.o: 10 tracepoints, raw tracepoint, pinned program, kprobes",
            object: PROBES,
            probes,
            options: this_thread_only,
            readers: false,
        },
        Scenario {
            name: "user.bpf.o: uprobe (PMU) and uretprobe (tracefs)",
            object: USER,
            probes: vec![
                uprobe("u", "uprobe_add", UprobeAttachMethod::PerfEventOpen),
                uprobe("u", "uretprobe_add", UprobeAttachMethod::Tracefs),
            ],
            options: || user_filters(0, 0),
            readers: false,
        },
        Scenario {
            name: "readers.bpf.o: perf and ring readers",
            object: readers::READERS,
            probes: vec![
                probe("perf_emit", "perf_emit"),
                probe("ring_emit", "ring_emit"),
            ],
            options: || Options {
                constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
                ..Default::default()
            },
            readers: true,
        },
        Scenario {
            name: "router.bpf.o: a tail-call route and two map routes",
            object: ROUTER,
            probes: vec![probe("entry", "router_entry")],
            options: || Options {
                constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
                tail_call_router: vec![TailCallRoute {
                    prog_array_name: "jump_table".into(),
                    key: 1,
                    probe_identification_pair: Id::new("", "tail_target"),
                    ..Default::default()
                }],
                map_router: ["inner_a", "inner_b"]
                    .iter()
                    .enumerate()
                    .map(|(key, inner)| MapRoute {
                        routing_map_name: "outer".into(),
                        key: key as u32,
                        map_name: (*inner).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            readers: false,
        },
        Scenario {
            name: "bypass.bpf.o: bypass enabled",
            object: BYPASS,
            probes: vec![
                probe("mkdir", "bypassable_mkdir"),
                probe("rmdir", "bypassable_rmdir"),
            ],
            options: || Options {
                bypass_enabled: true,
                constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
                ..Default::default()
            },
            readers: false,
        },
    ]
}

fn build(s: &Scenario) -> Manager {
    let seen = std::sync::Arc::new(readers::Seen::default());
    Manager {
        probes: s.probes.clone(),
        perf_maps: if s.readers {
            vec![seen.perf_map("perf_events")]
        } else {
            vec![]
        },
        ring_buffers: if s.readers {
            vec![seen.ring_buffer("ring_events")]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

/// The steps each point took in one clean run of `run`.
fn dry_run(run: &mut Run<'_>) -> Vec<(&'static str, usize)> {
    fault::reset();
    let (result, hits) = run();
    result.expect("the run succeeds without faults");
    fault::reset();
    hits
}

/// A call under test: its result, and the steps it took ([`fault::hits`] right after it,
/// before any clean-up the run does).
type Run<'a> = dyn FnMut() -> (ebpf_manager::Result<()>, Vec<(&'static str, usize)>) + 'a;

/// Makes each step of `run` fail in turn; after each failure, `check` compares.
fn inject(what: &str, run: &mut Run<'_>, check: &mut dyn FnMut(&str)) -> usize {
    let mut points = 0;
    for (point, count) in dry_run(run) {
        for nth in 1..=count {
            fault::arm(point, nth);
            let (result, _) = run();
            let fired = fault::fired();
            fault::reset();
            let label = format!("{what}: {point} #{nth}");
            assert!(fired, "{label}: the point was not reached again");
            let err = result.expect_err(&format!("{label}: the call succeeded"));
            assert!(err.to_string().contains("injected fault"), "{label}: {err}");
            check(&label);
            points += 1;
        }
    }
    points
}

#[test]
fn every_failed_step_leaves_the_kernel_as_before() {
    setup_bpffs();
    let _bpffs = bpffs_lock();
    let target = TempFile::uprobe_target();
    let mut total = 0;
    let mut report = Vec::new();
    // FAULTS_ONLY=<part of a scenario name> runs one scenario, when chasing a failure.
    let only = std::env::var("FAULTS_ONLY").unwrap_or_default();
    for s in scenarios(target.path()) {
        if !s.name.contains(&only) {
            continue;
        }
        let _ = std::fs::remove_file(pin_path());
        // init + start: after a failure, stopping what is left must leave the kernel as
        // before init; a failed start must leave no link, event or thread behind.
        let before = settled();
        let mut after_init = None;
        let mut run = || {
            let mut m = build(&s);
            m.init_with_options(s.object, (s.options)())?;
            after_init = Some(snapshot());
            let started = m.start();
            let hits = fault::hits();
            if started.is_err() {
                // A joined reader thread leaves /proc/self/task a moment after the join.
                let init = after_init.as_ref().unwrap();
                let key = |snap: &Snapshot| {
                    (
                        snap.fds.get("anon_inode:bpf_link").copied(),
                        snap.tracefs.clone(),
                        snap.threads,
                    )
                };
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                let mut now = key(&snapshot());
                while now != key(init) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                    now = key(&snapshot());
                }
                assert_eq!(
                    now,
                    key(init),
                    "{}: a failed start left links, events or threads",
                    s.name
                );
            }
            m.stop(CleanupType::CleanAll)?;
            started.map(|()| hits)
        };
        let mut run = || match run() {
            Ok(hits) => (Ok(()), hits),
            Err(e) => (Err(e), fault::hits()),
        };
        let n = inject(s.name, &mut run, &mut |label| {
            assert_same(&before, &format!("init + start, {label}"))
        });
        report.push(format!(
            "{n:>3} injection points: init + start of {}",
            s.name
        ));
        total += n;
    }

    // Runtime calls on a running manager: each failure leaves the kernel as before the call.
    let s = &scenarios(target.path())[0];
    let _ = std::fs::remove_file(pin_path());
    let selected = |m: &mut Manager| {
        let mut m2 = Manager {
            probes: s.probes.clone(),
            ..Default::default()
        };
        let mut options = (s.options)();
        options.activated_probes = vec![ProbesSelector::Probe(Id::new(
            "tp-mkdir",
            "tracepoint_sys_enter_mkdir",
        ))];
        m2.init_with_options(s.object, options).unwrap();
        m2.start().unwrap();
        *m = m2;
    };
    type Op<'a> = (
        &'static str,
        Box<dyn Fn(&mut Manager) -> ebpf_manager::Result<()> + 'a>,
    );
    let every: Vec<Id> = s.probes.iter().map(Probe::id).collect();
    let ops: Vec<Op> = vec![
        (
            "update_activated_probes (every probe)",
            Box::new(|m: &mut Manager| {
                let all = every.iter().cloned().map(ProbesSelector::Probe).collect();
                m.update_activated_probes(all)
            }),
        ),
        (
            "add_hook (tagged_sys_enter_mkdir on rmdir, pinned)",
            Box::new(|m: &mut Manager| {
                m.add_hook(
                    "",
                    Probe {
                        uid: "late".into(),
                        pin_path: Some(PathBuf::from(format!(
                            "/sys/fs/bpf/mgr_test_{}_faults_hook",
                            std::process::id()
                        ))),
                        tracepoint_category: Some("syscalls".into()),
                        tracepoint_name: Some("sys_enter_rmdir".into()),
                        ..probe("", "tagged_sys_enter_mkdir")
                    },
                )
            }),
        ),
        (
            "clone_program (of tp-mkdir)",
            Box::new(|m: &mut Manager| {
                m.clone_program(
                    "tp-mkdir",
                    Probe {
                        uid: "clone".into(),
                        ..probe("", "tracepoint_sys_enter_mkdir")
                    },
                    vec![ConstantEditor::new("filter_tid", 1u32)],
                    vec![],
                )
            }),
        ),
    ];
    for (name, op) in ops {
        let mut m = Manager::default();
        selected(&mut m);
        let before = std::cell::RefCell::new(settled());
        let mut run = || {
            *before.borrow_mut() = settled();
            let result = op(&mut m);
            let hits = fault::hits();
            if result.is_ok() {
                // Back to the state before, for the next run: a fresh manager.
                m.stop(CleanupType::CleanAll).unwrap();
                selected(&mut m);
            }
            (result, hits)
        };
        let n = inject(name, &mut run, &mut |label| {
            assert_same(&before.borrow(), label)
        });
        m.stop(CleanupType::CleanAll).unwrap();
        report.push(format!(
            "{n:>3} injection points: {name} on a running manager"
        ));
        total += n;
    }

    // pause and resume with bypass: a failed bypass write changes nothing.
    let s = &scenarios(target.path())[4];
    let mut m = build(s);
    m.init_with_options(s.object, (s.options)()).unwrap();
    m.start().unwrap();
    let before = settled();
    let mut pause = || {
        let r = m.pause();
        let hits = fault::hits();
        if r.is_ok() {
            m.resume().unwrap();
        }
        (r, hits)
    };
    let n = inject("pause (bypass)", &mut pause, &mut |label| {
        assert_same(&before, label)
    });
    report.push(format!("{n:>3} injection points: pause with bypass"));
    total += n;
    m.stop(CleanupType::CleanAll).unwrap();

    println!(
        "fault injection, {} kprobes on this kernel:",
        if kernel_has_kprobes() {
            "with"
        } else {
            "without"
        }
    );
    for line in &report {
        println!("  {line}");
    }
    println!("  {total} injection points in all, each compared with the kernel's state before");
    assert!(total >= 20, "{total} injection points");
}
