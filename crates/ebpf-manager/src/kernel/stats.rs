//! What the kernel tells about running programs and probes: the counters of a program fd
//! (`/proc/self/fdinfo`), the BPF links this process holds, whether run-time statistics are
//! on, the hit and miss counts of tracefs kprobes (`kprobe_profile`), and the misses of kprobe
//! links (link info, Linux 6.7).

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, BorrowedFd},
};

/// The numeric fields of the fdinfo of `fd` (`prog_id`, `run_cnt`, `run_time_ns`, `link_id`,
/// ...); hexadecimal ones (`0x…`) are read too.
pub(crate) fn fdinfo(fd: BorrowedFd<'_>) -> HashMap<String, u64> {
    parse_fdinfo(
        &std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
            .unwrap_or_default(),
    )
}

fn parse_fdinfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| {
            let v = v.trim();
            let n = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => v.parse().ok()?,
            };
            Some((k.trim().to_owned(), n))
        })
        .collect()
}

/// The id of a BPF link this process holds for each program id (the last one found when a
/// program has several). Perf-event attachments made with ioctls (before Linux 5.15) are not
/// links and do not appear.
pub(crate) fn links_by_program() -> HashMap<u32, u32> {
    let mut links = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return links;
    };
    for entry in dir.flatten() {
        let is_link = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf_link");
        if !is_link {
            continue;
        }
        let info = parse_fdinfo(
            &std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default(),
        );
        if let (Some(&prog), Some(&link)) = (info.get("prog_id"), info.get("link_id")) {
            links.insert(prog as u32, link as u32);
        }
    }
    links
}

/// The kprobe misses the kernel reports for BPF link `link_id` (Linux 6.7): a perf-event link
/// of a kprobe or kretprobe (the kprobe's and kretprobe's misses: another kprobe was running
/// on that CPU, or all `maxactive` instances were in use), or a kprobe.multi link (its
/// fprobe's misses: no return instance free). `None` for other links, on older kernels, and
/// when the link is gone.
pub(crate) fn link_missed(link_id: u32) -> Option<u64> {
    if !aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 7, 0))
    {
        return None;
    }
    let info = link_info(link_id)?;
    missed_of(&info)
}

/// `struct bpf_link_info`'s first 64 bytes, read through a new fd of link `link_id`.
fn link_info(link_id: u32) -> Option<[u8; 64]> {
    /// The `BPF_LINK_GET_FD_BY_ID` member of `union bpf_attr`.
    #[repr(C)]
    struct GetFd {
        link_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    /// The `BPF_OBJ_GET_INFO_BY_FD` member of `union bpf_attr`.
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut get = GetFd {
        link_id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = super::bpf_prog::sys_bpf(30, "BPF_LINK_GET_FD_BY_ID", &mut get).ok()?;
    // u64s: the kernel writes u64 fields, aligned.
    let mut info = [0u64; 8];
    let mut attr = GetInfo {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is the OBJ_GET_INFO_BY_FD prefix of `union bpf_attr`, of the size passed;
    // `info` is a live, writable buffer of `info_len` bytes for the call. The pointers the
    // kernel may follow in it (func_name, addrs, cookies) are left null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            15, // BPF_OBJ_GET_INFO_BY_FD
            &mut attr as *mut GetInfo,
            std::mem::size_of::<GetInfo>() as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut bytes = [0u8; 64];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(info) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(bytes)
}

/// The `missed` field of a kprobe link's info (see [`link_missed`]).
fn missed_of(info: &[u8; 64]) -> Option<u64> {
    const LINK_TYPE_PERF_EVENT: u32 = 7;
    const LINK_TYPE_KPROBE_MULTI: u32 = 8;
    const PERF_EVENT_KPROBE: u32 = 3;
    const PERF_EVENT_KRETPROBE: u32 = 4;
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(info[o..o + 8].try_into().expect("8 bytes"));
    // type, id, prog_id, then the union at 16: perf_event { type, pad, kprobe { func_name,
    // name_len, offset, addr, missed, ... } } or kprobe_multi { addrs, count, flags, missed }.
    match u32_at(0) {
        LINK_TYPE_PERF_EVENT if matches!(u32_at(16), PERF_EVENT_KPROBE | PERF_EVENT_KRETPROBE) => {
            Some(u64_at(48))
        }
        LINK_TYPE_KPROBE_MULTI => Some(u64_at(32)),
        _ => None,
    }
}

/// Whether the kernel counts program runs and run time: while a process holds a
/// `BPF_ENABLE_STATS` fd (Linux 5.8), or with the `kernel.bpf_stats_enabled` sysctl.
pub(crate) fn run_stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0")
}

/// Hits and misses of each tracefs kprobe event, by event name (`kprobe_profile`: the
/// kernel counts a kretprobe's misses when its maxactive instances are all in use).
pub(crate) fn kprobe_profile() -> HashMap<String, (u64, u64)> {
    let Ok(root) = super::tracefs::root() else {
        return HashMap::new();
    };
    parse_kprobe_profile(&std::fs::read_to_string(root.join("kprobe_profile")).unwrap_or_default())
}

fn parse_kprobe_profile(text: &str) -> HashMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?;
            let hits = fields.next()?.parse().ok()?;
            let misses = fields.next()?.parse().ok()?;
            // Newer kernels print `group/event`, older ones the event alone.
            let event = name.rsplit('/').next().unwrap_or(name);
            Some((event.to_owned(), (hits, misses)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_and_kprobe_profile_are_parsed() {
        let info = parse_fdinfo(
            "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_tag:\tabcdef\nrun_time_ns:\t1234\n\
             run_cnt:\t7\nprog_id:\t42\nmemlock:\t4096\nmap_extra:\t0x10\n",
        );
        assert_eq!(info["run_cnt"], 7);
        assert_eq!(info["run_time_ns"], 1234);
        assert_eq!(info["prog_id"], 42);
        assert_eq!(info["map_extra"], 16);
        assert!(!info.contains_key("prog_tag"));
        let profile = parse_kprobe_profile(
            "  ebpf_manager_0123456789abcdef/p_vfs_mkdir_1           12           0\n  \
             r_vfs_mkdir_2                                             3           1\n",
        );
        assert_eq!(profile["p_vfs_mkdir_1"], (12, 0));
        assert_eq!(profile["r_vfs_mkdir_2"], (3, 1));
    }

    #[test]
    fn link_info_misses_are_read_where_each_link_type_keeps_them() {
        let mut perf = [0u8; 64];
        perf[0..4].copy_from_slice(&7u32.to_ne_bytes());
        perf[16..20].copy_from_slice(&4u32.to_ne_bytes());
        perf[48..56].copy_from_slice(&9u64.to_ne_bytes());
        assert_eq!(missed_of(&perf), Some(9), "a kretprobe perf link");
        perf[16..20].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(missed_of(&perf), None, "a uprobe perf link");
        let mut multi = [0u8; 64];
        multi[0..4].copy_from_slice(&8u32.to_ne_bytes());
        multi[32..40].copy_from_slice(&5u64.to_ne_bytes());
        assert_eq!(missed_of(&multi), Some(5), "a kprobe.multi link");
        let mut raw_tp = [0u8; 64];
        raw_tp[0..4].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(missed_of(&raw_tp), None);
    }
}
