//! Map types by number: their names and the kernel that added each (from the kernel's
//! `include/uapi/linux/bpf.h` history), for errors that say what a kernel lacks.

/// `(type, name, (major, minor))` of every map type up to Linux 6.9.
const MAP_TYPES: &[(u32, &str, (u32, u32))] = &[
    (1, "BPF_MAP_TYPE_HASH", (3, 19)),
    (2, "BPF_MAP_TYPE_ARRAY", (3, 19)),
    (3, "BPF_MAP_TYPE_PROG_ARRAY", (4, 2)),
    (4, "BPF_MAP_TYPE_PERF_EVENT_ARRAY", (4, 3)),
    (5, "BPF_MAP_TYPE_PERCPU_HASH", (4, 6)),
    (6, "BPF_MAP_TYPE_PERCPU_ARRAY", (4, 6)),
    (7, "BPF_MAP_TYPE_STACK_TRACE", (4, 6)),
    (8, "BPF_MAP_TYPE_CGROUP_ARRAY", (4, 8)),
    (9, "BPF_MAP_TYPE_LRU_HASH", (4, 10)),
    (10, "BPF_MAP_TYPE_LRU_PERCPU_HASH", (4, 10)),
    (11, "BPF_MAP_TYPE_LPM_TRIE", (4, 11)),
    (12, "BPF_MAP_TYPE_ARRAY_OF_MAPS", (4, 12)),
    (13, "BPF_MAP_TYPE_HASH_OF_MAPS", (4, 12)),
    (14, "BPF_MAP_TYPE_DEVMAP", (4, 14)),
    (15, "BPF_MAP_TYPE_SOCKMAP", (4, 14)),
    (16, "BPF_MAP_TYPE_CPUMAP", (4, 15)),
    (17, "BPF_MAP_TYPE_XSKMAP", (4, 18)),
    (18, "BPF_MAP_TYPE_SOCKHASH", (4, 18)),
    (19, "BPF_MAP_TYPE_CGROUP_STORAGE", (4, 19)),
    (20, "BPF_MAP_TYPE_REUSEPORT_SOCKARRAY", (4, 19)),
    (21, "BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE", (4, 20)),
    (22, "BPF_MAP_TYPE_QUEUE", (4, 20)),
    (23, "BPF_MAP_TYPE_STACK", (4, 20)),
    (24, "BPF_MAP_TYPE_SK_STORAGE", (5, 2)),
    (25, "BPF_MAP_TYPE_DEVMAP_HASH", (5, 4)),
    (26, "BPF_MAP_TYPE_STRUCT_OPS", (5, 6)),
    (27, "BPF_MAP_TYPE_RINGBUF", (5, 8)),
    (28, "BPF_MAP_TYPE_INODE_STORAGE", (5, 10)),
    (29, "BPF_MAP_TYPE_TASK_STORAGE", (5, 11)),
    (30, "BPF_MAP_TYPE_BLOOM_FILTER", (5, 16)),
    (31, "BPF_MAP_TYPE_USER_RINGBUF", (6, 1)),
    (32, "BPF_MAP_TYPE_CGRP_STORAGE", (6, 2)),
    (33, "BPF_MAP_TYPE_ARENA", (6, 9)),
];

/// The name of map type `t` and the kernel version (major, minor) that added it.
pub(crate) fn map_type(t: u32) -> Option<(&'static str, (u32, u32))> {
    MAP_TYPES
        .iter()
        .find(|(n, ..)| *n == t)
        .map(|&(_, name, since)| (name, since))
}

/// The running kernel's (major, minor), as aya reads it (Debian and Ubuntu report their
/// upstream version).
pub(crate) fn running() -> Option<(u32, u32)> {
    let v = aya::util::KernelVersion::current().ok()?;
    let text = v.to_string();
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    #[test]
    fn types_are_numbered_without_gaps_and_versions_never_go_back() {
        for (i, w) in super::MAP_TYPES.windows(2).enumerate() {
            assert_eq!(w[0].0 as usize, i + 1);
            assert_eq!(w[1].0, w[0].0 + 1);
            assert!(w[1].2 >= w[0].2, "{} before {}", w[1].1, w[0].1);
        }
        assert_eq!(
            super::map_type(29),
            Some(("BPF_MAP_TYPE_TASK_STORAGE", (5, 11)))
        );
        assert_eq!(super::map_type(99), None);
    }
}
