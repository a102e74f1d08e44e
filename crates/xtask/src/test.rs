//! `cargo xtask test`: the three tiers.
//!
//! 1. unit tests, no kernel;
//! 2. the integration tests of `tests/` and the helloworld example, as root on this kernel;
//! 3. the same integration test binaries and example, built static, run by `/init` in Debian
//!    kernels under QEMU.
//!
//! One line per tier and per kernel gives the counts; the last line sums them.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    cargo::{self, Counts},
    vm, Result,
};

/// The examples run in tiers 2 and 3; each prints `<name>: ok` when it saw what it expects.
const EXAMPLES: &[&str] = &[
    "helloworld",
    "helloworld_rust",
    "aya_log",
    "activated_probes",
    "pause",
    "clone_vs_add_hook",
    "tracepoint",
    "declarative",
    "uprobe",
    "perf_event",
    "fentry",
    "lsm",
    "tracing_btf",
    "socket",
    "cgroup",
    "xdp",
    "tc",
    "constant_editor",
    "mapspec_editor",
    "program_router",
    "map_router",
    "object_pinning",
    "perf_buffer",
    "ring_buffer",
    "async_readers",
    "metrics",
];
/// Examples that need what the guests lack (iproute2 and the veth, clsact and cls_bpf
/// modules): tier 2 only.
const HOST_ONLY_EXAMPLES: &[&str] = &["xdp", "tc"];
/// How helloworld names the kprobe path (AttachMethod's Display).
const KPROBE_PATH: &str = "path taken: the kprobe PMU (perf_event_open) on vfs_mkdir";

struct Args {
    kernels: Vec<String>,
    filter: Option<String>,
    tiers: Vec<u8>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        kernels: Vec::new(),
        filter: None,
        tiers: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => {
                let v = it
                    .next()
                    .ok_or("--kernel needs a value (5.10, 6.1, 6.12)")?;
                if !vm::KERNELS.contains(&v.as_str()) {
                    return Err(format!(
                        "unknown kernel {v}: choose among {:?}",
                        vm::KERNELS
                    ));
                }
                parsed.kernels.push(v.clone());
            }
            "--tier" => {
                let v = it.next().ok_or("--tier needs a value (1, 2 or 3)")?;
                match v.as_str() {
                    "1" | "2" | "3" => parsed.tiers.push(v.parse().expect("digit")),
                    _ => return Err(format!("unknown tier {v}: 1, 2 or 3")),
                }
            }
            f if !f.starts_with('-') && parsed.filter.is_none() => parsed.filter = Some(f.into()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if parsed.kernels.is_empty() {
        parsed.kernels = vm::KERNELS.iter().map(|k| k.to_string()).collect();
    }
    if parsed.tiers.is_empty() {
        parsed.tiers = vec![1, 2, 3];
    }
    Ok(parsed)
}

/// Entry point of `cargo xtask test [--kernel V]... [--tier N]... [FILTER]`.
pub fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let mut summary: Vec<(String, Counts, Duration)> = Vec::new();
    let filter: Vec<String> = args.filter.iter().cloned().collect();
    let examples: Vec<&str> = EXAMPLES
        .iter()
        .copied()
        .filter(|e| args.filter.as_deref().is_none_or(|f| e.contains(f)))
        .collect();

