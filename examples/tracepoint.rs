//! A tracepoint: count the mkdir(2) system calls of this thread on
//! `tracepoint/syscalls/sys_enter_mkdir`. Tracepoints are a stable kernel interface
//! (Linux 4.7 for BPF), available where kprobes are not.
//!
//! Run: `cargo run --example tracepoint` (as root).

use std::process::ExitCode;

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, Options, Probe};

/// ebpf-fixtures/src/probes.bpf.c: `tracepoint_sys_enter_mkdir` counts the calls of the
/// thread `filter_tid` in slot 2 of `hits`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");
const SLOT: u32 = 2;
const DIRECTORIES: u64 = 3;

fn hits(m: &Manager) -> Result<u64, Error> {
    examples::read_u64(m, "hits", SLOT)
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let probe = Probe {
        uid: "CountMkdir".into(),
        ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
        ..Default::default()
    };
    let id = probe.id();
    let mut m = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            ..Default::default()
        },
    )?;
    m.start()?;
    let info = m.attach_info(&id).expect("attached");
    println!("attached to {} through {}", info.hook, info.method);
    examples::make_directories("tracepoint", DIRECTORIES)?;
    let count = hits(&m)?;
    println!("made {DIRECTORIES} directories; sys_enter_mkdir counted {count}");
    m.stop(CleanupType::CleanAll)?;
    if count == DIRECTORIES {
        println!("tracepoint: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
