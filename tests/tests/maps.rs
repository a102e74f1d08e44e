//! Map spec editors, map editors (a map pinned by another manager) and map dumps.

use ebpf_manager::{CleanupType, Error, Manager, MapEditor, MapSpecEditor, Options, Probe};
use integration_tests::*;

const ROUTER: &[u8] = include_bytes!("../../ebpf-fixtures/router.bpf.o");

fn tp() -> Probe {
    probe("tp", "tracepoint_sys_enter_mkdir")
}

fn max_entries(m: &Manager, name: &str) -> u32 {
    let map = m.get_map(name).expect("map");
    aya::maps::Array::<_, u64>::try_from(map)
        .expect("array")
        .len()
}

#[test]
fn maps_spec_editor_changes_max_entries_before_creation() {
    setup();
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    let options = Options {
        map_spec_editors: vec![MapSpecEditor {
            name: "hits".into(),
            max_entries: Some(16),
            ..Default::default()
        }],
        ..this_thread_only()
    };
    m.init_with_options(PROBES, options).unwrap();
    assert_eq!(max_entries(&m, "hits"), 16);
    assert_eq!(max_entries(&m, "tagged"), 8, "other maps keep their size");
    m.start().unwrap();
    mkdir_rmdir("spec");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn maps_editor_of_a_missing_map_is_an_error() {
    setup();
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    let options = Options {
        map_spec_editors: vec![MapSpecEditor {
            name: "no_such_map".into(),
            max_entries: Some(16),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { reason, .. } if reason.contains("no_such_map") && reason.contains("hits")),
        "{err:?}"
    );
    // A pin of the user's: bpffs mounted, as they would have it.
    setup_bpffs();
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    let options = Options {
        map_editors: vec![MapEditor::pinned(
            "hits",
            "/sys/fs/bpf/ebpf_manager_no_such_pin",
        )],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(err.to_string().contains("nothing is pinned"), "{err}");
}

#[test]
fn maps_editor_shares_a_map_pinned_by_another_manager() {
    // Its pin is under this process's prefix, which other tests check.
    let _bpffs = bpffs_lock();
    setup_bpffs();
    let mut a = counting_manager(vec![tp()]);
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/ebpf_manager_{}_maps_test_hits",
        std::process::id()
    ));
    a.get_map("hits").unwrap().pin(&pin).unwrap();
    // The pin is this test's own object: remove it whatever happens next.
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unpin = Unpin(pin.clone());

    let mut b = Manager {
        probes: vec![probe("b", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    let options = Options {
        map_editors: vec![MapEditor::pinned("hits", pin.clone())],
        ..this_thread_only()
    };
    b.init_with_options(PROBES, options).unwrap();
    b.start().unwrap();
    mkdir_rmdir("shared");
    // Only b runs; its counts land in a's map.
    assert_eq!(hits(&a, slot::TRACEPOINT), 1);
    b.stop(CleanupType::CleanAll).unwrap();
    a.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn maps_editor_takes_an_open_map_of_another_manager() {
    // Go: `MapEditors: map[string]*ebpf.Map{"hits": m}`.
    let _bpffs = bpffs_lock();
    let a = counting_manager(vec![tp()]);
    let mut b = Manager {
        probes: vec![probe("b", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    let options = Options {
        map_editors: vec![MapEditor::live("hits", a.map_fd("hits").unwrap())],
        ..this_thread_only()
    };
    b.init_with_options(PROBES, options).unwrap();
    assert_eq!(
        own_bpffs_entries(),
        Vec::<String>::new(),
        "the load-time pin of the open map is gone"
    );
    b.start().unwrap();
    mkdir_rmdir("live");
    // Only b runs; its counts land in a's map.
    assert_eq!(hits(&a, slot::TRACEPOINT), 1);
    assert_eq!(hits(&b, slot::TRACEPOINT), 1, "b reads the same map");
    b.stop(CleanupType::CleanAll).unwrap();
    drop(a);
}

#[test]
fn maps_editor_with_an_open_map_of_another_type_is_refused() {
    let _bpffs = bpffs_lock();
    setup();
    let mut router = Manager {
        probes: vec![probe("tail", "tail_target")],
        ..Default::default()
    };
    router.init(ROUTER).unwrap();
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    let options = Options {
        map_editors: vec![MapEditor::live(
            "hits",
            router.map_fd("jump_table").unwrap(),
        )],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(
        matches!(&err, Error::PinnedMapMismatch { map, mismatch, .. }
            if map == "hits" && mismatch.contains("map type is 3")),
        "{err}"
    );
    assert_eq!(own_bpffs_entries(), Vec::<String>::new(), "nothing left");
    router.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn maps_dump_prints_keys_and_values_in_hex() {
    let mut m = counting_manager(vec![tp()]);
    m.start().unwrap();
    mkdir_rmdir("dump");
    let mut out = Vec::new();
    m.dump_maps(&mut out, &["hits"]).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "an array lists every slot:\n{text}");
    // Slot 2 (tracepoint) holds 1, as u32 key and u64 value in native (little-endian) order.
    assert!(
        lines.contains(&"hits key=02000000 value=0100000000000000"),
        "{text}"
    );
    let mut seen = 0;
    m.dump_maps_with(&[], &mut |e| {
        if e.map == "tagged" {
            assert_eq!(e.key.len(), 4);
            assert_eq!(e.value.len(), 8);
        }
        seen += 1;
    })
    .unwrap();
    assert_eq!(seen, 17, "hits and tagged, 8 slots each, and .rodata's one");
    let err = m.dump_maps(&mut Vec::new(), &["nope"]).unwrap_err();
    assert!(err.to_string().contains("no map `nope`"), "{err}");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// Dumping every map skips one the kernel will not list (here `BPF_F_WRONLY`: lookups from
/// user space get EPERM) instead of failing the whole dump; naming it is an error.
#[test]
fn maps_dump_of_every_map_skips_an_unlistable_one() {
    const BPF_F_WRONLY: u32 = 1 << 4;
    let mut m = counting_manager_with(
        vec![tp()],
        Options {
            map_spec_editors: vec![MapSpecEditor {
                name: "tagged".into(),
                flags: Some(BPF_F_WRONLY),
                ..Default::default()
            }],
            ..this_thread_only()
        },
    );
    let mut seen = Vec::new();
    m.dump_maps_with(&[], &mut |e| seen.push(e.map.to_owned()))
        .expect("one unlistable map does not fail the dump");
    assert_eq!(seen.len(), 9, "hits' 8 slots and .rodata's one: {seen:?}");
    assert!(!seen.iter().any(|n| n == "tagged"));
    let err = m.dump_maps(&mut Vec::new(), &["tagged"]).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.to_string_lossy() == "map tagged"),
        "{err:?}"
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

/// The Go `CopyProgram`: two probes of one function share one kernel program, which the
/// kernel attaches to a tracepoint only once (EEXIST); a probe with a copy of its own runs
/// next to it, both writing to the object's one map.
#[test]
fn maps_copy_program_gives_a_probe_its_own_program() {
    let _bpffs = bpffs_lock();
    setup();
    let a = probe("a", "tagged_sys_enter_mkdir");
    let b = probe("b", "tagged_sys_enter_mkdir");
    let mut m = Manager {
        probes: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only()).unwrap();
    let ids = program_ids(&m, &[a.id(), b.id()]);
    assert_eq!(ids[0], ids[1], "a and b share the object's program");
    match m.start().unwrap_err() {
        Error::Attach { id, source, .. } => {
            assert_eq!(id, b.id());
            assert_eq!(
                integration_tests::net::os_error(source.as_ref()),
                Some(libc::EEXIST),
                "{source}"
            );
            assert!(source.to_string().contains("copy_program"), "{source}");
        }
        other => panic!("{other}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&ids);

    let b = Probe {
        copy_program: true,
        ..b
    };
    let mut m = Manager {
        probes: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only()).unwrap();
    assert!(own_bpffs_entries().is_empty(), "temporary pins left");
    let ids = program_ids(&m, &[a.id(), b.id()]);
    assert_ne!(ids[0], ids[1], "b has its own program");
    m.start().unwrap();
    mkdir_rmdir("copy-program");
    // Two probes on one tracepoint, one shared map: two counts in slot 0.
    assert_eq!(read_slot(&m, "tagged", 0), 2);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&ids);
}

#[test]
fn maps_constant_editor_for_some_probes_gives_them_their_own_program() {
    let _bpffs = bpffs_lock();
    setup();
    let a = probe("a", "tagged_sys_enter_mkdir");
    let b = probe("b", "tagged_sys_enter_mkdir");
    let mut m = Manager {
        probes: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    let mut options = this_thread_only();
    options.constant_editors.push(ebpf_manager::ConstantEditor {
        probes: vec![b.id()],
        ..ebpf_manager::ConstantEditor::new("clone_tag", 1u32)
    });
    m.init_with_options(PROBES, options).unwrap();
    assert!(own_bpffs_entries().is_empty(), "temporary pins left");
    let ids = program_ids(&m, &[a.id(), b.id()]);
    assert_ne!(ids[0], ids[1], "b has its own program");
    m.start().unwrap();
    mkdir_rmdir("per-probe");
    // a counts in slot 0 (the default), b in slot 1 (its own constant), one shared map.
    assert_eq!(read_slot(&m, "tagged", 0), 1);
    assert_eq!(read_slot(&m, "tagged", 1), 1);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&ids);

    let mut m = Manager {
        probes: vec![a],
        ..Default::default()
    };
    let options = Options {
        constant_editors: vec![ebpf_manager::ConstantEditor {
            probes: vec![b.id()],
            ..ebpf_manager::ConstantEditor::new("clone_tag", 1u32)
        }],
        ..Default::default()
    };
    // As in Go, an editor may name a pair a later clone_program declares: it waits for it.
    m.init_with_options(
        PROBES,
        Options {
            constant_editors: vec![
                ebpf_manager::ConstantEditor::new("filter_tid", gettid()),
                options.constant_editors[0].clone(),
            ],
            ..Default::default()
        },
    )
    .expect("an editor for a pair not declared yet");
    m.start().unwrap();
    m.clone_program("a", b.clone(), Vec::new(), Vec::new())
        .expect("the clone declares b");
    // (The clone's temporary pin directory was a mkdir that `a` counted.)
    let base = read_slot(&m, "tagged", 0);
    mkdir_rmdir("editor-for-a-clone");
    assert_eq!(read_slot(&m, "tagged", 0), base + 1, "a, the default tag");
    assert_eq!(
        read_slot(&m, "tagged", 1),
        1,
        "b, the clone, with the editor's tag"
    );
}
