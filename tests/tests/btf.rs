//! Programs typed against the kernel's BTF: fentry, fexit, LSM (BPF trampolines), tp_btf and
//! iterators.
//!
//! tp_btf and iter/task run everywhere. fentry, fexit and LSM run for real in the QEMU
//! guests (Debian kernels booted with `lsm=lockdown,capability,bpf`); the development host's
//! kernel refuses to load them (`BPF_PROG_LOAD` fails with EPERM and writes no verifier log),
//! and there the tests assert that precise error.

use ebpf_manager::{
    AttachMethod, CleanupType, Error, Manager, Options, Probe, ProbeIdentificationPair, ProbeState,
    ProbesSelector,
};
use integration_tests::{user::*, *};

/// Asserts that `error` is the kernel's refusal to load a BPF trampoline program: EPERM from
/// `BPF_PROG_LOAD` with no verifier log, reported as such (not as a verifier rejection),
/// naming the probe, its function and its program type.
fn assert_refused(error: &Error, id: &ProbeIdentificationPair, program_type: &str) {
    assert!(
        !kernel_must_run_btf_trampolines(),
        "this kernel must load `{}`: {error}",
        id.ebpf_func_name
    );
    let Error::ProgramTypeRefused {
        id: got,
        function,
        program_type: refused,
        source,
        ..
    } = error
    else {
        panic!("expected Error::ProgramTypeRefused (EPERM, no verifier log), got {error:?}");
    };
    assert_eq!(got, id);
    assert_eq!(function, &id.ebpf_func_name);
    assert_eq!(*refused, program_type);
    assert_eq!(source.raw_os_error(), Some(libc::EPERM));
    let message = error.to_string();
    for part in [
        "EPERM without a verifier log",
        &format!("refuses {program_type} programs"),
        &id.to_string(),
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

/// Where the kernel loads `function`, starts it, makes a directory and checks it counted once
/// in `slot`, then that stop leaves nothing; where the kernel refuses it, checks the refusal.
fn mkdir_counted_once_or_refused(function: &str, program_type: &str, slot: u32) {
    let p = probe(function, function);
    let id = p.id();
    let mut m = match btf_manager(vec![p], Options::default()) {
        Ok(m) => m,
        Err(e) => return assert_refused(&e, &id, program_type),
    };
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.method, AttachMethod::BtfLink);
    mkdir_rmdir(function);
    assert_eq!(
        slot_of(&m, "btf_hits", slot),
        1,
        "{function} did not count mkdir once"
    );
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Stopped));
    assert_unloaded(&prog_ids);
}

#[test]
fn btf_fentry_counts_mkdir() {
    mkdir_counted_once_or_refused("fentry_vfs_mkdir", "fentry", btf_slot::FENTRY);
}

#[test]
fn btf_fexit_counts_mkdir() {
    mkdir_counted_once_or_refused("fexit_vfs_mkdir", "fexit", btf_slot::FEXIT);
}

#[test]
fn btf_lsm_path_mkdir_counts_mkdir() {
    mkdir_counted_once_or_refused("lsm_path_mkdir", "LSM", btf_slot::LSM);
}

#[test]
fn btf_tp_btf_counts_mkdir_syscalls() {
    let p = probe("tp_btf", "tp_btf_sys_enter");
    let id = p.id();
    let mut m = btf_manager(vec![p], Options::default()).unwrap();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.hook, "sys_enter");
    assert_eq!(info.method, AttachMethod::BtfLink);
    mkdir_rmdir("tp_btf");
    assert_eq!(slot_of(&m, "btf_hits", btf_slot::TP_BTF), 1);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

/// The `<tgid> <pid>` lines an iter/task run printed.
fn tasks(text: &str) -> Vec<(u32, u32)> {
    text.lines()
        .map(|l| {
            let mut f = l.split_whitespace().map(|n| n.parse::<u32>().expect(l));
            (f.next().expect(l), f.next().expect(l))
        })
        .collect()
}

