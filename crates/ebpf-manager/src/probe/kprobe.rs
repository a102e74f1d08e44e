//! Kprobes and kretprobes: through the kprobe PMU (aya), or through tracefs `kprobe_events`
//! (here: aya 0.14 has no tracefs path on kernels >= 4.17, and no maxactive).

use std::os::fd::{AsFd as _, OwnedFd};

use aya::programs::{KProbe, ProbeKind};

use super::{AttachInfo, AttachMethod, KprobeAttachMethod, Link, Probe};
use crate::{
    kernel::symbols::LazyFunctions,
    kernel::{self, perf, tracefs},
    Error, ProbeIdentificationPair, Result,
};

/// A kprobe created in tracefs and opened as a perf event: closing the perf event first, then
/// removing the tracefs event (which the kernel refuses while a perf event holds it).
#[derive(Debug)]
pub(crate) struct TracefsLink {
    perf: Option<OwnedFd>,
    event: tracefs::ProbeEvent,
}

impl TracefsLink {
    /// A link of `perf` (the program already set on it) over `event`.
    pub(crate) fn new(perf: OwnedFd, event: tracefs::ProbeEvent) -> Self {
        Self {
            perf: Some(perf),
            event,
        }
    }
}

impl TracefsLink {
    /// The tracefs event's name (its line in `kprobe_profile`).
    pub(crate) fn event_name(&self) -> &str {
        self.event.name()
    }
}

impl Drop for TracefsLink {
    fn drop(&mut self) {
        if let Some(perf) = self.perf.take() {
            let _ = perf::disable(&perf);
        }
        // `event` drops after this body, removing the tracefs event.
    }
}

/// Chooses how to attach, and says why (for
/// [`ObjectInfo::resolve_hooks`](crate::ObjectInfo::resolve_hooks)): see
/// [`KprobeAttachMethod`]. `probe.kprobe_max_active` is the manager's copy's (the
/// manager's default filled in). As in the Go library: a kretprobe with a maxactive goes
/// through tracefs `kprobe_events` whatever the method (the PMU has no maxactive), and a
/// method whose facility this kernel lacks gives way to the other one (`has_pmu`,
/// `has_events`); with neither, the method stays and the attach reports no kprobes.
pub(crate) fn choose_method(
    probe: &Probe,
    default: KprobeAttachMethod,
    retprobe: bool,
    has_pmu: bool,
    has_events: bool,
) -> (AttachMethod, &'static str) {
    let wants_maxactive = retprobe && probe.kprobe_max_active > 0;
    let (method, chosen_by) = match probe.kprobe_attach_method {
        KprobeAttachMethod::Default => (default, "Options::default_kprobe_attach_method"),
        explicit => (explicit, "the probe's kprobe_attach_method"),
    };
    let (method, why) = match method {
        KprobeAttachMethod::KprobeMulti => return (AttachMethod::KprobeMulti, chosen_by),
        _ if wants_maxactive => (
            AttachMethod::KprobeTracefs,
            "kprobe_max_active (the probe's, or Options::default_kprobe_max_active) needs \
             tracefs kprobe_events: the kprobe PMU has no maxactive",
        ),
        KprobeAttachMethod::PerfEventOpen => (AttachMethod::KprobePmu, chosen_by),
        KprobeAttachMethod::Tracefs => (AttachMethod::KprobeTracefs, chosen_by),
        KprobeAttachMethod::Default => (
            AttachMethod::KprobePmu,
            "the default where the kernel has the PMU",
        ),
    };
    match method {
        AttachMethod::KprobePmu if !has_pmu && has_events => (
            AttachMethod::KprobeTracefs,
            "this kernel has no kprobe PMU (Linux 4.17): tracefs kprobe_events instead",
        ),
        AttachMethod::KprobeTracefs if !has_events && has_pmu => (
            AttachMethod::KprobePmu,
            "tracefs has no kprobe_events here: the kprobe PMU instead (without maxactive)",
        ),
        _ => (method, why),
    }
}

