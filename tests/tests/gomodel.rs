//! Go's collection model (issue 18), with ebpf-fixtures/gomodel.bpf.o: an object of 63 programs
//! built as the Go examples' Makefile builds (clang -emit-llvm | llc, no BTF), declared the way a
//! large Go ebpf-manager user declares it, translated field by field.
//!
//! Per kernel: where kprobes attach (the guests) 35 of the probes are selected; where they do not
//! (the host) the kprobe programs are in `excluded_functions`, as Go users exclude per kernel, and
//! 15 are selected.

use std::sync::Arc;

use ebpf_manager::{
    AttachMethod, CleanupType, ConstantEditor, Error, Manager, Options, Probe,
    ProbeIdentificationPair as Id, ProbeState, ProbesSelector, TailCallRoute, TestRunInput,
};

const XDP_PASS: u32 = 2;
use integration_tests::{
    gomodel::{declarations, options, GOMODEL, MISSING},
    kernel_has_kprobes, mkdir_rmdir, own_tracefs_events, probe, read_slot, setup, REJECTED,
};

fn hits(m: &Manager, slot: u32) -> u64 {
    read_slot(m, "hits", slot)
}

#[test]
fn gomodel_declarations_of_a_large_go_user_start_unchanged() {
    setup();
    let declared = declarations();
    let mut m = Manager {
        probes: declared.clone(),
        ..Default::default()
    };
    m.init_with_options(GOMODEL, options()).unwrap();
    let selected = if kernel_has_kprobes() { 35 } else { 15 };
    // Only the selected programs were loaded: the others cost no verifier time.
    assert_eq!(m.get_programs().len(), selected, "{:?}", m.get_programs());
    // Excluded probes vanish, as in Go, whether or not the object has their programs.
    let excluded = options().excluded_functions.len();
    assert_eq!(m.get_probes().len(), declared.len() - excluded);
    for f in MISSING {
        assert_eq!(m.probe_state(&Id::new("", f)), None);
    }
    assert_eq!(m.status().probes.len(), declared.len() - excluded);
    // The editor that named only excluded probes was dropped, not made global.
    let marker = m
        .test_run(&Id::new("", "xdp_marker"), &packet())
        .unwrap()
        .retval;
    assert_eq!(marker, 0, "the excluded probe's editor applied to everyone");
    // Tail-call targets and templates are declared without a socket: loaded or not, no error.
    assert_eq!(
        m.probe_state(&Id::new("", "socket_tail_0")),
        Some(ProbeState::Disabled)
    );

    m.start().unwrap();
    // Routed at start: loaded (with its id), not attached.
    let tail = Id::new("", "socket_tail_0");
    assert_eq!(m.probe_state(&tail), Some(ProbeState::Loaded));
    assert!(m.program_id(&tail).is_some());
    let status = m.status();
    let row = status.probes.iter().find(|p| p.id == tail).unwrap();
    assert_eq!(row.state, ProbeState::Loaded);
    assert!(row.program_id.is_some() && row.link_id.is_none());

    let before = (hits(&m, 0), hits(&m, 10), hits(&m, 20));
    mkdir_rmdir("gomodel");
    assert!(hits(&m, 0) > before.0, "tracepoint sys_enter_mkdir");
    assert_eq!(
        m.probe_state(&Id::new("", "tp_mkdir")),
        Some(ProbeState::Running)
    );
    if kernel_has_kprobes() {
        assert!(hits(&m, 10) > before.1, "kprobe vfs_mkdir");
        assert!(hits(&m, 20) > before.2, "kretprobe vfs_mkdir");
        let method = |f: &str| m.attach_info(&Id::new("", f)).unwrap().method;
        assert_eq!(method("kprobe_vfs_mkdir"), AttachMethod::KprobePmu);
        // PerfEventOpen with a max active: tracefs kprobe_events with it, as in Go.
        assert_eq!(method("kretprobe_vfs_mkdir"), AttachMethod::KprobeTracefs);
        let events = own_tracefs_events("kprobe_events");
        assert_eq!(events.len(), 10, "{events:?}");
        assert!(events.iter().all(|e| e.starts_with("r512:")), "{events:?}");
    }
    let running = m
        .status()
        .probes
        .iter()
        .filter(|p| p.state == ProbeState::Running)
        .count();
    assert_eq!(running, selected);
    m.stop(CleanupType::CleanAll).unwrap();
    assert!(own_tracefs_events("kprobe_events").is_empty());
}