#[test]
fn btf_iter_task_lists_this_process_and_thread() {
    let p = probe("iter", "iter_task");
    let id = p.id();
    let mut m = btf_manager(vec![p], Options::default()).unwrap();
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    assert_eq!(m.attach_info(&id).unwrap().hook, "task");
    let read = |m: &mut Manager| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut m.open_iterator(&id).unwrap(), &mut text).unwrap();
        tasks(&text)
    };
    let pid = std::process::id();
    let first = read(&mut m);
    assert!(
        first.contains(&(pid, pid)),
        "no main thread {pid} in {first:?}"
    );
    assert!(
        first.contains(&(pid, gettid())),
        "no thread {} in {first:?}",
        gettid()
    );
    // Each open runs the iterator again from the start.
    let second = read(&mut m);
    assert!(second.contains(&(pid, gettid())));
    let listed = slot_of(&m, "btf_hits", btf_slot::ITER);
    assert_eq!(listed, (first.len() + second.len()) as u64);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

#[test]
fn btf_open_iterator_needs_a_running_iterator() {
    let iter = probe("iter", "iter_task");
    let tp = probe("tp", "tp_btf_sys_enter");
    let (iter_id, tp_id) = (iter.id(), tp.id());
    let mut m = btf_manager(vec![iter, tp], Options::default()).unwrap();
    match m.open_iterator(&iter_id).unwrap_err() {
        Error::InvalidProbe { id, reason } => {
            assert_eq!(id, iter_id);
            assert!(reason.contains("start the manager"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
    m.start().unwrap();
    match m.open_iterator(&tp_id).unwrap_err() {
        Error::InvalidProbe { id, reason } => {
            assert_eq!(id, tp_id);
            assert!(reason.contains("iter/"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn btf_kernel_btf_is_parsed_at_init_and_released_after_start() {
    let p = probe("tp", "tp_btf_sys_enter");
    setup();
    let mut m = Manager {
        probes: vec![p.clone()],
        ..Default::default()
    };
    assert!(!m.holds_kernel_btf(), "before init");
    drop(m);
    m = btf_manager(vec![p], Options::default()).unwrap();
    assert!(
        m.holds_kernel_btf(),
        "after init, BTF-typed programs loaded"
    );
    m.start().unwrap();
    assert!(!m.holds_kernel_btf(), "released after start");
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn btf_keep_kernel_btf_keeps_it_after_start() {
    let p = probe("tp", "tp_btf_sys_enter");
    let options = Options {
        keep_kernel_btf: true,
        ..Default::default()
    };
    let mut m = btf_manager(vec![p], options).unwrap();
    m.start().unwrap();
    assert!(m.holds_kernel_btf(), "kept after start");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// The kernel's BTF is held from init (aya's loader parses it, and the manager keeps that one
/// loader for per-probe copies: tests/tests/btf_parses.rs) to start, which releases it.
#[test]
fn btf_without_btf_typed_programs_releases_it_at_start() {
    let p = probe("tp", "tracepoint_sys_enter_mkdir");
    let mut m = btf_manager(vec![p], Options::default()).unwrap();
    assert!(m.holds_kernel_btf(), "aya's loader, kept for copies");
    m.start().unwrap();
    assert!(!m.holds_kernel_btf(), "released at start");
    mkdir_rmdir("no-btf");
    assert_eq!(slot_of(&m, "btf_hits", btf_slot::TRACEPOINT), 1);
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A section that names its target wins over hook_func_name, as the Go library reads it
/// (cilium loads the program against the section's target).
#[test]
fn btf_section_target_wins_over_hook_func_name() {
    let p = Probe {
        hook_func_name: Some("ebpf_manager_no_such_tracepoint".into()),
        ..probe("section", "tp_btf_sys_enter")
    };
    let id = p.id();
    let mut m = match btf_manager(vec![p], Options::default()) {
        Ok(m) => m,
        Err(e) => return assert_refused(&e, &id, "tp_btf"),
    };
    m.start().unwrap();
    assert_eq!(m.attach_info(&id).unwrap().hook, "sys_enter");
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn btf_fields_of_other_families_are_refused() {
    let p = Probe {
        attach_to_func_name: Some("vfs_*".into()),
        ..probe("pattern", "fentry_vfs_mkdir")
    };
    match btf_manager(vec![p], Options::default()).unwrap_err() {
        Error::InvalidProbe { reason, .. } => {
            assert!(
                reason.starts_with("attach_to_func_name does not apply"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
}

/// The fallback the fentry example uses: a OneOf selector over fentry and the tracepoint twin.
/// Where fentry loads, both run; where it is refused, the tracepoint alone satisfies the
/// selector.
#[test]
fn btf_one_of_falls_back_from_fentry_to_the_tracepoint() {
    let fentry = probe("fallback", "fentry_vfs_mkdir");
    let tracepoint = probe("fallback", "tracepoint_sys_enter_mkdir");
    let (fentry_id, tp_id) = (fentry.id(), tracepoint.id());
    let options = Options {
        activated_probes: vec![ProbesSelector::OneOf(vec![
            ProbesSelector::Probe(fentry_id.clone()),
            ProbesSelector::Probe(tp_id.clone()),
        ])],
        ..Default::default()
    };
    let mut m = btf_manager(vec![fentry, tracepoint], options).unwrap();
    m.start().unwrap();
    mkdir_rmdir("fallback");
    assert_eq!(m.probe_state(&tp_id), Some(ProbeState::Running));
    assert_eq!(slot_of(&m, "btf_hits", btf_slot::TRACEPOINT), 1);
    match m.probe_state(&fentry_id) {
        Some(ProbeState::Running) => {
            assert_eq!(slot_of(&m, "btf_hits", btf_slot::FENTRY), 1);
        }
        Some(ProbeState::Failed) => {
            assert!(!kernel_must_run_btf_trampolines());
            let cause = m.probe_error(&fentry_id).unwrap();
            assert!(cause.contains("refuses fentry programs"), "{cause}");
        }
        other => panic!("fentry probe is {other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
}

/// `syscall_func_name` on `fentry/vfs_mkdir`: the section's target wins, as in Go (the Go
/// example fentry declares SyscallFuncName on `fexit/do_mkdirat` and attaches to do_mkdirat);
/// on a bare `fentry` section it names the target (tests/tests/gomodel.rs).
#[test]
fn btf_fentry_section_target_wins_over_syscall_func_name() {
    let p = Probe {
        syscall_func_name: Some("mkdir".into()),
        ..probe("syscall", "fentry_vfs_mkdir")
    };
    let id = p.id();
    let mut m = match btf_manager(vec![p], Options::default()) {
        Ok(m) => m,
        Err(e) => return assert_refused(&e, &id, "fentry"),
    };
    m.start().unwrap();
    assert_eq!(m.attach_info(&id).unwrap().hook, "vfs_mkdir");
    mkdir_rmdir("fentry-syscall");
    assert_eq!(slot_of(&m, "btf_hits", btf_slot::FENTRY), 1);
}

/// A kernel BTF file cut short (a partial copy, a full disk) says it is truncated and how
/// much is missing, instead of aya's "error parsing BTF header".
#[test]
fn a_truncated_kernel_btf_file_says_truncated() {
    setup();
    let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let cut = TempFile::new("vmlinux-cut.btf", &vmlinux[..vmlinux.len() / 2], 0o644);
    let mut m = Manager {
        probes: vec![probe("t", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    let err = m
        .init_with_options(
            PROBES,
            Options {
                kernel_btf: Some(ebpf_manager::KernelTypes::File(cut.path().to_owned())),
                ..Default::default()
            },
        )
        .unwrap_err();
    let expected = format!(
        "truncated: its header describes {} bytes, the file has {}",
        vmlinux.len(),
        vmlinux.len() / 2
    );
    assert!(
        matches!(&err, Error::InvalidOption { option, reason } if option == "kernel_btf" && reason.ends_with(&expected)),
        "{err:?}"
    );
}
