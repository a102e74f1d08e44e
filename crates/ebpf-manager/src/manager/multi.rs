//! Probes attached with [`KprobeAttachMethod::KprobeMulti`]: their program is loaded by the
//! pipeline's kprobe.multi path (`pipeline/multi.rs`) instead of aya, and attached with one
//! kprobe.multi link. The fallback to single kprobes and multi-function hooks are the scale
//! issue's; here a probe gets one link on its resolved function.

use super::table::{ObjectKey, RecordKey};
use std::os::fd::{AsFd, AsRawFd};

use super::State;
use crate::{
    kernel::bpf_prog,
    pipeline::multi::{self, MultiError},
    probe::{AttachInfo, AttachMethod, Hook, Link},
    ConstantEditor, Error, KprobeAttachMethod, Result,
};

impl State {
    /// Whether record `index` attaches through kprobe.multi: when asked, or for a probe on
    /// every match of a pattern where the kernel has kprobe.multi.
    pub(super) fn wants_multi(&self, index: RecordKey) -> bool {
        let record = &self.records[index];
        let method = match record.probe.kprobe_attach_method {
            KprobeAttachMethod::Default => self.default_kprobe_attach_method,
            explicit => explicit,
        };
        match &record.hook {
            // A uprobe declared for tracefs keeps its tracefs events, one per function.
            Hook::Uprobe(target) => {
                !target.all.is_empty()
                    && target.method != crate::UprobeAttachMethod::Tracefs
                    && bpf_prog::uprobe_multi_supported()
            }
            Hook::Kprobe { .. } => method == KprobeAttachMethod::KprobeMulti,
            Hook::Kprobes { .. } => {
                method == KprobeAttachMethod::KprobeMulti
                    || (method == KprobeAttachMethod::Default && bpf_prog::kprobe_multi_supported())
            }
            _ => false,
        }
    }

    /// What a load below aya takes for a program of `object`: the bytes as instantiated for
    /// that object, and its map fds by name.
    pub(super) fn raw_inputs(
        &self,
        object: ObjectKey,
    ) -> Result<(
        Vec<u8>,
        std::collections::HashMap<String, std::os::fd::RawFd>,
    )> {
        let every: Vec<&ConstantEditor> = self
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .collect();
        let own: Vec<&ConstantEditor> = self
            .own_constants
            .get(&object)
            .into_iter()
            .flatten()
            .collect();
        let (bytes, _) = self.source.object.instantiate(crate::pipeline::Constants {
            every: &every,
            own: &own,
        })?;
        let map_fds = if object == ObjectKey::MAIN {
            self.main_map_fds
                .iter()
                .map(|(name, fd)| (name.clone(), fd.as_raw_fd()))
                .collect()
        } else {
            let ebpf = self
                .objects
                .get(object)
                .expect("records point at loaded objects");
            ebpf.maps()
                .map(|(name, map)| {
                    let fd = super::dump::data(map).fd().as_fd().as_raw_fd();
                    (name.to_owned(), fd)
                })
                .collect()
        };
        Ok((bytes, map_fds))
    }

    /// Loads record `index`'s program for kprobe.multi, once.
    pub(super) fn load_multi(&mut self, index: RecordKey) -> Result<()> {
        if self.records[index].multi.is_some() {
            return Ok(());
        }
        let record = &self.records[index];
        let (id, function) = (record.id.clone(), record.function.clone());
        let hook = hook_name(&record.hook);
        let attach_type = match record.hook {
            Hook::Uprobe(_) => bpf_prog::TRACE_UPROBE_MULTI,
            _ => bpf_prog::TRACE_KPROBE_MULTI,
        };
        let (bytes, map_fds) = self.raw_inputs(self.records[index].object)?;
        let fd_array = self.fd_array();
        let btf = self.core_target();
        let fd = multi::load_multi(attach_type, &fd_array, &bytes, &map_fds, &function, btf)
            .map_err(|e| match e {
                MultiError::Object(reason) => Error::InvalidProbe {
                    id: id.clone(),
                    reason: format!("loading `{function}` for kprobe.multi: {reason}"),
                },
                MultiError::Kernel(e) if !e.log.is_empty() => {
                    self.source.object.name_load_error(Error::Verifier {
                        id: id.clone(),
                        function: function.clone(),
                        source: e.source,
                        log: e.log,
                    })
                }
                // An attach type the kernel does not know (before 5.18).
                MultiError::Kernel(e) if !bpf_prog::kprobe_multi_supported() => {
                    Error::KprobeMultiUnsupported {
                        id: id.clone(),
                        hook: hook.clone(),
                        source: Box::new(e),
                    }
                }
                MultiError::Kernel(e) => Error::Attach {
                    id: id.clone(),
                    hook: hook.clone(),
                    method: if attach_type == bpf_prog::TRACE_UPROBE_MULTI {
                        AttachMethod::UprobeMulti
                    } else {
                        AttachMethod::KprobeMulti
                    },
                    source: Box::new(e),
                },
            })?;
        self.records[index].multi = Some(fd);
        Ok(())
    }

