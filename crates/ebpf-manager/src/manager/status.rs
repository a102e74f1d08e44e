//! [`Manager::status`]: what runs, how often, what failed and what the readers got, as one
//! snapshot a person reads at a glance (`Display`) or a program serializes (feature `serde`).

use std::{fmt, os::fd::AsFd};

use super::{Manager, ManagerState};
use crate::{kernel::stats, maps::ReaderStatus, AttachMethod, ProbeIdentificationPair, ProbeState};

/// A snapshot of a manager: its state, every probe and every reader
/// ([`Manager::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Status {
    /// Where the manager is in its life.
    pub state: ManagerState,
    /// Whether the kernel counts program runs and run time now (the manager's
    /// [`Options::enable_stats`](crate::Options::enable_stats), another process's
    /// `BPF_ENABLE_STATS`, or the `kernel.bpf_stats_enabled` sysctl).
    pub run_stats: bool,
    /// Every probe, in declaration order (then hooks and clones in the order they came).
    pub probes: Vec<ProbeStatus>,
    /// Every perf map and ring buffer reader (not the async ones, which the caller drives).
    pub readers: Vec<ReaderStatus>,
}

/// One probe of a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ProbeStatus {
    /// The probe.
    pub id: ProbeIdentificationPair,
    /// Its state.
    pub state: ProbeState,
    /// Where it attaches: the resolved symbol, tracepoint or target; for a probe over many
    /// functions, how many and the pattern. `None` before it is resolved.
    pub hook: Option<String>,
    /// How it is attached, while it is.
    pub attach_method: Option<AttachMethod>,
    /// The kernel's id of its program, once loaded.
    pub program_id: Option<u32>,
    /// The kernel's id of its BPF link, when the attachment is one (raw tracepoints, BTF
    /// hooks, multi links, perf-event links from Linux 5.15, cgroup and XDP links, ...).
    pub link_id: Option<u32>,
    /// How many times its program ran while run statistics were on (Linux 5.1; see
    /// [`Status::run_stats`]).
    pub run_count: Option<u64>,
    /// The time its program ran while run statistics were on, in nanoseconds.
    pub run_time_ns: Option<u64>,
    /// kprobes and kretprobes: the hits the kernel missed (a kretprobe's `maxactive`
    /// instances all in use, a kprobe hit while another ran on that CPU). Through tracefs,
    /// from `kprobe_profile` (any kernel); through the kprobe PMU or a kprobe.multi link, from
    /// the info of its program's links, summed (Linux 6.7; `None` before, and for PMU probes
    /// attached without a link, before Linux 5.15). A pattern attached one kprobe per function
    /// counts all its functions; probes that share a program share the count.
    pub missed: Option<u64>,
    /// Why it is failed or disabled.
    pub error: Option<String>,
}

