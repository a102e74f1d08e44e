//! perf_event programs (Linux 4.9): one perf event per online CPU, sampled by period or
//! frequency.

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

pub(crate) fn attach(
    prog: &mut PerfEvent,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    let hook = format!("perf event type {} config {}", target.kind, target.config);
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method: "perf events",
        source,
    };
    let online =
        std::fs::read_to_string("/sys/devices/system/cpu/online").map_err(|e| fail(Box::new(e)))?;
    let sample = if target.period > 0 {
        SamplePolicy::Period(target.period)
    } else {
        SamplePolicy::Frequency(target.frequency)
    };
    let mut links = Vec::new();
    for cpu in parse_cpu_list(&online) {
        let config = PerfEventConfig::Pmu {
            pmu_type: target.kind,
            config: target.config,
        };
        // Earlier links of this probe drop (detach) on the way out.
        let link_id = prog
            .attach(
                config,
                PerfEventScope::AllProcessesOneCpu { cpu },
                sample,
                false,
            )
            .map_err(|e| {
                let hint = match super::syscall_errno(&e) {
                    Some(libc::ENOENT) => format!(
                        "on CPU {cpu}: the kernel has no such event; hardware events need a \
                         PMU, which virtual machines often lack"
                    ),
                    _ => format!("on CPU {cpu}"),
                };
                fail(super::with_causes(e, Some(hint)))
            })?;
        links.push(
            prog.take_link(link_id)
                .map_err(|e| fail(super::with_causes(e, None)))?,
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
}
