//! Kprobes and kretprobes. On a kernel with kprobes (the QEMU tier) they attach and fire; on a
//! kernel without (the host), each test asserts the error users get there.

use ebpf_manager::{
    AttachMethod, CleanupType, Error, KprobeAttachMethod, Probe, ProbeIdentificationPair,
    ProbeState,
};
use integration_tests::*;

/// Starts `m`; with kprobes, checks the probe fired on mkdir through `method`; without, checks
/// the precise error and that nothing stayed attached.
/// The tests of this file check that this process has no tracefs kprobe event left, which
/// another of them running at the same time would have: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_kprobe(
    mut m: ebpf_manager::Manager,
    id: ProbeIdentificationPair,
    slot: u32,
    hook: &str,
    method: AttachMethod,
) {
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    if kernel_has_kprobes() {
        m.start().expect("start");
        let info = m.attach_info(&id).expect("attached").clone();
        assert_eq!(info.hook, hook);
        assert_eq!(info.method, method);
        if method == AttachMethod::KprobeTracefs {
            assert_eq!(own_tracefs_events("kprobe_events").len(), 1);
        }
        mkdir_rmdir("kprobe");
        assert!(hits(&m, slot) >= 1, "the probe on {hook} did not fire");
        m.stop(CleanupType::CleanAll).expect("stop");
        assert_eq!(m.probe_state(&id), Some(ProbeState::Stopped));
    } else {
        match m.start() {
            Err(Error::KprobesUnsupported { id: got, hook: h }) => {
                assert_eq!(got, id);
                assert_eq!(h, hook);
            }
            other => panic!("expected KprobesUnsupported, got {other:?}"),
        }
        assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
        assert!(m.attach_info(&id).is_none());
        drop(m);
    }
    assert_unloaded(&prog_ids);
    assert!(own_tracefs_events("kprobe_events").is_empty());
}

/// The facility a kprobe with the default attach method takes on this kernel.
fn default_method() -> AttachMethod {
    if ebpf_manager::features::has_kprobe_pmu() {
        AttachMethod::KprobePmu
    } else {
        AttachMethod::KprobeTracefs
    }
}

#[test]
fn kprobe_from_section_fires_on_mkdir() {
    let _serial = serial();
    let p = probe("kp", "kprobe_vfs_mkdir");
    let id = p.id();
    let m = counting_manager(vec![p]);
    let method = default_method();
    run_kprobe(m, id, slot::KPROBE, "vfs_mkdir", method);
}

#[test]
fn kprobe_through_tracefs_creates_and_removes_its_event() {
    let _serial = serial();
    let p = Probe {
        kprobe_attach_method: KprobeAttachMethod::Tracefs,
        ..probe("kp-tracefs", "kprobe_vfs_mkdir")
    };
    let id = p.id();
    let m = counting_manager(vec![p]);
    run_kprobe(
        m,
        id,
        slot::KPROBE,
        "vfs_mkdir",
        AttachMethod::KprobeTracefs,
    );
}

#[test]
fn kretprobe_fires_on_return() {
    let _serial = serial();
    let p = probe("krp", "kretprobe_vfs_mkdir");
    let id = p.id();
    let m = counting_manager(vec![p]);
    let method = default_method();
    run_kprobe(m, id, slot::KRETPROBE, "vfs_mkdir", method);
}

#[test]
fn kretprobe_with_maxactive_goes_through_tracefs() {
    let _serial = serial();
    let p = Probe {
        kprobe_max_active: 16,
        ..probe("krp-maxactive", "kretprobe_vfs_mkdir")
    };
    let id = p.id();
    let m = counting_manager(vec![p]);
    run_kprobe(
        m,
        id,
        slot::KRETPROBE,
        "vfs_mkdir",
        AttachMethod::KprobeTracefs,
    );
}

#[test]
fn syscall_func_name_gets_the_kernel_prefix() {
    let _serial = serial();
    let p = Probe {
        syscall_func_name: Some("mkdir".into()),
        ..probe("sys", "kprobe_generic")
    };
    let id = p.id();
    let m = counting_manager(vec![p]);
    let method = default_method();
    // x86_64 kernels since 4.17 name syscalls __x64_sys_*.
    run_kprobe(m, id, slot::KPROBE_GENERIC, "__x64_sys_mkdir", method);
}

