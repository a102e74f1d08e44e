//! `cargo xtask fuzz [--seconds N] [TARGET]...`: builds the fuzz targets of fuzz/ with the
//! nightly toolchain and libFuzzer's coverage instrumentation (what `cargo fuzz build` does,
//! without needing cargo-fuzz), then runs each for N seconds from the committed corpus
//! (fuzz/corpus/<target>, read only; new inputs go to target/fuzz/corpus/<target>). A crash
//! fails the command and names the input to reproduce it with.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use crate::{root, Result};

/// The targets in fuzz/fuzz_targets.
pub const TARGETS: &[&str] = &["object", "patterns", "declaration"];

/// How long a target runs.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// Fresh random inputs for this long.
    Seconds(u64),
    /// This many inputs from a fixed seed, so that the same code always runs the same inputs
    /// (what `cargo xtask test` runs: a finding there is reproducible, never luck); at most
    /// 120 s.
    Runs(u64),
}

/// What one bounded run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    pub seconds: u64,
    pub executions: u64,
    pub seeds: usize,
    pub corpus: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {:<12} {:>3} s, {:>9} executions, {} seeds, corpus now {}",
            self.target, self.seconds, self.executions, self.seeds, self.corpus
        )
    }
}

/// Entry point of `cargo xtask fuzz`.
pub fn run(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds takes a whole number")?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => {
                return Err(format!(
                    "unknown fuzz target or option `{other}` (targets: {TARGETS:?})"
                ))
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let bins = build()?;
    for target in targets {
        println!("{}", run_target(&bins, target, Limit::Seconds(seconds))?);
    }
    Ok(())
}

/// Builds every target; returns the directory of the binaries.
pub fn build() -> Result<PathBuf> {
    let t = Instant::now();
    let fuzz = root().join("fuzz");
    let triple = "x86_64-unknown-linux-gnu";
    // libFuzzer's coverage and comparison tracing, as cargo fuzz sets them; overflow checks and
    // debug assertions on, so that arithmetic faults are found too.
    let rustflags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "build",
            "--release",
            "--bins",
            "--target",
            triple,
        ])
        .current_dir(&fuzz)
        .env("RUSTFLAGS", rustflags)
        // The outer cargo's settings are not the nightly build's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("running cargo +nightly: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the fuzz targets failed ({status}); they need the nightly toolchain \
             (`rustup toolchain list` must show one)"
        ));
    }
    println!("xtask: fuzz targets built in {:.1?}", t.elapsed());
    Ok(fuzz.join("target").join(triple).join("release"))
}

/// Runs `target` within `limit` from its committed corpus.
pub fn run_target(bins: &Path, target: &str, limit: Limit) -> Result<Report> {
    let root = root();
    let seeds_dir = root.join("fuzz/corpus").join(target);
    let work = root.join("target/fuzz/corpus").join(target);
    let artifacts = root.join("target/fuzz/artifacts").join(target);
    for dir in [&work, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let seeds = count(&seeds_dir);
    let bound = match limit {
        Limit::Seconds(s) => vec![format!("-max_total_time={s}")],
        Limit::Runs(n) => {
            // A fresh work corpus too: the inputs then depend on the committed corpus only.
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
            vec![
                format!("-runs={n}"),
                "-seed=1".to_owned(),
                "-max_total_time=120".to_owned(),
            ]
        }
    };
    let started = Instant::now();
    let output = Command::new(bins.join(target))
        .arg(&work)
        .arg(&seeds_dir)
        .args(&bound)
        .arg("-rss_limit_mb=1024")
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .map_err(|e| format!("running fuzz target {target}: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {target} found a failure ({}):\n{}\nreproduce with: \
             fuzz/target/x86_64-unknown-linux-gnu/release/{target} <the input named above>",
            output.status,
            tail.join("\n")
        ));
    }
    // "Done 123 runs in 10 second(s)"
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("Done "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(Report {
        target: target.to_owned(),
        seconds: started.elapsed().as_secs(),
        executions,
        seeds,
        corpus: count(&work),
    })
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}