impl Manager {
    /// A snapshot of the manager: each probe's state, hook, attach method, program and link
    /// ids, run count and run time (with [`Options::enable_stats`](crate::Options::enable_stats),
    /// Linux 5.8), kretprobe misses (tracefs kprobes) and last error; each reader's counts.
    ///
    /// ```no_run
    /// # fn show(m: &ebpf_manager::Manager) {
    /// println!("{}", m.status()); // a table
    /// let status = m.status();
    /// for probe in &status.probes {
    ///     if let Some(error) = &probe.error {
    ///         eprintln!("{}: {error}", probe.id);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> Status {
        if self.state() == ManagerState::New {
            // Nothing is loaded yet: the declarations.
            return Status {
                state: ManagerState::New,
                run_stats: stats::run_stats_on(),
                probes: self
                    .probes
                    .iter()
                    .map(|p| ProbeStatus {
                        id: p.id(),
                        state: ProbeState::Declared,
                        hook: None,
                        attach_method: None,
                        program_id: None,
                        link_id: None,
                        run_count: None,
                        run_time_ns: None,
                        missed: None,
                        error: None,
                    })
                    .collect(),
                readers: Vec::new(),
            };
        }
        let state = &self.state;
        let kprobe_links = state.records.values().any(|r| {
            r.attach.as_ref().is_some_and(|a| {
                matches!(
                    a.method,
                    AttachMethod::KprobePmu | AttachMethod::KprobeMulti
                )
            })
        });
        let links = stats::links_by_program(kprobe_links);
        let profile = state
            .records
            .values()
            .any(|r| {
                r.link
                    .as_ref()
                    .is_some_and(|l| !l.kprobe_events().is_empty())
            })
            .then(stats::kprobe_profile)
            .unwrap_or_default();
        let run_stats = state.stats.is_some() || stats::run_stats_on();
        let probes = state
            .records
            .iter()
            .map(|(key, r)| {
                let info = self.program_fdinfo(&r.id);
                let program_id = info
                    .as_ref()
                    .and_then(|i| i.get("prog_id"))
                    .map(|&v| v as u32);
                let counter = |key: &str| {
                    info.as_ref()
                        .filter(|_| run_stats)
                        .and_then(|i| i.get(key).copied())
                };
                let events = r
                    .link
                    .as_ref()
                    .map(|l| l.kprobe_events())
                    .unwrap_or_default();
                let held = program_id
                    .filter(|_| r.link.is_some())
                    .and_then(|id| links.get(&id))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let method = r.attach.as_ref().map(|a| a.method);
                let missed = if !events.is_empty() {
                    Some(
                        events
                            .iter()
                            .filter_map(|e| profile.get(*e))
                            .map(|&(_, misses)| misses)
                            .sum(),
                    )
                } else if matches!(
                    method,
                    Some(AttachMethod::KprobePmu | AttachMethod::KprobeMulti)
                ) {
                    held.iter().filter_map(|l| l.missed).reduce(|a, b| a + b)
                } else {
                    None
                };
                ProbeStatus {
                    id: r.id.clone(),
                    state: state.visible_state(key),
                    hook: r
                        .attach
                        .as_ref()
                        .map(|a| a.hook.clone())
                        .or_else(|| r.hook.summary()),
                    attach_method: method,
                    program_id,
                    link_id: held.last().map(|l| l.id),
                    run_count: counter("run_cnt"),
                    run_time_ns: counter("run_time_ns"),
                    missed,
                    error: r.error.clone(),
                }
            })
            .collect();
        Status {
            state: self.state(),
            run_stats,
            probes,
            readers: state.readers.status(),
        }
    }

    /// The fdinfo of the probe's loaded program (the manager's own for multi links).
    fn program_fdinfo(
        &self,
        id: &ProbeIdentificationPair,
    ) -> Option<std::collections::HashMap<String, u64>> {
        let record = &self.state.records[self.state.record(id)?];
        if let Some(fd) = &record.multi {
            return Some(stats::fdinfo(fd.as_fd()));
        }
        let fd = self.get_program(id)?.fd().ok()?;
        Some(stats::fdinfo(fd.as_fd()))
    }
}

impl fmt::Display for Status {
    /// A table: one line per probe, then one per reader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |s: ProbeState| self.probes.iter().filter(|p| p.state == s).count();
        writeln!(
            f,
            "manager {:?}: {} probes ({} running, {} failed, {} disabled), run statistics {}",
            self.state,
            self.probes.len(),
            count(ProbeState::Running),
            count(ProbeState::Failed),
            count(ProbeState::Disabled),
            if self.run_stats { "on" } else { "off" },
        )?;
        let dash = || "-".to_owned();
        let opt = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
        let rows: Vec<[String; 9]> = self
            .probes
            .iter()
            .map(|p| {
                [
                    format!("{}/{}", p.id.uid, p.id.ebpf_func_name),
                    format!("{:?}", p.state),
                    p.hook.clone().unwrap_or_else(dash),
                    p.attach_method.map_or_else(dash, method_short),
                    opt(p.program_id.map(u64::from)),
                    opt(p.link_id.map(u64::from)),
                    opt(p.run_count),
                    p.run_time_ns.map_or_else(dash, |ns| {
                        format!("{:?}", std::time::Duration::from_nanos(ns))
                    }),
                    opt(p.missed),
                ]
            })
            .collect();
        let header = [
            "probe", "state", "hook", "method", "prog", "link", "runs", "run time", "missed",
        ];
        table(f, &header, &rows)?;
        for p in self.probes.iter().filter(|p| p.error.is_some()) {
            writeln!(
                f,
                "  {}/{}: {}",
                p.id.uid,
                p.id.ebpf_func_name,
                p.error.as_deref().unwrap_or_default()
            )?;
        }
        if self.readers.is_empty() {
            return Ok(());
        }
        let rows: Vec<[String; 7]> = self
            .readers
            .iter()
            .map(|r| {
                [
                    r.map.clone(),
                    r.kind.to_owned(),
                    if r.running { "running" } else { "stopped" }.to_owned(),
                    r.received.to_string(),
                    r.lost.to_string(),
                    r.handler_errors.to_string(),
                    match (r.ring_high_water, r.ring_size) {
                        (Some(high), Some(size)) => format!("{high} of {size} bytes"),
                        _ => dash(),
                    },
                ]
            })
            .collect();
        let header = [
            "reader",
            "kind",
            "state",
            "received",
            "lost",
            "handler errors",
            "ring high water",
        ];
        table(f, &header, &rows)
    }
}

