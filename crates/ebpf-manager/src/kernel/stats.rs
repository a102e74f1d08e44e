//! What the kernel tells about running programs and probes, read from files: the counters of
//! a program fd (`/proc/self/fdinfo`), the BPF links this process holds, whether run-time
//! statistics are on, and the hit and miss counts of tracefs kprobes (`kprobe_profile`).

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
}
