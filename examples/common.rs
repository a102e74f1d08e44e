//! Helpers shared by the examples.

use std::time::Duration;

use ebpf_manager::kernel::TracePipe;

/// Says which privileges are missing, when they are.
pub fn check_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "note: not running as root: loading eBPF programs needs root, or CAP_BPF, \
             CAP_PERFMON and CAP_SYS_ADMIN (try: sudo -E cargo run --example helloworld)"
        );
    }
}

/// Makes and removes a directory from this thread, then prints the trace_pipe lines of this
/// thread that contain `message`. Returns whether one arrived within `timeout`.
pub fn mkdir_and_show_trace_pipe(message: &str, timeout: Duration) -> ebpf_manager::Result<bool> {
    let mut pipe = TracePipe::open()?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let dir = std::env::temp_dir().join(format!("ebpf-manager-helloworld-{}", std::process::id()));
    let io = |source, path: &std::path::Path| ebpf_manager::Error::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir(&dir).map_err(|e| io(e, &dir))?;
    std::fs::remove_dir(&dir).map_err(|e| io(e, &dir))?;
    println!("made and removed {}", dir.display());
    // trace_pipe lines start with `<comm>-<tid>`: keep this thread's only.
    let tag = format!("-{tid} ");
    let lines = pipe
        .read_until(timeout, |line| {
            line.contains(message) && line.contains(&tag)
        })
        .map_err(|e| io(e, std::path::Path::new("trace_pipe")))?;
    for line in &lines {
        println!("{line}");
    }
    Ok(!lines.is_empty())
}

/// The error of an example whose expected events did not show.
pub fn not_seen() -> ebpf_manager::Error {
    ebpf_manager::Error::Io {
        path: "trace_pipe".into(),
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the expected events did not arrive",
        ),
    }
}

/// Prints the error, if any, and turns the result into an exit code.
pub fn exit(result: ebpf_manager::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
