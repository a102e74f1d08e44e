//! A machine as it comes: no bpffs at `/sys/fs/bpf` (minimal VMs, most containers). The test
//! re-runs its own binary (`EBPFM_NO_BPFFS_ROLE`) in a private mount namespace where
//! `/sys/fs/bpf` is unmounted, so the host and the other tests keep theirs.
//!
//! There, what the manager pins for itself works (per-probe constants, `copy_program`,
//! `clone_program`, open maps as editors: a private bpffs instance), and a user's pin path off
//! bpffs is refused by `init` before anything loads, naming the fix, unless
//! `Options::mount_bpffs` mounts one.

use std::process::Command;

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, MapEditor, Options};
use integration_tests::{mkdir_rmdir, probe, slot, this_thread_only, PROBES};

const ROLE: &str = "EBPFM_NO_BPFFS_ROLE";
const TEST: &str = "no_bpffs_the_managers_own_pins_need_none_and_user_pins_say_what_is_wrong";
const PINNED: &[u8] = include_bytes!("../../ebpf-fixtures/pinned.bpf.o");

fn is_bpffs(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(path) && f.next() == Some("bpf")
        })
}

fn hits(m: &Manager, slot: u32) -> u64 {
    integration_tests::read_slot(m, "hits", slot)
}

/// The role: runs in a mount namespace of its own without bpffs at /sys/fs/bpf.
fn without_bpffs() {
    assert!(!is_bpffs("/sys/fs/bpf"), "bpffs is still mounted");
    ebpf_manager::mount_tracefs().expect("tracefs");
    let tp = || probe("tp", "tracepoint_sys_enter_mkdir");

    // Per-probe constants: a copy of the object sharing the main object's maps.
    let copy = probe("copy", "tracepoint_sys_enter_mkdir");
    let mut options = this_thread_only();
    options.constant_editors.push(ConstantEditor {
        probes: vec![copy.id()],
        ..ConstantEditor::new("filter_tid", integration_tests::gettid())
    });
    let mut m = Manager {
        probes: vec![copy],
        ..Default::default()
    };
    m.init_with_options(PROBES, options).unwrap();
    m.start().unwrap();
    mkdir_rmdir("no-bpffs-copy");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        1,
        "the copy counts in the shared map"
    );

    // clone_program of a running manager, sharing its maps.
    m.clone_program(
        "copy",
        probe("clone", "tracepoint_sys_enter_mkdir"),
        vec![],
        vec![],
    )
    .unwrap();
    mkdir_rmdir("no-bpffs-clone");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        3,
        "the probe and its clone both count"
    );

    // An open map of another manager as a map editor.
    let mut b = Manager {
        probes: vec![probe("b", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    let options = Options {
        map_editors: vec![MapEditor::live("hits", m.map_fd("hits").unwrap())],
        ..this_thread_only()
    };
    b.init_with_options(PROBES, options).unwrap();
    b.start().unwrap();
    mkdir_rmdir("no-bpffs-live");
    assert_eq!(hits(&m, slot::TRACEPOINT), 6, "b counts in m's map");
    b.stop(CleanupType::CleanAll).unwrap();
    m.stop(CleanupType::CleanAll).unwrap();
    assert!(!is_bpffs("/sys/fs/bpf"), "nothing mounted unasked");

    // A declared pin under /sys/fs/bpf: refused before anything loads, naming the fix.
    let pinned = || Manager {
        probes: vec![tp()],
        maps: vec![ebpf_manager::Map {
            name: "hits".into(),
            pin_path: Some("/sys/fs/bpf/ebpf_manager_test_hits".into()),
        }],
        ..Default::default()
    };
    let err = pinned()
        .init_with_options(PROBES, this_thread_only())
        .unwrap_err();
    let Error::Bpffs { path, reason, fix } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(path.to_str(), Some("/sys/fs/bpf/ebpf_manager_test_hits"));
    assert!(reason.contains("/sys/fs/bpf is on sysfs"), "{reason}");
    assert!(fix.contains("mount -t bpf bpf /sys/fs/bpf"), "{fix}");
    // Pins by name (LIBBPF_PIN_BY_NAME) in the default directory: the same.
    let mut by_name = Manager {
        probes: vec![probe("", "count_mkdir")],
        ..Default::default()
    };
    match by_name.init(PINNED).unwrap_err() {
        Error::Bpffs { path, .. } => {
            assert_eq!(path.to_str(), Some("/sys/fs/bpf/shared_counts"))
        }
        other => panic!("{other:?}"),
    }

    // Options::mount_bpffs mounts one (in this private mount namespace) and the pin works.
    let mut pinned = pinned();
    pinned
        .init_with_options(
            PROBES,
            Options {
                mount_bpffs: true,
                ..this_thread_only()
            },
        )
        .unwrap();
    assert!(is_bpffs("/sys/fs/bpf"));
    assert!(std::path::Path::new("/sys/fs/bpf/ebpf_manager_test_hits").exists());
    pinned.stop(CleanupType::CleanAll).unwrap();
    assert!(!std::path::Path::new("/sys/fs/bpf/ebpf_manager_test_hits").exists());
    println!("no-bpffs role: ok");
}

#[test]
fn no_bpffs_the_managers_own_pins_need_none_and_user_pins_say_what_is_wrong() {
    if std::env::var_os(ROLE).is_some() {
        return without_bpffs();
    }
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE, "1");
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only async-signal-safe calls (unshare, mount, umount2) between fork and exec.
    unsafe {
        child.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Private propagation, so the unmount stays in this namespace.
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Every bpffs stacked there (EINVAL once none is left).
            while libc::umount2(c"/sys/fs/bpf".as_ptr(), libc::MNT_DETACH) == 0 {}
            Ok(())
        });
    }
    let out = child.output().expect("running the role");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("no-bpffs role: ok"),
        "the role failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
