//! Pins on bpffs: maps and programs pinned at a declared path (`Map::pin_path`,
//! `Probe::pin_path`, map editors) and maps the object pins by name (`LIBBPF_PIN_BY_NAME`):
//! reused by the next manager when they match, refused when they do not, removed by `stop`
//! according to its `CleanupType` (declared pins) or left for the next run (pins by name), and
//! removed when the call that created them fails.

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, MapEditor, Options, Probe};
use integration_tests::*;

const ROUTER: &[u8] = include_bytes!("../../ebpf-fixtures/router.bpf.o");
/// `count_mkdir` counting in `shared_counts`, an array of 4 u64 pinned by name.
const PINNED: &[u8] = include_bytes!("../../ebpf-fixtures/pinned.bpf.o");

/// A pin path unique to this test, removed when dropped whatever happens.
struct PinPath(std::path::PathBuf);

impl PinPath {
    fn new(tag: &str) -> Self {
        setup_bpffs();
        Self(format!("/sys/fs/bpf/ebpf_manager_{}_{tag}", std::process::id()).into())
    }
}

impl Drop for PinPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pinned_manager(uid: &str, pin: &PinPath) -> Manager {
    setup_bpffs();
    let mut m = Manager {
        probes: vec![probe(uid, "tracepoint_sys_enter_mkdir")],
        maps: vec![ebpf_manager::Map {
            name: "hits".into(),
            pin_path: Some(pin.0.clone()),
        }],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only()).unwrap();
    m
}

#[test]
fn pins_of_a_map_are_reused_by_the_next_manager() {
    let _bpffs = bpffs_lock();
    let pin = PinPath::new("pin_reuse");
    let mut first = pinned_manager("first", &pin);
    assert!(pin.0.exists(), "the first manager pins the map");
    first.start().unwrap();
    mkdir_rmdir("pin-1");
    // The second manager finds the pin and uses the same map: it sees the first one's count.
    let mut second = pinned_manager("second", &pin);
    assert_eq!(hits(&second, slot::TRACEPOINT), 1);
    second.start().unwrap();
    mkdir_rmdir("pin-2");
    assert_eq!(
        hits(&first, slot::TRACEPOINT),
        3,
        "1 + both managers on the second mkdir"
    );
    // Pausing or detaching never removes a pin; stop removes by CleanupType.
    second.pause().unwrap();
    assert!(pin.0.exists());
    second.stop(CleanupType::CleanInternal).unwrap();
    assert!(
        pin.0.exists(),
        "the second manager reused the pin: not internal to it"
    );
    first.stop(CleanupType::CleanExternal).unwrap();
    assert!(
        pin.0.exists(),
        "the first manager created the pin: not external to it"
    );
    let mut third = pinned_manager("third", &pin);
    third.stop(CleanupType::CleanAll).unwrap();
    assert!(!pin.0.exists(), "CleanAll removes every pin");
}

#[test]
fn pins_created_by_a_failed_init_are_removed() {
    let _bpffs = bpffs_lock();
    setup_bpffs();
    let pin = PinPath::new("pin_failed_init");
    let mut m = Manager {
        probes: vec![probe("", "no_such_function")],
        maps: vec![ebpf_manager::Map {
            name: "hits".into(),
            pin_path: Some(pin.0.clone()),
        }],
        ..Default::default()
    };
    assert!(m.init(PROBES).is_err());
    assert!(!pin.0.exists(), "a failed init left its pin");
    let mut m = Manager {
        probes: vec![Probe {
            tracepoint_name: Some("sys_enter_mkdir".into()),
            ..probe("", "kprobe_vfs_mkdir")
        }],
        maps: vec![ebpf_manager::Map {
            name: "hits".into(),
            pin_path: Some(pin.0.clone()),
        }],
        ..Default::default()
    };
    // A probe refused after the maps exist: the pin goes too.
    assert!(matches!(m.init(PROBES), Err(Error::InvalidProbe { .. })));
    assert!(!pin.0.exists());
}

fn pinned_program(uid: &str, pin: &PinPath) -> ebpf_manager::Result<Manager> {
    setup_bpffs();
    let mut m = Manager {
        probes: vec![Probe {
            pin_path: Some(pin.0.clone()),
            ..probe(uid, "tracepoint_sys_enter_mkdir")
        }],
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only())?;
    Ok(m)
}

