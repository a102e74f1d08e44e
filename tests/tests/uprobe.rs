//! Uprobes and uretprobes: on functions of this test binary, of a separate C program run as a
//! child process, and of shared libraries; by section, by name, by pattern, by offset, for
//! one process. Every kernel of the project has the uprobe PMU (Linux 4.17), so every test
//! runs for real in every tier.

use std::path::{Path, PathBuf};

use ebpf_manager::{
    AttachMethod, CleanupType, Error, Manager, Options, Probe, ProbeIdentificationPair, ProbeState,
    UprobeAttachMethod,
};
use integration_tests::{user::*, *};

/// A function of this test binary, probed by name.
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_test_add(a: i64, b: i64) -> i64 {
    std::hint::black_box(a) + std::hint::black_box(b)
}

/// Candidates of the pattern tests: `uprobe_pick_?` matches `a` and `b`; the literal name
/// `uprobe_pick_[ab]` is a glob too, matching `a` and `b`, and the exact name of the third.
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_pick_a(a: i64, _: i64) -> i64 {
    std::hint::black_box(a)
}

/// See [`uprobe_pick_a`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_pick_b(a: i64, _: i64) -> i64 {
    std::hint::black_box(a)
}

/// See [`uprobe_pick_a`].
#[export_name = "uprobe_pick_[ab]"]
#[inline(never)]
pub extern "C" fn uprobe_pick_literal(a: i64, _: i64) -> i64 {
    std::hint::black_box(a)
}

fn me() -> PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

/// A probe of `function` (a program of user.bpf.c) on `binary`.
fn uprobe(uid: &str, function: &str, binary: &Path) -> Probe {
    Probe {
        binary_path: Some(binary.to_owned()),
        ..probe(uid, function)
    }
}

/// The hits and last value of `slot`.
fn seen(m: &Manager, slot: u32) -> (u64, u64) {
    (
        slot_of(m, "user_hits", slot),
        slot_of(m, "user_values", slot),
    )
}

/// Stops `m` and checks that nothing of it is left: no program (a perf event or link still
/// open would hold its program loaded), no tracefs uprobe event.
fn stop_and_check(mut m: Manager, ids: &[ProbeIdentificationPair], binary: &Path) {
    let prog_ids = program_ids(&m, ids);
    m.stop(CleanupType::CleanAll).expect("stop");
    for id in ids {
        assert_eq!(m.probe_state(id), Some(ProbeState::Stopped));
    }
    assert_unloaded(&prog_ids);
    assert_eq!(uprobe_events_of(binary), Vec::<String>::new());
}

#[test]
fn uprobe_and_uretprobe_on_a_function_of_the_test_binary() {
    let exe = me();
    let entry = Probe {
        hook_func_name: Some("uprobe_test_add".into()),
        ..uprobe("self", "uprobe_generic", &exe)
    };
    let exit = Probe {
        hook_func_name: Some("uprobe_test_add".into()),
        ..uprobe("self", "uretprobe_generic", &exe)
    };
    let ids = [entry.id(), exit.id()];
    let mut m = user_manager(vec![entry, exit], user_filters(0, gettid())).unwrap();
    m.start().unwrap();
    let info = m.attach_info(&ids[0]).unwrap();
    assert_eq!(info.hook, format!("{}:uprobe_test_add", exe.display()));
    assert_eq!(info.method, AttachMethod::Uprobe);
    assert_eq!(uprobe_test_add(7, 35), 42);
    assert_eq!(
        seen(&m, user_slot::UPROBE_GENERIC),
        (1, 7),
        "entry: 1 hit, a = 7"
    );
    assert_eq!(
        seen(&m, user_slot::URETPROBE_GENERIC),
        (1, 42),
        "return: 1 hit, 42"
    );
    stop_and_check(m, &ids, &exe);
}

#[test]
fn uprobe_and_uretprobe_on_a_c_program_from_their_sections() {
    let target = TempFile::uprobe_target();
    let entry = uprobe("c", "uprobe_add", target.path());
    let exit = uprobe("c", "uretprobe_add", target.path());
    let ids = [entry.id(), exit.id()];
    let mut m = user_manager(vec![entry, exit], user_filters(0, 0)).unwrap();
    m.start().unwrap();
    assert_eq!(
        ebpf_manager::diagnostics::binary_symbol_reads(target.path()),
        1,
        "both probes resolved and attached from one read of the binary"
    );
    assert_eq!(
        m.attach_info(&ids[1]).unwrap().hook,
        format!("{}:uprobe_target_add", target.path().display())
    );
    assert_eq!(run_uprobe_target(target.path(), 4), uprobe_target_sum(4));
    // Calls add(1, 100) .. add(4, 100): the last saw a = 4 and returned 104.
    assert_eq!(seen(&m, user_slot::UPROBE), (4, 4));
    assert_eq!(seen(&m, user_slot::URETPROBE), (4, 104));
    stop_and_check(m, &ids, target.path());
}

