//! Tracepoints and raw tracepoints: every kernel of the project has them.

use ebpf_manager::{AttachMethod, CleanupType, Manager, Probe, ProbeState};
use integration_tests::*;

#[test]
fn tracepoint_from_section_fires() {
    let p = probe("tp", "tracepoint_sys_enter_mkdir");
    let id = p.id();
    let mut m = counting_manager(vec![p]);
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.hook, "syscalls/sys_enter_mkdir");
    assert_eq!(info.method, AttachMethod::Tracepoint);
    mkdir_rmdir("tp");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Stopped));
    assert_unloaded(&prog_ids);
}

#[test]
fn tracepoint_name_overrides_the_section() {
    // The program is in tracepoint/syscalls/sys_enter_mkdir; attach it to sys_enter_rmdir.
    let p = Probe {
        tracepoint_category: Some("syscalls".into()),
        tracepoint_name: Some("sys_enter_rmdir".into()),
        ..probe("rmdir", "tracepoint_sys_enter_mkdir")
    };
    let id = p.id();
    let mut m = counting_manager(vec![p]);
    m.start().unwrap();
    assert_eq!(m.attach_info(&id).unwrap().hook, "syscalls/sys_enter_rmdir");
    mkdir_rmdir("tp-rmdir");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn raw_tracepoint_fires() {
    let p = probe("raw", "raw_tracepoint_sys_enter");
    let id = p.id();
    let mut m = counting_manager(vec![p]);
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().method,
        AttachMethod::RawTracepoint
    );
    mkdir_rmdir("raw");
    assert!(
        hits(&m, slot::RAW_TRACEPOINT) >= 2,
        "mkdir and rmdir are two syscalls"
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn program_picked_by_section() {
    let p = Probe {
        uid: "by-section".into(),
        section: Some("raw_tracepoint/sys_enter".into()),
        ..Default::default()
    };
    let id = p.id();
    let mut m = counting_manager(vec![p]);
    m.start().unwrap();
    mkdir_rmdir("section");
    assert!(hits(&m, slot::RAW_TRACEPOINT) >= 2);
    assert!(m.get_program(&id).is_some());
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn section_with_several_programs_needs_a_function_name() {
    setup();
    let mut m = Manager {
        probes: vec![Probe {
            section: Some("tracepoint/syscalls/sys_enter_mkdir".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    match m.init(PROBES).unwrap_err() {
        ebpf_manager::Error::AmbiguousSection { functions, .. } => {
            assert!(
                functions.contains("tracepoint_sys_enter_mkdir"),
                "{functions}"
            );
            assert!(functions.contains("tagged_sys_enter_mkdir"), "{functions}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pause_stops_events_and_resume_brings_them_back() {
    let p = probe("pause", "tracepoint_sys_enter_mkdir");
    let id = p.id();
    let mut m = counting_manager(vec![p]);
    m.start().unwrap();
    mkdir_rmdir("pause-1");
    m.pause().unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Paused));
    mkdir_rmdir("pause-2");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        1,
        "an event arrived while paused"
    );
    m.resume().unwrap();
    mkdir_rmdir("pause-3");
    assert_eq!(hits(&m, slot::TRACEPOINT), 2);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn two_probes_of_one_program_attach_twice() {
    let a = probe("a", "tracepoint_sys_enter_mkdir");
    let b = Probe {
        tracepoint_category: Some("syscalls".into()),
        tracepoint_name: Some("sys_enter_rmdir".into()),
        ..probe("b", "tracepoint_sys_enter_mkdir")
    };
    let mut m = counting_manager(vec![a, b]);
    m.start().unwrap();
    mkdir_rmdir("twice");
    assert_eq!(hits(&m, slot::TRACEPOINT), 2);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn helloworld_tracepoint_twin_prints_to_trace_pipe() {
    setup();
    let _lock = trace_pipe_lock();
    let mut m = Manager {
        probes: vec![probe("MyVFSMkdir", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    m.init(HELLOWORLD).unwrap();
    m.start().unwrap();
    let line = mkdir_and_read_trace_pipe("mkdir (vfs hook point)");
    assert!(line.is_some(), "no `mkdir (vfs hook point)` in trace_pipe");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// `init` raises the soft limit of open files to the hard one, as the Go runtime does for Go
/// programs: a manager holds several fds per probe (perf event or link, a tracefs event's
/// lock, one perf ring per CPU), and a soft limit of 1024 runs out at a few hundred probes.
#[test]
fn init_raises_the_soft_open_file_limit_to_the_hard_one() {
    let get = || {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a valid struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
        l
    };
    let before = get();
    assert!(before.rlim_max > 64, "hard limit {}", before.rlim_max);
    // Just below the hard limit: lowered for this process, harmless to the other tests.
    let lowered = libc::rlimit {
        rlim_cur: before.rlim_max - 1,
        rlim_max: before.rlim_max,
    };
    // SAFETY: setrlimit reads a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let mut m = counting_manager(vec![probe("tp", "tracepoint_sys_enter_mkdir")]);
    assert_eq!(get().rlim_cur, before.rlim_max);
    m.stop(CleanupType::CleanAll).unwrap();
}
