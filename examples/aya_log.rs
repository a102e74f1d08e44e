//! aya-log in a Rust eBPF program, read through the manager: on each mkdir, `aya_log_mkdir`
//! (ebpf-fixtures/rust/src/aya_log.rs) logs with `aya_log_ebpf::info!` and `warn!`; the
//! manager finds the object's `AYA_LOGS` ring buffer and forwards the records to the `log`
//! facade, here to a logger that prints them. No declaration is needed
//! (`Options::skip_aya_log` turns it off).
//!
//! Run: `cargo run --example aya_log` (as root; Linux 5.8 for the ring buffer).

use std::{
    process::ExitCode,
    sync::{mpsc, Mutex},
    time::Duration,
};

use ebpf_manager::{CleanupType, Error, Manager, Probe};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/aya-log-rust.bpf.o");

/// Prints each record as `[LEVEL target] message` and passes its message on.
struct Print(Mutex<Option<mpsc::Sender<String>>>);

impl log::Log for Print {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        // Only this process's records: every mkdir of the machine is logged.
        if message.contains(&format!("pid {} ", std::process::id())) {
            println!("[{} {}] {message}", record.level(), record.target());
            if let Some(tx) = &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = tx.send(message);
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Print = Print(Mutex::new(None));

fn run() -> Result<bool, Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let (tx, rx) = mpsc::channel();
    *LOGGER.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    log::set_logger(&LOGGER).expect("the example's only logger");
    log::set_max_level(log::LevelFilter::Info);

    let mut m = Manager {
        probes: vec![Probe {
            uid: "AyaLogMkdir".into(),
            ebpf_func_name: "aya_log_mkdir".into(),
            tracepoint_category: Some("syscalls".into()),
            tracepoint_name: Some("sys_enter_mkdir".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    m.init(OBJECT)?;
    m.start()?;
    examples::make_directories("aya-log", 1)?;
    // The warning comes after the info record of the same mkdir.
    let mut seen = Vec::new();
    while let Ok(message) = rx.recv_timeout(Duration::from_secs(10)) {
        let warning = message.starts_with("mkdir seen");
        seen.push(message);
        if warning {
            break;
        }
    }
    print!("{}", m.status());
    m.stop(CleanupType::CleanAll)?;
    Ok(seen.len() == 2)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => {
            println!("aya_log: ok");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("aya_log: the program's two records did not arrive within 10 s");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("aya_log: {}", e.report());
            ExitCode::FAILURE
        }
    }
}
