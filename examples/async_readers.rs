//! Async readers (cargo feature `tokio`): the ring buffer and the perf map of
//! ebpf-fixtures/src/readers.bpf.c read by one tokio task each, instead of reader threads.
//! Each getppid(2) of this thread writes one record to both; the perf map wakes its reader
//! every 16 records (`wakeup_events`), and `drain` takes what is left after `stop`.
//!
//! Run: `cargo run --example async_readers` (as root).

use std::{process::ExitCode, time::Duration};

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, Options, PerfMap, Probe};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/readers.bpf.o");
const RECORDS: usize = 100;

async fn run(m: &mut Manager) -> Result<(usize, usize), Error> {
    let mut ring = m.async_ring_buffer("ring_events")?;
    let mut perf = m.async_perf_map(&PerfMap {
        map_name: "perf_events".into(),
        wakeup_events: 16,
        ..Default::default()
    })?;
    m.start()?;
    for _ in 0..RECORDS {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
    let (mut from_ring, mut from_perf) = (0, 0);
    let ring_task = async {
        while from_ring < RECORDS {
            from_ring += ring.read(|_| {}).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    // 100 is not a multiple of 16: the last 4 records wake nobody, and are drained below.
    let perf_task = async {
        while from_perf < RECORDS / 16 * 16 {
            from_perf += perf
                .read(|_, _| {}, |cpu, n| eprintln!("cpu {cpu}: {n} lost"))
                .await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::try_join!(ring_task, perf_task)
    })
    .await;
    m.stop(CleanupType::CleanAll)?;
    match waited {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("reading failed: {e}"),
        Err(_) => eprintln!("not every record arrived within 20 s"),
    }
    from_ring += ring.drain(|_| {});
    from_perf += perf.drain(|_, _| {}, |_, _| {});
    Ok((from_ring, from_perf))
}

/// Keeps this thread on the CPU it runs on, so that every perf record goes to one CPU's ring
/// and wakes the reader every 16 records.
fn stay_on_this_cpu() {
    // SAFETY: plain syscalls on a zeroed, then filled, cpu_set_t of this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(libc::sched_getcpu().max(0) as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() -> ExitCode {
    examples::check_privileges();
    stay_on_this_cpu();
    let _ = ebpf_manager::mount_tracefs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        let mut m = Manager {
            probes: ["ring_emit", "perf_emit"]
                .map(|f| Probe {
                    ebpf_func_name: f.into(),
                    ..Default::default()
                })
                .into(),
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
        let (ring, perf) = run(&mut m).await?;
        println!("ring buffer: {ring} records, perf map: {perf} records (of {RECORDS} each)");
        if (ring, perf) == (RECORDS, RECORDS) {
            println!("async_readers: ok");
            Ok(())
        } else {
            Err(examples::not_seen())
        }
    });
    examples::exit(result)
}
