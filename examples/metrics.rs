//! Metrics: the counters of `Manager::status` served by a Prometheus exporter, with no glue
//! but one call. Installs metrics-exporter-prometheus on 127.0.0.1, counts mkdir(2) with a
//! tracepoint (run statistics on, Linux 5.1), publishes, and scrapes the exporter once.
//!
//! Run: `cargo run --example metrics` (as root).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

use ebpf_manager::{CleanupType, ConstantEditor, Manager, Options, Probe};
use metrics_exporter_prometheus::PrometheusBuilder;

/// ebpf-fixtures/src/probes.bpf.c: `tracepoint_sys_enter_mkdir` runs on every mkdir(2) and
/// counts this thread's.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");
const DIRECTORIES: u64 = 3;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A port nobody listens on now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /metrics`, as Prometheus scrapes it.
fn scrape(addr: SocketAddr) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            // The exporter's listener starts on its own thread.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("connecting to the exporter at {addr}: {e}").into()),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn run() -> Result<()> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("installing the Prometheus exporter on {addr}: {e}"))?;
    println!("Prometheus exporter on http://{addr}/metrics");

    let probe = Probe {
        uid: "CountMkdir".into(),
        ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
        ..Default::default()
    };
    let mut m = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            // Run counts and run time (BPF_ENABLE_STATS, Linux 5.8).
            enable_stats: true,
            ..Default::default()
        },
    )?;
    m.start()?;
    examples::make_directories("metrics", DIRECTORIES)?;
    // The one call: publish what `status` reads, as often as you like.
    m.publish_metrics();

    let response = scrape(addr)?;
    let series = |metric: &str| -> Option<f64> {
        let prefix =
            format!(r#"{metric}{{uid="CountMkdir",function="tracepoint_sys_enter_mkdir"}} "#);
        response
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    for line in response.lines().filter(|l| l.starts_with("ebpf_manager_")) {
        println!("  {line}");
    }
    let runs = series("ebpf_manager_probe_runs_total");
    let running = series("ebpf_manager_probe_running");
    m.stop(CleanupType::CleanAll)?;
    // Every mkdir(2) of the machine runs the program; ours are among them.
    match (runs, running) {
        (Some(runs), Some(running)) if runs >= DIRECTORIES as f64 && running == 1.0 => {
            println!("scraped: {runs} runs after {DIRECTORIES} directories, probe running");
            println!("metrics: ok");
            Ok(())
        }
        _ => Err(format!("the scrape lacks the probe's series:\n{response}").into()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
