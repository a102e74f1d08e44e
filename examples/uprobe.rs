//! Uprobes and uretprobes: count the calls of a function of this very program, and see its
//! argument at entry and its result at return.
//!
//! `count_sheep` below is a plain `extern "C"` function of this executable; the manager finds
//! it in the executable's symbol table (`binary_path` is this program, `hook_func_name` the
//! function) and attaches `uprobe` and `uretprobe` programs to it through the uprobe PMU.
//! The same declaration probes any executable or shared library: set `binary_path` to it.
//!
//! Run: `cargo run --example uprobe` (as root).

use std::process::ExitCode;

use ebpf_manager::{aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, Options, Probe};

/// ebpf-fixtures/src/user.bpf.c: `uprobe_generic` and `uretprobe_generic` count their hits in
/// `user_hits` (slots 2 and 3) and keep the first argument and the return value in
/// `user_values`, for the thread `filter_tid` only.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/user.bpf.o");
const ENTRY: u32 = 2;
const RETURN: u32 = 3;

/// The probed function: not inlined, and kept under its own name in the symbol table.
#[no_mangle]
#[inline(never)]
pub extern "C" fn count_sheep(n: u64) -> u64 {
    std::hint::black_box(n) * 2 + 1
}

fn slot(m: &Manager, map: &str, index: u32) -> Result<u64, Error> {
    let map = m.get_map(map).expect("user.bpf.o has this map");
    let array = Array::<_, u64>::try_from(map).expect("an array of u64");
    array.get(&index, 0).map_err(|e| Error::Io {
        path: format!("map {map:?}").into(),
        source: std::io::Error::other(e),
    })
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let me = std::env::current_exe().map_err(|source| Error::Io {
        path: "/proc/self/exe".into(),
        source,
    })?;
    let probe = |function: &str| Probe {
        uid: "CountSheep".into(),
        ebpf_func_name: function.into(),
        binary_path: Some(me.clone()),
        hook_func_name: Some("count_sheep".into()),
        ..Default::default()
    };
    let (entry, exit) = (probe("uprobe_generic"), probe("uretprobe_generic"));
    let entry_id = entry.id();
    let mut m = Manager {
        probes: vec![entry, exit],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![
                ConstantEditor::new("filter_tgid", 0u32),
                ConstantEditor::new("filter_tid", tid),
            ],
            ..Default::default()
        },
    )?;
    m.start()?;
    let info = m.attach_info(&entry_id).expect("attached");
    println!("attached to {} through {}", info.hook, info.method);
    let mut results = Vec::new();
    for n in 1..=3 {
        results.push(count_sheep(n));
    }
    println!("called count_sheep(1), (2), (3): {results:?}");
    let (calls, returns) = (
        slot(&m, "user_hits", ENTRY)?,
        slot(&m, "user_hits", RETURN)?,
    );
    let (last_arg, last_result) = (
        slot(&m, "user_values", ENTRY)?,
        slot(&m, "user_values", RETURN)?,
    );
    println!("uprobe: {calls} calls, last argument {last_arg}");
    println!("uretprobe: {returns} returns, last result {last_result}");
    m.stop(CleanupType::CleanAll)?;
    if calls == 3 && returns == 3 && last_arg == 3 && last_result == count_sheep(3) {
        println!("uprobe: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
