//! Bad input: each case gets a typed error, and leaves nothing in the kernel.

use ebpf_manager::{CleanupType, Error, Manager, ManagerState, Probe, ProbeState};
use integration_tests::*;

fn manager(probes: Vec<Probe>) -> Manager {
    setup();
    Manager {
        probes,
        ..Default::default()
    }
}

#[test]
fn not_an_elf() {
    let mut m = manager(vec![probe("", "kprobe_vfs_mkdir")]);
    let err = m.init(b"definitely not an ELF object").unwrap_err();
    assert!(matches!(err, Error::InvalidObject { .. }), "{err:?}");
    assert_eq!(m.state(), ManagerState::New);
}

#[test]
fn truncated_object() {
    let mut m = manager(vec![probe("", "kprobe_vfs_mkdir")]);
    let err = m.init(&HELLOWORLD[..HELLOWORLD.len() / 2]).unwrap_err();
    assert!(matches!(err, Error::InvalidObject { .. }), "{err:?}");
}

#[test]
fn misaligned_object_bytes_are_accepted() {
    let mut buf = vec![0u8; PROBES.len() + 1];
    buf[1..].copy_from_slice(PROBES);
    let mut m = manager(vec![probe("", "tracepoint_sys_enter_mkdir")]);
    m.init(&buf[1..]).expect("init from an odd address");
}

