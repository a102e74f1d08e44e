//! Every map type a libbpf user declares today (maptypes.bpf.c, BTF-defined maps): `init`
//! creates each the running kernel has, reachable through the manager, and names each it does
//! not with the kernel that added it; the newer ones work from programs (task storage, bloom
//! filter, queue, stack) and from user space (the user ring buffer's producer).
//!
//! The 6.12 guest has every type; 6.1 lacks cgroup storage (6.2) and arenas (6.9); 5.10 lacks
//! those, task storage (5.11), bloom filters (5.16) and user ring buffers (6.1). The 6.18 host
//! has every type but refuses to create an arena (EPERM, as it refuses BPF trampolines; see
//! shared/facts/kernels.md): there that precise error is asserted.

use std::os::fd::{AsFd, AsRawFd};

use aya::util::KernelVersion;
use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, MapSpecEditor, Options, Probe};
use integration_tests::{user::kernel_must_run_btf_trampolines, *};

const MAPTYPES: &[u8] = include_bytes!("../../ebpf-fixtures/maptypes.bpf.o");

/// Each map of the fixture: name, kernel type, the kernel that added the type.
const MAPS: &[(&str, u32, &str, (u32, u32))] = &[
    ("prefixes", 11, "BPF_MAP_TYPE_LPM_TRIE", (4, 11)),
    ("cgroups", 8, "BPF_MAP_TYPE_CGROUP_ARRAY", (4, 8)),
    ("devices", 14, "BPF_MAP_TYPE_DEVMAP", (4, 14)),
    ("sockets", 15, "BPF_MAP_TYPE_SOCKMAP", (4, 14)),
    ("cpus", 16, "BPF_MAP_TYPE_CPUMAP", (4, 15)),
    ("xsks", 17, "BPF_MAP_TYPE_XSKMAP", (4, 18)),
    ("socket_hash", 18, "BPF_MAP_TYPE_SOCKHASH", (4, 18)),
    ("tid_queue", 22, "BPF_MAP_TYPE_QUEUE", (4, 20)),
    ("tid_stack", 23, "BPF_MAP_TYPE_STACK", (4, 20)),
    ("sk_marks", 24, "BPF_MAP_TYPE_SK_STORAGE", (5, 2)),
    ("device_hash", 25, "BPF_MAP_TYPE_DEVMAP_HASH", (5, 4)),
    ("inode_marks", 28, "BPF_MAP_TYPE_INODE_STORAGE", (5, 10)),
    ("task_counts", 29, "BPF_MAP_TYPE_TASK_STORAGE", (5, 11)),
    ("seen_tids", 30, "BPF_MAP_TYPE_BLOOM_FILTER", (5, 16)),
    ("cgroup_marks", 32, "BPF_MAP_TYPE_CGRP_STORAGE", (6, 2)),
    ("requests", 31, "BPF_MAP_TYPE_USER_RINGBUF", (6, 1)),
    ("arena", 33, "BPF_MAP_TYPE_ARENA", (6, 9)),
    ("drained", 2, "BPF_MAP_TYPE_ARRAY", (3, 19)),
];

fn running() -> (u32, u32) {
    let v = KernelVersion::current()
        .expect("kernel version")
        .to_string();
    let mut p = v.split('.').map(|n| n.parse::<u32>().unwrap());
    (p.next().unwrap(), p.next().unwrap())
}

fn has(since: (u32, u32)) -> bool {
    running() >= since
}

/// The host refuses arenas (EPERM); the QEMU guests do not.
fn arena_refused_here() -> bool {
    !kernel_must_run_btf_trampolines() && has((6, 9))
}

/// `(map_type, max_entries)` the kernel reports for an fd of a map.
fn kernel_view(fd: std::os::fd::BorrowedFd<'_>) -> (u32, u32) {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().parse::<u32>().unwrap())
            .unwrap()
    };
    (field("map_type"), field("max_entries"))
}

