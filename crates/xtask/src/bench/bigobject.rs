//! `cargo xtask bench bigobject`: builds the libbpf baseline
//! (ebpf-fixtures/bench/bigobject_libbpf.c) with gcc against Debian's libbpf-dev, then runs
//! tests/benches/bigobject.rs on the host, which runs the baseline once per round.

use crate::{cargo, Result};

/// Entry point of `cargo xtask bench bigobject`.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "unexpected argument `{arg}`: `bench bigobject` runs on the host and takes none"
        ));
    }
    let binary = super::readers::build_baseline("bigobject_libbpf")?;
    let mut cmd = cargo::cargo();
    cmd.args(["bench", "-p", "integration-tests", "--bench", "bigobject"])
        .env(super::readers::LIBBPF_ENV, &binary);
    let (ok, _) = cargo::run_echoed(&mut cmd)?;
    if !ok {
        return Err("the bigobject benchmark failed".into());
    }
    Ok(())
}