#[test]
fn pins_of_a_program_are_reused_by_the_next_manager() {
    let _bpffs = bpffs_lock();
    let pin = PinPath::new("prog_reuse");
    let mut first = pinned_program("first", &pin).unwrap();
    assert!(
        pin.0.exists(),
        "the first manager pins its program once loaded"
    );
    let id = probe("first", "tracepoint_sys_enter_mkdir").id();
    let prog_ids = program_ids(&first, &[id]);
    // The second manager runs the pinned program instead of loading its own.
    let mut second = pinned_program("second", &pin).unwrap();
    let second_id = probe("second", "tracepoint_sys_enter_mkdir").id();
    assert_eq!(program_ids(&second, &[second_id]), prog_ids);
    // Only the second attaches (the kernel refuses one program twice on a tracepoint): the
    // program it runs is the first manager's, counting in the first manager's map.
    second.start().unwrap();
    mkdir_rmdir("prog-pin");
    assert_eq!(hits(&first, slot::TRACEPOINT), 1);
    assert_eq!(hits(&second, slot::TRACEPOINT), 0);
    second.stop(CleanupType::CleanInternal).unwrap();
    assert!(pin.0.exists(), "reused by the second manager: not internal");
    first.stop(CleanupType::CleanExternal).unwrap();
    assert!(pin.0.exists(), "created by the first manager: not external");
    let mut third = pinned_program("third", &pin).unwrap();
    third.stop(CleanupType::CleanAll).unwrap();
    assert!(!pin.0.exists(), "CleanAll removes every pin");
    assert_unloaded(&prog_ids);
}

