//! `cargo xtask bench startup|readers`: the benchmarks, each printing ratios against a
//! baseline measured in the same run.
//!
//! - `startup [--kernel V]... [--only patterns]`: on the host and, for each `--kernel`, in
//!   that guest kernel (where the helloworld case takes the kprobe path); `--only patterns`
//!   runs the pattern-resolution rows alone.
//! - `readers`: on the host; see [`readers`].
//! - `bigobject`: on the host; see [`bigobject`].

mod bigobject;
mod readers;

use std::time::Duration;

use crate::{cargo, vm, Result};

const USAGE: &str =
    "usage: cargo xtask bench startup [--kernel V]... [--only patterns] | readers | bigobject";

/// Entry point of `cargo xtask bench`.
pub fn run(args: &[String]) -> Result<()> {
    let (which, rest) = args.split_first().ok_or(USAGE)?;
    match which.as_str() {
        "startup" => startup(rest),
        "readers" => readers::run(rest),
        "bigobject" => bigobject::run(rest),
        other => Err(format!(
            "unknown benchmark `{other}`: the benchmarks are: startup, readers, bigobject\n{USAGE}"
        )),
    }
}

/// Names the one part of the startup benchmark to run (`--only patterns`).
const ONLY: &str = "EBPFM_BENCH_ONLY";

fn startup(rest: &[String]) -> Result<()> {
    let mut kernels = Vec::new();
    let mut only = None;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => kernels.push(it.next().ok_or("--kernel needs a value")?.clone()),
            "--only" => only = Some(it.next().ok_or("--only needs a value: patterns")?.clone()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    println!("== host");
    let mut cmd = cargo::cargo();
    cmd.args(["bench", "-p", "integration-tests", "--bench", "startup"]);
    if let Some(only) = &only {
        cmd.env(ONLY, only);
    }
    let (ok, _) = cargo::run_echoed(&mut cmd)?;
    if !ok {
        return Err("the startup benchmark failed on the host".into());
    }
    if kernels.is_empty() {
        return Ok(());
    }
    let built = cargo::build_static(&[
        "bench",
        "-p",
        "integration-tests",
        "--bench",
        "startup",
        "--no-run",
    ])?;
    let (_, binary) = built
        .into_iter()
        .find(|(name, _)| name == "startup")
        .ok_or("cargo reported no startup benchmark executable")?;
    for series in &kernels {
        let kernel = vm::kernel(series)?;
        println!(
            "== Linux {} under QEMU (TCG: absolute times are slow, ratios hold)",
            kernel.release
        );
        let payload = vm::Payload {
            name: "bench-startup".into(),
            binary: binary.clone(),
            args: vec!["--bench".into()],
            env: only.iter().map(|o| (ONLY.to_owned(), o.clone())).collect(),
        };
        let run = vm::run(&kernel, &[payload], Duration::from_secs(1200), true)?;
        if run.results.first().and_then(|(_, rc)| *rc) != Some(0) {
            return Err(format!(
                "the startup benchmark failed in Linux {}",
                kernel.release
            ));
        }
    }
    Ok(())
}
