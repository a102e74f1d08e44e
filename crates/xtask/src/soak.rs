//! `cargo xtask soak [--sequences N] [--seed S] [--kernel V]...`: the randomized soak of
//! tests/tests/soak.rs for as long as asked, on the host and in each guest kernel named. A
//! bounded run with the fixed seed is part of `cargo xtask test`.

use std::time::Duration;

use crate::{cargo, vm, Result};

const USAGE: &str = "usage: cargo xtask soak [--sequences N] [--seed S] [--kernel V]...";

/// Entry point of `cargo xtask soak`.
pub fn run(args: &[String]) -> Result<()> {
    let (mut sequences, mut seed, mut kernels) = ("1000".to_owned(), None, Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--sequences" => sequences = value()?,
            "--seed" => seed = Some(value()?),
            "--kernel" => kernels.push(value()?),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    for (name, v) in [("--sequences", Some(&sequences)), ("--seed", seed.as_ref())] {
        if v.is_some_and(|v| v.parse::<u64>().is_err()) {
            return Err(format!("{name} takes a number\n{USAGE}"));
        }
    }
    let mut env = vec![("EBPFM_SOAK_SEQUENCES".to_owned(), sequences)];
    if let Some(seed) = seed {
        env.push(("EBPFM_SOAK_SEED".to_owned(), seed));
    }
    let test_args = ["--nocapture", "--test-threads=1"];
    println!("== host");
    let mut cmd = cargo::cargo();
    cmd.args(["test", "-p", "integration-tests", "--test", "soak", "--"])
        .args(test_args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let (ok, _) = cargo::run_echoed(&mut cmd)?;
    if !ok {
        return Err("the soak failed on the host".into());
    }
    if kernels.is_empty() {
        return Ok(());
    }
    let built = cargo::build_static(&[
        "test",
        "-p",
        "integration-tests",
        "--test",
        "soak",
        "--no-run",
    ])?;
    let (_, binary) = built
        .into_iter()
        .find(|(name, _)| name == "soak")
        .ok_or("cargo reported no soak test executable")?;
    for series in &kernels {
        let kernel = vm::kernel(series)?;
        println!("== Linux {} under QEMU", kernel.release);
        let payload = vm::Payload {
            name: "soak".into(),
            binary: binary.clone(),
            args: test_args.iter().map(|a| a.to_string()).collect(),
            env: env.clone(),
        };
        let run = vm::run(&kernel, &[payload], Duration::from_secs(3600), true)?;
        if run.results.first().and_then(|(_, rc)| *rc) != Some(0) {
            return Err(format!("the soak failed in Linux {}", kernel.release));
        }
    }
    Ok(())
}