/// Whether a kretprobe declared with `kprobe_max_active` and the PMU method goes through
/// tracefs instead (worth one line in the log per manager).
pub(crate) fn maxactive_overrides_pmu(
    probe: &Probe,
    default: KprobeAttachMethod,
    retprobe: bool,
) -> bool {
    let method = match probe.kprobe_attach_method {
        KprobeAttachMethod::Default => default,
        explicit => explicit,
    };
    retprobe && probe.kprobe_max_active > 0 && method == KprobeAttachMethod::PerfEventOpen
}

/// The error attaching to `symbol` gives when the function list lacks it; `None` when it has
/// it, or cannot be read (logged).
pub(crate) fn missing_symbol(
    id: &ProbeIdentificationPair,
    symbol: &str,
    functions: &mut LazyFunctions,
) -> Option<Error> {
    match functions.get() {
        Ok(index) if !index.contains(symbol) => Some(Error::SymbolNotFound {
            id: id.clone(),
            symbol: symbol.to_owned(),
            source_file: index.source().to_owned(),
        }),
        Ok(_) => None,
        Err(e) => {
            log::debug!(
                "cannot check that {symbol} exists: {}",
                crate::error::chain(&e)
            );
            None
        }
    }
}

/// Fails as attaching through `method` would when this kernel lacks it (`has_pmu`, and
/// `has_events` for tracefs `kprobe_events`): a missing symbol first, then no kprobes at all,
/// then the missing facility.
pub(crate) fn check_available(
    id: &ProbeIdentificationPair,
    symbol: &str,
    method: AttachMethod,
    has_pmu: bool,
    has_events: bool,
    functions: &mut LazyFunctions,
) -> Result<()> {
    let available = match method {
        AttachMethod::KprobePmu => has_pmu,
        _ => has_events,
    };
    if available {
        return Ok(());
    }
    if let Some(e) = missing_symbol(id, symbol, functions) {
        return Err(e);
    }
    if !has_pmu && !has_events {
        return Err(Error::KprobesUnsupported {
            id: id.clone(),
            hook: symbol.to_owned(),
        });
    }
    let cause = match method {
        AttachMethod::KprobePmu => {
            "this kernel has no kprobe PMU (Linux 4.17): use KprobeAttachMethod::Tracefs"
        }
        _ => {
            "tracefs has no kprobe_events: mount tracefs, or use KprobeAttachMethod::PerfEventOpen"
        }
    };
    Err(Error::Attach {
        id: id.clone(),
        hook: symbol.to_owned(),
        method,
        source: cause.into(),
    })
}

/// Attaches `prog` to `symbol`. The kernel's function list is read only when an attach fails,
/// to tell a missing symbol from another failure: reading it costs more than attaching.
pub(crate) fn attach(
    prog: &mut KProbe,
    id: &ProbeIdentificationPair,
    probe: &Probe,
    symbol: &str,
    default: KprobeAttachMethod,
    functions: &mut LazyFunctions,
) -> Result<(Link, AttachInfo)> {
    let retprobe = matches!(prog.kind(), ProbeKind::Return);
    let has_pmu = kernel::has_kprobe_pmu();
    let events = tracefs::root()
        .ok()
        .filter(|root| root.join("kprobe_events").exists());
    let (method, _) = choose_method(probe, default, retprobe, has_pmu, events.is_some());
    let info = AttachInfo {
        hook: symbol.to_owned(),
        method,
    };
    check_available(id, symbol, method, has_pmu, events.is_some(), functions)?;
    let attached = match method {
        AttachMethod::KprobePmu => prog
            .attach(symbol, 0)
            .and_then(|link_id| prog.take_link(link_id))
            .map(Link::KprobePmu)
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) }),
        _ => attach_tracefs(
            prog,
            events.expect("checked above"),
            symbol,
            retprobe,
            probe.kprobe_max_active,
        )
        .map(Link::KprobeTracefs)
        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) }),
    };
    match attached {
        Ok(link) => Ok((link, info)),
        Err(source) => Err(
            missing_symbol(id, symbol, functions).unwrap_or(Error::Attach {
                id: id.clone(),
                hook: symbol.to_owned(),
                method,
                source,
            }),
        ),
    }
}

