//! Selectors, excluded functions, runtime updates, hooks and clones, on real kernels.

use ebpf_manager::{
    CleanupType, ConstantEditor, Error, Manager, ManagerState, Options, Probe,
    ProbeIdentificationPair as Id, ProbeState, ProbesSelector::*,
};
use integration_tests::*;

fn tp() -> Probe {
    probe("tp", "tracepoint_sys_enter_mkdir")
}
fn raw() -> Probe {
    probe("raw", "raw_tracepoint_sys_enter")
}
/// Fails at attach on every kernel: the symbol does not exist.
fn bad_symbol() -> Probe {
    Probe {
        hook_func_name: Some("no_such_kernel_function".into()),
        ..probe("bad-symbol", "kprobe_generic")
    }
}
/// Fails at attach on every kernel: the tracepoint does not exist.
fn bad_tracepoint() -> Probe {
    Probe {
        tracepoint_name: Some("sys_enter_no_such_syscall".into()),
        tracepoint_category: Some("syscalls".into()),
        ..probe("bad-tp", "tracepoint_sys_enter_mkdir")
    }
}

fn with_selectors(probes: Vec<Probe>, selectors: Vec<ebpf_manager::ProbesSelector>) -> Manager {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    let options = Options {
        activated_probes: selectors,
        ..this_thread_only()
    };
    m.init_with_options(PROBES, options).expect("init");
    m
}

#[test]
fn all_of_passes_when_all_run() {
    let mut m = with_selectors(
        vec![tp(), raw()],
        vec![AllOf(vec![Probe(tp().id()), Probe(raw().id())])],
    );
    m.start().unwrap();
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Running));
    assert_eq!(m.probe_state(&raw().id()), Some(ProbeState::Running));
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn all_of_lists_every_failing_probe_and_undoes_the_start() {
    let mut m = with_selectors(
        vec![tp(), bad_symbol(), bad_tracepoint()],
        vec![AllOf(vec![
            Probe(tp().id()),
            Probe(bad_symbol().id()),
            Probe(bad_tracepoint().id()),
        ])],
    );
    match m.start().unwrap_err() {
        Error::SelectorValidation { failures, .. } => {
            assert_eq!(failures.len(), 2, "{failures:?}");
            assert_eq!(failures[0].0, bad_symbol().id());
            assert!(
                failures[0].1.contains("no_such_kernel_function"),
                "{}",
                failures[0].1
            );
            assert_eq!(failures[1].0, bad_tracepoint().id());
            assert!(
                failures[1].1.contains("sys_enter_no_such_syscall"),
                "{}",
                failures[1].1
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.state(), ManagerState::Initialized);
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Loaded));
    assert_eq!(m.probe_state(&bad_symbol().id()), Some(ProbeState::Failed));
    mkdir_rmdir("all-of");
    assert_eq!(hits(&m, slot::TRACEPOINT), 0, "tp stayed attached");
    assert!(own_tracefs_events("kprobe_events").is_empty());
}

#[test]
fn one_of_passes_with_one_running() {
    let mut m = with_selectors(
        vec![bad_symbol(), tp()],
        vec![OneOf(vec![Probe(bad_symbol().id()), Probe(tp().id())])],
    );
    m.start().unwrap();
    assert_eq!(m.probe_state(&bad_symbol().id()), Some(ProbeState::Failed));
    assert!(m
        .probe_error(&bad_symbol().id())
        .unwrap()
        .contains("no_such_kernel_function"));
    mkdir_rmdir("one-of");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn one_of_fails_when_none_runs_and_when_empty() {
    let mut m = with_selectors(
        vec![bad_symbol(), bad_tracepoint()],
        vec![OneOf(vec![
            Probe(bad_symbol().id()),
            Probe(bad_tracepoint().id()),
        ])],
    );
    match m.start().unwrap_err() {
        Error::SelectorValidation { failures, .. } => assert_eq!(failures.len(), 2),
        other => panic!("{other:?}"),
    }
    let mut m = with_selectors(vec![tp()], vec![OneOf(vec![]), Probe(tp().id())]);
    assert!(matches!(m.start(), Err(Error::SelectorValidation { .. })));
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Loaded));
}