    if args.tiers.contains(&1) {
        let t = Instant::now();
        let counts = tier1(&filter)?;
        summary.push(("tier 1 (unit tests, no kernel)".into(), counts, t.elapsed()));
        print_line(summary.last().expect("pushed"));
        if filter.is_empty() {
            let t = Instant::now();
            let counts = fuzz_tier()?;
            summary.push((
                format!(
                    "tier 1, fuzz ({} targets, fixed seed)",
                    crate::fuzz::TARGETS.len()
                ),
                counts,
                t.elapsed(),
            ));
            print_line(summary.last().expect("pushed"));
        }
    }
    if args.tiers.contains(&2) {
        let t = Instant::now();
        let counts = tier2(&filter, &examples)?;
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        summary.push((
            format!("tier 2 (host, Linux {release})"),
            counts,
            t.elapsed(),
        ));
        print_line(summary.last().expect("pushed"));
        let t = Instant::now();
        let counts = crate::container::tier(&filter, &examples)?;
        summary.push((
            "tier 2, as in a container (no bpffs, /sys read-only, 4 capabilities)".into(),
            counts,
            t.elapsed(),
        ));
        print_line(summary.last().expect("pushed"));
    }
    if args.tiers.contains(&3) {
        let t = Instant::now();
        let guest_examples: Vec<&str> = examples
            .iter()
            .copied()
            .filter(|e| !HOST_ONLY_EXAMPLES.contains(e))
            .collect();
        let payloads = guest_payloads(&filter, &guest_examples)?;
        println!("xtask: static binaries built in {:.1?}", t.elapsed());
        // Fetched one at a time (downloads, apt), then run side by side: TCG runs a guest on
        // one host thread, so guests use the machine's cores in parallel. Each kernel's
        // payloads go to GUESTS_PER_KERNEL guests, so that the cores stay busy to the end and
        // each guest stays well inside GUEST_TIME_LIMIT.
        let kernels = args
            .kernels
            .iter()
            .map(|series| vm::kernel(series))
            .collect::<Result<Vec<_>>>()?;
        let parts: Vec<Vec<vm::Payload>> = (0..GUESTS_PER_KERNEL)
            .map(|part| {
                payloads
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % GUESTS_PER_KERNEL == part)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .collect();
        // Newest kernels first: their guests take longest (kprobes everywhere), and a long job
        // started last would run alone at the end.
        let jobs: Vec<(usize, usize)> = (0..kernels.len())
            .rev()
            .flat_map(|k| (0..GUESTS_PER_KERNEL).map(move |part| (k, part)))
            .filter(|&(_, part)| !parts[part].is_empty())
            .collect();
        // Before the workers: two of them installing QEMU at once would fight over apt.
        crate::install::ensure(&[("qemu-system-x86_64", "qemu-system-x86")])?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: std::sync::Mutex<Vec<GuestJob>> = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..workers.min(jobs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&(k, part)) = jobs.get(i) else { break };
                    let t = Instant::now();
                    let result = tier3(&kernels[k], &parts[part], part);
                    done.lock().expect("no worker panics holding it").push((
                        i,
                        result,
                        t.elapsed(),
                    ));
                });
            }
        });
        let mut done = done.into_inner().expect("no worker panicked");
        done.sort_by_key(|(i, _, _)| *i);
        for (k, kernel) in kernels.iter().enumerate() {
            let mut counts = Counts::default();
            let mut elapsed = Duration::ZERO;
            for (i, result, took) in &mut done {
                if jobs[*i].0 != k {
                    continue;
                }
                match std::mem::replace(result, Ok(Default::default())) {
                    Ok((c, out)) => {
                        print!("{out}");
                        counts.add(c);
                    }
                    // A guest that could not be started: a failure, reported with the rest.
                    Err(e) => {
                        println!("tier 3, Linux {}: {e}", kernel.release);
                        counts.failed += 1;
                    }
                }
                elapsed = elapsed.max(*took);
            }
            summary.push((
                format!(
                    "tier 3 (QEMU, Linux {} from {})",
                    kernel.release, kernel.package
                ),
                counts,
                elapsed,
            ));
            print_line(summary.last().expect("pushed"));
        }
    }

    println!("\n== summary");
    let mut total = Counts::default();
    for line in &summary {
        print_line(line);
        total.add(line.1);
    }
    println!("{total}");
    if total.failed > 0 {
        return Err(format!("{} tests failed", total.failed));
    }
    if total.passed == 0 {
        return Err("no test ran: check the filter".into());
    }
    Ok(())
}

/// How many inputs `cargo xtask test` runs through each fuzz target (about 6 s each here),
/// from a fixed seed: the same code always runs the same inputs. `cargo xtask fuzz` explores.
const FUZZ_RUNS: [(&str, u64); 3] = [
    ("object", 100_000),
    ("patterns", 20_000),
    ("declaration", 100_000),
];