/// The attach method in a word or two, for the table.
fn method_short(method: AttachMethod) -> String {
    match method {
        AttachMethod::KprobePmu => "kprobe PMU",
        AttachMethod::KprobeTracefs => "kprobe tracefs",
        AttachMethod::KprobeMulti => "kprobe.multi",
        AttachMethod::UprobeMulti => "uprobe.multi",
        AttachMethod::Tracepoint => "tracepoint",
        AttachMethod::RawTracepoint => "raw tracepoint",
        AttachMethod::Uprobe => "uprobe PMU",
        AttachMethod::UprobeTracefs => "uprobe tracefs",
        AttachMethod::BtfLink => "BTF link",
        AttachMethod::PerfEvent => "perf event",
        AttachMethod::SocketOption => "socket",
        AttachMethod::Cgroup => "cgroup",
        AttachMethod::Xdp => "XDP",
        AttachMethod::Tcx => "TCX",
        AttachMethod::TcNetlink => "TC netlink",
    }
    .to_owned()
}

/// Left-aligned columns as wide as their widest cell.
fn table<const N: usize>(
    f: &mut fmt::Formatter<'_>,
    header: &[&str; N],
    rows: &[[String; N]],
) -> fmt::Result {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |f: &mut fmt::Formatter<'_>, cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        writeln!(f, "  {}", text.join("  ").trim_end())
    };
    line(f, &mut header.iter().copied())?;
    for row in rows {
        line(f, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_manager_reports_its_declared_probes() {
        let m = Manager {
            probes: vec![crate::Probe {
                uid: "a".into(),
                ebpf_func_name: "f".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let status = m.status();
        assert_eq!(status.state, ManagerState::New);
        assert_eq!(status.probes.len(), 1);
        assert_eq!(status.probes[0].id, ProbeIdentificationPair::new("a", "f"));
        assert_eq!(status.probes[0].state, ProbeState::Declared);
        assert!(
            status
                .to_string()
                .lines()
                .any(|l| l.trim_start().starts_with("a/f ") && l.contains(" Declared ")),
            "{status}"
        );
    }

    #[test]
    fn the_table_lines_up_and_lists_errors_and_readers() {
        let status = Status {
            state: ManagerState::Running,
            run_stats: true,
            probes: vec![
                ProbeStatus {
                    id: ProbeIdentificationPair::new("mkdir", "tracepoint_sys_enter_mkdir"),
                    state: ProbeState::Running,
                    hook: Some("syscalls/sys_enter_mkdir".into()),
                    attach_method: Some(AttachMethod::Tracepoint),
                    program_id: Some(12),
                    link_id: Some(7),
                    run_count: Some(3),
                    run_time_ns: Some(1500),
                    missed: None,
                    error: None,
                },
                ProbeStatus {
                    id: ProbeIdentificationPair::new("", "kprobe_vfs_mkdir"),
                    state: ProbeState::Failed,
                    hook: Some("vfs_mkdir".into()),
                    attach_method: None,
                    program_id: Some(13),
                    link_id: None,
                    run_count: Some(0),
                    run_time_ns: Some(0),
                    missed: None,
                    error: Some("no kprobes".into()),
                },
            ],
            readers: vec![ReaderStatus {
                map: "events".into(),
                kind: crate::maps::RING,
                running: true,
                received: 10,
                lost: 0,
                handler_errors: 1,
                ring_size: Some(4096),
                ring_high_water: Some(160),
            }],
        };
        let text = status.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "manager Running: 2 probes (1 running, 1 failed, 0 disabled), run statistics on"
        );
        // Every column starts where its header does.
        let cell = |header: &str, row: &str, name: &str| {
            let at = header.find(name).unwrap();
            row[at..].split("  ").next().unwrap().to_owned()
        };
        let (header, first, second) = (lines[1], lines[2], lines[3]);
        assert_eq!(cell(header, first, "hook"), "syscalls/sys_enter_mkdir");
        assert_eq!(cell(header, second, "hook"), "vfs_mkdir");
        assert_eq!(cell(header, first, "link"), "7");
        assert_eq!(cell(header, second, "link"), "-");
        assert_eq!(cell(header, first, "runs"), "3");
        assert_eq!(cell(header, first, "run time"), "1.5µs");
        assert_eq!(lines[4], "  /kprobe_vfs_mkdir: no kprobes");
        assert_eq!(cell(lines[5], lines[6], "received"), "10");
        assert_eq!(cell(lines[5], lines[6], "handler errors"), "1");
        assert_eq!(
            cell(lines[5], lines[6], "ring high water"),
            "160 of 4096 bytes"
        );
    }
}
