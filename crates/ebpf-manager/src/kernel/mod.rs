//! Thin facts about the running kernel that aya does not give, and the few raw interfaces the
//! manager drives itself (tracefs probe events, perf events).

pub(crate) mod bpf_map;
pub(crate) mod bpf_prog;
pub(crate) mod bpffs;
pub(crate) mod epoll;
pub(crate) mod instance;
pub(crate) mod leftovers;
pub(crate) mod map_types;
pub(crate) mod module_btf;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod perf;
pub(crate) mod perf_ring;
pub(crate) mod ringbuf;
pub(crate) mod stats;
pub(crate) mod struct_ops;
pub(crate) mod symbols;
pub(crate) mod sys;
pub(crate) mod trace_pipe;
pub(crate) mod tracefs;
pub(crate) mod user_ringbuf;

pub use bpf_prog::{kprobe_multi_supported, uprobe_multi_supported};
pub(crate) use symbols::FunctionIndex;

/// Whether the kernel has the kprobe PMU (`perf_event_open` kprobes, Linux 4.17).
pub fn has_kprobe_pmu() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
}

/// Whether this process may use BPF: `CAP_BPF` (Linux 5.8) or `CAP_SYS_ADMIN` in its effective
/// capabilities. Without either, loading anything fails.
pub fn has_bpf_capabilities() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: let the kernel decide
    };
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match effective {
        Some(caps) => caps & (1 << CAP_SYS_ADMIN | 1 << CAP_BPF) != 0,
        None => true,
    }
}

/// Lifts `RLIMIT_MEMLOCK`, which kernels before 5.11 charge BPF maps and programs to.
///
/// Best effort: without `CAP_SYS_RESOURCE` the limit stays, which is harmless on 5.11 and
/// later (memory is charged to the memory cgroup there).
pub(crate) fn lift_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "RLIMIT_MEMLOCK kept: {} (harmless on Linux 5.11 and later)",
            std::io::Error::last_os_error()
        );
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as the Go runtime does for every Go
/// program (Go 1.19): a manager holds several descriptors per probe (a perf event or link, a
/// tracefs event's lock, one perf ring per CPU), and the usual soft limit of 1024 runs out at a
/// few hundred probes. Never above the hard limit, so no privilege is needed.
pub(crate) fn lift_nofile_rlimit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        log::debug!("RLIMIT_NOFILE kept: {}", std::io::Error::last_os_error());
    }
}

/// Whether closing perf-event BPF links from several threads overlaps their RCU grace periods:
/// measured on Linux 6.18 (100 tracepoint links: 4.0 s one after another, 0.14 s from 64
/// threads), not on 6.1 and 6.12, where the wait happens under `bpf_event_mutex` and threads gain
/// nothing. Kernels between were not measured and are treated as the older ones.
pub fn parallel_detach() -> bool {
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PARALLEL.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-', '+']);
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0)
        };
        (next(), next()) >= (6, 18)
    })
}

/// Drops `items` from up to 64 threads at once (each drop blocks in the kernel for most of its
/// time), then returns.
pub(crate) fn close_in_parallel<T: Send>(mut items: Vec<T>) {
    const THREADS: usize = 64;
    if items.len() < 2 {
        return;
    }
    let per_thread = items.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        while !items.is_empty() {
            let chunk: Vec<T> = items.drain(..per_thread.min(items.len())).collect();
            // A thread that cannot start drops its share here instead.
            if let Err(e) = std::thread::Builder::new().spawn_scoped(scope, move || drop(chunk)) {
                log::debug!(
                    "closing links on the calling thread: {}",
                    crate::error::chain(&e)
                );
            }
        }
    });
}