fn attach_tracefs(
    prog: &KProbe,
    tracefs_root: &std::path::Path,
    symbol: &str,
    retprobe: bool,
    max_active: u32,
) -> std::io::Result<TracefsLink> {
    let prefix = match (retprobe, max_active) {
        (false, _) => "p".to_owned(),
        (true, 0) => "r".to_owned(),
        (true, n) => format!("r{n}"),
    };
    let event = tracefs::ProbeEvent::create(
        tracefs_root,
        "kprobe_events",
        &prefix,
        (retprobe, symbol),
        symbol,
    )?;
    let perf = perf::open_tracepoint(event.id)?;
    let prog_fd = prog.fd().map_err(std::io::Error::other)?;
    perf::attach_bpf(&perf, prog_fd.as_fd())?;
    Ok(TracefsLink {
        perf: Some(perf),
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(method: KprobeAttachMethod, max_active: u32) -> Probe {
        Probe {
            ebpf_func_name: "f".into(),
            kprobe_attach_method: method,
            kprobe_max_active: max_active,
            ..Default::default()
        }
    }

    #[test]
    fn method_choice() {
        use AttachMethod::*;
        use KprobeAttachMethod as K;
        let choose = |p: &Probe, default, ret, pmu| choose_method(p, default, ret, pmu, true).0;
        // PMU by default, tracefs when the PMU is absent.
        assert_eq!(
            choose(&probe(K::Default, 0), K::Default, false, true),
            KprobePmu
        );
        assert_eq!(
            choose(&probe(K::Default, 0), K::Default, false, false),
            KprobeTracefs
        );
        // maxactive on a kretprobe forces tracefs; on a kprobe it means nothing.
        assert_eq!(
            choose(&probe(K::Default, 8), K::Default, true, true),
            KprobeTracefs
        );
        assert_eq!(
            choose(&probe(K::Default, 8), K::Default, false, true),
            KprobePmu
        );
        // The manager's default applies to probes that leave theirs to Default ...
        assert_eq!(
            choose(&probe(K::Default, 0), K::Tracefs, false, true),
            KprobeTracefs
        );
        // ... and the probe's own choice wins.
        assert_eq!(
            choose(&probe(K::PerfEventOpen, 0), K::Tracefs, false, true),
            KprobePmu
        );
        // As in Go: PerfEventOpen with a maxactive on a kretprobe goes through tracefs ...
        assert_eq!(
            choose(&probe(K::PerfEventOpen, 8), K::Default, true, true),
            KprobeTracefs
        );
        assert_eq!(
            choose(&probe(K::Default, 512), K::PerfEventOpen, true, true),
            KprobeTracefs
        );
        assert!(maxactive_overrides_pmu(
            &probe(K::Default, 512),
            K::PerfEventOpen,
            true
        ));
        assert!(!maxactive_overrides_pmu(
            &probe(K::Default, 512),
            K::Default,
            true
        ));
        // ... and back to the PMU where tracefs has no kprobe_events.
        assert_eq!(
            choose_method(&probe(K::PerfEventOpen, 8), K::Default, true, true, false).0,
            KprobePmu
        );
        assert_eq!(
            choose_method(&probe(K::Tracefs, 0), K::Default, false, true, false).0,
            KprobePmu
        );
        // With neither facility the method stays; the attach says there are no kprobes.
        assert_eq!(
            choose_method(&probe(K::Tracefs, 0), K::Default, false, false, false).0,
            KprobeTracefs
        );
    }
}
