//! Map spec editors, map editors (a map pinned by another manager) and map dumps.

use ebpf_manager::{CleanupType, Error, Manager, MapEditor, MapSpecEditor, Options, Probe};
use integration_tests::*;

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
        }],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { reason, .. } if reason.contains("no_such_map") && reason.contains("hits")),
        "{err:?}"
    );
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    let options = Options {
        map_editors: vec![MapEditor {
            name: "hits".into(),
            pin_path: "/sys/fs/bpf/ebpf_manager_no_such_pin".into(),
        }],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(err.to_string().contains("nothing is pinned"), "{err}");
}

#[test]
fn maps_editor_shares_a_map_pinned_by_another_manager() {
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
        map_editors: vec![MapEditor {
            name: "hits".into(),
            pin_path: pin.clone(),
        }],
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

#[test]
fn maps_constant_editor_for_some_probes_gives_them_their_own_program() {
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
    let err = m.init_with_options(PROBES, options).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { reason, .. } if reason.contains("not declared")),
        "{err:?}"
    );
}
