//! A ring buffer read by the manager (Linux 5.8): each getppid(2) of this thread makes
//! `ring_emit` (ebpf-fixtures/src/readers.bpf.c) write a record to `ring_events`; the data
//! handler receives it in order. `stop` detaches the program, then drains the ring: once it
//! returns, every record has been handled.
//!
//! Run: `cargo run --example ring_buffer` (as root).

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, Options, Probe, RingBuffer};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/readers.bpf.o");
const RECORDS: u64 = 1000;

fn run() -> Result<(), Error> {
    examples::check_privileges();
    if let Err(e) = ebpf_manager::mount_tracefs() {
        eprintln!("cannot mount tracefs at /sys/kernel/tracing: {e}");
    }
    let received = Arc::new(AtomicU64::new(0));
    let in_order = Arc::new(AtomicU64::new(0));
    let events = RingBuffer {
        map_name: "ring_events".into(),
        data_handler: Some({
            let received = Arc::clone(&received);
            let in_order = Arc::clone(&in_order);
            Arc::new(move |data: &[u8]| {
                let seq = u64::from_ne_bytes(data[..8].try_into().expect("8 bytes"));
                if seq % 250 == 0 {
                    println!("record {seq}, {} bytes", data.len());
                }
                // One reader thread calls the handler: the records come in the order written.
                if seq == received.fetch_add(1, Ordering::Relaxed) {
                    in_order.fetch_add(1, Ordering::Relaxed);
                }
            })
        }),
        ..Default::default()
    };
    let mut m = Manager {
        probes: vec![Probe {
            uid: "RingEmit".into(),
            ebpf_func_name: "ring_emit".into(),
            ..Default::default()
        }],
        ring_buffers: vec![events],
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
    m.stop(CleanupType::CleanAll)?;
    let (received, in_order) = (
        received.load(Ordering::Relaxed),
        in_order.load(Ordering::Relaxed),
    );
    println!("emitted {RECORDS}: received {received}, {in_order} in order");
    if received == RECORDS && in_order == RECORDS {
        println!("ring_buffer: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