#[test]
fn best_effort_never_fails() {
    let mut m = with_selectors(
        vec![bad_symbol(), tp()],
        vec![BestEffort(vec![Probe(bad_symbol().id()), Probe(tp().id())])],
    );
    m.start().unwrap();
    assert_eq!(m.probe_state(&bad_symbol().id()), Some(ProbeState::Failed));
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Running));
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn one_of_a_kprobe_and_its_tracepoint_twin() {
    let kp = probe("kp", "kprobe_vfs_mkdir");
    let mut m = with_selectors(
        vec![kp.clone(), tp()],
        vec![OneOf(vec![Probe(kp.id()), Probe(tp().id())])],
    );
    m.start().unwrap();
    mkdir_rmdir("twin");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
    if kernel_has_kprobes() {
        // The guests: the kprobe runs.
        assert_eq!(m.probe_state(&kp.id()), Some(ProbeState::Running));
        assert_eq!(hits(&m, slot::KPROBE), 1);
    } else {
        // The host: the tracepoint carries the OneOf; the kprobe says why it failed.
        assert_eq!(m.probe_state(&kp.id()), Some(ProbeState::Failed));
        let why = m.probe_error(&kp.id()).unwrap();
        assert!(why.contains("no kprobes"), "{why}");
    }
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn unselected_probes_are_not_loaded_unless_asked() {
    let m = with_selectors(vec![tp(), raw()], vec![Probe(tp().id())]);
    assert!(is_loaded(&m, &tp().id()));
    assert!(
        !is_loaded(&m, &raw().id()),
        "an unselected probe was loaded"
    );
    assert_eq!(m.probe_state(&raw().id()), Some(ProbeState::Disabled));

    setup();
    let mut m = Manager {
        probes: vec![tp(), raw()],
        ..Default::default()
    };
    let options = Options {
        activated_probes: vec![Probe(tp().id())],
        load_unselected_probes: true,
        ..this_thread_only()
    };
    m.init_with_options(PROBES, options).unwrap();
    assert!(is_loaded(&m, &raw().id()));
}

#[test]
fn excluded_functions_are_never_loaded() {
    setup();
    let mut m = Manager {
        probes: vec![tp(), raw()],
        ..Default::default()
    };
    let options = Options {
        excluded_functions: vec!["raw_tracepoint_sys_enter".into()],
        ..this_thread_only()
    };
    m.init_with_options(PROBES, options).unwrap();
    assert!(!is_loaded(&m, &raw().id()));
    // As in Go, an excluded probe vanishes.
    assert_eq!(m.probe_state(&raw().id()), None);
    assert_eq!(m.get_probes().len(), 1);
    m.start().unwrap();
    assert_eq!(m.probe_state(&raw().id()), None);
    // Selecting an excluded probe fails its selector, with the exclusion as the cause.
    match m.update_activated_probes(vec![Probe(raw().id())]) {
        Err(Error::SelectorValidation { failures, .. }) => {
            assert!(failures[0].1.contains("excluded"), "{failures:?}")
        }
        other => panic!("{other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn selector_naming_an_undeclared_probe_is_refused_at_init() {
    setup();
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    let options = Options {
        activated_probes: vec![BestEffort(vec![Probe(Id::new(
            "typo",
            "tracepoint_sys_enter_mkdir",
        ))])],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { reason, .. } if reason.contains("typo")),
        "{err:?}"
    );
}

#[test]
fn update_activated_probes_swaps_and_restores_on_failure() {
    let mut m = with_selectors(vec![tp(), raw(), bad_symbol()], vec![Probe(tp().id())]);
    m.start().unwrap();
    assert_eq!(m.probe_state(&raw().id()), Some(ProbeState::Disabled));

    m.update_activated_probes(vec![Probe(raw().id())]).unwrap();
    assert_eq!(
        m.probe_error(&tp().id()),
        Some("no selector of activated_probes names it")
    );
    assert_eq!(m.probe_state(&raw().id()), Some(ProbeState::Running));
    // Detached, its program still loaded: Loaded, not Disabled.
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Loaded));
    mkdir_rmdir("update-1");
    assert_eq!(hits(&m, slot::TRACEPOINT), 0, "tp is still attached");
    let raw_hits = hits(&m, slot::RAW_TRACEPOINT);
    assert!(raw_hits >= 2);

    // A failing update leaves the previous set running, and adds nothing.
    let err = m
        .update_activated_probes(vec![AllOf(vec![
            Probe(tp().id()),
            Probe(bad_symbol().id()),
        ])])
        .unwrap_err();
    assert!(matches!(err, Error::SelectorValidation { .. }), "{err:?}");
    assert_eq!(m.probe_state(&raw().id()), Some(ProbeState::Running));
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Loaded));
    mkdir_rmdir("update-2");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        0,
        "the failed update left tp attached"
    );
    assert!(hits(&m, slot::RAW_TRACEPOINT) >= raw_hits + 2);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn add_hook_runs_one_program_at_two_hooks() {
    let mut m = counting_manager(vec![tp()]);
    m.start().unwrap();
    let hook = Probe {
        uid: "rmdir-hook".into(),
        tracepoint_category: Some("syscalls".into()),
        tracepoint_name: Some("sys_enter_rmdir".into()),
        ..probe("", "tracepoint_sys_enter_mkdir")
    };
    m.add_hook("tp", hook.clone()).unwrap();
    assert_eq!(m.probe_state(&hook.id()), Some(ProbeState::Running));
    let ids = program_ids(&m, &[tp().id(), hook.id()]);
    assert_eq!(ids[0], ids[1], "a hook reuses the same kernel program");
    mkdir_rmdir("hook-1");
    assert_eq!(hits(&m, slot::TRACEPOINT), 2, "mkdir and rmdir");
    assert!(matches!(
        m.add_hook("tp", hook.clone()),
        Err(Error::DuplicateProbe { .. })
    ));

    m.detach_hook(&hook.id()).unwrap();
    assert_eq!(m.probe_state(&hook.id()), None);
    mkdir_rmdir("hook-2");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        3,
        "only mkdir after detach_hook"
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn clones_with_their_own_constants_share_the_maps() {
    let _bpffs = bpffs_lock();
    let original = probe("original", "tagged_sys_enter_mkdir");
    let mut m = counting_manager(vec![original.clone()]);
    m.start().unwrap();
    let clone = |uid: &str| Probe {
        uid: uid.into(),
        ..probe("", "tagged_sys_enter_mkdir")
    };
    m.clone_program(
        "original",
        clone("one"),
        vec![ConstantEditor::new("clone_tag", 1u32)],
        vec![],
    )
    .unwrap();
    m.clone_program(
        "original",
        clone("two"),
        vec![ConstantEditor::new("clone_tag", 2u32)],
        vec![],
    )
    .unwrap();
    assert!(
        own_bpffs_entries().is_empty(),
        "temporary pins left: {:?}",
        own_bpffs_entries()
    );
    let ids = program_ids(&m, &[original.id(), clone("one").id(), clone("two").id()]);
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2],
        "clones are new programs: {ids:?}"
    );
    // clone_program made its pin directory with mkdir(2), which the running original counted:
    // compare before and after.
    let before: Vec<u64> = (0..3).map(|t| read_slot(&m, "tagged", t)).collect();
    mkdir_rmdir("clones");
    // Each program counted in its own slot of the one shared map.
    for tag in 0..3 {
        assert_eq!(
            read_slot(&m, "tagged", tag),
            before[tag as usize] + 1,
            "slot {tag}"
        );
    }
    m.detach_hook(&clone("two").id()).unwrap();
    assert_unloaded(&ids[2..]);
    mkdir_rmdir("clones-2");
    assert_eq!(
        read_slot(&m, "tagged", 2),
        before[2] + 1,
        "the detached clone still runs"
    );
    assert_eq!(read_slot(&m, "tagged", 1), before[1] + 2);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&ids);
}

