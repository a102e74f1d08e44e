//! [`Manager::publish_metrics`] (feature `metrics`): the counters of [`Manager::status`] given
//! to the [`metrics`] facade, so that whatever exporter the application installed (Prometheus,
//! StatsD, ...) serves them. Without an installed recorder the calls do nothing.

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

use super::Manager;
use crate::{ProbeState, Status};

/// Metric names, each with its unit and help text.
const PROBE_RUNS: &str = "ebpf_manager_probe_runs_total";
const PROBE_RUN_TIME: &str = "ebpf_manager_probe_run_time_nanoseconds_total";
const PROBE_MISSED: &str = "ebpf_manager_probe_missed_total";
const PROBE_RUNNING: &str = "ebpf_manager_probe_running";
const READER_RECEIVED: &str = "ebpf_manager_reader_received_total";
const READER_LOST: &str = "ebpf_manager_reader_lost_total";
const READER_HANDLER_ERRORS: &str = "ebpf_manager_reader_handler_errors_total";
const READER_RING_HIGH_WATER: &str = "ebpf_manager_reader_ring_high_water_bytes";
const READER_RING_SIZE: &str = "ebpf_manager_reader_ring_size_bytes";

impl Manager {
    /// Publishes the counters of [`status`](Self::status) through the [`metrics`] facade
    /// (feature `metrics`), labelled so that each series names what it counts:
    ///
    /// | metric | labels | what |
    /// |---|---|---|
    /// | `ebpf_manager_probe_runs_total` | `uid`, `function` | runs of the probe's program (with run statistics on, Linux 5.1) |
    /// | `ebpf_manager_probe_run_time_nanoseconds_total` | `uid`, `function` | its run time |
    /// | `ebpf_manager_probe_missed_total` | `uid`, `function` | kprobe hits the kernel missed |
    /// | `ebpf_manager_probe_running` | `uid`, `function` | 1 while attached, else 0 |
    /// | `ebpf_manager_reader_received_total` | `map`, `kind` | records handed to the handler |
    /// | `ebpf_manager_reader_lost_total` | `map`, `kind` | records the kernel reported lost |
    /// | `ebpf_manager_reader_handler_errors_total` | `map`, `kind` | handler panics |
    /// | `ebpf_manager_reader_ring_high_water_bytes` | `map`, `kind` | most bytes waiting at one wakeup |
    /// | `ebpf_manager_reader_ring_size_bytes` | `map`, `kind` | the ring's size |
    ///
    /// A counter the kernel does not give (no run statistics, no miss count before Linux 6.7
    /// for PMU kprobes) is not published rather than published as 0. Counters are set to the
    /// manager's totals (`absolute`), so calling this again, as often as the exporter is
    /// scraped or on a timer, keeps them current. Reads the same kernel state as `status`.
    ///
    /// ```no_run
    /// # fn publish(manager: &ebpf_manager::Manager) {
    /// // Once: any exporter of the `metrics` facade, e.g. metrics-exporter-prometheus.
    /// // metrics_exporter_prometheus::PrometheusBuilder::new().install()?;
    /// loop {
    ///     manager.publish_metrics();
    ///     std::thread::sleep(std::time::Duration::from_secs(10));
    /// }
    /// # }
    /// ```
    pub fn publish_metrics(&self) {
        publish(&self.status());
    }
}

/// Publishes one snapshot.
pub(crate) fn publish(status: &Status) {
    describe();
    for probe in &status.probes {
        let labels = [
            ("uid", probe.id.uid.clone()),
            ("function", probe.id.ebpf_func_name.clone()),
        ];
        if let Some(runs) = probe.run_count {
            counter!(PROBE_RUNS, &labels).absolute(runs);
        }
        if let Some(ns) = probe.run_time_ns {
            counter!(PROBE_RUN_TIME, &labels).absolute(ns);
        }
        if let Some(missed) = probe.missed {
            counter!(PROBE_MISSED, &labels).absolute(missed);
        }
        let running = matches!(probe.state, ProbeState::Running);
        gauge!(PROBE_RUNNING, &labels).set(if running { 1.0 } else { 0.0 });
    }
    for reader in &status.readers {
        let labels = [
            ("map", reader.map.clone()),
            ("kind", reader.kind.to_owned()),
        ];
        counter!(READER_RECEIVED, &labels).absolute(reader.received);
        counter!(READER_LOST, &labels).absolute(reader.lost);
        counter!(READER_HANDLER_ERRORS, &labels).absolute(reader.handler_errors);
        if let Some(high) = reader.ring_high_water {
            gauge!(READER_RING_HIGH_WATER, &labels).set(high as f64);
        }
        if let Some(size) = reader.ring_size {
            gauge!(READER_RING_SIZE, &labels).set(size as f64);
        }
    }
}

/// The help texts, given with every snapshot: a recorder installed after the first one still
/// gets them.
fn describe() {
    describe_counter!(
        PROBE_RUNS,
        "Runs of the probe's eBPF program (run statistics on)"
    );
    describe_counter!(
        PROBE_RUN_TIME,
        Unit::Nanoseconds,
        "Time the probe's eBPF program ran (run statistics on)"
    );
    describe_counter!(PROBE_MISSED, "Hits of the kprobe the kernel missed");
    describe_gauge!(PROBE_RUNNING, "1 while the probe is attached, else 0");
    describe_counter!(READER_RECEIVED, "Records handed to the reader's handler");
    describe_counter!(READER_LOST, "Records the kernel reported lost");
    describe_counter!(READER_HANDLER_ERRORS, "Panics of the reader's handler");
    describe_gauge!(
        READER_RING_HIGH_WATER,
        Unit::Bytes,
        "Most bytes of records waiting at one wakeup of the reader"
    );
    describe_gauge!(READER_RING_SIZE, Unit::Bytes, "Size of the ring buffer");
}
