//! Thin facts about the running kernel that aya does not give, and the few raw interfaces the
//! manager drives itself (tracefs probe events, perf events).

pub mod symbols;
pub mod trace_pipe;
pub mod tracefs;

pub(crate) mod bpf_map;
pub(crate) mod bpf_prog;
pub use bpf_prog::BpfError;
pub(crate) mod epoll;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod perf;
pub(crate) mod perf_ring;
pub(crate) mod ringbuf;

pub use symbols::{FunctionIndex, SYSCALL_PREFIXES};
pub use trace_pipe::TracePipe;

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

/// How many times this process parsed the kernel's BTF (`/sys/kernel/btf/vmlinux`) through
/// managers: their own parses (for BTF-typed hooks) and aya's (one per loader; a manager keeps
/// one loader for all its loads until [`Manager::start`](crate::Manager::start) releases it).
/// A diagnostic for benchmarks and tests.
pub fn kernel_btf_parses() -> usize {
    crate::loader::kernel_btf_parses()
}
