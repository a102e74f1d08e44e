//! The classic hello world: a kprobe on `vfs_mkdir` that prints "mkdir (vfs hook point)" to
//! trace_pipe when a directory is made.
//!
//! On a kernel without kprobes it says so, and falls back to the tracepoint twin on
//! `syscalls/sys_enter_mkdir`, which prints the same line.
//!
//! With `--rust` (or as the `helloworld_rust` example) it loads the same programs written in
//! Rust with aya-ebpf (ebpf-fixtures/rust): their sections are bare (`kprobe`, `tracepoint`),
//! so the probes name their targets.
//!
//! Run: `cargo run --example helloworld [-- --rust]` (as root).

use std::{process::ExitCode, time::Duration};

use ebpf_manager::{AttachInfo, CleanupType, Error, Manager, Probe};

/// `SEC("kprobe/vfs_mkdir") kprobe_vfs_mkdir` and `SEC("tracepoint/syscalls/sys_enter_mkdir")
/// tracepoint_sys_enter_mkdir`, both calling `bpf_printk("mkdir (vfs hook point)\n")`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/helloworld.bpf.o");
/// The same two programs from ebpf-fixtures/rust (aya-ebpf's `#[kprobe]` and `#[tracepoint]`).
const RUST_OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/helloworld-rust.bpf.o");
const MESSAGE: &str = "mkdir (vfs hook point)";

fn rust() -> bool {
    std::env::args().any(|a| a == "--rust") || env!("CARGO_BIN_NAME") == "helloworld_rust"
}

fn started(ebpf_func_name: &str) -> Result<(Manager, AttachInfo), Error> {
    let probe = Probe {
        uid: "MyVFSMkdir".into(),
        ebpf_func_name: ebpf_func_name.into(),
        ..Default::default()
    };
    // aya-ebpf's sections name no target: the probe does.
    let (object, probe) = if rust() {
        let probe = if ebpf_func_name.starts_with("kprobe") {
            Probe {
                hook_func_name: Some("vfs_mkdir".into()),
                ..probe
            }
        } else {
            Probe {
                tracepoint_category: Some("syscalls".into()),
                tracepoint_name: Some("sys_enter_mkdir".into()),
                ..probe
            }
        };
        (RUST_OBJECT, probe)
    } else {
        (OBJECT, probe)
    };
    let id = probe.id();
    let mut manager = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    manager.init(object)?;
    manager.start()?;
    let info = manager
        .attach_info(&id)
        .cloned()
        .expect("a started probe is attached");
    Ok((manager, info))
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let (mut manager, info) = match started("kprobe_vfs_mkdir") {
        Ok(started) => started,
        Err(e @ Error::KprobesUnsupported { .. }) => {
            println!("{e}");
            println!("falling back to the tracepoint twin: tracepoint/syscalls/sys_enter_mkdir");
            started("tracepoint_sys_enter_mkdir")?
        }
        Err(e) => return Err(e),
    };
    println!("path taken: {} on {}", info.method, info.hook);
    let seen = examples::mkdir_and_show_trace_pipe(MESSAGE, Duration::from_secs(10))?;
    manager.stop(CleanupType::CleanAll)?;
    if seen {
        let name = env!("CARGO_BIN_NAME");
        let from = if rust() { "Rust" } else { "C" };
        println!(
            "{name}: ok ({} on {}, programs written in {from})",
            info.method, info.hook
        );
        Ok(())
    } else {
        Err(Error::Io {
            path: "trace_pipe".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("`{MESSAGE}` did not appear within 10 s"),
            ),
        })
    }
}

pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helloworld: error: {}", e.report());
            ExitCode::FAILURE
        }
    }
}
