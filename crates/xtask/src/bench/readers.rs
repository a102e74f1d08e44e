//! `cargo xtask bench readers`: builds the libbpf baseline (ebpf-fixtures/bench/readers_libbpf.c)
//! with gcc against Debian's libbpf-dev, then runs tests/benches/readers.rs on the host, which
//! runs the baseline as a child process for its libbpf variants.

use std::{fs, process::Command};

use crate::{cargo, install, root, Result};

/// Where the benchmark finds the baseline's executable.
pub(super) const LIBBPF_ENV: &str = "EBPF_MANAGER_BENCH_LIBBPF";

/// Entry point of `cargo xtask bench readers`.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "unexpected argument `{arg}`: `bench readers` runs on the host and takes none"
        ));
    }
    let binary = build_baseline("readers_libbpf")?;
    let mut cmd = cargo::cargo();
    cmd.args(["bench", "-p", "integration-tests", "--bench", "readers"])
        .env(LIBBPF_ENV, &binary);
    let (ok, _) = cargo::run_echoed(&mut cmd)?;
    if !ok {
        return Err("the readers benchmark failed".into());
    }
    Ok(())
}

/// Builds ebpf-fixtures/bench/`name`.c with gcc against libbpf-dev (installed when missing)
/// into target/bench/`name`.
pub(super) fn build_baseline(name: &str) -> Result<std::path::PathBuf> {
    install::ensure(&[("gcc", "gcc")])?;
    install::ensure_files(&[("/usr/include/bpf/libbpf.h", "libbpf-dev")])?;
    let source = root().join(format!("ebpf-fixtures/bench/{name}.c"));
    let dir = root().join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let binary = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        .args(["-lbpf", "-lpthread"])
        .status()
        .map_err(|e| format!("running gcc: {e}"))?;
    if !status.success() {
        return Err(format!("gcc failed on {} ({status})", source.display()));
    }
    Ok(binary)
}