/// Each fuzz target for a bounded number of inputs from its committed corpus: one passed test
/// a target that found nothing, one failed test a target that found a failure.
fn fuzz_tier() -> Result<Counts> {
    println!("== tier 1: fuzz targets, a fixed seed and a bounded number of inputs each");
    let bins = crate::fuzz::build()?;
    let mut counts = Counts::default();
    for (target, runs) in FUZZ_RUNS {
        match crate::fuzz::run_target(&bins, target, crate::fuzz::Limit::Runs(runs)) {
            Ok(report) => {
                println!("{report}");
                counts.passed += 1;
            }
            Err(e) => {
                println!("{e}");
                counts.failed += 1;
            }
        }
    }
    Ok(counts)
}

fn print_line((name, counts, elapsed): &(String, Counts, Duration)) {
    println!("{name}: {counts} ({:.1} s)", elapsed.as_secs_f64());
}

fn tier1(filter: &[String]) -> Result<Counts> {
    println!("== tier 1: unit tests");
    let mut cmd = cargo::cargo();
    cmd.args([
        "test",
        "-p",
        "ebpf-manager",
        "-p",
        "xtask",
        "--all-features",
        "--",
    ])
    .args(filter);
    let (ok, out) = cargo::run_echoed(&mut cmd)?;
    let mut counts = cargo::parse_libtest(&out);
    if !ok && counts.failed == 0 {
        counts.failed += 1; // a build failure or a crash: not a pass
    }
    Ok(counts)
}

fn tier2(filter: &[String], examples: &[&str]) -> Result<Counts> {
    println!("== tier 2: integration tests on this kernel");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        return Err("tier 2 loads programs into the kernel: run as root".into());
    }
    // tracefs, as a machine of this kind has it; not bpffs, which it lacks (the tests that pin
    // mount it, as a user who pins must).
    mount_if_missing("tracefs", "/sys/kernel/tracing")?;
    let mut cmd = cargo::cargo();
    // Every binary runs even after one fails, so the counts are whole.
    cmd.args(["test", "-p", "integration-tests", "--no-fail-fast", "--"])
        .args(filter);
    let (ok, out) = cargo::run_echoed(&mut cmd)?;
    let mut counts = cargo::parse_libtest(&out);
    if !ok && counts.failed == 0 {
        counts.failed += 1;
    }
    for example in examples {
        let mut cmd = cargo::cargo();
        cmd.args(["run", "--quiet", "-p", "examples", "--example", example]);
        let (ok, out) = cargo::run_echoed(&mut cmd)?;
        let passed = ok && out.contains(&format!("{example}: ok"));
        println!("example {example} on the host: {}", verdict(passed));
        counts.add(one(passed));
    }
    if examples.contains(&"helloworld") {
        counts.add(helloworld_unprivileged()?);
    }
    Ok(counts)
}