#[test]
fn failed_clone_leaves_nothing() {
    let _bpffs = bpffs_lock();
    let mut m = counting_manager(vec![probe("original", "tagged_sys_enter_mkdir")]);
    m.start().unwrap();
    let clone = probe("bad-clone", "tagged_sys_enter_mkdir");
    let err = m
        .clone_program(
            "original",
            clone.clone(),
            vec![ConstantEditor::new("no_such_constant", 1u32)],
            vec![],
        )
        .unwrap_err();
    assert!(err.to_string().contains("no_such_constant"), "{err}");
    assert_eq!(m.probe_state(&clone.id()), None);
    assert!(own_bpffs_entries().is_empty());
    let err = m
        .clone_program("no-such-uid", clone, vec![], vec![])
        .unwrap_err();
    assert!(matches!(err, Error::ProbeNotFound { .. }), "{err:?}");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A failed `update_activated_probes` unloads the programs it loaded and removes the pins it
/// made (it only detached what it attached).
#[test]
fn failed_update_unloads_and_unpins_what_it_loaded() {
    let _bpffs = bpffs_lock();
    setup_bpffs();
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/mgr_test_{}_failed_update",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&pin);
    let pinned = Probe {
        pin_path: Some(pin.clone()),
        ..probe("pinned", "tagged_sys_enter_mkdir")
    };
    let mut m = with_selectors(
        vec![tp(), pinned.clone(), bad_symbol()],
        vec![Probe(tp().id())],
    );
    m.start().unwrap();
    let loaded_before = [
        is_loaded(&m, &pinned.id()),
        is_loaded(&m, &bad_symbol().id()),
    ];
    assert_eq!(
        loaded_before,
        [false, false],
        "disabled probes are not loaded"
    );
    let err = m
        .update_activated_probes(vec![AllOf(vec![
            Probe(tp().id()),
            Probe(pinned.id()),
            Probe(bad_symbol().id()),
        ])])
        .unwrap_err();
    assert!(matches!(err, Error::SelectorValidation { .. }), "{err:?}");
    assert!(!pin.exists(), "the failed update left its pin");
    assert!(
        !is_loaded(&m, &pinned.id()),
        "the failed update left a program loaded"
    );
    assert!(!is_loaded(&m, &bad_symbol().id()));
    assert!(!m.holds_kernel_btf());
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Running));
    // The manager is as before: the same update without the failing probe works.
    m.update_activated_probes(vec![Probe(tp().id()), Probe(pinned.id())])
        .unwrap();
    assert_eq!(m.probe_state(&pinned.id()), Some(ProbeState::Running));
    assert!(pin.exists());
    m.stop(CleanupType::CleanAll).unwrap();
    assert!(!pin.exists());
}

/// A failed `add_hook` removes the pin it made and unloads the program it loaded: trying
/// again fails the same way, not on a pin left behind.
#[test]
fn failed_add_hook_leaves_no_pin() {
    let _bpffs = bpffs_lock();
    setup_bpffs();
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/mgr_test_{}_failed_hook",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&pin);
    let mut m = counting_manager(vec![tp()]);
    m.start().unwrap();
    // Loaded and pinned, then refused at attach (no such symbol, or no kprobes at all).
    let hook = Probe {
        uid: "late".into(),
        pin_path: Some(pin.clone()),
        ..bad_symbol()
    };
    for attempt in 0..2 {
        let err = m.add_hook("", hook.clone()).unwrap_err();
        assert!(
            matches!(err, Error::Attach { .. } | Error::SymbolNotFound { .. }),
            "attempt {attempt}: {err:?}"
        );
        assert!(
            !pin.exists(),
            "attempt {attempt}: the failed add_hook left its pin"
        );
        assert_eq!(m.probe_state(&hook.id()), None);
    }
    assert_eq!(m.probe_state(&tp().id()), Some(ProbeState::Running));
    m.stop(CleanupType::CleanAll).unwrap();
}
