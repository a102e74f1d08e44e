//! Installing the Debian packages that xtask steps need (clang, qemu, busybox, ...).
//!
//! Only what is missing is installed, with `apt-get`, and only after saying so on stderr.

use std::{
    env,
    ffi::OsStr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::Result;

/// Makes sure every `(command, debian package)` pair has its command on `PATH`.
///
/// Nothing happens when all commands are found. Otherwise this runs `apt-get update` once and
/// `apt-get install -y --no-install-recommends` with the packages of the missing commands,
/// then checks that the commands are now found.
pub fn ensure(tools: &[(&str, &str)]) -> Result<()> {
    let mut commands: Vec<&str> = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for &(command, package) in tools {
        if find(command).is_none() {
            if !commands.contains(&command) {
                commands.push(command);
            }
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    if commands.is_empty() {
        return Ok(());
    }
    let pkgs = packages.join(" ");
    let cmds = commands.join(", ");
    let by_hand = format!(
        "install them yourself (`sudo apt-get install {pkgs}` on Debian or Ubuntu) and run again"
    );
    if find("apt-get").is_none() {
        return Err(format!(
            "missing commands: {cmds}, and there is no apt-get to install them: {by_hand}"
        ));
    }
    eprintln!("xtask: installing {pkgs} (missing: {cmds})");
    apt_get(&["update", "-q"]).map_err(|e| format!("{e}; {by_hand}"))?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&packages);
    apt_get(&install).map_err(|e| format!("{e}; {by_hand}"))?;
    let still: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| find(c).is_none())
        .collect();
    if !still.is_empty() {
        return Err(format!(
            "installed {pkgs} but still cannot find {} on PATH; {by_hand}",
            still.join(", ")
        ));
    }
    Ok(())
}

/// Runs `apt-get ARGS` non-interactively, with its output on our stderr.
fn apt_get(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        let hint = if is_root() {
            ""
        } else {
            " (installing packages needs root)"
        };
        Err(format!(
            "`apt-get {}` failed ({status}){hint}",
            args.join(" ")
        ))
    }
}

/// The path of an executable `command` found on `PATH`, like `command -v`.
fn find(command: &str) -> Option<PathBuf> {
    if command.contains('/') {
        return is_executable(Path::new(command)).then(|| PathBuf::from(command));
    }
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .filter(|dir| dir.as_os_str() != OsStr::new(""))
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether we run as root, read from /proc (no libc dependency).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