#[test]
fn missing_function() {
    let mut m = manager(vec![probe("", "no_such_function")]);
    match m.init(PROBES).unwrap_err() {
        Error::ProgramNotFound {
            name, available, ..
        } => {
            assert_eq!(name, "no_such_function");
            assert!(available.contains("kprobe_vfs_mkdir"), "{available}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_section() {
    let p = Probe {
        section: Some("kprobe/no_such_section".into()),
        ..Default::default()
    };
    let mut m = manager(vec![p]);
    let err = m.init(PROBES).unwrap_err();
    assert!(
        matches!(&err, Error::SectionNotFound { section, .. } if section == "kprobe/no_such_section"),
        "{err:?}"
    );
}

#[test]
fn duplicate_probe_ids() {
    let mut m = manager(vec![
        probe("same", "kprobe_vfs_mkdir"),
        probe("same", "kprobe_vfs_mkdir"),
    ]);
    let err = m.init(PROBES).unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateProbe { id } if id.uid == "same"),
        "{err:?}"
    );
}

#[test]
fn pattern_matching_nothing() {
    let p = Probe {
        attach_to_func_name: Some("no_such_kernel_function_*".into()),
        ..probe("", "kprobe_generic")
    };
    let mut m = manager(vec![p]);
    match m.init(PROBES).unwrap_err() {
        Error::NoMatchingFunction {
            pattern, searched, ..
        } => {
            assert_eq!(pattern, "no_such_kernel_function_*");
            assert!(searched > 1000, "only {searched} functions searched");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_pattern() {
    let p = Probe {
        attach_to_func_name: Some("vfs_[mkdir".into()),
        ..probe("", "kprobe_generic")
    };
    let mut m = manager(vec![p]);
    let err = m.init(PROBES).unwrap_err();
    assert!(matches!(err, Error::InvalidPattern { .. }), "{err:?}");
}

#[test]
fn unknown_syscall() {
    let p = Probe {
        syscall_func_name: Some("no_such_syscall".into()),
        ..probe("", "kprobe_generic")
    };
    let mut m = manager(vec![p]);
    match m.init(PROBES).unwrap_err() {
        Error::SyscallNotFound { tried, .. } => {
            assert!(tried.contains("__x64_sys_no_such_syscall"), "{tried}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hook_symbol_that_does_not_exist() {
    let p = Probe {
        hook_func_name: Some("no_such_kernel_function".into()),
        ..probe("", "kprobe_generic")
    };
    let id = p.id();
    let mut m = manager(vec![p]);
    m.init(PROBES).unwrap();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    // On every kernel, with or without kprobes: the missing symbol is the error that helps.
    match m.start().unwrap_err() {
        Error::SymbolNotFound { symbol, .. } => assert_eq!(symbol, "no_such_kernel_function"),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
    assert!(own_tracefs_events("kprobe_events").is_empty());
    drop(m);
    assert_unloaded(&prog_ids);
}

#[test]
fn tracepoint_that_does_not_exist() {
    let p = Probe {
        tracepoint_category: Some("syscalls".into()),
        tracepoint_name: Some("sys_enter_no_such_syscall".into()),
        ..probe("", "tracepoint_sys_enter_mkdir")
    };
    let mut m = manager(vec![p]);
    m.init(PROBES).unwrap();
    let err = m.start().unwrap_err();
    assert!(
        matches!(&err, Error::TracepointNotFound { name, .. } if name == "sys_enter_no_such_syscall"),
        "{err:?}"
    );
}

#[test]
fn verifier_rejection_carries_the_log() {
    let mut m = manager(vec![probe("", "tracepoint_rejected")]);
    match m.init(REJECTED).unwrap_err() {
        Error::Verifier { function, log, .. } => {
            assert_eq!(function, "tracepoint_rejected");
            assert!(!log.is_empty(), "empty verifier log");
            // The verifier names the bad context access (wording varies by kernel).
            assert!(log.contains("ctx") || log.contains("context"), "{log}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.state(), ManagerState::New);
}

#[test]
fn field_that_does_not_apply() {
    let p = Probe {
        tracepoint_name: Some("sys_enter_mkdir".into()),
        ..probe("", "kprobe_vfs_mkdir")
    };
    let mut m = manager(vec![p]);
    let err = m.init(PROBES).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidProbe { reason, .. } if reason.contains("tracepoint_name")),
        "{err:?}"
    );
}

#[test]
fn calls_in_the_wrong_state() {
    let mut m = manager(vec![probe("", "tracepoint_sys_enter_mkdir")]);
    let wrong = |r: ebpf_manager::Result<()>, state| match r {
        Err(Error::InvalidState { state: s, .. }) => assert_eq!(s, state),
        other => panic!("{other:?}"),
    };
    wrong(m.start(), ManagerState::New);
    wrong(m.pause(), ManagerState::New);
    wrong(m.stop(CleanupType::CleanAll), ManagerState::New);
    m.init(PROBES).unwrap();
    wrong(m.init(PROBES), ManagerState::Initialized);
    wrong(m.resume(), ManagerState::Initialized);
    m.start().unwrap();
    wrong(m.start(), ManagerState::Running);
    m.stop(CleanupType::CleanAll).unwrap();
    wrong(m.start(), ManagerState::Stopped);
    wrong(m.stop(CleanupType::CleanAll), ManagerState::Stopped);
}

#[test]
fn failed_start_detaches_what_it_attached() {
    // The tracepoint attaches first; the second probe fails; the first must be detached.
    let good = probe("good", "tracepoint_sys_enter_mkdir");
    let bad = Probe {
        hook_func_name: Some("no_such_kernel_function".into()),
        ..probe("bad", "kprobe_generic")
    };
    let (good_id, bad_id) = (good.id(), bad.id());
    let mut m = counting_manager(vec![good, bad]);
    let err = m.start().unwrap_err();
    assert!(
        matches!(&err, Error::SymbolNotFound { id, .. } if *id == bad_id),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("bad"),
        "the error names the probe: {err}"
    );
    assert_eq!(m.state(), ManagerState::Initialized);
    assert_eq!(m.probe_state(&good_id), Some(ProbeState::Loaded));
    mkdir_rmdir("failed-start");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        0,
        "the first probe stayed attached"
    );
}

#[test]
fn unknown_constant_is_an_error() {
    setup();
    let mut m = manager(vec![probe("", "tracepoint_sys_enter_mkdir")]);
    let options = ebpf_manager::Options {
        constant_editors: vec![ebpf_manager::ConstantEditor::new("no_such_constant", 1u32)],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(err.to_string().contains("no_such_constant"), "{err}");
}

/// A hook written to tracefs `kprobe_events` must be a symbol: a newline (a command of its own)
/// or a space is refused at init, before anything is written (issue 13).
#[test]
fn a_kprobe_hook_that_is_not_a_symbol_is_refused_at_init() {
    for hook in [
        "vfs_mkdir\n-:ebpf_manager_injected/x",
        "vfs_mkdir arg=%di",
        "vfs_mkdir+0xzz",
    ] {
        let mut m = manager(vec![Probe {
            hook_func_name: Some(hook.into()),
            ..probe("inject", "kprobe_generic")
        }]);
        let err = m.init(PROBES).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidProbe { reason, .. } if reason.contains("not a kernel symbol")),
            "{hook:?}: {err:?}"
        );
    }
    let mut ok = manager(vec![Probe {
        hook_func_name: Some("vfs_mkdir+0x4".into()),
        ..probe("offset", "kprobe_generic")
    }]);
    ok.init(PROBES).expect("a symbol with an offset is fine");
}

/// An absurd perf ring size is a typed error, not an arithmetic overflow (issue 13).
#[test]
fn an_absurd_perf_ring_size_is_a_typed_error() {
    use integration_tests::readers::{Seen, READERS};
    let seen = std::sync::Arc::new(Seen::default());
    let mut m = Manager {
        probes: vec![probe("perf_emit", "perf_emit")],
        perf_maps: vec![ebpf_manager::PerfMap {
            perf_ring_pages: 1 << 60,
            ..seen.perf_map("perf_events")
        }],
        ..Default::default()
    };
    setup();
    m.init(READERS).unwrap();
    let err = m.start().unwrap_err();
    assert!(
        err.to_string().contains("larger than the kernel allows"),
        "{err}"
    );
}
