//! Real Debian kernels under QEMU (TCG): download them once, then boot static binaries in them.
//!
//! Kernels come from Debian's archive through a private apt state kept in the cache directory
//! (`$EBPF_MANAGER_CACHE`, else `$XDG_CACHE_HOME/ebpf-manager`, else `~/.cache/ebpf-manager`):
//! the machine's apt configuration and lists are never touched. A run builds an uncompressed
//! initramfs from busybox and the payload binaries, whose `/init` runs the payloads one after
//! the other and prints markers on the serial console that [`run`] reads back.

mod initramfs;
mod kernels;
mod qemu;

use std::{
    env, fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{install, Result};

pub use kernels::kernel;

use initramfs::{check_static, initramfs, valid_name};
use kernels::file_name;
use qemu::{boot, BOOT_ATTEMPTS};

/// The kernel series the project is tested on, oldest first.
pub const KERNELS: &[&str] = &["5.10", "6.1", "6.12"];

/// A Debian kernel unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The series, as in [`KERNELS`]: `"6.1"`.
    pub series: String,
    /// The Debian package it came from: `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// What `uname -r` says in the guest: `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The kernel image to boot.
    pub vmlinuz: PathBuf,
}

/// A static binary to run in the guest, as a child of `/init`, with `/tmp` as working directory.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Its name: the binary is `/payload/<name>` in the guest, and the console markers use it.
    /// Letters, digits and `._+-` only.
    pub name: String,
    /// The binary on the host; it must be statically linked (no ELF interpreter).
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables set for it, on top of `PATH=/bin`.
    pub env: Vec<(String, String)>,
}

/// What happened in one boot of a guest.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Everything the serial console printed, markers included, lines ending in `\n`.
    pub console: String,
    /// Every payload in order with its exit status; `None` when it never finished.
    pub results: Vec<(String, Option<i32>)>,
    /// Whether the timeout passed and QEMU was killed.
    pub timed_out: bool,
    /// Whether the console showed a kernel panic.
    pub panicked: bool,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
}

/// Every marker line starts with this.
const MARKER: &str = "@@EBPF-MANAGER ";
/// The cache directory of the project (created when missing).
fn cache_dir() -> Result<PathBuf> {
    let dir = if let Some(dir) = env::var_os("EBPF_MANAGER_CACHE").filter(|d| !d.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(dir).join("ebpf-manager")
    } else if let Some(home) = env::var_os("HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(home).join(".cache/ebpf-manager")
    } else {
        return Err("no cache directory: set EBPF_MANAGER_CACHE (or HOME)".into());
    };
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
/// Removes the run directories (`<pid>-<n>-<nanos>`) of xtask processes that are gone: a run
/// killed before its cleanup leaves gigabytes of initramfs behind. Only those untouched for
/// an hour: a cache shared with another pid namespace holds runs whose pid is not in ours,
/// and no run lasts that long (3 boots of at most 900 s).
fn sweep_dead_runs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()) else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)));
        if old && pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
