//! What the kernel tells about running programs and probes: the counters of a program fd
//! (`/proc/self/fdinfo`), the BPF links this process holds, whether run-time statistics are
//! on, the hit and miss counts of tracefs kprobes (`kprobe_profile`), and the misses of kprobe
//! links (link info, Linux 6.7).

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd},
};

use aya_obj::generated::bpf_link_info;

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

/// A BPF link this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldLink {
    /// The kernel's id of the link.
    pub(crate) id: u32,
    /// Its kprobe misses, when asked for and the kernel reports them (see [`link_missed`]).
    pub(crate) missed: Option<u64>,
}

/// The BPF links this process holds, by program id, in fd order; with `misses`, each link's
/// kprobe misses. Perf-event attachments made with ioctls (before Linux 5.15) are not links
/// and do not appear.
pub(crate) fn links_by_program(misses: bool) -> HashMap<u32, Vec<HeldLink>> {
    let mut links: HashMap<u32, Vec<HeldLink>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return links;
    };
    let misses = misses && link_misses_reported();
    for entry in dir.flatten() {
        let is_link = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf_link");
        if !is_link {
            continue;
        }
        let fd_name = entry.file_name();
        let info = parse_fdinfo(
            &std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd_name.to_string_lossy()))
                .unwrap_or_default(),
        );
        let (Some(&prog), Some(&link)) = (info.get("prog_id"), info.get("link_id")) else {
            continue;
        };
        let missed = fd_name
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|_| misses)
            .and_then(|fd| link_missed(fd, link as u32));
        links.entry(prog as u32).or_default().push(HeldLink {
            id: link as u32,
            missed,
        });
    }
    links
}

/// Whether link info carries kprobe misses: Linux 6.7.
fn link_misses_reported() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 7, 0))
}

/// The kprobe misses the kernel reports for the link `link_id` behind this process's fd
/// `fd` (Linux 6.7): a perf-event link of a kprobe or kretprobe (another kprobe was running on
/// that CPU, or all `maxactive` instances were in use), or a kprobe.multi link (its fprobe's
/// misses: no return instance free). `None` for other links, and when `fd` no longer is that
/// link (closed and reused since it was listed).
fn link_missed(fd: i32, link_id: u32) -> Option<u64> {
    // A descriptor of our own: `fd` may be closed by another thread meanwhile, and the copy
    // keeps whatever it names alive while it is read; the id check tells if it changed.
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; a bad fd fails with EBADF.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    let copy = unsafe { std::os::fd::OwnedFd::from_raw_fd(copy) };
    let info = link_info(copy.as_fd())?;
    (info.id == link_id).then(|| missed_of(&info)).flatten()
}

/// `struct bpf_link_info` of the link `fd` (`BPF_OBJ_GET_INFO_BY_FD`, Linux 5.8 for links).
fn link_info(fd: BorrowedFd<'_>) -> Option<bpf_link_info> {
    /// The `BPF_OBJ_GET_INFO_BY_FD` member of `union bpf_attr`.
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: plain integers and unions of them: all zeroes is a valid value.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = GetInfo {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_link_info>() as u32,
        info: &mut info as *mut bpf_link_info as u64,
    };
    // `info` is live and writable for `info_len` bytes during the call. The pointers the
    // kernel would follow in it (func_name, addrs, cookies) are null, so it writes nothing
    // else.
    super::sys::bpf(
        aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
        "BPF_OBJ_GET_INFO_BY_FD",
        &mut attr,
    )
    .ok()
    .map(|_| info)
}

/// The `missed` field of a kprobe link's info (see [`link_missed`]).
fn missed_of(info: &bpf_link_info) -> Option<u64> {
    use aya_obj::generated::{bpf_link_type, bpf_perf_event_type};
    let (perf, multi) = (
        bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u32,
        bpf_link_type::BPF_LINK_TYPE_KPROBE_MULTI as u32,
    );
    let kprobes = [
        bpf_perf_event_type::BPF_PERF_EVENT_KPROBE as u32,
        bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u32,
    ];
    // SAFETY: union members made of integers only: any bytes are a valid value of each.
    unsafe {
        match info.type_ {
            t if t == perf && kprobes.contains(&info.__bindgen_anon_1.perf_event.type_) => Some(
                info.__bindgen_anon_1
                    .perf_event
                    .__bindgen_anon_1
                    .kprobe
                    .missed,
            ),
            t if t == multi => Some(info.__bindgen_anon_1.kprobe_multi.missed),
            _ => None,
        }
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

    /// The layout of `struct bpf_link_info` as the UAPI header has it (type, id, prog_id, then
    /// the union at 16), read through aya-obj's bindings.
    #[test]
    fn link_info_misses_are_read_where_each_link_type_keeps_them() {
        let parse = |bytes: &[u8]| {
            // SAFETY: all zeroes is valid (integers only); then as many bytes as the struct has.
            let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<bpf_link_info>().min(bytes.len());
            // SAFETY: `size` bytes fit in both; any bytes are a valid bpf_link_info.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    (&mut info as *mut bpf_link_info).cast::<u8>(),
                    size,
                )
            };
            missed_of(&info)
        };
        let put = |bytes: &mut [u8], at: usize, value: &[u8]| {
            bytes[at..at + value.len()].copy_from_slice(value)
        };
        // perf_event { type @16, kprobe { func_name @24, name_len @32, offset @36, addr @40,
        // missed @48 } }: a kretprobe.
        let mut perf = [0u8; 64];
        put(&mut perf, 0, &7u32.to_ne_bytes());
        put(&mut perf, 16, &4u32.to_ne_bytes());
        put(&mut perf, 48, &9u64.to_ne_bytes());
        assert_eq!(parse(&perf), Some(9), "a kretprobe perf link");
        put(&mut perf, 16, &3u32.to_ne_bytes());
        assert_eq!(parse(&perf), Some(9), "a kprobe perf link");
        put(&mut perf, 16, &1u32.to_ne_bytes());
        assert_eq!(parse(&perf), None, "a uprobe perf link");
        // kprobe_multi { addrs @16, count @24, flags @28, missed @32 }.
        let mut multi = [0u8; 64];
        put(&mut multi, 0, &8u32.to_ne_bytes());
        put(&mut multi, 32, &5u64.to_ne_bytes());
        assert_eq!(parse(&multi), Some(5), "a kprobe.multi link");
        let mut raw_tp = [0u8; 64];
        put(&mut raw_tp, 0, &1u32.to_ne_bytes());
        assert_eq!(parse(&raw_tp), None, "a raw tracepoint link");
    }
}
