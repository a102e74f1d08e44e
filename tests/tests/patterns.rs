//! `match_func_name` (the Go `MatchFuncName`): a regular expression next to the glob
//! `attach_to_func_name`; and patterns of disabled probes, which never fail `init`.

use ebpf_manager::{
    Error, Manager, Options, Probe, ProbeIdentificationPair, ProbeState, ProbesSelector,
};
use integration_tests::*;

/// The read-ahead test counts the process's `ebpfm-functions` threads: the other tests, whose
/// inits start such threads too, wait while it runs.
static THREADS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    THREADS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn generic(uid: &str) -> Probe {
    probe(uid, "kprobe_generic")
}

#[test]
fn a_regular_expression_selects_the_kernel_function() {
    let _shared = shared();
    setup();
    let id = ProbeIdentificationPair::new("re", "kprobe_generic");
    let mut m = Manager {
        probes: vec![Probe {
            match_func_name: Some("^vfs_mkdi.$".into()),
            ..generic("re")
        }],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only())
        .expect("init resolves the expression");
    if !kernel_has_kprobes() {
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::KprobesUnsupported { hook, .. } if hook == "vfs_mkdir"),
            "{err:?}"
        );
        return;
    }
    m.start().expect("start");
    assert_eq!(m.attach_info(&id).unwrap().hook, "vfs_mkdir");
    mkdir_rmdir("regex");
    assert_eq!(hits(&m, slot::KPROBE_GENERIC), 1);
}

#[test]
fn bad_expressions_and_two_patterns_are_refused_naming_the_probe() {
    let _shared = shared();
    setup();
    let init = |p: Probe| {
        let mut m = Manager {
            probes: vec![p],
            ..Default::default()
        };
        m.init(PROBES).unwrap_err()
    };
    let err = init(Probe {
        match_func_name: Some("vfs_(".into()),
        ..generic("bad")
    });
    assert!(
        matches!(&err, Error::InvalidPattern { id, pattern, .. } if id.uid == "bad" && pattern == "vfs_("),
        "{err:?}"
    );
    let err = init(Probe {
        match_func_name: Some("vfs_mkdir".into()),
        attach_to_func_name: Some("vfs_mkdir".into()),
        ..generic("both")
    });
    assert!(
        matches!(&err, Error::InvalidProbe { id, .. } if id.uid == "both"),
        "{err:?}"
    );
}

#[test]
fn a_disabled_probe_never_fails_init_over_its_pattern() {
    let _shared = shared();
    setup();
    let tp = probe("tp", "tracepoint_sys_enter_mkdir");
    let nothing = Probe {
        attach_to_func_name: Some("ebpf_manager_matches_nothing_*".into()),
        ..generic("nothing")
    };
    let (tp_id, nothing_id) = (tp.id(), nothing.id());
    let mut m = Manager {
        probes: vec![tp, nothing],
        ..Default::default()
    };
    m.init_with_options(
        PROBES,
        Options {
            activated_probes: vec![ProbesSelector::Probe(tp_id.clone())],
            ..this_thread_only()
        },
    )
    .expect("the disabled probe's pattern is not resolved into an error");
    assert_eq!(m.probe_state(&nothing_id), Some(ProbeState::Disabled));
    m.start().unwrap();
    // Enabling it resolves it: now its pattern fails it, and only it.
    let err = m
        .update_activated_probes(vec![
            ProbesSelector::Probe(tp_id.clone()),
            ProbesSelector::Probe(nothing_id.clone()),
        ])
        .unwrap_err();
    assert!(
        format!("{err}").contains("ebpf_manager_matches_nothing_*"),
        "{err}"
    );
    assert_eq!(m.probe_state(&tp_id), Some(ProbeState::Running));
    mkdir_rmdir("disabled-pattern");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
}

/// Listings: probes, programs with their kernel ids, maps (those readers hold included), and a
/// program no probe declares, by its function.
#[test]
fn listings_name_every_probe_program_and_map() {
    let _shared = shared();
    setup();
    let tp = probe("tp", "tracepoint_sys_enter_mkdir");
    let id = tp.id();
    let mut m = Manager {
        probes: vec![tp],
        ..Default::default()
    };
    assert_eq!(m.get_probes().len(), 1, "the declarations before init");
    m.init_with_options(PROBES, this_thread_only()).unwrap();
    assert_eq!(m.get_probes()[0].uid, "tp");
    let programs = m.get_programs();
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0].0, id);
    assert_eq!(Some(programs[0].1), m.program_id(&id));
    let maps: Vec<String> = m.get_maps().into_iter().map(|(n, _)| n).collect();
    assert!(
        maps.contains(&"hits".to_owned()) && maps.contains(&"tagged".to_owned()),
        "{maps:?}"
    );
    assert!(m.get_maps().iter().all(|&(_, map_id)| map_id > 0));
    assert!(
        m.get_program_by_function("raw_tracepoint_sys_enter")
            .is_some(),
        "undeclared"
    );
    assert!(m.get_program_by_function("no_such_function").is_none());
}

