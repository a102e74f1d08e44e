//! aya-log records of a Rust program reach the `log` facade through the manager
//! (ebpf-fixtures/rust/src/aya_log.rs: one `info!` and one `warn!` per mkdir, naming the
//! calling thread).

use std::{
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use ebpf_manager::{CleanupType, ConstantEditor, Manager, Options, Probe, RingBuffer};
use integration_tests::*;

const AYA_LOG: &[u8] = include_bytes!("../../ebpf-fixtures/aya-log-rust.bpf.o");

/// A record as the process's logger received it.
#[derive(Clone, Debug)]
struct Logged {
    level: log::Level,
    target: String,
    message: String,
}

/// The process's logger for this binary: it keeps every record.
struct Capture(Mutex<Vec<Logged>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(Logged {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
        });
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// One test at a time: every manager of this binary logs every mkdir of the machine into the
/// same logger.
fn serial() -> MutexGuard<'static, ()> {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_logger(&CAPTURE).expect("the only logger of this binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The program's records about this thread's mkdirs.
fn mine() -> Vec<Logged> {
    let me = format!("tid {}", gettid());
    CAPTURE
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.message.ends_with(&me))
        .cloned()
        .collect()
}

/// Waits until `n` warnings about this thread's mkdirs have arrived: the program writes each
/// mkdir's info record before its warning, so every info record the kernel kept has too.
fn wait_for_warnings(n: usize) -> Vec<Logged> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = mine();
        let warnings = records
            .iter()
            .filter(|r| r.level == log::Level::Warn)
            .count();
        if warnings >= n || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn manager(options: Options) -> Manager {
    manager_with(options, Vec::new())
}

fn manager_with(options: Options, ring_buffers: Vec<RingBuffer>) -> Manager {
    setup();
    let mut m = Manager {
        ring_buffers,
        probes: vec![Probe {
            tracepoint_category: Some("syscalls".into()),
            tracepoint_name: Some("sys_enter_mkdir".into()),
            ..probe("mkdir", "aya_log_mkdir")
        }],
        ..Default::default()
    };
    m.init_with_options(AYA_LOG, options).unwrap();
    m
}

#[test]
fn aya_log_records_reach_the_log_facade() {
    let _serial = serial();
    CAPTURE.0.lock().unwrap().clear();
    let mut m = manager(Options::default());
    let Some(aya::maps::Map::RingBuf(map)) = m.get_map("AYA_LOGS") else {
        panic!("AYA_LOGS is a ring buffer of the object")
    };
    let map_id = map.info().unwrap().id();
    m.start().unwrap();
    assert!(
        m.get_map("AYA_LOGS").is_none(),
        "the forwarding reader takes AYA_LOGS out of the object"
    );
    assert_eq!(m.is_reader_running("AYA_LOGS"), Some(true));
    for _ in 0..3 {
        mkdir_rmdir("aya-log");
    }
    let records = wait_for_warnings(3);
    let me = gettid();
    let expected: Vec<(log::Level, String)> = (0..3)
        .flat_map(|_| {
            [
                (
                    log::Level::Info,
                    format!("mkdir by pid {} tid {me}", std::process::id()),
                ),
                (
                    log::Level::Warn,
                    format!("mkdir seen, pid {} tid {me}", std::process::id()),
                ),
            ]
        })
        .collect();
    let got: Vec<(log::Level, String)> = records
        .iter()
        .map(|r| (r.level, r.message.clone()))
        .collect();
    assert_eq!(got, expected);
    assert!(
        records.iter().all(|r| r.target == "aya_log"),
        "the target is the program's module: {records:?}"
    );

    let status = m.status();
    let reader = status
        .readers
        .iter()
        .find(|r| r.map == "AYA_LOGS")
        .expect("the aya-log reader in the status");
    assert_eq!(reader.kind, "aya-log ring buffer");
    assert!(reader.running);
    // Other processes' mkdirs are logged too.
    assert!(reader.received >= 6, "{reader:?}");
    assert_eq!(reader.handler_errors, 0);
    println!("{status}");

    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(m.is_reader_running("AYA_LOGS"), None);
    assert_maps_unloaded(&[map_id]);
}

#[test]
fn aya_log_level_set_before_load_drops_records_in_the_kernel() {
    let _serial = serial();
    CAPTURE.0.lock().unwrap().clear();
    // aya-log-common's levels: Error 1, Warn 2, Info 3, Debug 4, Trace 5.
    let mut m = manager(Options {
        constant_editors: vec![ConstantEditor::new("AYA_LOG_LEVEL", 2u8)],
        ..Default::default()
    });
    m.start().unwrap();
    for _ in 0..2 {
        mkdir_rmdir("aya-log-level");
    }
    let records = wait_for_warnings(2);
    let levels: Vec<log::Level> = records.iter().map(|r| r.level).collect();
    assert_eq!(levels, [log::Level::Warn, log::Level::Warn], "{records:?}");
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn skip_aya_log_leaves_the_map_in_the_object() {
    let _serial = serial();
    let mut m = manager(Options {
        skip_aya_log: true,
        ..Default::default()
    });
    m.start().unwrap();
    assert!(m.get_map("AYA_LOGS").is_some());
    assert_eq!(m.is_reader_running("AYA_LOGS"), None);
    assert!(m.status().readers.is_empty());
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn a_declared_ring_buffer_named_aya_logs_gets_the_raw_records() {
    let _serial = serial();
    CAPTURE.0.lock().unwrap().clear();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let tx = Mutex::new(tx);
    let raw = RingBuffer {
        map_name: "AYA_LOGS".into(),
        data_handler: Some(std::sync::Arc::new(move |data: &[u8]| {
            let _ = tx.lock().unwrap().send(data.len());
        })),
        ..Default::default()
    };
    let mut m = manager_with(Options::default(), vec![raw]);
    m.start().unwrap();
    mkdir_rmdir("aya-log-raw");
    let len = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a raw aya-log record");
    assert!(len > 0);
    let status = m.status();
    assert_eq!(status.readers.len(), 1);
    assert_eq!(status.readers[0].kind, "ring buffer");
    m.stop(CleanupType::CleanAll).unwrap();
    assert!(mine().is_empty(), "nothing went to `log`");
}
