//! The `ebpf-manager` command line, run in-process (`ebpf_manager_cli::run`) so that the QEMU
//! tier runs it in each guest kernel too.

use std::path::Path;

use integration_tests::{user::TempFile, *};

/// One test at a time: every `start` sweeps leftovers, which the cleanup test plants.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the command line; returns the exit code, stdout and stderr.
fn cli(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = ebpf_manager_cli::run(
        std::iter::once("ebpf-manager")
            .chain(args.iter().copied())
            .map(str::to_owned),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn file(tag: &str, bytes: &[u8]) -> TempFile {
    TempFile::new(tag, bytes, 0o644)
}

const MKDIR_TOML: &str = r#"
[[probes]]
uid = "mkdir"
ebpf_func_name = "tracepoint_sys_enter_mkdir"
"#;

#[test]
fn cli_inspect_lists_programs_maps_and_declared_probes() {
    let _serial = serial();
    setup();
    let object = file("cli-probes.bpf.o", PROBES);
    let config = file("cli-inspect.toml", MKDIR_TOML.as_bytes());
    let path = object.path().to_str().unwrap();
    let (code, out, err) = cli(&["inspect", path, "--config", config.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("program tracepoint_sys_enter_mkdir  section tracepoint/syscalls/sys_enter_mkdir  TracePoint"), "{out}");
    assert!(out.contains("map hits  type array  key 4 value 8"), "{out}");
    assert!(out.contains("probe mkdir/tracepoint_sys_enter_mkdir runs the program in tracepoint/syscalls/sys_enter_mkdir"), "{out}");
    assert!(
        out.contains("    hook on this kernel: syscalls/sys_enter_mkdir through a tracepoint\n"),
        "{out}"
    );
    assert!(out.contains("--load also runs the verifier"), "{out}");
    // --load: the verifier runs and the hook resolves on this kernel; nothing stays loaded.
    let before = loaded_program_count();
    let (code, out, err) = cli(&[
        "inspect",
        path,
        "--config",
        config.path().to_str().unwrap(),
        "--load",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let probe = &v["loaded"]["probes"][0];
    assert_eq!(probe["state"], "Loaded", "{out}");
    assert_eq!(probe["hook"], "syscalls/sys_enter_mkdir");
    assert!(
        probe["program_id"].as_u64().is_some_and(|id| id > 0),
        "{out}"
    );
    assert_eq!(v["programs"].as_array().unwrap().len(), PROBES_PROGRAMS);
    wait_for_program_count(before);
    // A program the verifier refuses: init fails and says why, exit code 1.
    let rejected = file("cli-rejected.bpf.o", REJECTED);
    let rejected_config = file(
        "cli-rejected.toml",
        b"[[probes]]\nuid = \"r\"\nebpf_func_name = \"tracepoint_rejected\"\n",
    );
    let (code, _, err) = cli(&[
        "inspect",
        rejected.path().to_str().unwrap(),
        "--config",
        rejected_config.path().to_str().unwrap(),
        "--load",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("init failed") && err.contains("verifier"),
        "{err}"
    );
}

/// Without --load, each declared kprobe's hook as init would resolve it on this kernel: the
/// syscall wrapper of `syscall_func_name`, the matches of a pattern, and the attach method
/// with why (kprobe.multi for a pattern where the kernel has it, Linux 5.18). Where the kernel
/// has no kprobes, the error start would give.
#[test]
fn cli_inspect_resolves_kprobe_hooks_without_loading() {
    let _serial = serial();
    setup();
    let object = file("cli-hooks.bpf.o", PROBES);
    let config = file(
        "cli-hooks.toml",
        b"[[probes]]\nuid = \"sys\"\nebpf_func_name = \"kprobe_generic\"\nsyscall_func_name = \"mkdir\"\n\n\
          [[probes]]\nuid = \"all\"\nebpf_func_name = \"kprobe_generic\"\nattach_to_func_name = \"vfs_[mr][km]dir\"\nmatch_all_functions = true\n",
    );
    let before = loaded_program_count();
    let (code, out, err) = cli(&[
        "inspect",
        object.path().to_str().unwrap(),
        "--config",
        config.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(loaded_program_count(), before, "inspect loaded nothing");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (sys, all) = (&v["probes"][0], &v["probes"][1]);
    println!("{sys}\n{all}");
    if !kernel_has_kprobes() {
        for p in [sys, all] {
            assert!(
                p["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("this kernel has no kprobes")),
                "{p}"
            );
        }
        assert!(
            sys["error"].as_str().unwrap().contains("`__x64_sys_mkdir`"),
            "{sys}"
        );
        return;
    }
    assert_eq!(sys["error"], serde_json::Value::Null, "{sys}");
    assert_eq!(sys["hook"], "__x64_sys_mkdir");
    assert_eq!(sys["method"], "KprobePmu");
    assert_eq!(sys["why"], "the default where the kernel has the PMU");
    assert_eq!(all["hook"], "2 functions matching vfs_[mr][km]dir", "{all}");
    let multi = kernel_version() >= (5, 18) && kernel_has_fprobe();
    assert_eq!(
        all["method"],
        if multi { "KprobeMulti" } else { "KprobePmu" },
        "{all}"
    );
}

/// The number of programs probes.bpf.o holds.
const PROBES_PROGRAMS: usize = 6;

fn loaded_program_count() -> usize {
    aya::programs::loaded_programs().count()
}

fn wait_for_program_count(n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while loaded_program_count() > n {
        assert!(
            std::time::Instant::now() < deadline,
            "inspect --load left programs loaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `run OBJECT --config CONFIG --seconds 3 --json` while another thread makes a directory
/// every 100 ms (the command starts after a while under TCG); returns the exit code, stdout,
/// stderr and that thread's id.
fn run_making_directories(
    object: &TempFile,
    config: &TempFile,
    tag: &'static str,
) -> (u8, String, String, u32) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let maker = std::thread::spawn({
        let done = done.clone();
        move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                mkdir_rmdir(tag);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            gettid()
        }
    });
    let (code, out, err) = cli(&[
        "run",
        object.path().to_str().unwrap(),
        "--config",
        config.path().to_str().unwrap(),
        "--seconds",
        "3",
        "--json",
    ]);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let tid = maker.join().unwrap();
    (code, out, err, tid)
}

#[test]
fn cli_run_streams_trace_pipe_and_stops_cleanly() {
    let _serial = serial();
    setup();
    let _trace = trace_pipe_lock();
    let object = file("cli-helloworld.bpf.o", HELLOWORLD);
    let config = file(
        "cli-run.toml",
        b"[[probes]]\nuid = \"hello\"\nebpf_func_name = \"tracepoint_sys_enter_mkdir\"\n",
    );
    let (code, out, err, _) = run_making_directories(&object, &config, "cli-run");
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "status");
    assert_eq!(events[0]["status"]["probes"][0]["state"], "Running");
    assert!(
        events.iter().any(|e| e["event"] == "trace_pipe"
            && e["line"]
                .as_str()
                .is_some_and(|l| l.contains("mkdir (vfs hook point)"))),
        "{out}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["what"], "stopped (time is up)");
    let last_running = events
        .iter()
        .rfind(|e| e["what"] == "final (time is up)")
        .expect("the status before stop");
    assert_eq!(last_running["status"]["probes"][0]["state"], "Running");
    assert_eq!(last["status"]["probes"][0]["state"], "Stopped");
    // A declaration that cannot start: exit code 1 and the library's error.
    let bad = file(
        "cli-bad.toml",
        b"[[probes]]\nuid = \"x\"\nebpf_func_name = \"no_such_program\"\n",
    );
    let (code, _, err) = cli(&[
        "run",
        object.path().to_str().unwrap(),
        "--config",
        bad.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the object has no program named `no_such_program`"),
        "{err}"
    );
    // A bad key: the file, the line and the key.
    let typo = file(
        "cli-typo.toml",
        b"[[probes]]\nuid = \"x\"\nebpf_fn = \"y\"\n",
    );
    let (code, _, err) = cli(&[
        "run",
        object.path().to_str().unwrap(),
        "--config",
        typo.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 3") && err.contains("unknown field `ebpf_fn`"),
        "{err}"
    );
}

#[test]
fn cli_cleanup_removes_only_dead_managers_leftovers() {
    let _serial = serial();
    setup_bpffs();
    let _bpffs = bpffs_lock();
    // A private directory in this library's name format that no live process holds (the token
    // is made of this test's pid, so no other run plants the same one).
    let token = format!(
        "{:016x}",
        0xdead_0000_0000_0000_u64 | u64::from(std::process::id())
    );
    let dead = Path::new("/sys/fs/bpf").join(format!("ebpf_manager_{token}_clone_0"));
    std::fs::create_dir(&dead).unwrap();
    let (code, out, err) = cli(&["cleanup", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["bpffs_dirs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == dead.to_str().unwrap()),
        "{out}"
    );
    assert!(dead.exists(), "--dry-run removes nothing");
    let (code, out, _) = cli(&["cleanup"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("removed bpffs directory {}", dead.display())),
        "{out}"
    );
    assert!(!dead.exists());
    let (code, _, err) = cli(&["cleanup", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn cli_run_prints_the_programs_aya_log_records() {
    let _serial = serial();
    setup();
    let object = file(
        "cli-aya-log.bpf.o",
        include_bytes!("../../ebpf-fixtures/aya-log-rust.bpf.o"),
    );
    let config = file(
        "cli-aya-log.toml",
        b"[[probes]]\nuid = \"log\"\nebpf_func_name = \"aya_log_mkdir\"\ntracepoint_category = \"syscalls\"\ntracepoint_name = \"sys_enter_mkdir\"\n",
    );
    let (code, out, err, tid) = run_making_directories(&object, &config, "cli-aya-log");
    assert_eq!(code, 0, "{err}");
    let mine = format!("tid {tid}");
    let logs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| {
            e["event"] == "log" && e["message"].as_str().is_some_and(|m| m.ends_with(&mine))
        })
        .collect();
    assert!(
        logs.iter()
            .any(|e| e["level"] == "INFO" && e["target"] == "aya_log"),
        "{out}"
    );
    assert!(logs.iter().any(|e| e["level"] == "WARN"), "{out}");
}
