//! Bypass (ebpf-fixtures/src/bypass.bpf.c): with `Options::bypass_enabled`, pausing keeps the
//! probes attached and silences their programs through the `program_bypassed` map.

use ebpf_manager::{
    CleanupType, ConstantEditor, Manager, Options, ProbeIdentificationPair, ProbeState,
};
use integration_tests::*;

const BYPASS: &[u8] = include_bytes!("../../ebpf-fixtures/bypass.bpf.o");

fn manager(bypass_enabled: bool) -> (Manager, ProbeIdentificationPair) {
    setup();
    let mut m = Manager {
        probes: vec![
            probe("mkdir", "bypassable_mkdir"),
            probe("rmdir", "bypassable_rmdir"),
        ],
        ..Default::default()
    };
    m.init_with_options(
        BYPASS,
        Options {
            bypass_enabled,
            constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
            ..Default::default()
        },
    )
    .expect("init");
    (m, ProbeIdentificationPair::new("mkdir", "bypassable_mkdir"))
}

#[test]
fn a_bypassed_probe_stays_attached_and_silent() {
    let (mut m, id) = manager(true);
    m.start().unwrap();
    mkdir_rmdir("bypass");
    assert_eq!(read_slot(&m, "counts", 0), 1);
    assert_eq!(read_slot(&m, "counts", 1), 1);
    let link_before = m.attach_info(&id).cloned().expect("attached");
    m.pause().unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Paused));
    assert_eq!(
        m.attach_info(&id),
        Some(&link_before),
        "still attached while paused"
    );
    let ids = program_ids(&m, std::slice::from_ref(&id));
    mkdir_rmdir("bypass");
    assert_eq!(
        read_slot(&m, "counts", 0),
        1,
        "the program ran but returned at once"
    );
    assert_eq!(read_slot(&m, "counts", 1), 1);
    m.resume().unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Running));
    mkdir_rmdir("bypass");
    assert_eq!(read_slot(&m, "counts", 0), 2);
    assert_eq!(read_slot(&m, "counts", 1), 2);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&ids);
}

#[test]
fn without_bypass_pause_detaches_and_the_map_is_not_created() {
    let (mut m, id) = manager(false);
    assert!(m.get_map("program_bypassed").is_none());
    m.start().unwrap();
    mkdir_rmdir("nobypass");
    assert_eq!(read_slot(&m, "counts", 0), 1, "the placeholder loads as 0");
    m.pause().unwrap();
    assert!(m.attach_info(&id).is_none(), "detached");
    mkdir_rmdir("nobypass");
    assert_eq!(read_slot(&m, "counts", 0), 1);
    m.resume().unwrap();
    mkdir_rmdir("nobypass");
    assert_eq!(read_slot(&m, "counts", 0), 2);
}

/// One probe paused and resumed while the other runs on: through the bypass map with
/// `bypass_enabled` (still attached), by a detach without.
#[test]
fn one_probe_pauses_and_resumes_alone() {
    for bypass in [true, false] {
        let (mut m, id) = manager(bypass);
        m.start().unwrap();
        m.pause_probe(&id).unwrap();
        assert_eq!(m.probe_state(&id), Some(ProbeState::Paused));
        assert_eq!(
            m.attach_info(&id).is_some(),
            bypass,
            "attached only when bypassed"
        );
        mkdir_rmdir("one-probe");
        assert_eq!(read_slot(&m, "counts", 0), 0, "paused (bypass: {bypass})");
        assert_eq!(read_slot(&m, "counts", 1), 1, "the other runs on");
        let err = m.pause_probe(&id).unwrap_err();
        assert!(
            matches!(err, ebpf_manager::Error::InvalidProbe { .. }),
            "{err:?}"
        );
        m.resume_probe(&id).unwrap();
        assert_eq!(m.probe_state(&id), Some(ProbeState::Running));
        mkdir_rmdir("one-probe");
        assert_eq!(read_slot(&m, "counts", 0), 1);
        assert_eq!(read_slot(&m, "counts", 1), 2);
        let unknown = ProbeIdentificationPair::new("nope", "bypassable_mkdir");
        assert!(matches!(
            m.pause_probe(&unknown),
            Err(ebpf_manager::Error::ProbeNotFound { .. })
        ));
    }
}