    /// One kprobe.multi (or uprobe.multi) link of record `index`'s program on its function(s).
    pub(super) fn attach_multi(&mut self, index: RecordKey) -> Result<(Link, AttachInfo)> {
        self.load_multi(index)?;
        let record = &self.records[index];
        if let Hook::Uprobe(target) = &record.hook {
            return self.attach_uprobe_multi(index, target);
        }
        let (symbols, retprobe) = match &record.hook {
            Hook::Kprobe { symbol, retprobe } => (vec![symbol.as_str()], *retprobe),
            Hook::Kprobes {
                symbols, retprobe, ..
            } => (symbols.iter().map(String::as_str).collect(), *retprobe),
            _ => unreachable!("wants_multi checked the hook"),
        };
        let cookies: Option<Vec<u64>> = (!record.probe.function_cookies.is_empty()).then(|| {
            let cookie = |f: &str| {
                let found = record.probe.function_cookies.iter().find(|(n, _)| n == f);
                found.map_or(0, |&(_, c)| c)
            };
            symbols.iter().map(|f| cookie(f)).collect()
        });
        let hook = hook_name(&record.hook);
        let prog = record.multi.as_ref().expect("just loaded");
        let link =
            bpf_prog::kprobe_multi_link(prog.as_fd(), &symbols, cookies.as_deref(), retprobe)
                .map_err(|e| {
                    if bpf_prog::kprobe_multi_supported() {
                        Error::Attach {
                            id: record.id.clone(),
                            hook: hook.clone(),
                            method: AttachMethod::KprobeMulti,
                            source: Box::new(e),
                        }
                    } else {
                        Error::KprobeMultiUnsupported {
                            id: record.id.clone(),
                            hook: hook.clone(),
                            source: Box::new(e),
                        }
                    }
                })?;
        log::debug!(
            "probe {}: one kprobe.multi link on {} function(s)",
            record.id,
            symbols.len()
        );
        let info = AttachInfo {
            hook,
            method: AttachMethod::KprobeMulti,
        };
        Ok((Link::KprobeMulti(link), info))
    }
}

impl State {
    fn attach_uprobe_multi(
        &self,
        index: RecordKey,
        target: &crate::probe::uprobe::Target,
    ) -> Result<(Link, AttachInfo)> {
        let record = &self.records[index];
        let retprobe = matches!(
            self.objects.get(record.object)
                .and_then(|o| o.program(&record.function)),
            Some(aya::programs::Program::UProbe(p)) if matches!(p.kind(), aya::programs::ProbeKind::Return)
        );
        let offsets: Vec<u64> = target.all.iter().map(|&(_, o)| o).collect();
        let cookies: Option<Vec<u64>> = (!record.probe.function_cookies.is_empty()).then(|| {
            target
                .all
                .iter()
                .map(|(f, _)| {
                    let found = record.probe.function_cookies.iter().find(|(n, _)| n == f);
                    found.map_or(0, |&(_, c)| c)
                })
                .collect()
        });
        let prog = record.multi.as_ref().expect("loaded by attach_multi");
        let hook = target.describe();
        let link = bpf_prog::uprobe_multi_link(
            prog.as_fd(),
            &target.binary,
            &offsets,
            cookies.as_deref(),
            retprobe,
            target.pid,
        )
        .map_err(|e| Error::Attach {
            id: record.id.clone(),
            hook: hook.clone(),
            method: AttachMethod::UprobeMulti,
            source: Box::new(e),
        })?;
        let info = AttachInfo {
            hook,
            method: AttachMethod::UprobeMulti,
        };
        Ok((Link::KprobeMulti(link), info))
    }
}

/// The hook as [`AttachInfo::hook`] shows it: the function, or the pattern and how many
/// functions it matched.
pub(super) fn hook_name(hook: &Hook) -> String {
    match hook {
        Hook::Uprobe(target) => target.describe(),
        Hook::Kprobe { symbol, .. } => symbol.clone(),
        Hook::Kprobes {
            pattern, symbols, ..
        } => format!("{pattern} ({} functions)", symbols.len()),
        _ => String::new(),
    }
}
