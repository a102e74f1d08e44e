//! Raw map iteration (`BPF_MAP_GET_NEXT_KEY`, `BPF_MAP_LOOKUP_ELEM`) for maps of any key and
//! value size: aya's typed maps need the sizes at compile time. And the perf event array
//! entries of the manager's own perf rings, which aya's `PerfEventArray` cannot set.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The `map_elem` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut MapElemAttr) -> io::Result<()> {
    let call = match cmd {
        BPF_MAP_LOOKUP_ELEM => "BPF_MAP_LOOKUP_ELEM",
        BPF_MAP_UPDATE_ELEM => "BPF_MAP_UPDATE_ELEM",
        BPF_MAP_DELETE_ELEM => "BPF_MAP_DELETE_ELEM",
        _ => "BPF_MAP_GET_NEXT_KEY",
    };
    super::sys::bpf(cmd, call, attr).map(drop)
}

/// Writes `value` at the `u32` key `key` of `map` (`BPF_ANY`).
pub(crate) fn update_u32_key(map: BorrowedFd<'_>, key: u32, value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value_or_next_key: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// Deletes the `u32` key `key` of `map`.
pub(crate) fn delete_u32_key(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr)
}

/// Stores the perf event `event` at index `cpu` of the perf event array `map`.
pub(crate) fn set_perf_event(
    map: BorrowedFd<'_>,
    cpu: u32,
    event: BorrowedFd<'_>,
) -> io::Result<()> {
    update_u32_key(map, cpu, &(event.as_raw_fd() as u32).to_ne_bytes())
}

/// Clears index `cpu` of the perf event array `map`, so that programs writing there get
/// ENOENT instead of filling a ring nobody reads. An empty index is not an error.
pub(crate) fn clear_perf_event(map: BorrowedFd<'_>, cpu: u32) -> io::Result<()> {
    match delete_u32_key(map, cpu) {
        Err(e) if super::sys::errno(&e) != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// The id in slot `key` of a program array or map of maps (what a lookup from user space
/// gives there), `None` when the slot is empty.
pub(crate) fn fd_slot_id(map: BorrowedFd<'_>, key: u32) -> io::Result<Option<u32>> {
    let mut id = 0u32;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value_or_next_key: &mut id as *mut u32 as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(()) => Ok(Some(id)),
        Err(e) if super::sys::errno(&e) == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Stores the program or map `fd` in slot `key` of a program array or map of maps.
pub(crate) fn set_fd_slot(map: BorrowedFd<'_>, key: u32, fd: BorrowedFd<'_>) -> io::Result<()> {
    set_perf_event(map, key, fd)
}

/// Empties slot `key` of a map with u32 keys; an empty slot is not an error.
pub(crate) fn clear_slot(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    clear_perf_event(map, key)
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;

/// A new fd of the program (`program` true) or map with this id (Linux 4.13).
pub(crate) fn fd_by_id(program: bool, id: u32) -> io::Result<std::os::fd::OwnedFd> {
    #[repr(C)]
    struct GetFdById {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = GetFdById {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let (cmd, command) = if program {
        (BPF_PROG_GET_FD_BY_ID, "BPF_PROG_GET_FD_BY_ID")
    } else {
        (BPF_MAP_GET_FD_BY_ID, "BPF_MAP_GET_FD_BY_ID")
    };
    super::bpf_prog::sys_bpf(cmd, command, &mut attr).map_err(|e| {
        io::Error::new(
            e.source.kind(),
            super::sys::SysError {
                call: e.command,
                io_error: e.source,
            },
        )
    })
}

/// Every (key, value) of the map, in the kernel's key order. `value_size` is the size the
/// kernel copies out: for per-CPU maps, the value size rounded up to 8, times the possible CPUs.
pub(crate) fn entries(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_size];
        let mut attr = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: key.as_ref().map_or(0, |k| k.as_ptr() as u64),
            value_or_next_key: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => {}
            Err(e) if super::sys::errno(&e) == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        let mut value = vec![0u8; value_size];
        let mut attr = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: next.as_ptr() as u64,
            value_or_next_key: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => out.push((next.clone(), value)),
            // Deleted between the two calls: skip it.
            Err(e) if super::sys::errno(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        key = Some(next);
    }
}

/// What the kernel says of the map behind an fd (`/proc/self/fdinfo`, every kernel of the
/// project): not what an object declared, which a pin or an editor may contradict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapFdInfo {
    pub(crate) map_type: u32,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
    pub(crate) flags: u32,
}

/// The kernel's view of the map behind `fd`; `None` when `fd` is not a map.
pub(crate) fn map_fd_info(fd: BorrowedFd<'_>) -> io::Result<Option<MapFdInfo>> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(parse_fdinfo(&text))
}

fn parse_fdinfo(text: &str) -> Option<MapFdInfo> {
    let field = |name: &str| -> Option<u32> {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim();
        match v.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    };
    Some(MapFdInfo {
        map_type: field("map_type")?,
        key_size: field("key_size")?,
        value_size: field("value_size")?,
        max_entries: field("max_entries")?,
        flags: field("map_flags")?,
    })
}

/// The `MapData` behind any kind of aya map.
pub(crate) fn map_data(map: &aya::maps::Map) -> &aya::maps::MapData {
    use aya::maps::Map;
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fdinfo_of_a_map_and_of_something_else() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t27\n\
                   key_size:\t0\nvalue_size:\t0\nmax_entries:\t4096\nmap_flags:\t0x0\n";
        assert_eq!(
            super::parse_fdinfo(map),
            Some(super::MapFdInfo {
                map_type: 27,
                key_size: 0,
                value_size: 0,
                max_entries: 4096,
                flags: 0
            })
        );
        assert_eq!(super::parse_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }
}