/// A declared, non-excluded probe whose program the object lacks still fails init, naming it.
#[test]
fn gomodel_a_missing_program_not_excluded_fails_init() {
    setup();
    let mut m = Manager {
        probes: vec![probe("", "tp_mkdir"), probe("", "kprobe_tcp_v6_connect")],
        ..Default::default()
    };
    match m.init(GOMODEL).unwrap_err() {
        Error::ProgramNotFound { id, name, .. } => {
            assert_eq!(id, Id::new("", "kprobe_tcp_v6_connect"));
            assert_eq!(name, "kprobe_tcp_v6_connect");
        }
        other => panic!("{other:?}"),
    }
}

fn packet() -> TestRunInput {
    TestRunInput {
        data: vec![0; 64],
        ..Default::default()
    }
}

/// The Go examples tests_and_benchmarks and program_router: programs no probe declares,
/// reached by name, loaded on the first request.
#[test]
fn gomodel_programs_no_probe_declares_are_reachable_by_name() {
    setup();
    let mut m = Manager::default();
    m.init(GOMODEL).unwrap();
    let marker = Id::new("", "xdp_marker");
    assert!(m.get_program(&marker).is_some(), "found by function");
    assert!(
        m.program_id(&marker).is_none(),
        "not loaded before a request"
    );
    assert_eq!(m.test_run(&marker, &packet()).unwrap().retval, 0);
    assert!(m.program_id(&marker).is_some(), "loaded by test_run");
    assert!(m.get_program(&marker).unwrap().fd().is_ok());

    // A tail call routed by function, from this manager.
    let dispatch = Id::new("", "xdp_dispatch");
    let route = TailCallRoute {
        prog_array_name: "xdp_jumps".into(),
        key: 0,
        probe_identification_pair: Id::new("", "xdp_tail_pass"),
        program: None,
    };
    assert_eq!(m.test_run(&dispatch, &packet()).unwrap().retval, 1, "drop");
    m.update_tail_call_routes(std::slice::from_ref(&route))
        .unwrap();
    assert_eq!(m.test_run(&dispatch, &packet()).unwrap().retval, XDP_PASS);
    assert_eq!(hits(&m, 53), 1);

    // ... and a program of another manager that declares nothing (program_router's m2).
    let mut other = Manager::default();
    other.init(GOMODEL).unwrap();
    let fd = other.program_fd(&Id::new("", "xdp_tail_pass")).unwrap();
    m.update_tail_call_routes(&[TailCallRoute {
        program: Some(Arc::new(fd)),
        ..route
    }])
    .unwrap();
    assert_eq!(m.test_run(&dispatch, &packet()).unwrap().retval, XDP_PASS);
    assert_eq!(hits(&other, 53), 1, "the other manager's program ran");
    assert_eq!(hits(&m, 53), 1, "not this one's");

    // clone_program of an undeclared program, with its own constant.
    m.clone_program(
        "",
        probe("marker-7", "xdp_marker"),
        vec![ConstantEditor::new("marker", 7u64)],
        vec![],
    )
    .unwrap();
    let clone = Id::new("marker-7", "xdp_marker");
    assert_eq!(m.test_run(&clone, &packet()).unwrap().retval, 7);
    // Declared now: an empty uid finds the first probe of the function, as Go's GetProgram.
    assert_eq!(m.test_run(&marker, &packet()).unwrap().retval, 7);
    // add_hook with an empty uid on an undeclared program (a template: no interface yet).
    m.add_hook("", probe("ingress-lo", "xdp_ingress")).unwrap();
    assert_eq!(
        m.probe_state(&Id::new("ingress-lo", "xdp_ingress")),
        Some(ProbeState::Loaded)
    );
    // Nothing of that name: not found.
    assert!(matches!(
        m.test_run(&Id::new("", "no_such_program"), &packet()),
        Err(Error::ProbeNotFound { .. })
    ));
    m.stop(CleanupType::CleanAll).unwrap();
    other.stop(CleanupType::CleanAll).unwrap();
}

