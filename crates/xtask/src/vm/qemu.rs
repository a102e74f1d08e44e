//! One boot of QEMU (TCG) on the serial console: streams the console, records the payloads'
//! end markers and kills QEMU at the timeout.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use super::{GuestRun, Kernel, Payload, MARKER};
use crate::Result;

/// A running QEMU: killed and reaped when dropped, whatever happened.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
/// How many times [`run`](super::run) boots a guest that panics before its first payload starts.
pub(super) const BOOT_ATTEMPTS: u32 = 3;

/// One boot of QEMU with `initrd`; see [`run`](super::run).
pub(super) fn boot(
    kernel: &Kernel,
    initrd: &Path,
    memory: u64,
    payloads: &[Payload],
    timeout: Duration,
    echo: bool,
) -> Result<GuestRun> {
    let mut command = Command::new("qemu-system-x86_64");
    command
        // Single-threaded TCG: with thread=multi, two guest CPUs patching kernel text at once
        // (attaching tracepoints flips static keys) locked up a 6.1 guest for good (soft
        // lockups on both CPUs, RCU stalls). Two vCPUs are kept for per-CPU behaviour.
        .args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2"])
        .args(["-m", &memory.to_string()])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 lsm=lockdown,capability,bpf",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut qemu = Qemu(
        command
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?,
    );

    let (lines, received) = mpsc::channel::<String>();
    let stdout = qemu.0.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if lines.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = qemu.0.stderr.take().expect("piped");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut guest = GuestRun {
        console: String::new(),
        results: payloads.iter().map(|p| (p.name.clone(), None)).collect(),
        timed_out: false,
        panicked: false,
        elapsed: Duration::ZERO,
    };
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                if line.contains("Kernel panic") {
                    guest.panicked = true;
                }
                if let Some((name, rc)) = end_marker(&line) {
                    if let Some(result) = guest.results.iter_mut().find(|(n, _)| n == name) {
                        result.1 = Some(rc);
                    }
                }
                guest.console.push_str(&line);
                guest.console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                guest.timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(received);
    let _ = qemu.0.kill();
    let status = qemu.0.wait();
    guest.elapsed = started.elapsed();
    let _ = reader.join();
    let errors = errors.join().unwrap_or_default();
    let errors = errors.trim();
    if echo && !errors.is_empty() {
        eprintln!("qemu: {errors}");
    }
    if !guest.timed_out && guest.console.is_empty() {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        return Err(format!(
            "qemu-system-x86_64 printed nothing ({status}): {errors}"
        ));
    }
    Ok(guest)
}

/// Parses `@@EBPF-MANAGER END <name> rc=<status>`, wherever it is on the line.
fn end_marker(line: &str) -> Option<(&str, i32)> {
    let at = line.find(MARKER)?;
    let rest = line[at + MARKER.len()..].strip_prefix("END ")?;
    let (name, rc) = rest.trim_end().rsplit_once(" rc=")?;
    Some((name, rc.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_end_markers_anywhere_on_a_line() {
        assert_eq!(end_marker("@@EBPF-MANAGER END a-b rc=3"), Some(("a-b", 3)));
        assert_eq!(
            end_marker("noise@@EBPF-MANAGER END x rc=0 "),
            Some(("x", 0))
        );
        assert_eq!(end_marker("@@EBPF-MANAGER BEGIN x"), None);
    }
}