/// Without privileges, helloworld must fail and say which privileges it needs.
fn helloworld_unprivileged() -> Result<Counts> {
    crate::install::ensure(&[("setpriv", "util-linux")])?;
    let exe = crate::root().join("target/debug/examples/helloworld");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .output()
        .map_err(|e| format!("running {} as nobody: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let passed =
        !out.status.success() && text.contains("permission denied") && text.contains("CAP_BPF");
    println!(
        "example helloworld without privileges says what it needs: {}",
        verdict(passed)
    );
    if !passed {
        println!("{text}");
    }
    Ok(one(passed))
}

fn guest_payloads(filter: &[String], examples: &[&str]) -> Result<Vec<vm::Payload>> {
    println!("== tier 3: building static binaries for the guests");
    let mut payloads: Vec<vm::Payload> =
        cargo::build_static(&["test", "-p", "integration-tests", "--no-run"])?
            .into_iter()
            .map(|(name, binary)| vm::Payload {
                name: format!("test-{name}"),
                binary,
                args: filter.to_vec(),
                env: vec![("RUST_BACKTRACE".into(), "1".into())],
            })
            .collect();
    if !examples.is_empty() {
        let mut args = vec!["build", "-p", "examples"];
        for example in examples {
            args.extend(["--example", example]);
        }
        let built = cargo::build_static(&args)?;
        for example in examples {
            let (_, binary) = built
                .iter()
                .find(|(name, _)| name == example)
                .ok_or_else(|| format!("cargo reported no {example} executable"))?;
            payloads.push(vm::Payload {
                name: format!("example-{example}"),
                binary: binary.clone(),
                args: Vec::new(),
                env: Vec::new(),
            });
        }
    }
    Ok(payloads)
}

/// A finished guest run: its index in the job list, its counts and report, how long it took.
type GuestJob = (usize, Result<(Counts, String)>, Duration);

/// The most a guest may take for all its payloads; a guest that hangs is stopped there.
const GUEST_TIME_LIMIT: Duration = Duration::from_secs(900);

/// How many guests share each kernel's payloads: with two, the 6.12 guest took 600 s of its
/// 900 s here, too close for a slower machine; with three, about 400 s.
const GUESTS_PER_KERNEL: usize = 3;

/// Runs the payloads in a guest of `kernel`; returns the counts and what to print (guests run
/// side by side, so their reports are printed whole, one after the other).
fn tier3(kernel: &vm::Kernel, payloads: &[vm::Payload], part: usize) -> Result<(Counts, String)> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== tier 3: Linux {} under QEMU (guest {} of {GUESTS_PER_KERNEL})",
        kernel.release,
        part + 1
    );
    let run = vm::run(kernel, payloads, GUEST_TIME_LIMIT, false)?;
    let log = crate::root()
        .join("target")
        .join(format!("vm-{}-{}.log", kernel.series, part + 1));
    // The serial console ends lines with \r\n.
    let console = run.console.replace('\r', "");
    let _ = std::fs::write(&log, &console);
    let mut counts = Counts::default();
    for payload in payloads {
        let section = section_of(&console, &payload.name);
        let status = run
            .results
            .iter()
            .find(|(name, _)| *name == payload.name)
            .and_then(|(_, rc)| *rc);
        let c = if let Some(example) = payload.name.strip_prefix("example-") {
            // In the guests, helloworld must take the kprobe path.
            let path_ok = example != "helloworld" || section.contains(KPROBE_PATH);
            let passed =
                status == Some(0) && section.contains(&format!("{example}: ok")) && path_ok;
            let _ = writeln!(out, "example {example}: {}", verdict(passed));
            one(passed)
        } else {
            let mut c = cargo::parse_libtest(section);
            if status != Some(0) && c.failed == 0 {
                c.failed += 1; // crashed, hung, or never ran
            }
            let _ = writeln!(out, "{}: {c}", payload.name);
            c
        };
        if c.failed > 0 {
            let _ = writeln!(
                out,
                "---- console of {} ----\n{section}\n----",
                payload.name
            );
        }
        counts.add(c);
    }
    if run.timed_out || run.panicked {
        counts.failed += 1;
        let _ = writeln!(
            out,
            "the guest {} (console in {})",
            if run.panicked {
                "panicked"
            } else {
                "hit the time limit"
            },
            log.display()
        );
    }
    Ok((counts, out))
}

/// The console lines between a payload's BEGIN and END markers.
fn section_of<'a>(console: &'a str, name: &str) -> &'a str {
    let begin = format!("@@EBPF-MANAGER BEGIN {name}\n");
    let Some(start) = console.find(&begin).map(|i| i + begin.len()) else {
        return "";
    };
    let end = console[start..]
        .find(&format!("@@EBPF-MANAGER END {name}"))
        .map_or(console.len(), |i| start + i);
    &console[start..end]
}

pub(crate) fn one(passed: bool) -> Counts {
    Counts {
        passed: passed as u64,
        failed: !passed as u64,
    }
}

pub(crate) fn verdict(passed: bool) -> &'static str {
    if passed {
        "passed"
    } else {
        "FAILED"
    }
}

fn mount_if_missing(fstype: &str, target: &str) -> Result<()> {
    let mounted = Command::new("mountpoint")
        .args(["-q", target])
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", fstype, "nodev", target])
        .status()
        .map_err(|e| format!("running mount: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("mount -t {fstype} nodev {target} failed"))
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_cut_at_markers() {
        let console = "boot\n@@EBPF-MANAGER BEGIN a\nline a\n@@EBPF-MANAGER END a rc=0\n\
                       @@EBPF-MANAGER BEGIN b\nline b\n";
        assert_eq!(section_of(console, "a"), "line a\n");
        assert_eq!(section_of(console, "b"), "line b\n");
        assert_eq!(section_of(console, "c"), "");
    }
}