/// The Go `UprobeAttachMethod: AttachWithProbeEvents`: the uprobes are `uprobe_events`
/// entries of the manager's tracefs group while they run, and gone after `stop`.
#[test]
fn uprobe_and_uretprobe_through_tracefs_uprobe_events() {
    let target = TempFile::uprobe_target();
    let tracefs = |p: Probe| Probe {
        uprobe_attach_method: UprobeAttachMethod::Tracefs,
        ..p
    };
    let entry = tracefs(uprobe("c", "uprobe_add", target.path()));
    let exit = tracefs(uprobe("c", "uretprobe_add", target.path()));
    let ids = [entry.id(), exit.id()];
    let mut m = user_manager(vec![entry, exit], user_filters(0, 0)).unwrap();
    m.start().unwrap();
    for id in &ids {
        let info = m.attach_info(id).unwrap();
        assert_eq!(info.method, AttachMethod::UprobeTracefs);
        assert_eq!(
            info.hook,
            format!("{}:uprobe_target_add", target.path().display())
        );
    }
    let events = own_tracefs_events("uprobe_events");
    let path = target.path().canonicalize().unwrap();
    let on_target: Vec<&String> = events
        .iter()
        .filter(|l| l.contains(&*path.to_string_lossy()))
        .collect();
    assert_eq!(on_target.len(), 2, "one event each: {events:?}");
    assert!(
        on_target.iter().any(|l| l.starts_with("p:"))
            && on_target.iter().any(|l| l.starts_with("r:")),
        "{on_target:?}"
    );
    assert_eq!(run_uprobe_target(target.path(), 4), uprobe_target_sum(4));
    assert_eq!(seen(&m, user_slot::UPROBE), (4, 4));
    assert_eq!(seen(&m, user_slot::URETPROBE), (4, 104));
    stop_and_check(m, &ids, target.path());
}

/// `Options::default_uprobe_attach_method` (the Go `DefaultUprobeAttachMethod`) applies to
/// probes that leave theirs to `Default`; the Go `PerfEventPID` of a uprobe
/// (`perf_event_pid`) filters the tracefs event to one process.
#[test]
fn uprobe_default_attach_method_and_perf_event_pid_through_tracefs() {
    let target = TempFile::uprobe_target();
    let watched = WaitingTarget::start(target.path(), 5);
    let other = WaitingTarget::start(target.path(), 3);
    let p = Probe {
        perf_event_pid: Some(watched.pid()),
        ..uprobe("pid-tracefs", "uprobe_add", target.path())
    };
    let id = p.id();
    let options = Options {
        default_uprobe_attach_method: UprobeAttachMethod::Tracefs,
        ..user_filters(0, 0)
    };
    let mut m = user_manager(vec![p], options).unwrap();
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().method,
        AttachMethod::UprobeTracefs
    );
    assert_eq!(other.release(), uprobe_target_sum(3));
    assert_eq!(
        seen(&m, user_slot::UPROBE),
        (0, 0),
        "a process other than perf_event_pid was counted"
    );
    assert_eq!(watched.release(), uprobe_target_sum(5));
    assert_eq!(seen(&m, user_slot::UPROBE), (5, 5));
    stop_and_check(m, &[id], target.path());
}

/// The Go `UprobeOffset` on a program whose section names a function (`uprobe/<symbol>`):
/// the offset is where the probe goes, the section's symbol is not looked up.
#[test]
fn uprobe_offset_overrides_the_sections_symbol() {
    let target = TempFile::uprobe_target();
    let twice = function_offset(target.path(), "uprobe_target_twice");
    for method in [
        UprobeAttachMethod::PerfEventOpen,
        UprobeAttachMethod::Tracefs,
    ] {
        let p = Probe {
            uprobe_offset: twice,
            uprobe_attach_method: method,
            ..uprobe("go-offset", "uprobe_add", target.path())
        };
        let id = p.id();
        let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
        m.start().unwrap();
        assert_eq!(
            m.attach_info(&id).unwrap().hook,
            format!("{}:{twice:#x}", target.path().display()),
            "{method:?}"
        );
        run_uprobe_target(target.path(), 3);
        // uprobe_target_twice(i * 1000) ran: the probe is there, not in uprobe_target_add.
        assert_eq!(seen(&m, user_slot::UPROBE), (3, 3000), "{method:?}");
        stop_and_check(m, &[id], target.path());
    }
}

