//! LSM programs: a BPF program on the `path_mkdir` security hook (Linux 5.7), which sees every
//! directory creation and may refuse it (this one counts and allows).
//!
//! The kernel needs `bpf` among its active LSMs (`lsm=lockdown,capability,bpf` on the kernel
//! command line, or in CONFIG_LSM) and BPF trampolines. Where it refuses LSM programs (like
//! this project's development host), the manager's error says so, and a `OneOf` selector falls
//! back to the tracepoint twin on `syscalls/sys_enter_mkdir`, which observes but cannot refuse.
//!
//! Run: `cargo run --example lsm` (as root).

use std::process::ExitCode;

use ebpf_manager::{
    CleanupType, ConstantEditor, Error, Manager, Options, Probe, ProbeState, ProbesSelector,
};

/// ebpf-fixtures/src/btf.bpf.c: each program counts the calls of the thread `filter_tid` in
/// its slot of `btf_hits`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/btf.bpf.o");
const LSM: u32 = 3;
const TRACEPOINT: u32 = 4;

fn hits(m: &Manager, slot: u32) -> Result<u64, Error> {
    examples::read_u64(m, "btf_hits", slot)
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let lsm = Probe {
        uid: "MkdirPolicy".into(),
        ebpf_func_name: "lsm_path_mkdir".into(),
        ..Default::default()
    };
    let tracepoint = Probe {
        uid: "MkdirPolicy".into(),
        ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
        ..Default::default()
    };
    let (lsm_id, tp_id) = (lsm.id(), tracepoint.id());
    let mut m = Manager {
        probes: vec![lsm, tracepoint],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            activated_probes: vec![ProbesSelector::OneOf(vec![
                ProbesSelector::Probe(lsm_id.clone()),
                ProbesSelector::Probe(tp_id.clone()),
            ])],
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            ..Default::default()
        },
    )?;
    m.start()?;
    let lsm_runs = m.probe_state(&lsm_id) == Some(ProbeState::Running);
    if !lsm_runs {
        if let Some(error) = m.probe_error(&lsm_id) {
            println!("{error}");
        }
        let active = std::fs::read_to_string("/sys/kernel/security/lsm")
            .unwrap_or_else(|_| "unknown (securityfs is not mounted)".into());
        println!("active LSMs: {}", active.trim());
        println!(
            "LSM programs need Linux 5.7 or later with CONFIG_BPF_LSM, `bpf` among the active \
             LSMs (boot with lsm=lockdown,capability,bpf, as the QEMU guests of `cargo xtask \
             test` do) and BPF trampolines"
        );
        println!("falling back to the tracepoint twin: tracepoint/syscalls/sys_enter_mkdir");
    }
    for id in [&lsm_id, &tp_id] {
        if let Some(info) = m.attach_info(id) {
            println!(
                "{} runs on {} through {}",
                id.ebpf_func_name, info.hook, info.method
            );
        }
    }
    examples::make_directories("lsm", 1)?;
    let (checks, tracepoint) = (hits(&m, LSM)?, hits(&m, TRACEPOINT)?);
    m.stop(CleanupType::CleanAll)?;
    let seen = if lsm_runs {
        println!("the path_mkdir hook checked (and allowed) {checks} directory creation(s)");
        checks == 1
    } else {
        println!("the tracepoint counted {tracepoint} mkdir call(s)");
        tracepoint == 1
    };
    if seen {
        println!("lsm: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