#[test]
fn maptypes_each_is_created_or_named_with_its_kernel() {
    setup();
    let mut refused: Vec<String> = Vec::new();
    let mut m = loop {
        let mut m = Manager::default();
        // An editor of a map the kernel cannot have would name an excluded map: refused.
        let editors = has((5, 16)).then(|| MapSpecEditor {
            name: "seen_tids".into(),
            max_entries: Some(128),
            ..Default::default()
        });
        let options = Options {
            excluded_maps: refused.clone(),
            map_spec_editors: editors.into_iter().collect(),
            ..Default::default()
        };
        match m.init_with_options(MAPTYPES, options) {
            Ok(()) => break m,
            Err(Error::MapTypeUnsupported {
                map,
                map_type,
                since,
                running: kernel,
                ..
            }) => {
                let &(_, _, ty, min) = MAPS.iter().find(|e| e.0 == map).expect("a fixture map");
                assert_eq!(map_type, ty);
                assert_eq!(since, format!("{}.{}", min.0, min.1));
                assert!(
                    !has(min),
                    "{map}: {ty} is in Linux {since}, this is {kernel}"
                );
                refused.push(map);
            }
            Err(e @ Error::MapCreate { .. }) if arena_refused_here() => {
                let Error::MapCreate {
                    map,
                    map_type,
                    since,
                    source,
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(
                    (map.as_str(), *map_type, since.as_str()),
                    ("arena", "BPF_MAP_TYPE_ARENA", "6.9")
                );
                assert_eq!(source.raw_os_error(), Some(libc::EPERM), "{e}");
                println!("refused here: {e}");
                refused.push(map.clone());
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    let mut expected: Vec<String> = MAPS
        .iter()
        .filter(|(name, _, _, since)| !has(*since) || (*name == "arena" && arena_refused_here()))
        .map(|e| e.0.to_owned())
        .collect();
    expected.sort();
    refused.sort();
    assert_eq!(refused, expected, "the types this kernel refused");
    let mut created = 0;
    for (name, ty, ..) in MAPS.iter().filter(|e| !refused.iter().any(|r| r == e.0)) {
        assert!(m.get_map(name).is_some(), "{name} is not reachable");
        let fd = m.map_fd(name).unwrap();
        let (kernel_type, max_entries) = kernel_view(fd.as_fd());
        assert_eq!(kernel_type, *ty, "{name}");
        if *name == "seen_tids" {
            assert_eq!(
                max_entries, 128,
                "the spec editor applies to a bloom filter"
            );
        }
        created += 1;
    }
    println!(
        "map types on Linux {:?}: {created} created, refused: {refused:?}",
        running()
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

/// Reads slot `i` of the `drained` results.
fn result(m: &Manager, i: u32) -> u64 {
    read_slot(m, "drained", i)
}

#[test]
fn maptypes_new_ones_work_from_programs_and_user_space() {
    setup();
    let mut uses: Vec<&str> = vec!["push_tid"];
    let newer = [
        ("count_in_task_storage", (5, 11)),
        ("add_to_bloom", (5, 16)),
        ("drain_requests", (6, 1)),
    ];
    uses.extend(newer.iter().filter(|(_, v)| has(*v)).map(|(f, _)| *f));
    let excluded: Vec<String> = MAPS
        .iter()
        .filter(|(name, _, _, since)| !has(*since) || *name == "arena")
        .map(|e| e.0.to_owned())
        .collect();
    let mut m = Manager {
        probes: uses
            .iter()
            .map(|f| Probe {
                uid: "maptypes".into(),
                ebpf_func_name: (*f).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let options = Options {
        constant_editors: vec![ConstantEditor::new("filter_tgid", std::process::id())],
        excluded_maps: excluded,
        ..Default::default()
    };
    m.init_with_options(MAPTYPES, options).unwrap();
    let producer = has((6, 1)).then(|| {
        let mut requests = m.user_ring_buffer("requests").unwrap();
        let capacity = requests.capacity();
        assert_eq!(capacity, 4096 * 4);
        let second = m.user_ring_buffer("requests").unwrap_err();
        assert!(
            second.to_string().contains("already has a producer"),
            "{second}"
        );
        for v in [5u64, 7, 11] {
            requests.submit(&v.to_ne_bytes()).unwrap();
        }
        let discarded = requests.reserve(8).unwrap();
        discarded.discard();
        let full = requests.reserve(capacity).unwrap_err();
        assert!(
            matches!(full, Error::UserRingBufferFull { record, .. } if record == capacity),
            "{full:?}"
        );
        assert!(requests.free_bytes() < capacity);
        requests
    });
    m.start().unwrap();
    let tid = gettid();
    mkdir_rmdir("maptypes");
    mkdir_rmdir("maptypes");
    let queue = aya::maps::Queue::<_, u32>::try_from(m.get_map_mut("tid_queue").unwrap());
    assert_eq!(queue.unwrap().pop(0).unwrap(), tid);
    let stack = aya::maps::Stack::<_, u32>::try_from(m.get_map_mut("tid_stack").unwrap());
    assert_eq!(stack.unwrap().pop(0).unwrap(), tid);
    let mut ran = vec!["queue", "stack"];
    if has((5, 11)) {
        assert_eq!(result(&m, 2), 2, "two mkdirs counted in the task's storage");
        ran.push("task storage");
    }
    if has((5, 16)) {
        let bloom = aya::maps::BloomFilter::<_, u32>::try_from(m.get_map("seen_tids").unwrap());
        bloom.unwrap().contains(tid, 0).unwrap();
        ran.push("bloom filter");
    }
    if let Some(requests) = producer {
        assert_eq!(
            (result(&m, 0), result(&m, 1)),
            (3, 23),
            "drained 5 + 7 + 11"
        );
        assert_eq!(requests.free_bytes(), requests.capacity(), "all drained");
        drop(requests);
        let again = m.user_ring_buffer("requests").unwrap();
        drop(again);
        ran.push("user ring buffer");
    }
    println!("map types used on Linux {:?}: {ran:?}", running());
    m.stop(CleanupType::CleanAll).unwrap();
}

/// libbpf creates a user ring buffer of any size as the power-of-two number of pages that holds
/// it (the kernel refuses any other size); aya 0.14 rounds only `BPF_MAP_TYPE_RINGBUF`.
#[test]
fn maptypes_a_user_ring_buffer_is_sized_as_libbpf_sizes_it() {
    setup();
    let excluded: Vec<String> = MAPS
        .iter()
        .filter(|(name, _, _, since)| *name != "requests" && (!has(*since) || *name == "arena"))
        .map(|e| e.0.to_owned())
        .collect();
    let mut m = Manager::default();
    let result = m.init_with_options(
        MAPTYPES,
        Options {
            excluded_maps: excluded,
            map_spec_editors: vec![MapSpecEditor {
                name: "requests".into(),
                max_entries: Some(5000),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    if !has((6, 1)) {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::MapTypeUnsupported { map, .. } if map == "requests"),
            "{err:?}"
        );
        println!("Linux {:?}: {err}", running());
        return;
    }
    result.unwrap();
    let (_, max_entries) = kernel_view(m.map_fd("requests").unwrap().as_fd());
    assert_eq!(max_entries, 2 * 4096, "5000 bytes: two pages (x86-64)");
    assert_eq!(m.user_ring_buffer("requests").unwrap().capacity(), 2 * 4096);
    m.stop(CleanupType::CleanAll).unwrap();
}