#[test]
fn attach_to_func_name_pattern_resolves_to_a_kernel_function() {
    let _serial = serial();
    let p = Probe {
        attach_to_func_name: Some("vfs_mkdi[r]".into()),
        ..probe("pattern", "kprobe_generic")
    };
    let id = p.id();
    let m = counting_manager(vec![p]);
    let method = default_method();
    run_kprobe(m, id, slot::KPROBE_GENERIC, "vfs_mkdir", method);
}

#[test]
fn helloworld_kprobe_prints_to_trace_pipe() {
    let _serial = serial();
    setup();
    let _lock = trace_pipe_lock();
    let p = probe("MyVFSMkdir", "kprobe_vfs_mkdir");
    let id = p.id();
    let mut m = ebpf_manager::Manager {
        probes: vec![p],
        ..Default::default()
    };
    m.init(HELLOWORLD).expect("init");
    if kernel_has_kprobes() {
        m.start().expect("start");
        let line = mkdir_and_read_trace_pipe("mkdir (vfs hook point)");
        assert!(line.is_some(), "no `mkdir (vfs hook point)` in trace_pipe");
        m.stop(CleanupType::CleanAll).expect("stop");
    } else {
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::KprobesUnsupported { id: got, hook } if *got == id && hook == "vfs_mkdir"),
            "{err:?}"
        );
        assert!(err.to_string().contains("CONFIG_KPROBES"), "{err}");
    }
}

/// Events of this library are told dead or alive by their lock, not by a pid: an unlocked
/// event of another token is removed at start, a locked one (a live manager in another pid
/// namespace) and another tool's are kept. The crash-restart suite (restart.rs) runs the
/// same with real processes.
#[test]
fn leftover_events_of_dead_processes_are_removed_at_start() {
    let _serial = serial();
    setup();
    let root = ebpf_manager::testing::tracefs_root().expect("tracefs");
    if !tracefs_has("kprobe_events") {
        // Without kprobe_events nothing can be left over, and start must not fail on it.
        assert_eq!(
            ebpf_manager::testing::remove_leftover_events(root, "kprobe_events").unwrap(),
            Vec::<String>::new()
        );
        return;
    }
    let token = |n: u64| format!("ebpf_manager_{:016x}", n ^ u64::from(std::process::id()));
    let dead_group = token(0xdead_0000_0000_0000);
    let live_group = token(0x11fe_0000_0000_0000);
    let other_group = format!("not_{dead_group}");
    let control = root.join("kprobe_events");
    let add = |line: String| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&control)
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    };
    add(format!("p:{dead_group}/p_leftover vfs_mkdir"));
    add(format!("p:{live_group}/p_live vfs_mkdir"));
    add(format!("p:{other_group}/p_not_ours vfs_mkdir"));
    // The live manager's lock, as ProbeEvent holds it.
    let lock = std::fs::File::open(root.join(format!("events/{live_group}/p_live/id"))).unwrap();
    // SAFETY: flock on an fd owned by `lock`.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(rc, 0);
    let mut m = counting_manager(vec![probe("tp", "tracepoint_sys_enter_mkdir")]);
    m.start().expect("start");
    let listing = std::fs::read_to_string(&control).unwrap();
    // Remove the others ourselves before asserting, so a failure leaves nothing.
    add(format!("-:{other_group}/p_not_ours"));
    add(format!("-:{live_group}/p_live"));
    drop(lock);
    let groups: Vec<&str> = listing
        .lines()
        .filter_map(ebpf_manager::testing::parse_event_line)
        .map(|(group, _)| group)
        .collect();
    assert!(
        !groups.contains(&dead_group.as_str()),
        "leftover kept:\n{listing}"
    );
    assert!(
        groups.contains(&live_group.as_str()),
        "a live manager's event was removed:\n{listing}"
    );
    assert!(
        groups.contains(&other_group.as_str()),
        "another tool's event was removed:\n{listing}"
    );
    m.stop(CleanupType::CleanAll).unwrap();
}