/// A program that fails to load on request fails that call with the verifier's error.
#[test]
fn gomodel_a_program_loaded_on_request_reports_the_verifier() {
    setup();
    let mut m = Manager::default();
    m.init(REJECTED).unwrap();
    let id = Id::new("", "tracepoint_rejected");
    match m.load_program(&id) {
        Err(Error::Verifier { id: got, log, .. }) => {
            assert_eq!(got, id);
            assert!(!log.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(m.get_program_mut(&id).is_none());
    assert!(m.program_id(&id).is_none(), "nothing stays loaded");
}

/// A template (a socket filter declared without its socket, as Go users declare what they
/// later hook per socket) loads at init; only attaching it fails.
#[test]
fn gomodel_a_template_loads_and_fails_only_when_attached() {
    setup();
    let template = Id::new("template", "socket_template");
    let mut m = Manager {
        probes: vec![probe("template", "socket_template")],
        ..Default::default()
    };
    m.init(GOMODEL).unwrap();
    assert_eq!(m.probe_state(&template), Some(ProbeState::Loaded));
    assert!(m.program_id(&template).is_some());
    let err = m.start().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidProbe { id, reason } if *id == template && reason == "a socket filter needs socket_fd"),
        "{err:?}"
    );
    assert_eq!(m.state(), ebpf_manager::ManagerState::Initialized);
    // Hooked on a socket, then the template itself goes: start attaches the hook.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fd = ebpf_manager::SharedFd::dup(&socket).unwrap();
    m.add_hook(
        "template",
        Probe {
            socket_fd: Some(fd),
            ..probe("udp", "socket_template")
        },
    )
    .unwrap();
    m.detach_hook(&template).unwrap();
    m.start().unwrap();
    let before = hits(&m, 52);
    socket
        .send_to(b"ping", socket.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 8];
    socket.recv(&mut buf).unwrap();
    assert!(hits(&m, 52) > before, "the hooked template ran");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// `load_unselected_probes`: the unselected probes load, say Loaded with their program id, and
/// stay unattached; the tail-call targets resolve no hook.
#[test]
fn gomodel_unselected_probes_loaded_say_loaded() {
    setup();
    let mut m = Manager {
        probes: vec![
            probe("", "tp_mkdir"),
            probe("", "socket_tail_1"),
            probe("", "xdp_ingress"),
        ],
        ..Default::default()
    };
    m.init_with_options(
        GOMODEL,
        Options {
            activated_probes: vec![ProbesSelector::Probe(Id::new("", "tp_mkdir"))],
            load_unselected_probes: true,
            ..Default::default()
        },
    )
    .unwrap();
    m.start().unwrap();
    for f in ["socket_tail_1", "xdp_ingress"] {
        let id = Id::new("", f);
        assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded), "{f}");
        assert!(m.program_id(&id).is_some(), "{f}");
        assert!(m.attach_info(&id).is_none(), "{f}");
    }
    assert_eq!(
        m.probe_state(&Id::new("", "tp_mkdir")),
        Some(ProbeState::Running)
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

/// The Go example programs/fentry: `fexit/do_mkdirat` declared with SyscallFuncName "mkdirat"
/// attaches to do_mkdirat, the section's target; a bare `fentry` takes hook_func_name.
#[test]
fn gomodel_fexit_section_target_wins_over_syscall_func_name() {
    setup();
    let fexit = Probe {
        syscall_func_name: Some("mkdirat".into()),
        ..probe("", "do_mkdirat_exit")
    };
    let bare = Probe {
        hook_func_name: Some("vfs_mkdir".into()),
        ..probe("bare", "fentry_bare")
    };
    let ids = [fexit.id(), bare.id()];
    let mut m = Manager {
        probes: vec![fexit, bare],
        ..Default::default()
    };
    match m.init(GOMODEL) {
        Ok(()) => {}
        // The host: the kernel refuses tracing programs (EPERM, no verifier log).
        Err(Error::ProgramTypeRefused { program_type, .. }) => {
            assert!(!integration_tests::user::kernel_must_run_btf_trampolines());
            assert_eq!(program_type, "fexit");
            return;
        }
        // A kernel whose BTF has no do_mkdirat (it was static and inlined before 5.12).
        Err(Error::SymbolNotFound { id, symbol, .. }) => {
            assert_eq!(id, ids[0]);
            assert_eq!(symbol, "do_mkdirat");
            return;
        }
        Err(e) => panic!("{e:?}"),
    }
    m.start().unwrap();
    assert_eq!(m.attach_info(&ids[0]).unwrap().hook, "do_mkdirat");
    assert_eq!(m.attach_info(&ids[1]).unwrap().hook, "vfs_mkdir");
    mkdir_rmdir("gomodel-fexit");
    assert!(hits(&m, 56) >= 1, "fexit do_mkdirat");
    assert!(hits(&m, 57) >= 1, "fentry vfs_mkdir");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A fentry target the running kernel lacks is named as a missing function, looked up in the
/// kernel's BTF, as kprobes name a missing symbol; not aya's `unknown BTF type`.
#[test]
fn gomodel_a_missing_fentry_target_names_the_function() {
    setup();
    let p = Probe {
        hook_func_name: Some("ebpf_manager_no_such_function".into()),
        ..probe("missing", "fentry_bare")
    };
    let mut m = Manager {
        probes: vec![p.clone()],
        ..Default::default()
    };
    let err = m.init(GOMODEL).unwrap_err();
    match &err {
        Error::SymbolNotFound {
            id,
            symbol,
            source_file,
        } => {
            assert_eq!(*id, p.id());
            assert_eq!(symbol, "ebpf_manager_no_such_function");
            assert_eq!(source_file.to_str(), Some("/sys/kernel/btf/vmlinux"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("the running kernel has no function `ebpf_manager_no_such_function`"),
        "{err}"
    );
}

/// Messages name what the user wrote: match_func_name and a regular expression.
#[test]
fn gomodel_pattern_errors_name_match_func_name() {
    setup();
    let bad = Probe {
        match_func_name: Some("vfs_(".into()),
        ..probe("", "kprobe_vfs_mkdir")
    };
    let mut m = Manager {
        probes: vec![bad],
        ..Default::default()
    };
    let err = m.init(GOMODEL).unwrap_err().to_string();
    assert!(
        err.contains("match_func_name `vfs_(` is not a valid regular expression"),
        "{err}"
    );
    let none = Probe {
        match_func_name: Some("^ebpf_manager_nothing_[0-9]+$".into()),
        ..probe("", "kprobe_vfs_mkdir")
    };
    let mut m = Manager {
        probes: vec![none],
        ..Default::default()
    };
    let err = m.init(GOMODEL).unwrap_err();
    assert!(matches!(err, Error::NoMatchingFunction { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("matches match_func_name `^ebpf_manager_nothing_[0-9]+$`"),
        "{err}"
    );
}

/// Wherever the function list comes from (kallsyms on the host, whose EPERM on
/// available_filter_functions forces it), a pattern never resolves to a `__pfx_` padding
/// symbol (Linux 6.2+).
#[test]
fn gomodel_patterns_never_resolve_to_padding_symbols() {
    setup();
    let p = Probe {
        match_func_name: Some("utimes$".into()),
        ..probe("", "kprobe_vfs_mkdir")
    };
    let mut m = Manager {
        probes: vec![p.clone()],
        ..Default::default()
    };
    m.init(GOMODEL).unwrap();
    let hook = m.status().probes[0].hook.clone().unwrap();
    assert!(hook.ends_with("utimes"), "{hook}");
    assert!(!hook.starts_with("__pfx_"), "{hook}");
}

/// gojue/ebpfmanager's `Section` picks only the program type (eCapture declares
/// `uprobe/SSL_set_rfd` for a program in `uprobe/SSL_set_fd`): here it must name the program's
/// own section, and the refusal says which field to use instead.
#[test]
fn gomodel_a_mismatching_section_names_the_fields_to_use() {
    setup();
    let p = Probe {
        section: Some("kprobe/vfs_rmdir".into()),
        ..probe("", "kprobe_vfs_mkdir")
    };
    let mut m = Manager {
        probes: vec![p],
        ..Default::default()
    };
    let err = m.init(GOMODEL).unwrap_err().to_string();
    for part in [
        "is in section `kprobe/vfs_mkdir`, not `kprobe/vfs_rmdir`",
        "hook_func_name",
        "gojue/ebpfmanager",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

/// A hook added before `start` to a manager with selectors still resolves its hook there and
/// then: a pattern that matches nothing fails `add_hook`, not `start` (regression: only
/// templates may wait for their attach).
#[test]
fn gomodel_add_hook_before_start_resolves_its_hook() {
    setup();
    let mut m = Manager {
        probes: vec![probe("", "tp_mkdir")],
        ..Default::default()
    };
    m.init_with_options(
        GOMODEL,
        Options {
            activated_probes: vec![ProbesSelector::Probe(Id::new("", "tp_mkdir"))],
            ..Default::default()
        },
    )
    .unwrap();
    let err = m
        .add_hook(
            "",
            Probe {
                match_func_name: Some("^ebpf_manager_nothing_[0-9]+$".into()),
                ..probe("late", "kprobe_vfs_mkdir")
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::NoMatchingFunction { .. }), "{err:?}");
    assert_eq!(m.probe_state(&Id::new("late", "kprobe_vfs_mkdir")), None);
    // A template is accepted before start.
    m.add_hook("", probe("late-socket", "socket_template"))
        .unwrap();
    m.stop(CleanupType::CleanAll).unwrap();
}
