//! Stopping many probes: perf-event links close in parallel where the kernel lets their RCU
//! waits overlap (`ebpf_manager::features::parallel_detach`, Linux 6.18), one after another elsewhere; either
//! way nothing stays attached or loaded.

use std::time::Instant;

use ebpf_manager::{CleanupType, Manager, ProbeIdentificationPair, ProbeState};
use integration_tests::*;

const MANY: &[u8] = include_bytes!("../../ebpf-fixtures/many_tracepoints.bpf.o");

/// The kernel runs at most 64 programs on one tracepoint (BPF_TRACE_MAX_PROGS, E2BIG beyond),
/// and each manager here puts 50 on each of two: one manager at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A started manager of the 100 tracepoint programs of many_tracepoints.bpf.o, with their ids,
/// and the guard that keeps the other test's out.
fn hundred_tracepoints(
    uid: &str,
) -> (
    Manager,
    Vec<ProbeIdentificationPair>,
    std::sync::MutexGuard<'static, ()>,
) {
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup();
    let ids: Vec<ProbeIdentificationPair> = (0..100)
        .map(|i| ProbeIdentificationPair::new(uid, format!("tp_{i:02}")))
        .collect();
    let mut m = Manager {
        probes: ids
            .iter()
            .map(|id| probe(&id.uid, &id.ebpf_func_name))
            .collect(),
        ..Default::default()
    };
    m.init(MANY).expect("init");
    m.start().expect("start");
    (m, ids, guard)
}

#[test]
fn stopping_100_tracepoint_probes_leaves_nothing_attached() {
    let (mut m, ids, _one) = hundred_tracepoints("");
    let programs = program_ids(&m, &ids);
    let t = Instant::now();
    m.stop(CleanupType::CleanAll).expect("stop");
    println!(
        "stopped 100 tracepoint probes in {:?} (parallel closes: {})",
        t.elapsed(),
        ebpf_manager::features::parallel_detach()
    );
    for id in &ids {
        assert_eq!(m.probe_state(id), Some(ProbeState::Stopped));
        assert!(m.attach_info(id).is_none());
    }
    assert_unloaded(&programs);
}

#[test]
fn pausing_100_tracepoint_probes_detaches_them_all_and_resume_brings_them_back() {
    let (mut m, ids, _one) = hundred_tracepoints("p");
    m.pause().expect("pause");
    assert!(ids.iter().all(|id| m.attach_info(id).is_none()));
    m.resume().expect("resume");
    assert!(ids
        .iter()
        .all(|id| m.probe_state(id) == Some(ProbeState::Running)));
    // Detached before the guard goes, so the other test finds the tracepoints free.
    let programs = program_ids(&m, &ids);
    m.stop(CleanupType::CleanAll).expect("stop");
    assert_unloaded(&programs);
}

#[test]
fn a_manager_that_frees_its_object_at_start_runs_but_clones_no_more() {
    setup();
    let id = ProbeIdentificationPair::new("tp", "tracepoint_sys_enter_mkdir");
    let mut m = Manager {
        probes: vec![probe(&id.uid, &id.ebpf_func_name)],
        ..Default::default()
    };
    m.init_with_options(
        PROBES,
        ebpf_manager::Options {
            release_object_after_start: true,
            ..this_thread_only()
        },
    )
    .unwrap();
    assert!(
        m.program_instructions(&id).unwrap().is_some(),
        "kept until start"
    );
    m.start().unwrap();
    mkdir_rmdir("released");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1);
    let err = m
        .clone_program(
            "tp",
            probe("clone", "tracepoint_sys_enter_mkdir"),
            Vec::new(),
            Vec::new(),
        )
        .unwrap_err();
    assert!(
        matches!(err, ebpf_manager::Error::ObjectReleased),
        "{err:?}"
    );
    assert!(m
        .get_probe(&ProbeIdentificationPair::new(
            "clone",
            "tracepoint_sys_enter_mkdir"
        ))
        .is_none());
    let base = hits(&m, slot::TRACEPOINT);
    assert_eq!(
        base, 1,
        "the refused clone made nothing (no pin directory either)"
    );
    m.pause().unwrap();
    m.resume().unwrap();
    mkdir_rmdir("released");
    assert_eq!(
        hits(&m, slot::TRACEPOINT),
        base + 1,
        "still running after pause and resume"
    );
}