/// `add_hook` from a program that no probe declares (the Go library accepts it).
#[test]
fn add_hook_takes_a_program_no_probe_declared() {
    let _shared = shared();
    setup();
    let mut m = Manager {
        probes: vec![probe("tp", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only()).unwrap();
    m.start().unwrap();
    let late = probe("late", "raw_tracepoint_sys_enter");
    let id = late.id();
    m.add_hook("", late)
        .expect("the object's raw tracepoint program, undeclared until now");
    assert_eq!(m.probe_state(&id), Some(ProbeState::Running));
    mkdir_rmdir("add-hook-undeclared");
    assert!(hits(&m, slot::RAW_TRACEPOINT) >= 1);
    let err = m
        .add_hook("", probe("ghost", "no_such_function"))
        .unwrap_err();
    assert!(matches!(err, Error::ProbeNotFound { .. }), "{err:?}");
}

/// `rename_probe_identification_pair` (the Go `RenameProbeIdentificationPair`).
#[test]
fn a_probe_is_renamed_and_keeps_running() {
    let _shared = shared();
    setup();
    let mut m = Manager {
        probes: vec![
            probe("old", "tracepoint_sys_enter_mkdir"),
            probe("other", "raw_tracepoint_sys_enter"),
        ],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only()).unwrap();
    m.start().unwrap();
    let old = ProbeIdentificationPair::new("old", "tracepoint_sys_enter_mkdir");
    let new = ProbeIdentificationPair::new("new", "tracepoint_sys_enter_mkdir");
    m.rename_probe_identification_pair(&old, &new).unwrap();
    assert_eq!(m.probe_state(&old), None);
    assert_eq!(m.probe_state(&new), Some(ProbeState::Running));
    assert_eq!(m.get_probe(&new).unwrap().uid, "new");
    let taken = ProbeIdentificationPair::new("other", "raw_tracepoint_sys_enter");
    let err = m
        .rename_probe_identification_pair(&new, &ProbeIdentificationPair::new("x", "other_fn"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidProbe { .. }), "{err:?}");
    let err = m
        .rename_probe_identification_pair(&taken, &taken)
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateProbe { .. }), "{err:?}");
    m.pause_probe(&new).unwrap();
    m.resume_probe(&new).unwrap();
}

/// Manager-wide defaults of the Go options: `default_perf_ring_pages` reaches a perf map that
/// leaves its own at 0 (an invalid size proves it), `default_kprobe_max_active` a kretprobe.
#[test]
fn manager_wide_defaults_reach_the_declarations_that_leave_theirs_unset() {
    let _shared = shared();
    use integration_tests::readers::{Seen, READERS};
    setup();
    let seen = std::sync::Arc::new(Seen::default());
    let mut m = Manager {
        probes: vec![probe("perf_emit", "perf_emit")],
        perf_maps: vec![seen.perf_map("perf_events")],
        ..Default::default()
    };
    m.init_with_options(
        READERS,
        Options {
            default_perf_ring_pages: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let err = m.start().unwrap_err();
    assert!(err.to_string().contains("perf_ring_pages is 3"), "{err}");

    let mut k = Manager {
        probes: vec![probe("ret", "kretprobe_vfs_mkdir")],
        ..Default::default()
    };
    k.init_with_options(
        PROBES,
        Options {
            default_kprobe_max_active: 16,
            ..this_thread_only()
        },
    )
    .unwrap();
    let id = ProbeIdentificationPair::new("ret", "kretprobe_vfs_mkdir");
    assert_eq!(
        k.get_probe(&id).unwrap().kprobe_max_active,
        16,
        "the manager's copy"
    );
    if kernel_has_kprobes() {
        k.start().unwrap();
        assert_eq!(
            k.attach_info(&id).unwrap().method,
            ebpf_manager::AttachMethod::KprobeTracefs,
            "maxactive needs tracefs"
        );
    } else {
        let err = k.start().unwrap_err();
        assert!(matches!(err, Error::KprobesUnsupported { .. }), "{err:?}");
    }
}

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

/// The function list is read on a thread of its own while the object loads (and aya's loader
/// made on another); each is joined by what needs it, and by a failed `init` (nothing left
/// running).
#[test]
fn the_function_list_read_ahead_leaves_no_thread() {
    let _alone = THREADS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup();
    let declare = || Manager {
        probes: vec![Probe {
            attach_to_func_name: Some("vfs_mkdi?".into()),
            ..generic("ahead")
        }],
        ..Default::default()
    };
    let mut m = declare();
    m.init_with_options(PROBES, this_thread_only())
        .expect("init resolves the pattern");
    assert_eq!(
        m.probe_state(&ProbeIdentificationPair::new("ahead", "kprobe_generic")),
        Some(ProbeState::Loaded)
    );
    assert_eq!(threads_named("ebpfm-functions"), 0);
    // Fails after the read started (the kernel BTF file is checked later).
    let err = declare()
        .init_with_options(
            PROBES,
            Options {
                kernel_btf: Some(ebpf_manager::KernelTypes::File("/nonexistent.btf".into())),
                ..this_thread_only()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent.btf"), "{err}");
    assert_eq!(threads_named("ebpfm-functions"), 0);
    // aya's loader, made on a thread from the start of init, is joined too.
    assert_eq!(threads_named("ebpfm-btf"), 0);
}
