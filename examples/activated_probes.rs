//! Selectors: a kprobe on `vfs_mkdir` OR its tracepoint twin, whichever the kernel allows
//! (`OneOf`), then a runtime switch to the tracepoint alone with `update_activated_probes`.
//!
//! Run: `cargo run --example activated_probes` (as root).

use std::{process::ExitCode, time::Duration};

use ebpf_manager::{CleanupType, Error, Manager, Options, Probe, ProbeState, ProbesSelector::*};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/helloworld.bpf.o");

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    let kprobe = Probe {
        uid: "kprobe".into(),
        ebpf_func_name: "kprobe_vfs_mkdir".into(),
        ..Default::default()
    };
    let tracepoint = Probe {
        uid: "tracepoint".into(),
        ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
        ..Default::default()
    };
    let (kp, tp) = (kprobe.id(), tracepoint.id());
    let mut m = Manager {
        probes: vec![kprobe, tracepoint],
        ..Default::default()
    };
    m.init_with_options(
        OBJECT,
        Options {
            activated_probes: vec![OneOf(vec![Probe(kp.clone()), Probe(tp.clone())])],
            ..Default::default()
        },
    )?;
    m.start()?;
    for id in [&kp, &tp] {
        match m.probe_state(id) {
            Some(ProbeState::Running) => {
                let info = m.attach_info(id).expect("running");
                println!("{id}: running, {} on {}", info.method, info.hook);
            }
            state => println!(
                "{id}: {state:?}: {}",
                m.probe_error(id).unwrap_or("no error recorded")
            ),
        }
    }
    examples::mkdir_and_show_trace_pipe("mkdir (vfs hook point)", Duration::from_secs(5))?;

    println!("switching to the tracepoint alone");
    m.update_activated_probes(vec![Probe(tp.clone())])?;
    println!(
        "kprobe: {:?}; tracepoint: {:?}",
        m.probe_state(&kp),
        m.probe_state(&tp)
    );
    // Detached; its program stays loaded (Loaded), or never was (Disabled).
    let switched = matches!(
        m.probe_state(&kp),
        Some(ProbeState::Loaded | ProbeState::Disabled)
    ) && m.attach_info(&kp).is_none();
    let seen =
        examples::mkdir_and_show_trace_pipe("mkdir (vfs hook point)", Duration::from_secs(5))?;
    m.stop(CleanupType::CleanAll)?;
    if seen && switched {
        println!("activated_probes: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
