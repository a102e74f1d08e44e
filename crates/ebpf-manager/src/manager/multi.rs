//! Probes attached with [`KprobeAttachMethod::KprobeMulti`]: their program is loaded by the
//! pipeline's kprobe.multi path (`pipeline/multi.rs`) instead of aya, and attached with one
//! kprobe.multi link. The fallback to single kprobes and multi-function hooks are the scale
//! issue's; here a probe gets one link on its resolved function.

use std::os::fd::{AsFd, AsRawFd};

use super::State;
use crate::{
    kernel::bpf_prog,
    pipeline::multi::{self, MultiError},
    probe::{AttachInfo, AttachMethod, Hook, Link},
    ConstantEditor, Error, KprobeAttachMethod, Result,
};

impl State {
    /// Whether record `index` attaches through kprobe.multi.
    pub(super) fn wants_multi(&self, index: usize) -> bool {
        let record = &self.records[index];
        let method = match record.probe.kprobe_attach_method {
            KprobeAttachMethod::Default => self.default_kprobe_attach_method,
            explicit => explicit,
        };
        matches!(record.hook, Hook::Kprobe { .. }) && method == KprobeAttachMethod::KprobeMulti
    }

    /// Loads record `index`'s program for kprobe.multi, once.
    pub(super) fn load_multi(&mut self, index: usize) -> Result<()> {
        if self.records[index].multi.is_some() {
            return Ok(());
        }
        let record = &self.records[index];
        let (id, function) = (record.id.clone(), record.function.clone());
        let hook = match &record.hook {
            Hook::Kprobe { symbol, .. } => symbol.clone(),
            _ => String::new(),
        };
        let constants: Vec<&ConstantEditor> = self
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .chain(self.own_constants.get(&record.object).into_iter().flatten())
            .collect();
        let (bytes, _) = self.source.object.instantiate(&constants)?;
        let ebpf = self.objects[record.object]
            .as_ref()
            .expect("records point at loaded objects");
        let map_fds = ebpf
            .maps()
            .map(|(name, map)| {
                let fd = super::dump::data(map).fd().as_fd().as_raw_fd();
                (name.to_owned(), fd)
            })
            .collect();
        let btf = self.btf.get().ok();
        let fd =
            multi::load_kprobe_multi(&bytes, &map_fds, &function, btf).map_err(|e| match e {
                MultiError::Object(reason) => Error::InvalidProbe {
                    id: id.clone(),
                    reason: format!("loading `{function}` for kprobe.multi: {reason}"),
                },
                MultiError::Kernel(e) if !e.log.is_empty() => Error::Verifier {
                    id: id.clone(),
                    function: function.clone(),
                    source: e.source,
                    log: e.log,
                },
                // An attach type the kernel does not know (before 5.18).
                MultiError::Kernel(e) => Error::KprobeMultiUnsupported {
                    id: id.clone(),
                    hook: hook.clone(),
                    source: Box::new(e),
                },
            })?;
        self.records[index].multi = Some(fd);
        Ok(())
    }

    /// One kprobe.multi link of record `index`'s program on its function.
    pub(super) fn attach_multi(&mut self, index: usize) -> Result<(Link, AttachInfo)> {
        self.load_multi(index)?;
        let record = &self.records[index];
        let Hook::Kprobe { symbol, retprobe } = &record.hook else {
            unreachable!("wants_multi checked the hook");
        };
        let prog = record.multi.as_ref().expect("just loaded");
        let link = bpf_prog::kprobe_multi_link(prog.as_fd(), &[symbol.as_str()], None, *retprobe)
            .map_err(|e| match e.source.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT) => Error::KprobeMultiUnsupported {
                id: record.id.clone(),
                hook: symbol.clone(),
                source: Box::new(e),
            },
            _ => Error::Attach {
                id: record.id.clone(),
                hook: symbol.clone(),
                method: "a kprobe.multi link",
                source: Box::new(e),
            },
        })?;
        let info = AttachInfo {
            hook: symbol.clone(),
            method: AttachMethod::KprobeMulti,
        };
        Ok((Link::KprobeMulti(link), info))
    }
}