/// Boots `kernel` with an initramfs whose `/init` runs `payloads` in order, then powers off.
///
/// Reads the serial console until QEMU ends or `timeout` passes (then QEMU is killed);
/// `echo` prints the console live on stdout. A guest that panics before its first payload
/// starts is booted again (up to 3 boots in all; `timeout` applies to each boot): QEMU 7.2's
/// TCG occasionally breaks the kernel's boot-time code patching. Fails only when the guest
/// cannot be started; what happened inside is in the [`GuestRun`].
pub fn run(
    kernel: &Kernel,
    payloads: &[Payload],
    timeout: Duration,
    echo: bool,
) -> Result<GuestRun> {
    for (i, payload) in payloads.iter().enumerate() {
        if !valid_name(&payload.name) {
            return Err(format!(
                "payload name `{}`: use letters, digits and ._+- only",
                payload.name
            ));
        }
        if payloads[..i].iter().any(|p| p.name == payload.name) {
            return Err(format!("two payloads are named `{}`", payload.name));
        }
        if let Some((key, _)) = payload.env.iter().find(|(k, _)| {
            k.is_empty() || k.contains('=') || k.starts_with(|c: char| c.is_ascii_digit())
        }) {
            return Err(format!(
                "payload {}: bad variable name `{key}`",
                payload.name
            ));
        }
        check_static(&payload.binary)?;
    }
    install::ensure(&[("qemu-system-x86_64", "qemu-system-x86")])?;

    static RUNS: AtomicU64 = AtomicU64::new(0);
    let runs = cache_dir()?.join("runs");
    sweep_dead_runs(&runs);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = runs.join(format!(
        "{}-{}-{nanos}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _cleanup = RemoveOnDrop(dir.clone());
    // The kernel's configuration, where tests look for it when /proc/config.gz is absent.
    let config = kernel
        .vmlinuz
        .with_file_name(format!("config-{}", kernel.release));
    let modules = kernel.vmlinuz.with_file_name("modules");
    let initrd = initramfs(
        &dir,
        payloads,
        config.is_file().then_some(config.as_path()),
        &modules,
    )?;

    // The initramfs is unpacked in RAM next to its own copy: leave room for both.
    let initrd_mib = fs::metadata(&initrd).map_or(0, |m| m.len() >> 20);
    let memory = (512 + 3 * initrd_mib).max(1024);
    let mut attempt = 1;
    loop {
        let guest = boot(kernel, &initrd, memory, payloads, timeout, echo)?;
        let booted = guest.console.contains(&format!("{MARKER}BEGIN "))
            || guest.console.contains(&format!("{MARKER}DONE"));
        if !guest.panicked || booted || attempt == BOOT_ATTEMPTS {
            return Ok(guest);
        }
        // QEMU 7.2's TCG sometimes runs stale code while the kernel patches its own text (an
        // `int3` oops at boot, more often on a busy host); no payload ran, so boot again.
        eprintln!(
            "xtask: kernel {} panicked while booting, before any payload ran \
             (attempt {attempt} of {BOOT_ATTEMPTS}); booting again",
            kernel.release
        );
        attempt += 1;
    }
}
/// `cargo xtask vm --kernel V [--timeout SECS] [--env K=V]... -- BINARY [ARGS]...`: runs a
/// static binary in a guest kernel, echoes the console and exits with the binary's status
/// (124 when it did not finish: timeout, kernel panic or no result).
pub fn cli(args: &[String]) -> Result<()> {
    let usage =
        "usage: cargo xtask vm --kernel V [--timeout SECS] [--env K=V]... -- BINARY [ARGS]...\n\
                 (V: one of the kernel series below; SECS defaults to 300)";
    let usage = || format!("{usage}\nkernels: {}", KERNELS.join(", "));
    let mut series = None;
    let mut timeout = Duration::from_secs(300);
    let mut env = Vec::new();
    let mut rest = args;
    let command = loop {
        let Some((arg, tail)) = rest.split_first() else {
            return Err(usage());
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let value = |tail: &[String]| -> Result<(String, usize)> {
            match inline.clone() {
                Some(v) => Ok((v, 0)),
                None => tail
                    .first()
                    .map(|v| (v.clone(), 1))
                    .ok_or_else(|| format!("{flag} needs a value\n{}", usage())),
            }
        };
        let used = match flag {
            "--" => break tail,
            "--kernel" => {
                let (v, n) = value(tail)?;
                series = Some(v);
                n
            }
            "--timeout" => {
                let (v, n) = value(tail)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--timeout {v}: not a number of seconds"))?;
                timeout = Duration::from_secs_f64(secs);
                n
            }
            "--env" => {
                let (v, n) = value(tail)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--env {v}: expected KEY=VALUE"))?;
                env.push((k.to_string(), val.to_string()));
                n
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            _ => return Err(format!("unexpected argument `{arg}`\n{}", usage())),
        };
        rest = &tail[used..];
    };
    let series = series.ok_or_else(|| format!("--kernel is required\n{}", usage()))?;
    if !KERNELS.contains(&series.as_str()) {
        return Err(format!(
            "unknown kernel `{series}`: choose one of {}",
            KERNELS.join(", ")
        ));
    }
    let (binary, binary_args) = command
        .split_first()
        .ok_or_else(|| format!("no binary after `--`\n{}", usage()))?;
    let binary = PathBuf::from(binary);
    check_static(&binary)?;
    let mut name: String = file_name(&binary)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !valid_name(&name) {
        name = "payload".into();
    }
    let kernel = kernel(&series)?;
    let payload = Payload {
        name: name.clone(),
        binary,
        args: binary_args.to_vec(),
        env,
    };
    eprintln!(
        "xtask: booting kernel {} ({}, {}) with {name}",
        kernel.series, kernel.release, kernel.package
    );
    let guest = run(&kernel, &[payload], timeout, true)?;
    let status = guest.results.first().and_then(|(_, rc)| *rc);
    let secs = guest.elapsed.as_secs_f64();
    let code = if guest.timed_out {
        eprintln!("xtask: timed out after {secs:.1}s (--timeout)");
        124
    } else if guest.panicked {
        eprintln!("xtask: the guest kernel panicked ({secs:.1}s)");
        124
    } else if let Some(rc) = status {
        eprintln!(
            "xtask: {name} exited with {rc} on {} ({secs:.1}s)",
            kernel.release
        );
        rc
    } else {
        eprintln!("xtask: {name} never finished ({secs:.1}s)");
        124
    };
    std::process::exit(code)
}
