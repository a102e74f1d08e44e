//! Part of `cargo xtask test`'s tier 2: the user-path tests and every example as in a
//! container (a private mount namespace without bpffs, `/sys` read-only, four capabilities).

use std::process::Command;

use crate::{
    cargo::{self, Counts},
    test::{one, verdict},
    Result,
};

/// The integration tests of the user paths a container takes (everything the manager does on
/// its own: collection model, clones, copies, readers without bpffs).
const CONTAINER_TESTS: &[&str] = &["gomodel", "no_bpffs", "tracepoint", "maps", "readers"];

/// The examples that cannot run in such a container, and the words their error must contain
/// (the missing capability, mount or facility).
const CONTAINER_REFUSED: &[(&str, &str)] = &[
    // Making a child cgroup under root's 0555 cgroup2 root needs CAP_DAC_OVERRIDE.
    ("cgroup", "CAP_DAC_OVERRIDE"),
];

/// The tests of those binaries that pin under /sys/fs/bpf (and mount bpffs for it).
const CONTAINER_PINNING: &[&str] = &[
    "maps_editor_shares_a_map_pinned_by_another_manager",
    "maps_editor_of_a_missing_map_is_an_error",
];

/// What a container gives (a private mount namespace without bpffs at /sys/fs/bpf, /sys
/// read-only, the bounding set cut to CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN),
/// then `"$@"`: `unshare` and `setpriv` from util-linux, no privileged code of our own.
const CONTAINER: &str = "while umount -l /sys/fs/bpf 2>/dev/null; do :; done; \
    mount -o remount,bind,ro /sys && \
    exec setpriv --bounding-set=-all,+bpf,+perfmon,+net_admin,+sys_admin --inh-caps=-all -- \"$@\"";

/// `program args...` as in a container.
fn in_container(program: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        CONTAINER,
        "container",
    ])
    .arg(program)
    .args(args)
    .current_dir(crate::root());
    cmd
}

/// The user-path tests and every example, as in a container: each runs, or fails saying what
/// is missing (and then counts as failed here: on this kind of host everything they need is
/// there for a container with those capabilities).
pub fn tier(filter: &[String], examples: &[&str]) -> Result<Counts> {
    println!("== tier 2, as in a container: no bpffs, /sys read-only, CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN");
    crate::install::ensure(&[("unshare", "util-linux"), ("setpriv", "util-linux")])?;
    // Built outside (cargo needs more than a container's capabilities to write target/), run
    // inside.
    let mut args = vec!["test", "-p", "integration-tests", "--no-run"];
    for test in CONTAINER_TESTS {
        args.extend(["--test", test]);
    }
    let tests = cargo::build(&args)?;
    let mut counts = Counts::default();
    for (name, exe) in &tests {
        let mut test_args: Vec<&str> = filter.iter().map(String::as_str).collect();
        // These pin under /sys/fs/bpf, so they mount bpffs, as a user who pins must: run
        // apart from the rest, which must not see it.
        for skip in CONTAINER_PINNING {
            test_args.extend(["--skip", skip]);
        }
        let mut cmd = in_container(exe, &test_args);
        let (ok, out) = cargo::run_echoed(&mut cmd)?;
        let mut c = cargo::parse_libtest(&out);
        if !ok && c.failed == 0 {
            c.failed += 1;
        }
        println!(
            "{name} as in a container: {} passed, {} failed",
            c.passed, c.failed
        );
        counts.add(c);
    }
    let built = if examples.is_empty() {
        Vec::new()
    } else {
        let mut args = vec!["build", "-p", "examples"];
        for example in examples {
            args.extend(["--example", example]);
        }
        cargo::build(&args)?
    };
    for example in examples {
        let exe = built
            .iter()
            .find(|(name, _)| name == example)
            .map(|(_, exe)| exe.clone())
            .ok_or_else(|| format!("cargo reported no {example} executable"))?;
        let out = in_container(&exe, &[])
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        print!("{stdout}");
        eprint!("{stderr}");
        let passed = match CONTAINER_REFUSED.iter().find(|(e, _)| e == example) {
            Some((_, needs)) => !out.status.success() && stderr.contains(needs),
            None => out.status.success() && stdout.contains(&format!("{example}: ok")),
        };
        let how = if CONTAINER_REFUSED.iter().any(|(e, _)| e == example) {
            " (refused, naming what it lacks)"
        } else {
            ""
        };
        println!(
            "example {example} as in a container{how}: {}",
            verdict(passed)
        );
        counts.add(one(passed));
    }
    Ok(counts)
}