#[test]
fn pins_of_a_program_holding_no_program_are_an_error_and_left() {
    let _bpffs = bpffs_lock();
    let pin = PinPath::new("prog_pin_is_a_map");
    let mut holder = pinned_manager("holder", &pin); // pins the `hits` map at that path
    match pinned_program("reuser", &pin).unwrap_err() {
        Error::InvalidProbe { id, reason } => {
            assert_eq!(id.uid, "reuser");
            assert!(reason.contains("holds no usable program"), "{reason}");
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
    assert!(pin.0.exists(), "another manager's pin is not removed");
    holder.stop(CleanupType::CleanAll).unwrap();
    assert!(!pin.0.exists());
}

#[test]
fn pins_of_a_program_of_another_type_are_an_error_and_left() {
    let _bpffs = bpffs_lock();
    let pin = PinPath::new("prog_pin_other_type");
    let mut holder = pinned_program("holder", &pin).unwrap(); // a tracepoint program
    setup_bpffs();
    let mut m = Manager {
        probes: vec![Probe {
            pin_path: Some(pin.0.clone()),
            ..probe("kprobe", "kprobe_vfs_mkdir")
        }],
        ..Default::default()
    };
    match m.init_with_options(PROBES, this_thread_only()).unwrap_err() {
        Error::InvalidProbe { id, reason } => {
            assert_eq!(id.uid, "kprobe");
            assert!(
                reason.contains(
                    "BPF_PROG_TYPE_TRACEPOINT program, the object's is a BPF_PROG_TYPE_KPROBE"
                ),
                "{reason}"
            );
        }
        other => panic!("expected InvalidProbe, got {other:?}"),
    }
    assert!(pin.0.exists(), "another manager's pin is not removed");
    holder.stop(CleanupType::CleanAll).unwrap();
    assert!(!pin.0.exists());
}

/// A pin that holds another map than the object declares is refused, never used (issue 13).
#[test]
fn pins_of_another_map_are_refused() {
    let _bpffs = bpffs_lock();
    // Not under this process's `ebpf_manager_<pid>` prefix: a parallel test checks that no
    // temporary pin of the manager's is left there.
    let pin = PinPath(format!("/sys/fs/bpf/mgr_test_{}_mismatch_hits", std::process::id()).into());
    // `hits`: an array of 8 u64 values, pinned by a first manager.
    let first = pinned_manager("first", &pin);
    // `tail_hits` of router.bpf.o is an array of 1: same type and sizes, another length.
    let mut second = Manager {
        probes: vec![probe("tail", "tail_target")],
        maps: vec![ebpf_manager::Map {
            name: "tail_hits".into(),
            pin_path: Some(pin.0.clone()),
        }],
        ..Default::default()
    };
    let err = second.init(ROUTER).unwrap_err();
    assert!(
        matches!(&err, Error::PinnedMapMismatch { map, mismatch, .. }
            if map == "tail_hits" && mismatch.contains("max entries is 8")),
        "{err:?}"
    );
    // As a map editor, a program array cannot stand for an array.
    let mut third = Manager {
        probes: vec![probe("tail", "tail_target")],
        ..Default::default()
    };
    let err = third
        .init_with_options(
            ROUTER,
            Options {
                map_editors: vec![ebpf_manager::MapEditor::pinned("jump_table", pin.0.clone())],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::PinnedMapMismatch { map, mismatch, .. }
            if map == "jump_table" && mismatch.contains("map type")),
        "{err:?}"
    );
    assert!(pin.0.exists(), "the first manager's pin stays");
    drop(first);
}

/// A bpffs directory of this test's own for the maps pinned by name; removed with what is in
/// it when dropped.
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new(tag: &str) -> Self {
        setup_bpffs();
        let dir =
            std::path::PathBuf::from(format!("/sys/fs/bpf/mgr_test_{}_{tag}", std::process::id()));
        std::fs::create_dir(&dir).expect("a directory on bpffs");
        Self(dir)
    }

    fn pin(&self) -> std::path::PathBuf {
        self.0.join("shared_counts")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.pin());
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn by_name(uid: &str, dir: &PinDir, options: Options) -> ebpf_manager::Result<Manager> {
    setup_bpffs();
    let mut m = Manager {
        probes: vec![probe(uid, "count_mkdir")],
        ..Default::default()
    };
    let mut constant_editors = vec![ConstantEditor::new("filter_tid", gettid())];
    constant_editors.extend(options.constant_editors.iter().cloned());
    m.init_with_options(
        PINNED,
        Options {
            map_pin_directory: Some(dir.0.clone()),
            constant_editors,
            ..options
        },
    )?;
    Ok(m)
}

/// A map the object pins by name (`__uint(pinning, LIBBPF_PIN_BY_NAME)`, as libbpf and
/// cilium/ebpf users write it) is created and pinned in `Options::map_pin_directory` by the
/// first manager, shared by the next, and left there by `stop`, whatever the cleanup type.
#[test]
fn pins_by_name_are_shared_and_outlive_stop() {
    let _bpffs = bpffs_lock();
    let dir = PinDir::new("by_name_shared");
    let mut first = by_name("first", &dir, Options::default()).unwrap();
    assert!(dir.pin().exists(), "init pins shared_counts by name");
    first.start().unwrap();
    mkdir_rmdir("by-name-1");
    let mut second = by_name("second", &dir, Options::default()).unwrap();
    assert_eq!(
        read_slot(&second, "shared_counts", 0),
        1,
        "the second manager reuses the first one's map"
    );
    let map_id = map_fdinfo(&first, "shared_counts")["map_id"];
    assert_eq!(map_fdinfo(&second, "shared_counts")["map_id"], map_id);
    first.stop(CleanupType::CleanAll).unwrap();
    second.stop(CleanupType::CleanAll).unwrap();
    assert!(
        dir.pin().exists(),
        "stop leaves pins by name, as libbpf does"
    );
    // The next run finds the count the last one left.
    let third = by_name("third", &dir, Options::default()).unwrap();
    assert_eq!(read_slot(&third, "shared_counts", 0), 1);
}

/// What is pinned under a map's name must be that map: another one (here `hits` of
/// probes.bpf.o, an array of 8) is refused with the difference, not used, and left alone.
/// Regression: aya reuses whatever is pinned there; init succeeded and counted in `hits`.
#[test]
fn pins_by_name_of_another_map_are_refused_and_left() {
    let _bpffs = bpffs_lock();
    let dir = PinDir::new("by_name_mismatch");
    let mut holder = Manager {
        probes: vec![probe("holder", "tracepoint_sys_enter_mkdir")],
        maps: vec![ebpf_manager::Map {
            name: "hits".into(),
            pin_path: Some(dir.pin()),
        }],
        ..Default::default()
    };
    holder
        .init_with_options(PROBES, this_thread_only())
        .unwrap();
    let err = by_name("reuser", &dir, Options::default()).unwrap_err();
    match &err {
        Error::PinnedMapMismatch {
            map,
            path,
            mismatch,
        } => {
            assert_eq!(map, "shared_counts");
            assert_eq!(path, &dir.pin());
            assert_eq!(mismatch, "its max entries is 8, the object declares 4");
        }
        other => panic!("expected PinnedMapMismatch, got {other:?}"),
    }
    assert!(
        err.to_string().contains("remove the stale pin"),
        "the message says what to do: {err}"
    );
    assert!(dir.pin().exists(), "the holder's pin stays");
    holder.stop(CleanupType::CleanAll).unwrap();
    assert!(!dir.pin().exists());
}

/// A failed init removes the pins by name it created (as libbpf unpins what a failed load
/// pinned), and only those: one failing inside the object's load, one after it.
#[test]
fn pins_by_name_created_by_a_failed_init_are_removed() {
    let _bpffs = bpffs_lock();
    let dir = PinDir::new("by_name_failed_init");
    // Inside the load: an editor of a map the object lacks is found out once aya made the maps.
    let err = by_name(
        "failing",
        &dir,
        Options {
            map_editors: vec![MapEditor::pinned("no_such_map", dir.0.clone())],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { option, .. } if option == "map editor `no_such_map`"),
        "{err:?}"
    );
    assert!(!dir.pin().exists(), "the failed load left its pin");
    // After the load: a per-probe constant the object does not have, found out when the
    // probe's own copy of the program is made.
    let err = by_name(
        "failing",
        &dir,
        Options {
            constant_editors: vec![ConstantEditor {
                probes: vec![probe("failing", "count_mkdir").id()],
                ..ConstantEditor::new("no_such_constant", 1u32)
            }],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { option, .. } if option.contains("no_such_constant")),
        "{err:?}"
    );
    assert!(!dir.pin().exists(), "the failed init left its pin");
    // A pin that was there before a failed init is not the init's to remove.
    let first = by_name("first", &dir, Options::default()).unwrap();
    drop(first);
    let err = by_name(
        "failing",
        &dir,
        Options {
            map_editors: vec![MapEditor::pinned("no_such_map", dir.0.clone())],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err:?}");
    assert!(dir.pin().exists(), "a pin the failed init reused stays");
}