#[test]
fn uprobe_pid_counts_only_that_process() {
    let target = TempFile::uprobe_target();
    let watched = WaitingTarget::start(target.path(), 5);
    let other = WaitingTarget::start(target.path(), 3);
    let p = Probe {
        uprobe_pid: Some(watched.pid()),
        ..uprobe("pid", "uprobe_add", target.path())
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    m.start().unwrap();
    // Another process of the same binary, started before and after attaching: not counted.
    assert_eq!(other.release(), uprobe_target_sum(3));
    assert_eq!(run_uprobe_target(target.path(), 2), uprobe_target_sum(2));
    assert_eq!(
        seen(&m, user_slot::UPROBE),
        (0, 0),
        "a process other than uprobe_pid was counted"
    );
    assert_eq!(watched.release(), uprobe_target_sum(5));
    assert_eq!(seen(&m, user_slot::UPROBE), (5, 5));
    stop_and_check(m, &[id], target.path());
}

#[test]
fn uprobe_pid_of_no_process_fails_at_start() {
    let target = TempFile::uprobe_target();
    // A child that has exited and been reaped: its pid names no process (until reused).
    let gone = {
        let w = WaitingTarget::start(target.path(), 0);
        let pid = w.pid();
        w.release();
        pid
    };
    let p = Probe {
        uprobe_pid: Some(gone),
        ..uprobe("no-pid", "uprobe_add", target.path())
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    let e = m.start().unwrap_err();
    let message = e.report().to_string();
    assert!(
        message.ends_with(&format!(
            "failed: uprobe_pid {gone} names no running process: \
             `perf_event_open` failed: No such process (os error 3)"
        )),
        "{message}"
    );
    match e {
        Error::Attach {
            id: got,
            hook,
            method,
            ..
        } => {
            assert_eq!(got, id);
            assert_eq!(
                hook,
                format!("{}:uprobe_target_add", target.path().display())
            );
            assert_eq!(method, AttachMethod::Uprobe);
        }
        other => panic!("expected Error::Attach, got {other:?}"),
    }
    assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
    drop(m);
    assert_unloaded(&prog_ids);
    assert_eq!(uprobe_events_of(target.path()), Vec::<String>::new());
}

#[test]
fn uprobe_pattern_exact_name_wins() {
    let exe = me();
    let p = Probe {
        attach_to_func_name: Some("uprobe_pick_[ab]".into()),
        ..uprobe("exact", "uprobe_generic", &exe)
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, gettid())).unwrap();
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().hook,
        format!("{}:uprobe_pick_[ab]", exe.display())
    );
    uprobe_pick_a(1, 0);
    uprobe_pick_b(2, 0);
    uprobe_pick_literal(3, 0);
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (1, 3));
    stop_and_check(m, &[id], &exe);
}

#[test]
fn uprobe_pattern_takes_the_first_match_in_symbol_table_order() {
    let exe = me();
    let first = elf_functions(&exe)
        .into_iter()
        .map(|f| f.name)
        .find(|n| n == "uprobe_pick_a" || n == "uprobe_pick_b")
        .expect("the test binary defines uprobe_pick_a and uprobe_pick_b");
    let p = Probe {
        attach_to_func_name: Some("uprobe_pick_?".into()),
        ..uprobe("first", "uprobe_generic", &exe)
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, gettid())).unwrap();
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().hook,
        format!("{}:{first}", exe.display())
    );
    uprobe_pick_a(1, 0);
    uprobe_pick_b(2, 0);
    uprobe_pick_literal(3, 0);
    let expected = if first == "uprobe_pick_a" { 1 } else { 2 };
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (1, expected));
    stop_and_check(m, &[id], &exe);
}

#[test]
fn uprobe_pattern_on_the_c_program() {
    let target = TempFile::uprobe_target();
    let p = Probe {
        attach_to_func_name: Some("uprobe_target_tw*".into()),
        ..uprobe("c-pattern", "uprobe_generic", target.path())
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    m.start().unwrap();
    run_uprobe_target(target.path(), 3);
    // uprobe_target_twice(1000), (2000), (3000).
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (3, 3000));
    stop_and_check(m, &[id], target.path());
}

