//! perf_event programs (Linux 4.9): one perf event per online CPU (or the first
//! `perf_event_cpu_count`), of every process or of one, sampled by period or frequency.

use aya::programs::{
    perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy},
    PerfEvent,
};

use super::{AttachInfo, AttachMethod, Link, Probe};
use crate::{Error, ProbeIdentificationPair, Result};

/// A perf event to sample on every online CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    kind: u32,
    config: u64,
    period: u64,
    frequency: u64,
    pid: Option<u32>,
    cpu_count: u32,
}

pub(crate) fn resolve(id: &ProbeIdentificationPair, probe: &Probe) -> Result<Target> {
    let reason = match (probe.sample_period, probe.sample_frequency) {
        (0, 0) => Some("a perf_event probe needs sample_period or sample_frequency"),
        (p, f) if p > 0 && f > 0 => Some("set sample_period or sample_frequency, not both"),
        _ => None,
    };
    if let Some(reason) = reason {
        return Err(Error::InvalidProbe {
            id: id.clone(),
            reason: reason.into(),
        });
    }
    Ok(Target {
        kind: probe.perf_event_type,
        config: probe.perf_event_config,
        period: probe.sample_period,
        frequency: probe.sample_frequency,
        // 0 is every process, as in Go (`perf_event_open` would read it as the caller).
        pid: probe.perf_event_pid.filter(|&pid| pid != 0),
        cpu_count: probe.perf_event_cpu_count,
    })
}

/// The online CPUs, from a list like `0-3,5`.
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

/// The scopes to open the event in: one per online CPU (the first `cpu_count` when above 0),
/// for every process or for `pid`; a single one following `pid` on any CPU when `cpu_count` is
/// 0.
fn scopes(online: &[u32], pid: Option<u32>, cpu_count: u32) -> Vec<PerfEventScope> {
    let cpus = || {
        let n = if cpu_count == 0 {
            online.len()
        } else {
            cpu_count as usize
        };
        online.iter().copied().take(n)
    };
    match (pid, cpu_count) {
        (Some(pid), 0) => vec![PerfEventScope::OneProcess { pid, cpu: None }],
        (Some(pid), _) => cpus()
            .map(|cpu| PerfEventScope::OneProcess {
                pid,
                cpu: Some(cpu),
            })
            .collect(),
        (None, _) => cpus()
            .map(|cpu| PerfEventScope::AllProcessesOneCpu { cpu })
            .collect(),
    }
}

fn describe(scope: &PerfEventScope) -> String {
    match scope {
        PerfEventScope::AllProcessesOneCpu { cpu } => format!("on CPU {cpu}"),
        PerfEventScope::OneProcess { pid, cpu: None } => format!("for pid {pid}"),
        PerfEventScope::OneProcess {
            pid,
            cpu: Some(cpu),
        } => format!("for pid {pid} on CPU {cpu}"),
        PerfEventScope::CallingProcess { .. } => "for the calling process".into(),
    }
}

pub(crate) fn attach(
    prog: &mut PerfEvent,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    let mut hook = format!("perf event type {} config {}", target.kind, target.config);
    if let Some(pid) = target.pid {
        hook.push_str(&format!(" pid {pid}"));
    }
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method: AttachMethod::PerfEvent,
        source,
    };
    let online =
        std::fs::read_to_string("/sys/devices/system/cpu/online").map_err(|e| fail(Box::new(e)))?;
    let online = parse_cpu_list(&online);
    if target.cpu_count as usize > online.len() {
        return Err(fail(
            format!(
                "perf_event_cpu_count is {}, but only {} CPUs are online",
                target.cpu_count,
                online.len()
            )
            .into(),
        ));
    }
    let sample = if target.period > 0 {
        SamplePolicy::Period(target.period)
    } else {
        SamplePolicy::Frequency(target.frequency)
    };
    let mut links = Vec::new();
    for scope in scopes(&online, target.pid, target.cpu_count) {
        let config = PerfEventConfig::Pmu {
            pmu_type: target.kind,
            config: target.config,
        };
        let place = describe(&scope);
        // Earlier links of this probe drop (detach) on the way out.
        let link_id = prog.attach(config, scope, sample, false).map_err(|e| {
            let hint = match super::syscall_errno(&e) {
                Some(libc::ENOENT) => format!(
                    "{place}: the kernel has no such event; hardware events need a \
                     PMU, which virtual machines often lack"
                ),
                Some(libc::ESRCH) => format!("{place}: perf_event_pid names no running process"),
                _ => place,
            };
            fail(super::with_hint(e, Some(hint)))
        })?;
        links.push(
            prog.take_link(link_id)
                .map_err(|e| fail(super::with_hint(e, None)))?,
        );
    }
    Ok((
        Link::PerfEvent(links),
        AttachInfo {
            hook,
            method: AttachMethod::PerfEvent,
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::parse_cpu_list("0-3,5\n"), vec![0, 1, 2, 3, 5]);
        assert_eq!(super::parse_cpu_list("0"), vec![0]);
        assert_eq!(super::parse_cpu_list(""), Vec::<u32>::new());
    }

    #[test]
    fn scopes_follow_pid_and_cpu_count() {
        use super::PerfEventScope as S;
        let online = [0, 1, 2, 5];
        assert_eq!(super::scopes(&online, None, 0).len(), 4);
        assert!(matches!(
            super::scopes(&online, None, 2)[..],
            [
                S::AllProcessesOneCpu { cpu: 0 },
                S::AllProcessesOneCpu { cpu: 1 }
            ]
        ));
        assert!(matches!(
            super::scopes(&online, Some(7), 0)[..],
            [S::OneProcess { pid: 7, cpu: None }]
        ));
        assert!(matches!(
            super::scopes(&online, Some(7), 1)[..],
            [S::OneProcess {
                pid: 7,
                cpu: Some(0)
            }]
        ));
    }
}
