//! `Manager::publish_metrics` (feature `metrics`): the counters of `Manager::status` reach an
//! exporter of the `metrics` facade (here metrics-exporter-prometheus, rendered in process so
//! that it runs in the guests too; `examples/metrics.rs` scrapes it over HTTP).

use std::sync::Arc;

use ebpf_manager::{CleanupType, Manager, Options, Probe, ProbesSelector};
use integration_tests::{readers, user::*, *};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the one series of `metric` whose labels are exactly `labels`, in Prometheus'
/// text format.
fn value(text: &str, metric: &str, labels: &str) -> Option<f64> {
    let series = format!("{metric}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// One test: the recorder is global to the process, and run statistics global to the kernel.
#[test]
fn metrics_reach_a_prometheus_exporter_with_their_labels() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("installing the Prometheus recorder");
    setup();
    // A uprobe on a binary only this test runs: its run count is exact.
    let target = TempFile::uprobe_target();
    let add = Probe {
        binary_path: Some(target.path().to_owned()),
        ..probe("add", "uprobe_add")
    };
    let add_id = add.id();
    let mut uprobes = Manager {
        probes: vec![add],
        ..Default::default()
    };
    uprobes
        .init_with_options(
            USER,
            Options {
                enable_stats: true,
                activated_probes: vec![ProbesSelector::Probe(add_id)],
                ..user_filters(0, 0)
            },
        )
        .unwrap();
    // A ring buffer reader over records this thread makes.
    let seen = Arc::new(readers::Seen::default());
    let mut ring = readers::manager(
        &["ring_emit"],
        gettid(),
        vec![],
        vec![seen.ring_buffer("ring_events")],
    );
    uprobes.start().unwrap();
    ring.start().unwrap();
    run_uprobe_target(target.path(), 5);
    const N: usize = 300;
    readers::emit(N);
    assert!(
        seen.wait_for(readers::WAIT, |s| s.records.len() >= N),
        "received {} of {N}",
        seen.received()
    );
    uprobes.publish_metrics();
    ring.publish_metrics();
    let text = handle.render();
    println!("{text}");
    let probe = r#"uid="add",function="uprobe_add""#;
    assert_eq!(
        value(&text, "ebpf_manager_probe_runs_total", probe),
        Some(5.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "ebpf_manager_probe_run_time_nanoseconds_total",
            probe
        )
        .is_some_and(|ns| ns > 0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "ebpf_manager_probe_running", probe),
        Some(1.0),
        "{text}"
    );
    let reader = r#"map="ring_events",kind="ring buffer""#;
    assert_eq!(
        value(&text, "ebpf_manager_reader_received_total", reader),
        Some(N as f64),
        "{text}"
    );
    assert_eq!(
        value(&text, "ebpf_manager_reader_lost_total", reader),
        Some(0.0),
        "{text}"
    );
    assert!(
        value(&text, "ebpf_manager_reader_ring_size_bytes", reader).is_some_and(|b| b >= 4096.0),
        "{text}"
    );
    assert!(
        text.contains(
            "# HELP ebpf_manager_reader_received_total Records handed to the reader's handler"
        ),
        "{text}"
    );
    // The figures follow the manager: more runs, then stopped.
    run_uprobe_target(target.path(), 2);
    uprobes.publish_metrics();
    assert_eq!(
        value(&handle.render(), "ebpf_manager_probe_runs_total", probe),
        Some(7.0)
    );
    uprobes.stop(CleanupType::CleanAll).unwrap();
    uprobes.publish_metrics();
    assert_eq!(
        value(&handle.render(), "ebpf_manager_probe_running", probe),
        Some(0.0)
    );
    ring.stop(CleanupType::CleanAll).unwrap();
}
