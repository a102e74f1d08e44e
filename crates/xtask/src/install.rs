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
    install_missing(tools, "commands", |command| find(command).is_some())
}

/// Like [`ensure`], for files that a package installs and that are not commands (headers,
/// libraries): `(absolute path, debian package)` pairs.
pub fn ensure_files(files: &[(&str, &str)]) -> Result<()> {
    install_missing(files, "files", |path| Path::new(path).exists())
}

/// Installs the packages of the `wanted` items (`what` names them in messages) that are not
/// `present`, then checks that they are.
fn install_missing(
    wanted: &[(&str, &str)],
    what: &str,
    present: impl Fn(&str) -> bool,
) -> Result<()> {
    // The guests of several kernels build their initramfs side by side: one install at a
    // time (apt-get refuses a second while the first holds its lock), and the ones after
    // find the tools present.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing: Vec<&str> = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for &(item, package) in wanted {
        if !present(item) {
            if !missing.contains(&item) {
                missing.push(item);
            }
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let pkgs = packages.join(" ");
    let names = missing.join(", ");
    let by_hand = format!(
        "install them yourself (`sudo apt-get install {pkgs}` on Debian or Ubuntu) and run again"
    );
    if find("apt-get").is_none() {
        return Err(format!(
            "missing {what}: {names}, and there is no apt-get to install them: {by_hand}"
        ));
    }
    eprintln!("xtask: installing {pkgs} (missing {what}: {names})");
    apt_get(&["update", "-q"]).map_err(|e| format!("{e}; {by_hand}"))?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&packages);
    apt_get(&install).map_err(|e| format!("{e}; {by_hand}"))?;
    let still: Vec<&str> = missing.iter().copied().filter(|c| !present(c)).collect();
    if !still.is_empty() {
        return Err(format!(
            "installed {pkgs} but still cannot find {}; {by_hand}",
            still.join(", ")
        ));
    }
    Ok(())
}

/// Runs `apt-get ARGS` non-interactively, with its output on our stderr.
fn apt_get(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        // Another apt (another process's) may hold the lock: wait for it.
        .args(["-o", "DPkg::Lock::Timeout=300"])
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
pub(crate) fn find(command: &str) -> Option<PathBuf> {
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