#[test]
fn uprobe_pattern_matching_nothing_names_the_binary() {
    setup();
    let target = TempFile::uprobe_target();
    let p = Probe {
        attach_to_func_name: Some("no_such_function_*".into()),
        ..uprobe("nothing", "uprobe_generic", target.path())
    };
    let id = p.id();
    let mut m = Manager {
        probes: vec![p],
        ..Default::default()
    };
    match m.init(USER).unwrap_err() {
        Error::NoMatchingFunction {
            id: got,
            field,
            pattern,
            searched,
            source_file,
        } => {
            assert_eq!(got, id);
            assert_eq!(field, ebpf_manager::PatternField::AttachToFuncName);
            assert_eq!(pattern, "no_such_function_*");
            assert_eq!(source_file, target.path());
            assert_eq!(searched, elf_functions(target.path()).len());
        }
        other => panic!("expected NoMatchingFunction, got {other:?}"),
    }
}

#[test]
fn uprobe_without_binary_path_is_refused_at_init() {
    setup();
    let p = Probe {
        hook_func_name: Some("uprobe_test_add".into()),
        ..probe("no-binary", "uprobe_generic")
    };
    let id = p.id();
    let mut m = Manager {
        probes: vec![p],
        ..Default::default()
    };
    match m.init(USER).unwrap_err() {
        Error::InvalidProbe { id: got, reason } => {
            assert_eq!(got, id);
            assert!(reason.contains("binary_path"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

#[test]
fn uprobe_binary_path_that_does_not_exist_is_refused_at_init() {
    setup();
    let missing = std::env::temp_dir().join("ebpf-manager-test-no-such-binary");
    let p = uprobe("missing", "uprobe_add", &missing);
    let mut m = Manager {
        probes: vec![p],
        ..Default::default()
    };
    match m.init(USER).unwrap_err() {
        Error::InvalidProbe { reason, .. } => {
            assert!(reason.contains(&missing.display().to_string()), "{reason}");
            assert!(reason.contains("does not exist"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

#[test]
fn uprobe_without_a_function_is_refused_at_init() {
    setup();
    let exe = me();
    // `uprobe` (no function in the section) and nothing in the declaration.
    let mut m = Manager {
        probes: vec![uprobe("no-function", "uprobe_generic", &exe)],
        ..Default::default()
    };
    match m.init(USER).unwrap_err() {
        Error::InvalidProbe { reason, .. } => {
            assert!(reason.contains("needs a function"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

#[test]
fn uprobe_on_a_missing_symbol_fails_at_start_and_leaves_nothing() {
    let target = TempFile::uprobe_target();
    let good = uprobe("good", "uprobe_add", target.path());
    let bad = Probe {
        hook_func_name: Some("uprobe_target_no_such_function".into()),
        ..uprobe("bad", "uprobe_generic", target.path())
    };
    let ids = [good.id(), bad.id()];
    let mut m = user_manager(vec![good, bad], user_filters(0, 0)).unwrap();
    let prog_ids = program_ids(&m, &ids);
    let e = m.start().unwrap_err();
    let message = e.report().to_string();
    assert!(
        message.ends_with(
            "failed: error resolving symbol: unknown symbol `uprobe_target_no_such_function`"
        ),
        "{message}"
    );
    match e {
        Error::Attach { id, hook, .. } => {
            assert_eq!(id, ids[1]);
            assert_eq!(
                hook,
                format!("{}:uprobe_target_no_such_function", target.path().display())
            );
        }
        other => panic!("expected Error::Attach, got {other:?}"),
    }
    // The probe attached before it was detached again.
    assert_eq!(m.probe_state(&ids[0]), Some(ProbeState::Loaded));
    run_uprobe_target(target.path(), 2);
    assert_eq!(seen(&m, user_slot::UPROBE).0, 0);
    drop(m);
    assert_unloaded(&prog_ids);
    assert_eq!(uprobe_events_of(target.path()), Vec::<String>::new());
}

#[test]
fn uprobe_offset_alone() {
    let target = TempFile::uprobe_target();
    let offset = function_offset(target.path(), "uprobe_target_twice");
    let p = Probe {
        uprobe_offset: offset,
        ..uprobe("offset", "uprobe_generic", target.path())
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().hook,
        format!("{}:{offset:#x}", target.path().display())
    );
    run_uprobe_target(target.path(), 3);
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (3, 3000));
    stop_and_check(m, &[id], target.path());
}

#[test]
fn uprobe_offset_is_added_to_the_symbol() {
    let target = TempFile::uprobe_target();
    let add = function_offset(target.path(), "uprobe_target_add");
    let twice = function_offset(target.path(), "uprobe_target_twice");
    // From the lower of the two functions to the start of the other one.
    let (base, delta, value) = if add < twice {
        ("uprobe_target_add", twice - add, 3000)
    } else {
        ("uprobe_target_twice", add - twice, 3)
    };
    let p = Probe {
        hook_func_name: Some(base.into()),
        uprobe_offset: delta,
        ..uprobe("symbol-offset", "uprobe_generic", target.path())
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, 0)).unwrap();
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().hook,
        format!("{}:{base}+{delta:#x}", target.path().display())
    );
    run_uprobe_target(target.path(), 3);
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (3, value));
    stop_and_check(m, &[id], target.path());
}

#[test]
fn uprobe_and_uretprobe_on_a_shared_library() {
    let library = MappedLibrary::map(TempFile::uprobe_target_library());
    let entry = Probe {
        hook_func_name: Some("uprobe_target_add".into()),
        ..uprobe("so", "uprobe_generic", library.path())
    };
    let exit = Probe {
        attach_to_func_name: Some("uprobe_target_ad?".into()),
        ..uprobe("so", "uretprobe_generic", library.path())
    };
    let ids = [entry.id(), exit.id()];
    let mut m = user_manager(vec![entry, exit], user_filters(0, gettid())).unwrap();
    m.start().unwrap();
    assert_eq!(library.call("uprobe_target_add", 20, 22), 42);
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (1, 20));
    assert_eq!(seen(&m, user_slot::URETPROBE_GENERIC), (1, 42));
    stop_and_check(m, &ids, library.path());
}

/// libc's `getpid` in the system's shared libc. A dynamically linked test binary (the host
/// tier) calls it there, so the probe fires. A static test binary (the QEMU tier) carries its
/// own copy of getpid: a probe on the shared library must not fire for it, and where the
/// system has no shared libc (the guests' initramfs) the declaration is refused at init.
#[test]
fn uprobe_on_libc_getpid() {
    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
    setup();
    let libc_path = Path::new(LIBC);
    let entry = Probe {
        hook_func_name: Some("getpid".into()),
        ..uprobe("libc", "uprobe_generic", libc_path)
    };
    let exit = Probe {
        hook_func_name: Some("getpid".into()),
        ..uprobe("libc", "uretprobe_generic", libc_path)
    };
    let ids = [entry.id(), exit.id()];
    let static_binary = cfg!(target_feature = "crt-static");
    if !libc_path.exists() {
        assert!(
            static_binary,
            "a dynamically linked test runs without {LIBC}?"
        );
        let mut m = Manager {
            probes: vec![entry],
            ..Default::default()
        };
        match m.init(USER).unwrap_err() {
            Error::InvalidProbe { reason, .. } => {
                assert_eq!(reason, format!("binary_path {LIBC} does not exist"));
            }
            other => panic!("expected InvalidProbe, got {other:?}"),
        }
        return;
    }
    let mut m = user_manager(vec![entry, exit], user_filters(0, gettid())).unwrap();
    m.start().unwrap();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    if static_binary {
        assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (0, 0));
    } else {
        assert_eq!(seen(&m, user_slot::UPROBE_GENERIC).0, 1);
        assert_eq!(seen(&m, user_slot::URETPROBE_GENERIC), (1, pid));
    }
    stop_and_check(m, &ids, libc_path);
}

#[test]
fn uprobe_pause_and_resume() {
    let exe = me();
    let p = Probe {
        hook_func_name: Some("uprobe_test_add".into()),
        ..uprobe("pause", "uprobe_generic", &exe)
    };
    let id = p.id();
    let mut m = user_manager(vec![p], user_filters(0, gettid())).unwrap();
    m.start().unwrap();
    uprobe_test_add(1, 1);
    m.pause().unwrap();
    uprobe_test_add(2, 2);
    assert_eq!(
        seen(&m, user_slot::UPROBE_GENERIC),
        (1, 1),
        "counted while paused"
    );
    m.resume().unwrap();
    uprobe_test_add(3, 3);
    assert_eq!(seen(&m, user_slot::UPROBE_GENERIC), (2, 3));
    stop_and_check(m, &[id], &exe);
}
