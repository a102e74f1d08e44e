//! fentry and fexit: BPF trampolines on `vfs_mkdir`, at its entry and at its return, typed
//! against the kernel's BTF (Linux 5.5). Cheaper than kprobes, and they see the arguments
//! with their types.
//!
//! Where the kernel refuses them (no BTF or BPF trampolines, lockdown, or a kernel that
//! forbids them, like this project's development host), the manager's error says so, and a
//! `OneOf` selector falls back to the tracepoint twin on `syscalls/sys_enter_mkdir`.
//!
//! Run: `cargo run --example fentry` (as root).

use std::process::ExitCode;

use ebpf_manager::{
    CleanupType, ConstantEditor, Error, Manager, Options, Probe, ProbeIdentificationPair,
    ProbeState, ProbesSelector,
};

/// ebpf-fixtures/src/btf.bpf.c: each program counts the calls of the thread `filter_tid` in
/// its slot of `btf_hits`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/btf.bpf.o");
const FENTRY: u32 = 0;
const FEXIT: u32 = 1;
const TRACEPOINT: u32 = 4;

fn hits(m: &Manager, slot: u32) -> Result<u64, Error> {
    examples::read_u64(m, "btf_hits", slot)
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let probe = |function: &str| Probe {
        uid: "MkdirWatch".into(),
        ebpf_func_name: function.into(),
        ..Default::default()
    };
    let probes = vec![
        probe("fentry_vfs_mkdir"),
        probe("fexit_vfs_mkdir"),
        probe("tracepoint_sys_enter_mkdir"),
    ];
    let ids: Vec<ProbeIdentificationPair> = probes.iter().map(Probe::id).collect();
    // fentry and fexit together, else the tracepoint.
    let selector = ProbesSelector::OneOf(vec![
        ProbesSelector::AllOf(vec![
            ProbesSelector::Probe(ids[0].clone()),
            ProbesSelector::Probe(ids[1].clone()),
        ]),
        ProbesSelector::Probe(ids[2].clone()),
    ]);
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            activated_probes: vec![selector],
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            ..Default::default()
        },
    )?;
    m.start()?;
    let trampolines = ids[..2]
        .iter()
        .all(|id| m.probe_state(id) == Some(ProbeState::Running));
    if !trampolines {
        for id in &ids[..2] {
            if let Some(error) = m.probe_error(id) {
                println!("{error}");
            }
        }
        println!(
            "fentry and fexit need Linux 5.5 or later with BTF (/sys/kernel/btf/vmlinux) and BPF \
             trampolines, on a kernel that allows them (the QEMU guests of `cargo xtask test` do)"
        );
        println!("falling back to the tracepoint twin: tracepoint/syscalls/sys_enter_mkdir");
    }
    for id in &ids {
        if let Some(info) = m.attach_info(id) {
            println!(
                "{} runs on {} through {}",
                id.ebpf_func_name, info.hook, info.method
            );
        }
    }
    examples::make_directories("fentry", 1)?;
    let (entries, exits, tracepoint) = (hits(&m, FENTRY)?, hits(&m, FEXIT)?, hits(&m, TRACEPOINT)?);
    m.stop(CleanupType::CleanAll)?;
    let seen = if trampolines {
        println!("fentry counted {entries} entries into vfs_mkdir, fexit {exits} returns");
        entries == 1 && exits == 1
    } else {
        println!("the tracepoint counted {tracepoint} mkdir call(s)");
        tracepoint == 1
    };
    if seen {
        println!("fentry: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
