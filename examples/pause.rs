//! `pause` and `resume`: the probe stops firing without being unloaded, then fires again.
//!
//! Run: `cargo run --example pause` (as root).

use std::{process::ExitCode, time::Duration};

use ebpf_manager::{CleanupType, Error, Manager, Probe};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/helloworld.bpf.o");
const MESSAGE: &str = "mkdir (vfs hook point)";

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    let mut m = Manager {
        probes: vec![Probe {
            uid: "MyVFSMkdir".into(),
            ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    m.init(OBJECT)?;
    m.start()?;
    println!("running:");
    let first = examples::mkdir_and_show_trace_pipe(MESSAGE, Duration::from_secs(5))?;
    m.pause()?;
    println!("paused (the program stays loaded):");
    let while_paused = examples::mkdir_and_show_trace_pipe(MESSAGE, Duration::from_secs(2))?;
    println!(
        "  {}",
        if while_paused {
            "an event arrived!"
        } else {
            "no event, as expected"
        }
    );
    m.resume()?;
    println!("resumed:");
    let after = examples::mkdir_and_show_trace_pipe(MESSAGE, Duration::from_secs(5))?;
    m.stop(CleanupType::CleanAll)?;
    if first && !while_paused && after {
        println!("pause: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
