//! perf_event programs: sample the software cpu-clock event on every online CPU
//! (`perf_event_type` 1, `PERF_TYPE_SOFTWARE`; `perf_event_config` 0,
//! `PERF_COUNT_SW_CPU_CLOCK`), 1000 times a second, and show how many samples each CPU took
//! while this program kept it busy.
//!
//! Run: `cargo run --example perf_event` (as root).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use ebpf_manager::{aya::maps::Array, CleanupType, Error, Manager, Probe};

/// ebpf-fixtures/src/user.bpf.c: `perf_event_cpu_clock` counts its samples per CPU in
/// `cpu_samples`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/user.bpf.o");

fn online_cpus() -> Result<Vec<u32>, Error> {
    let path = "/sys/devices/system/cpu/online";
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bounds: Vec<u32> = part.split('-').filter_map(|n| n.parse().ok()).collect();
        match bounds[..] {
            [a, b] => cpus.extend(a..=b),
            [a] => cpus.push(a),
            _ => {}
        }
    }
    Ok(cpus)
}

/// Keeps `cpu` busy from this thread for `duration`.
fn spin_on(cpu: u32, duration: Duration) {
    // SAFETY: cpu_set_t is plain data that sched_setaffinity reads, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let end = Instant::now() + duration;
    let mut x = 1u64;
    while Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let probe = Probe {
        uid: "CpuClock".into(),
        ebpf_func_name: "perf_event_cpu_clock".into(),
        perf_event_type: 1,
        perf_event_config: 0,
        sample_frequency: 1000,
        ..Default::default()
    };
    let id = probe.id();
    let mut m = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    m.init(OBJECT)?;
    m.start()?;
    let info = m.attach_info(&id).expect("attached");
    println!("attached to {} through {}", info.hook, info.method);
    let cpus = online_cpus()?;
    for &cpu in &cpus {
        spin_on(cpu, Duration::from_millis(200));
    }
    let map = m
        .get_map("cpu_samples")
        .expect("user.bpf.o has `cpu_samples`");
    let samples = Array::<_, u64>::try_from(map).expect("an array of u64");
    let mut all_sampled = true;
    for &cpu in &cpus {
        let n = samples.get(&cpu, 0).map_err(|e| Error::Io {
            path: "map cpu_samples".into(),
            source: std::io::Error::other(e),
        })?;
        println!("CPU {cpu}: {n} samples");
        all_sampled &= n > 0;
    }
    m.stop(CleanupType::CleanAll)?;
    if all_sampled {
        println!("perf_event: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
