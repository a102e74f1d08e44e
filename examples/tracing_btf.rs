//! Two BTF-typed programs that need no BPF trampoline: a `tp_btf` program on the `sys_enter`
//! raw tracepoint (Linux 5.5), which reads the syscall number with its BTF type, and an
//! `iter/task` iterator (Linux 5.8) that lists every task, read through
//! `Manager::open_iterator`. The kernel's BTF is parsed once for both, and released after
//! `start`.
//!
//! Run: `cargo run --example tracing_btf` (as root).

use std::{io::Read, process::ExitCode};

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, Options, Probe};

/// ebpf-fixtures/src/btf.bpf.c: `tp_btf_sys_enter` counts the mkdir(2) calls of the thread
/// `filter_tid` in slot 2 of `btf_hits`; `iter_task` prints `<tgid> <pid>` per task.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/btf.bpf.o");
const TP_BTF: u32 = 2;
const DIRECTORIES: u64 = 2;

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let probe = |function: &str| Probe {
        uid: "TracingBtf".into(),
        ebpf_func_name: function.into(),
        ..Default::default()
    };
    let (tp_btf, iter) = (probe("tp_btf_sys_enter"), probe("iter_task"));
    let (tp_id, iter_id) = (tp_btf.id(), iter.id());
    let mut m = Manager {
        probes: vec![tp_btf, iter],
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
    println!("kernel BTF held after init: {}", m.holds_kernel_btf());
    m.start()?;
    println!("kernel BTF held after start: {}", m.holds_kernel_btf());
    for id in [&tp_id, &iter_id] {
        let info = m.attach_info(id).expect("attached");
        println!(
            "{} runs on {} through {}",
            id.ebpf_func_name, info.hook, info.method
        );
    }

    examples::make_directories("tracing-btf", DIRECTORIES)?;
    let mkdirs = examples::read_u64(&m, "btf_hits", TP_BTF)?;
    println!("made {DIRECTORIES} directories; tp_btf/sys_enter counted {mkdirs} mkdir calls");

    let mut listing = String::new();
    m.open_iterator(&iter_id)?
        .read_to_string(&mut listing)
        .map_err(|source| Error::Io {
            path: "iter/task".into(),
            source,
        })?;
    let me = format!("{} {tid}", std::process::id());
    let tasks = listing.lines().count();
    let found = listing.lines().any(|l| l == me);
    println!("iter/task listed {tasks} tasks (`<tgid> <pid>`), first ones:");
    for line in listing.lines().take(3) {
        println!("  {line}");
    }
    println!(
        "  ... and this thread: {me} ({})",
        if found { "found" } else { "missing!" }
    );
    m.stop(CleanupType::CleanAll)?;
    if mkdirs == DIRECTORIES && found {
        println!("tracing_btf: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
