//! `run OBJECT --config FILE [--seconds N]`: the declared manager from init to stop, its
//! trace_pipe lines, reader records and log records (aya-log records of the programs, the
//! library's own messages) printed as they come.

use std::{
    io::Write,
    path::Path,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use ebpf_manager::{CleanupType, TracePipe};

use crate::{declaration, line, read, Failed};

/// What the run prints, in order.
enum Event {
    Record {
        map: String,
        cpu: Option<u32>,
        data: Vec<u8>,
    },
    Lost {
        map: String,
        cpu: u32,
        count: u64,
    },
    Log {
        level: log::Level,
        target: String,
        message: String,
    },
}

/// Where the process's log records go while a `run` runs.
static LOG_SINK: Mutex<Option<mpsc::Sender<Event>>> = Mutex::new(None);

/// The process's logger, from the first `run` on: records at info and above become events
/// (the manager forwards the programs' aya-log records to `log`). When the process already
/// has a logger (a program that embeds this crate), that one keeps them.
struct LogEvents;

impl log::Log for LogEvents {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(tx) = &*LOG_SINK.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(Event::Log {
                level: record.level(),
                target: record.target().to_owned(),
                message: record.args().to_string(),
            });
        }
    }

    fn flush(&self) {}
}

/// Sends the process's log records to `tx` until dropped.
struct LogCapture;

impl LogCapture {
    fn start(tx: mpsc::Sender<Event>) -> Self {
        static LOGGER: LogEvents = LogEvents;
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            if log::set_logger(&LOGGER).is_ok() {
                log::set_max_level(log::LevelFilter::Info);
            }
        });
        *LOG_SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        Self
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        *LOG_SINK.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

pub(crate) fn run(
    object: &Path,
    config: &Path,
    seconds: Option<u64>,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), Failed> {
    let bytes = read(object)?;
    let (mut manager, options) = declaration(config)?.into_manager();
    ebpf_manager::mount_tracefs().map_err(|e| format!("mounting tracefs: {e}"))?;
    // Records reach this thread through a channel: the readers run on their own threads.
    let (tx, rx) = mpsc::channel::<Event>();
    for perf in &mut manager.perf_maps {
        let (data, lost) = (tx.clone(), tx.clone());
        let map = perf.map_name.clone();
        let lost_map = map.clone();
        perf.data_handler = Some(Arc::new(move |cpu, bytes: &[u8]| {
            let _ = data.send(Event::Record {
                map: map.clone(),
                cpu: Some(cpu),
                data: bytes.to_vec(),
            });
        }));
        perf.lost_handler = Some(Arc::new(move |cpu, count| {
            let _ = lost.send(Event::Lost {
                map: lost_map.clone(),
                cpu,
                count,
            });
        }));
    }
    for ring in &mut manager.ring_buffers {
        let data = tx.clone();
        let map = ring.map_name.clone();
        ring.data_handler = Some(Arc::new(move |bytes: &[u8]| {
            let _ = data.send(Event::Record {
                map: map.clone(),
                cpu: None,
                data: bytes.to_vec(),
            });
        }));
    }
    let log_capture = LogCapture::start(tx);
    // SIGINT and SIGTERM are taken by this thread, blocked before the readers start so that
    // no other thread gets them.
    let signals = Signals::block();
    let mut trace_pipe = TracePipe::open().map_err(|e| format!("trace_pipe: {}", e.report()))?;
    manager
        .init_with_options(&bytes, options)
        .map_err(|e| format!("init failed: {}", e.report()))?;
    manager
        .start()
        .map_err(|e| format!("start failed: {}", e.report()))?;
    print_status(out, as_json, "started", &manager.status())?;
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let why = loop {
        if let Some(signal) = signals.pending() {
            break format!("signal {signal}");
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break "time is up".to_owned();
        }
        let mut lines = Vec::new();
        trace_pipe
            .read_until(Duration::from_millis(100), |l| {
                lines.push(l.to_owned());
                false
            })
            .map_err(|e| format!("reading trace_pipe: {e}"))?;
        for l in lines.iter().filter(|l| !l.trim().is_empty()) {
            print_line(out, as_json, l)?;
        }
        for event in rx.try_iter() {
            print_event(out, as_json, &event)?;
        }
    };
    // The counts as they were at the end (stop closes the programs and the statistics).
    print_status(out, as_json, &format!("final ({why})"), &manager.status())?;
    let stopped = manager.stop(CleanupType::CleanAll);
    drop(log_capture);
    // What the readers drained at stop.
    for event in rx.try_iter() {
        print_event(out, as_json, &event)?;
    }
    print_status(out, as_json, &format!("stopped ({why})"), &manager.status())?;
    drop(signals);
    stopped.map_err(|e| format!("stop failed: {}", e.report()))
}

fn print_status(
    out: &mut dyn Write,
    as_json: bool,
    what: &str,
    status: &ebpf_manager::Status,
) -> Result<(), Failed> {
    if as_json {
        let value = serde_json::json!({ "event": "status", "what": what, "status": status });
        return line(out, format_args!("{value}"));
    }
    line(out, format_args!("== {what}\n{status}"))
}

fn print_line(out: &mut dyn Write, as_json: bool, text: &str) -> Result<(), Failed> {
    if as_json {
        let value = serde_json::json!({ "event": "trace_pipe", "line": text });
        return line(out, format_args!("{value}"));
    }
    line(out, format_args!("trace_pipe: {text}"))
}

fn print_event(out: &mut dyn Write, as_json: bool, event: &Event) -> Result<(), Failed> {
    match event {
        Event::Record { map, cpu, data } => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            if as_json {
                let value =
                    serde_json::json!({ "event": "record", "map": map, "cpu": cpu, "data": hex });
                return line(out, format_args!("{value}"));
            }
            match cpu {
                Some(cpu) => line(out, format_args!("{map} (cpu {cpu}): {hex}")),
                None => line(out, format_args!("{map}: {hex}")),
            }
        }
        Event::Lost { map, cpu, count } => {
            if as_json {
                let value =
                    serde_json::json!({ "event": "lost", "map": map, "cpu": cpu, "count": count });
                return line(out, format_args!("{value}"));
            }
            line(out, format_args!("{map} (cpu {cpu}): {count} records lost"))
        }
        Event::Log {
            level,
            target,
            message,
        } => {
            if as_json {
                let value = serde_json::json!({
                    "event": "log", "level": level.as_str(), "target": target, "message": message
                });
                return line(out, format_args!("{value}"));
            }
            line(out, format_args!("log: [{level} {target}] {message}"))
        }
    }
}

/// SIGINT and SIGTERM blocked on the calling thread (and the threads it starts), taken with
/// `sigtimedwait`; the previous mask comes back on drop.
struct Signals {
    set: libc::sigset_t,
    previous: libc::sigset_t,
}

impl Signals {
    fn block() -> Self {
        // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset pointers.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
        }
        Self { set, previous }
    }

    /// A signal that arrived, if one did.
    fn pending(&self) -> Option<i32> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid set and timeout; no siginfo wanted.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
        (signal > 0).then_some(signal)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}
