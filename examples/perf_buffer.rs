//! A perf event array read by the manager: each getppid(2) of this thread makes
//! `perf_emit` (ebpf-fixtures/src/readers.bpf.c) write a record to `perf_events`; the data
//! handler receives it with the CPU it was written on, and the lost handler counts what the
//! kernel could not write. `stop` detaches the program, then drains the buffers: once it
//! returns, every record is counted as received or lost.
//!
//! Run: `cargo run --example perf_buffer` (as root).

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use ebpf_manager::{
    aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, Options, PerfMap, Probe,
};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/readers.bpf.o");
const RECORDS: u64 = 1000;

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let received = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let events = PerfMap {
        map_name: "perf_events".into(),
        data_handler: Some({
            let received = Arc::clone(&received);
            Arc::new(move |cpu, data: &[u8]| {
                let seq = u64::from_ne_bytes(data[..8].try_into().expect("8 bytes"));
                if seq % 250 == 0 {
                    println!("record {seq} from cpu {cpu}, {} bytes", data.len());
                }
                received.fetch_add(1, Ordering::Relaxed);
            })
        }),
        lost_handler: Some({
            let lost = Arc::clone(&lost);
            Arc::new(move |cpu, count| {
                println!("cpu {cpu}: {count} records lost");
                lost.fetch_add(count, Ordering::Relaxed);
            })
        }),
        perf_ring_pages: 256,
        ..Default::default()
    };
    let mut m = Manager {
        probes: vec![Probe {
            uid: "PerfEmit".into(),
            ebpf_func_name: "perf_emit".into(),
            ..Default::default()
        }],
        perf_maps: vec![events],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            ..Default::default()
        },
    )?;
    m.start()?;
    for _ in 0..RECORDS {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
    // What the kernel refused to write (the ring was full), counted by the program itself:
    // the kernel reports a loss to user space only at its next write to that CPU's ring, so
    // the last losses may never reach the lost handler.
    let counts = Array::<_, u64>::try_from(m.get_map("counts").expect("counts")).expect("array");
    let refused = counts.get(&1, 0).unwrap_or(0);
    m.stop(CleanupType::CleanAll)?;
    let (received, lost) = (
        received.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
    );
    println!(
        "emitted {RECORDS}: received {received}, reported lost {lost}, refused by the kernel {refused}"
    );
    // Every record was either received or refused, and no more losses were reported than
    // happened. With 256 pages per CPU and 1000 records, the kernel refuses none on a real CPU.
    if received + refused == RECORDS && lost <= refused {
        println!("perf_buffer: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
