//! Crash and restart in pid namespaces, as a containerized agent lives: a manager (tracefs
//! uprobes, tracefs kprobes where the kernel has them, a private bpffs directory, a ring buffer
//! reader) runs as PID 1 of its own pid namespace and is SIGKILLed; the next manager, PID 1 of
//! a fresh pid namespace, starts cleanly and removes only the dead one's leftovers, while a
//! live manager in a third namespace keeps its own.
//!
//! The test re-runs its own binary in a role (`EBPFM_RESTART_ROLE`): a launcher that unshares a
//! pid namespace and starts the role's process there, so that the role runs as PID 1.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use ebpf_manager::{testing, KprobeAttachMethod, Manager, Probe, UprobeAttachMethod};
use integration_tests::{readers, user::*, *};

const ROLE: &str = "EBPFM_RESTART_ROLE";
const TARGET: &str = "EBPFM_RESTART_TARGET";
const TEST: &str = "crashed_pid1_manager_is_swept_by_the_next_pid1_manager_and_a_live_one_is_kept";

/// The probes of a role: tracefs uprobes on the target, a tracefs kprobe where the kernel has
/// `kprobe_events`, a ring buffer reader, and a private bpffs directory held as the library
/// holds the clone and map editor directories.
struct Running {
    _managers: Vec<Manager>,
    dir: PathBuf,
    _lock: std::fs::File,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn start_role(target: &Path) -> Running {
    let tracefs_uprobe = |uid: &str, function: &str| Probe {
        binary_path: Some(target.to_owned()),
        uprobe_attach_method: UprobeAttachMethod::Tracefs,
        ..probe(uid, function)
    };
    let mut managers = Vec::new();
    let mut user = user_manager(
        vec![
            tracefs_uprobe("restart", "uprobe_add"),
            tracefs_uprobe("restart", "uretprobe_add"),
        ],
        user_filters(0, 0),
    )
    .expect("init of user.bpf.o");
    user.start().expect("start of the uprobes");
    managers.push(user);
    if tracefs_has("kprobe_events") {
        let mut k = counting_manager(vec![Probe {
            kprobe_attach_method: KprobeAttachMethod::Tracefs,
            ..probe("restart", "kprobe_vfs_mkdir")
        }]);
        k.start().expect("start of the kprobe");
        managers.push(k);
    }
    let seen = Arc::new(readers::Seen::default());
    let mut r = readers::manager(
        &["ring_emit"],
        gettid(),
        vec![],
        vec![seen.ring_buffer("ring_events")],
    );
    r.start().expect("start of the ring reader");
    managers.push(r);
    // A directory named and locked as the library's private directories are.
    let dir = Path::new("/sys/fs/bpf").join(format!("{}_restart_0", testing::own_group()));
    std::fs::create_dir(&dir).expect("create the directory");
    let lock = std::fs::File::open(&dir).expect("open the directory");
    // SAFETY: flock on an fd owned by `lock`.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    Running {
        _managers: managers,
        dir,
        _lock: lock,
    }
}

/// The child roles; returns only when not in one.
fn run_role_if_asked() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let target = PathBuf::from(std::env::var(TARGET).expect("the target path"));
    match role.as_str() {
        "launch-holder" | "launch-sweeper" => {
            // SAFETY: unshare has no memory preconditions; the new namespace is for children.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWPID) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            let inner = role.trim_start_matches("launch-");
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
                .env(ROLE, inner)
                .spawn()
                .expect("spawn the namespace's first process");
            println!("CHILD {}", child.id());
            let status = child.wait().unwrap();
            std::process::exit(status.code().unwrap_or(111));
        }
        "holder" => {
            assert_eq!(std::process::id(), 1, "PID 1 of a new pid namespace");
            let _running = start_role(&target);
            println!("READY {}", testing::token());
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "sweeper" => {
            assert_eq!(std::process::id(), 1, "PID 1 of a new pid namespace");
            // The same probes as the dead manager, also PID 1: they must not collide.
            let running = start_role(&target);
            drop(running);
            println!("SWEPT {}", testing::token());
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

/// A role running as PID 1 of its own pid namespace, killed with its namespace on drop.
struct InNamespace {
    launcher: Child,
    pid1: u32,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl InNamespace {
    fn start(role: &str, target: &Path) -> Self {
        let mut launcher = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE, format!("launch-{role}"))
            .env(TARGET, target)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the launcher");
        let mut lines = BufReader::new(launcher.stdout.take().unwrap()).lines();
        let pid1 = Self::expect_in(&mut lines, "CHILD ").parse().unwrap();
        Self {
            launcher,
            pid1,
            lines,
        }
    }

    fn expect_in(lines: &mut std::io::Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
        for line in lines.by_ref() {
            let line = line.expect("reading the child");
            // libtest prints `test <name> ... ` with no newline before the role's first line.
            if let Some((_, rest)) = line.split_once(prefix) {
                return rest.trim().to_owned();
            }
        }
        panic!("the child ended before printing {prefix}");
    }

    /// The token the role printed after `prefix`.
    fn token(&mut self, prefix: &str) -> String {
        Self::expect_in(&mut self.lines, prefix)
    }

    /// SIGKILLs PID 1 of the namespace, which kills the namespace, and reaps the launcher.
    fn kill(mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.pid1 as i32, libc::SIGKILL) };
        let _ = self.launcher.wait();
        self.pid1 = 0;
    }

    fn wait_success(mut self) {
        let status = self.launcher.wait().unwrap();
        self.pid1 = 0;
        assert!(status.success(), "the role failed: {status}");
    }
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            // SAFETY: as in kill.
            unsafe { libc::kill(self.pid1 as i32, libc::SIGKILL) };
            let _ = self.launcher.kill();
            let _ = self.launcher.wait();
        }
    }
}

