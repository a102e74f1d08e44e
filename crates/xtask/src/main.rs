//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask fixtures [--check]`: rebuild the eBPF objects in `ebpf-fixtures/`, or check them.
//! - `cargo xtask test [--kernel V]... [FILTER]`: the three test tiers.
//! - `cargo xtask vm --kernel V -- BINARY [ARGS]...`: run a static binary in a guest kernel.
//! - `cargo xtask bench startup`: manager against raw aya.
//! - `cargo xtask bench readers`: ring and perf buffer readers against raw aya and libbpf.
//! - `cargo xtask fuzz [--seconds N] [TARGET]...`: the fuzz targets of fuzz/, N seconds each.
//! - `cargo xtask soak [--sequences N] [--seed S] [--kernel V]...`: the randomized soak.
//! - `cargo xtask layers [--print]`: the library's imports go down its layers only.
//! - `cargo xtask public-api [--bless]`: the public API against crates/ebpf-manager/public-api.txt.

mod bench;
mod cargo;
mod container;
mod fixtures;
mod fuzz;
mod install;
mod layers;
mod public_api;
mod soak;
mod test;
mod vm;

use std::process::ExitCode;

/// The result type of every xtask step: errors are messages for a person.
pub type Result<T, E = String> = std::result::Result<T, E>;

fn usage() -> &'static str {
    "usage: cargo xtask <command>\n\
     \n  fixtures [--check]                 rebuild (or check) ebpf-fixtures/*.o with clang\
     \n  test [--kernel V]... [--tier N]... [FILTER]\n                                     unit, host and QEMU tiers (V: 5.10, 6.1, 6.12)\
     \n  vm --kernel V -- BINARY [ARGS]...  run a static binary as a child of a guest's /init\
     \n  bench startup [--kernel V]...      init+start+stop: manager against raw aya\
     \n  bench readers                      ring/perf buffer readers: manager, raw aya, libbpf\
     \n  fuzz [--seconds N] [TARGET]...     fuzz targets (nightly, libFuzzer), N s each (60)\
     \n  soak [--sequences N] [--seed S] [--kernel V]...\n                                     random API sequences with injected faults, kernel checked after each\
     \n  layers [--print]                   the library's imports go down its layers only\
     \n  public-api [--bless]               the public API (nightly rustdoc JSON) against public-api.txt\n"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("fixtures") => fixtures::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("vm") => vm::cli(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("layers") => layers::run(&args[1..]),
        Some("public-api") => public_api::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{}", usage());
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n{}", usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives in crates/xtask).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/xtask has two ancestors")
        .to_path_buf()
}
