//! Running cargo and test binaries, and reading libtest's counts from their output.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{root, Result};

/// Passed and failed test counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed (a crashed binary counts one).
    pub failed: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

/// Sums the `test result: ... N passed; M failed; ...` lines of libtest output.
pub fn parse_libtest(output: &str) -> Counts {
    let mut counts = Counts::default();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                match (n.parse::<u64>(), what) {
                    (Ok(n), "passed") => counts.passed += n,
                    (Ok(n), "failed") => counts.failed += n,
                    _ => {}
                }
            }
        }
    }
    counts
}

/// Runs a command with its stdout echoed and captured; stderr goes to the terminal.
/// Returns (success, stdout).
pub fn run_echoed(cmd: &mut Command) -> Result<(bool, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| format!("reading output of {cmd:?}: {e}"))?;
        println!("{line}");
        out.push_str(&line);
        out.push('\n');
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    Ok((status.success(), out))
}

/// `cargo` in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The target directory of the static guest binaries, apart from the host's so that
/// switching RUSTFLAGS does not rebuild everything each time.
pub fn static_target_dir() -> PathBuf {
    root().join("target").join("static")
}

/// Builds with `args` as static binaries (crt-static on the gnu target) and returns the
/// executables cargo reports, with their target names.
///
/// Without debug information: each test binary is ~85 MB with it and ~17 MB without, and
/// every guest's initramfs holds half of them, in RAM and on disk (one CI machine ran out of
/// disk writing the archives). Panics still name their file and line, and backtraces their
/// functions.
pub fn build_static(args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(args)
        .args(["--message-format=json-render-diagnostics", "--target"])
        .arg("x86_64-unknown-linux-gnu")
        .arg("--target-dir")
        .arg(static_target_dir())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_PROFILE_DEV_STRIP", "debuginfo")
        .stdout(Stdio::piped());
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("static build failed: {cmd:?}"));
    }
    Ok(executables(&out.stdout))
}

/// Builds with `args` (into the usual target directory) and returns the executables cargo
/// reports, with their target names.
pub fn build(args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("build failed: {cmd:?}"));
    }
    Ok(executables(&out.stdout))
}

/// The executables of cargo's JSON messages.
fn executables(stdout: &[u8]) -> Vec<(String, PathBuf)> {
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(exe), Some(name)) =
            (msg["executable"].as_str(), msg["target"]["name"].as_str())
        {
            exes.push((name.to_owned(), Path::new(exe).to_owned()));
        }
    }
    exes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_results() {
        let out = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
test result: FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s
";
        assert_eq!(
            parse_libtest(out),
            Counts {
                passed: 8,
                failed: 2
            }
        );
        assert_eq!(parse_libtest("nothing here"), Counts::default());
    }
}
