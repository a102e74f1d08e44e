//! Attaching one probe: the retry loop and the call of each program family's attach, on the
//! hook `init` resolved (records.rs keeps the records and their order).

use aya::programs::Program;

use super::{table::RecordKey, State};
use crate::{
    probe::{
        cgroup, kprobe, net, perf_event, tracepoint, tracing, uprobe, AttachInfo, Hook, Link,
        ProbeState,
    },
    Error, Result,
};

impl State {
    /// Attaches one record, trying again [`Probe::probe_retry`] more times, with
    /// [`Probe::probe_retry_delay`] between tries, while the kernel or the system refuses
    /// ([`Error::Attach`]); errors that another try cannot cure return at once. A failed try
    /// leaves nothing attached.
    pub(super) fn attach_one(&mut self, index: RecordKey) -> Result<()> {
        let (retries, delay) = {
            let p = &self.records[index].probe;
            (p.probe_retry, p.probe_retry_delay)
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match self.attach_once(index) {
                Err(e @ Error::Attach { .. }) if tries <= retries => {
                    log::info!(
                        "probe {}: attach try {tries} of {} failed, trying again in {delay:?}: {}",
                        self.records[index].id,
                        retries + 1,
                        e.report()
                    );
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }

    fn attach_once(&mut self, index: RecordKey) -> Result<()> {
        crate::fault::check("attach")?;
        if self.wants_multi(index) {
            let (link, info) = self.attach_multi(index)?;
            let record = &mut self.records[index];
            record.link = Some(link);
            record.attach = Some(info);
            record.state = ProbeState::Running;
            record.error = None;
            self.attached.push(index);
            return Ok(());
        }
        let State {
            objects,
            records,
            attached,
            functions,
            default_kprobe_attach_method,
            ..
        } = self;
        let record = &mut records[index];
        let prog = objects
            .get_mut(record.object)
            .and_then(|o| o.program_mut(&record.function))
            .expect("records point at existing programs");
        let id = &record.id;
        let (link, info) = match (&record.hook, prog) {
            (Hook::Kprobe { symbol, .. }, Program::KProbe(p)) => kprobe::attach(
                p,
                id,
                &record.probe,
                symbol,
                *default_kprobe_attach_method,
                functions,
            )?,
            (
                Hook::Kprobes {
                    pattern, symbols, ..
                },
                Program::KProbe(p),
            ) => {
                // One kprobe per function (no kprobe.multi here), undone if one fails; a
                // function the kernel will not probe is left out with a count, as the
                // blacklist is at init.
                let mut links = Vec::with_capacity(symbols.len());
                let mut method = None;
                let mut refused = Vec::new();
                for symbol in symbols {
                    let attached = kprobe::attach(
                        p,
                        id,
                        &record.probe,
                        symbol,
                        *default_kprobe_attach_method,
                        functions,
                    );
                    match attached {
                        Ok((link, info)) => {
                            links.push(link);
                            method = Some(info.method);
                        }
                        Err(e) if unprobeable(&e) => refused.push(e),
                        Err(e) => {
                            while let Some(link) = links.pop() {
                                drop(link);
                            }
                            return Err(e);
                        }
                    }
                }
                let Some(method) = method else {
                    return Err(refused.pop().expect("a function, attached or refused"));
                };
                if !refused.is_empty() {
                    log::info!(
                        "probe {id}: the kernel refused to probe {} of the {} functions matching `{pattern}`; left out",
                        refused.len(),
                        symbols.len()
                    );
                }
                let info = AttachInfo {
                    hook: format!("{pattern} ({} functions)", links.len()),
                    method,
                };
                (Link::Many(links), info)
            }
            (Hook::Tracepoint { category, name }, Program::TracePoint(p)) => {
                tracepoint::attach(p, id, category, name)?
            }
            (Hook::RawTracepoint { name }, Program::RawTracePoint(p)) => {
                tracepoint::attach_raw(p, id, name)?
            }
            (Hook::Uprobe(target), Program::UProbe(p)) if !target.all.is_empty() => {
                uprobe::attach_each(p, id, target)?
            }
            (Hook::Uprobe(target), Program::UProbe(p)) => uprobe::attach(p, id, target)?,
            (Hook::Btf { target, .. }, p) => tracing::attach(p, id, target)?,
            (Hook::PerfEvent(target), Program::PerfEvent(p)) => perf_event::attach(p, id, target)?,
            (Hook::Socket(fd), Program::SocketFilter(p)) => net::attach_socket(p, id, fd)?,
            (Hook::Net(target), Program::Xdp(p)) => net::attach_xdp(p, id, target)?,
            (Hook::Net(target), Program::SchedClassifier(p)) => net::attach_tc(p, id, target)?,
            (Hook::Cgroup(path), p) => cgroup::attach(p, id, path)?,
            (hook, prog) => unreachable!(
                "init resolved {hook:?} for a {} program",
                crate::loader::type_name(prog)
            ),
        };
        log::debug!(
            "probe {id} attached to {} through {}",
            info.hook,
            info.method
        );
        record.link = Some(link);
        record.attach = Some(info);
        record.state = ProbeState::Running;
        record.error = None;
        attached.push(index);
        Ok(())
    }
}

/// Whether an attach failed because the kernel will not probe that function (not an
/// instruction boundary, a notrace or kprobe-blacklisted function): the errno of the attach.
fn unprobeable(e: &Error) -> bool {
    let Error::Attach { source, .. } = e else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(c) = cause {
        if let Some(errno) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.raw_os_error())
        {
            return matches!(
                errno,
                libc::EADDRNOTAVAIL
                    | libc::EINVAL
                    | libc::ENOENT
                    | libc::EILSEQ
                    | libc::EOPNOTSUPP
                    | 524
            );
        }
        cause = c.source();
    }
    false
}