/// The tracefs events and bpffs directories of the process with this token.
fn objects_of(token: &str) -> (Vec<String>, Vec<String>) {
    let group = format!("{}{token}", testing::PREFIX);
    let mut events = Vec::new();
    if let Ok(root) = testing::tracefs_root() {
        for control in ["kprobe_events", "uprobe_events"] {
            let text = std::fs::read_to_string(root.join(control)).unwrap_or_default();
            events.extend(
                text.lines()
                    .filter(|l| testing::parse_event_line(l).is_some_and(|(g, _)| g == group))
                    .map(str::to_owned),
            );
        }
    }
    let dirs = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{group}_")))
                .collect()
        })
        .unwrap_or_default();
    (events, dirs)
}

#[test]
fn crashed_pid1_manager_is_swept_by_the_next_pid1_manager_and_a_live_one_is_kept() {
    run_role_if_asked();
    setup_bpffs();
    let _serial = bpffs_lock();
    // Whatever happens below, the roles' leftovers go when the test ends.
    struct Sweep;
    impl Drop for Sweep {
        fn drop(&mut self) {
            ebpf_manager::remove_leftovers();
        }
    }
    let _sweep = Sweep;
    let target = TempFile::uprobe_target();
    let kprobes = usize::from(tracefs_has("kprobe_events"));
    let per_manager = 2 + kprobes;

    // 1. A manager lives in its own namespace.
    let mut live = InNamespace::start("holder", target.path());
    let live_token = live.token("READY ");

    // 2. Another crashes: PID 1 of its namespace, SIGKILLed.
    let mut dead = InNamespace::start("holder", target.path());
    let dead_token = dead.token("READY ");
    assert_ne!(live_token, dead_token);
    let (events, dirs) = objects_of(&dead_token);
    assert_eq!(events.len(), per_manager, "the holder's events: {events:?}");
    assert_eq!(dirs.len(), 1, "the holder's directory: {dirs:?}");
    dead.kill();
    assert_eq!(
        objects_of(&dead_token).0.len(),
        per_manager,
        "a SIGKILLed manager leaves its tracefs events"
    );
    // Its locks go with its last file reference, which the kernel may drop a moment after the
    // process is reaped.
    let dead_group = format!("{}{dead_token}", testing::PREFIX);
    let waited = std::time::Instant::now();
    let found = loop {
        let found = ebpf_manager::find_leftovers();
        if found.tracefs_events.len() >= per_manager || waited.elapsed() > Duration::from_secs(5) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    println!(
        "the dead manager's locks were free {:?} after it was reaped",
        waited.elapsed()
    );
    assert!(
        found
            .tracefs_events
            .iter()
            .all(|e| e.starts_with(&dead_group))
            && found.tracefs_events.len() == per_manager
            && found.bpffs_dirs.len() == 1,
        "only the dead manager's objects are leftovers: {found:?}"
    );

    // 3. The restarted agent, PID 1 again, with the same probes: starts cleanly and sweeps.
    let mut sweeper = InNamespace::start("sweeper", target.path());
    let sweeper_token = sweeper.token("SWEPT ");
    sweeper.wait_success();
    assert_eq!(
        objects_of(&dead_token),
        (vec![], vec![]),
        "the dead manager's leftovers are removed"
    );
    assert_eq!(
        objects_of(&sweeper_token),
        (vec![], vec![]),
        "the sweeper stopped cleanly"
    );
    let (live_events, live_dirs) = objects_of(&live_token);
    assert_eq!(
        live_events.len(),
        per_manager,
        "a live manager keeps its events"
    );
    assert_eq!(live_dirs.len(), 1, "a live manager keeps its directory");

    // 4. The live one dies too; this process's sweep removes it, and nothing is left.
    live.kill();
    let removed = ebpf_manager::remove_leftovers();
    assert_eq!(removed.tracefs_events.len(), per_manager, "{removed:?}");
    assert_eq!(objects_of(&live_token), (vec![], vec![]));
    println!(
        "crash-restart: {per_manager} tracefs events and 1 directory per manager, {kprobes} kprobe each"
    );
}
