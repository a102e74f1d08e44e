//! A manager declared in TOML (`examples/declarative.toml`, feature `serde`): read into a
//! `Manager` and its `Options`, completed in code with what a file cannot know (this
//! thread's id), started, and shown with `Manager::status` while it counts mkdir(2) calls.
//!
//! Run: `cargo run --example declarative` (as root).

use std::process::ExitCode;

use ebpf_manager::{
    CleanupType, ConstantEditor, Declaration, Error, ProbeIdentificationPair, ProbeState,
};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");
const DECLARATION: &str = include_str!("declarative.toml");
/// The slot of `hits` that `tracepoint_sys_enter_mkdir` counts in.
const SLOT: u32 = 2;
const DIRECTORIES: u64 = 3;

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let (mut m, mut options) = Declaration::from_toml(DECLARATION)?.into_manager();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    options
        .constant_editors
        .push(ConstantEditor::new("filter_tid", tid));
    m.init_with_options(OBJECT, options)?;
    m.start()?;
    examples::make_directories("declarative", DIRECTORIES)?;
    let status = m.status();
    println!("{status}");
    let count = examples::read_u64(&m, "hits", SLOT)?;
    let mkdir = ProbeIdentificationPair::new("mkdir", "tracepoint_sys_enter_mkdir");
    let ran = status
        .probes
        .iter()
        .find(|p| p.id == mkdir)
        .is_some_and(|p| {
            p.state == ProbeState::Running && p.run_count.is_some_and(|n| n >= DIRECTORIES)
        });
    m.stop(CleanupType::CleanAll)?;
    println!("made {DIRECTORIES} directories; the declared tracepoint counted {count}");
    if count == DIRECTORIES && ran {
        println!("declarative: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
