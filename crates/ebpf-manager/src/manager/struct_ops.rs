//! The object's struct_ops maps (`pipeline/struct_ops.rs` reads and lays them out): made at
//! `init` (their programs loaded by the manager, as aya 0.14 has no struct_ops programs, and
//! the map created with the kernel's value type), registered at `start`, unregistered at
//! `stop`. A map of `.struct_ops` is registered by its update and unregistered by a delete;
//! one of `.struct_ops.link` (Linux 6.4) by a link, which the kernel also removes when the
//! process dies. `pause` leaves them registered: the kernel registers a `.struct_ops` map once.

use std::os::fd::{AsFd, OwnedFd};

use super::{table::ObjectKey, State};
use crate::{
    kernel::struct_ops as sys,
    pipeline::{
        btf_read::BtfView,
        multi::{self, MultiError},
        struct_ops::{self, Spec},
    },
    Error, Result,
};

/// One struct_ops map made by `init`.
#[derive(Debug)]
pub(super) struct StructOps {
    pub(super) name: String,
    type_name: String,
    link: bool,
    pub(super) map: OwnedFd,
    /// The value with the programs' fds in their slots.
    value: Vec<u8>,
    /// What the map is made with (again, after a failed `start`): the kernel's value type, and
    /// the object's BTF the kernel wants beside it.
    value_type_id: u32,
    object_btf: OwnedFd,
    /// The programs, held until `stop` (the registered map holds them too).
    _programs: Vec<OwnedFd>,
    registered: Option<Registration>,
    /// Whether the map took its value (registered, or readied for a link).
    written: bool,
}

#[derive(Debug)]
enum Registration {
    /// `.struct_ops`: undone by a delete.
    Update,
    /// `.struct_ops.link`: undone by closing the link.
    Link(#[allow(dead_code)] OwnedFd),
}

fn failed(spec: &Spec, reason: String, source: Option<std::io::Error>) -> Error {
    Error::StructOps {
        map: spec.name.clone(),
        type_name: spec.type_name.clone(),
        reason,
        source,
    }
}

/// The running kernel's BTF, read raw: the ids struct_ops maps and programs name are its own.
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

impl State {
    /// Makes the struct_ops maps of `object` (the user's bytes) but the excluded ones; their
    /// programs but the excluded functions are loaded, the other members of their pointers
    /// stay null.
    pub(super) fn make_struct_ops(
        &mut self,
        object: &[u8],
        excluded_maps: &[String],
    ) -> Result<()> {
        // A struct_ops map points to struct_ops programs: without any, the object is not read
        // again.
        if !self
            .elf
            .programs
            .iter()
            .any(|p| p.section.starts_with("struct_ops"))
        {
            return Ok(());
        }
        let specs = struct_ops::specs(object).map_err(|reason| Error::InvalidObject {
            reason: format!("its struct_ops maps: {reason}"),
        })?;
        let specs: Vec<Spec> = specs
            .into_iter()
            .filter(|s| !excluded_maps.contains(&s.name))
            .collect();
        if specs.is_empty() {
            return Ok(());
        }
        let vmlinux = std::fs::read(VMLINUX).map_err(|e| {
            failed(
                &specs[0],
                format!(
                    "struct_ops needs the running kernel's BTF ({VMLINUX}, Linux 5.5 with \
                     CONFIG_DEBUG_INFO_BTF), which cannot be read"
                ),
                Some(e),
            )
        })?;
        let kernel = BtfView::parse(&vmlinux)
            .map_err(|e| failed(&specs[0], format!("{VMLINUX}: {e}"), None))?;
        for spec in &specs {
            let made = self.make_one(spec, &kernel)?;
            self.struct_ops.push(made);
        }
        Ok(())
    }

    fn make_one(&mut self, spec: &Spec, kernel: &BtfView<'_>) -> Result<StructOps> {
        let plan =
            struct_ops::plan(spec, kernel, &self.excluded).map_err(|r| failed(spec, r, None))?;
        let sleepable: Vec<bool> = plan
            .programs
            .iter()
            .map(|(f, ..)| {
                self.source
                    .object
                    .hidden(f)
                    .is_some_and(|(section, _)| section.starts_with("struct_ops.s/"))
            })
            .collect();
        let (bytes, map_fds) = self.raw_inputs(ObjectKey::MAIN)?;
        let fd_array = self.fd_array();
        let btf = self.core_target();
        let raws: Vec<(multi::Raw<'_>, &str)> = plan
            .programs
            .iter()
            .zip(&sleepable)
            .map(|((function, index, _), &sleepable)| {
                let raw = multi::Raw {
                    prog_type: sys::PROG_TYPE,
                    attach_type: *index,
                    fd_array: &fd_array,
                    attach_btf_id: plan.type_id,
                    flags: if sleepable { sys::F_SLEEPABLE } else { 0 },
                };
                (raw, function.as_str())
            })
            .collect();
        let (programs, object_btf) =
            multi::load_several(&raws, &bytes, &map_fds, btf).map_err(|(function, e)| match e {
                MultiError::Object(reason) if function.is_empty() => failed(
                    spec,
                    format!("the object could not be prepared for its programs: {reason}"),
                    None,
                ),
                MultiError::Object(reason) => failed(
                    spec,
                    format!("its program `{function}` could not be prepared: {reason}"),
                    None,
                ),
                MultiError::Kernel(e) => failed(
                    spec,
                    format!(
                        "the kernel refused its program `{function}`{}",
                        if e.log.is_empty() {
                            String::new()
                        } else {
                            format!("; the verifier said:\n{}", e.log.trim_end())
                        }
                    ),
                    Some(e.source),
                ),
            })?;
        let object_btf = object_btf.ok_or_else(|| {
            failed(
                spec,
                "the kernel would not load the object's BTF, which a struct_ops map needs beside \
                 the kernel's"
                    .into(),
                None,
            )
        })?;
        let map = create(
            &spec.name,
            &spec.type_name,
            plan.value_type_id,
            plan.value.len(),
            spec.link,
            object_btf.as_fd(),
        )?;
        let mut value = plan.value.clone();
        for ((_, _, at), fd) in plan.programs.iter().zip(&programs) {
            let fd = std::os::fd::AsRawFd::as_raw_fd(fd) as u64;
            value[*at..*at + 8].copy_from_slice(&fd.to_ne_bytes());
        }
        log::debug!(
            "struct_ops map `{}` (struct {}) made with {} programs",
            spec.name,
            spec.type_name,
            programs.len()
        );
        Ok(StructOps {
            name: spec.name.clone(),
            type_name: spec.type_name.clone(),
            link: spec.link,
            map,
            value,
            value_type_id: plan.value_type_id,
            object_btf,
            _programs: programs,
            registered: None,
            written: false,
        })
    }

    /// Registers every struct_ops map; on a failure, unregisters the ones it registered and
    /// makes them again, so that `start` may be called again.
    pub(super) fn register_struct_ops(&mut self) -> Result<()> {
        for i in 0..self.struct_ops.len() {
            if let Err(e) = register(&mut self.struct_ops[i]) {
                self.unregister_struct_ops(true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unregisters every registered struct_ops map, last first; with `renew`, each map the
    /// kernel was given its value is made again (the kernel takes a struct_ops value once: a
    /// second update is EBUSY).
    pub(super) fn unregister_struct_ops(&mut self, renew: bool) {
        for s in self.struct_ops.iter_mut().rev() {
            s.unregister();
            if !(renew && s.written) {
                continue;
            }
            match s.remake() {
                Ok(()) => s.written = false,
                Err(e) => log::warn!("struct_ops map `{}` not made again: {}", s.name, e.report()),
            }
        }
    }
}

impl StructOps {
    /// Replaces the map with a new one, made as the first was.
    fn remake(&mut self) -> Result<()> {
        self.map = create(
            &self.name,
            &self.type_name,
            self.value_type_id,
            self.value.len(),
            self.link,
            self.object_btf.as_fd(),
        )?;
        Ok(())
    }

    fn unregister(&mut self) {
        match self.registered.take() {
            Some(Registration::Update) => {
                if let Err(e) = sys::delete(self.map.as_fd()) {
                    log::warn!("unregistering struct_ops map `{}`: {e}", self.name);
                }
            }
            Some(Registration::Link(link)) => drop(link),
            None => {}
        }
    }
}

/// A map registered by its update stays registered when its fds close: dropping it unregisters.
impl Drop for StructOps {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Creates struct_ops map `name` (see [`sys::map_create`]), the error saying what to do.
fn create(
    name: &str,
    type_name: &str,
    value_type_id: u32,
    value_size: usize,
    link: bool,
    object_btf: std::os::fd::BorrowedFd<'_>,
) -> Result<OwnedFd> {
    sys::map_create(name, value_type_id, value_size as u32, link, object_btf).map_err(|e| {
        let before_links = aya::util::KernelVersion::current()
            .is_ok_and(|v| v < aya::util::KernelVersion::new(6, 4, 0));
        let reason = if link && before_links {
            "the kernel refused to create it: a map in `.struct_ops.link` is registered by a \
             link, which came in Linux 6.4; on older kernels put it in `.struct_ops`"
        } else {
            "the kernel refused to create it (struct_ops maps came in Linux 5.6)"
        };
        Error::StructOps {
            map: name.to_owned(),
            type_name: type_name.to_owned(),
            reason: reason.to_owned(),
            source: Some(e.source),
        }
    })
}

fn register(s: &mut StructOps) -> Result<()> {
    if s.registered.is_some() {
        return Ok(());
    }
    let (name, type_name) = (s.name.clone(), s.type_name.clone());
    let error = |e: crate::kernel::bpf_prog::BpfError, what: &str| {
        let reason = if e.source.raw_os_error() == Some(libc::EEXIST) {
            "registering it failed: the kernel already has a struct_ops of this name registered"
                .to_owned()
        } else {
            format!("registering it failed: the kernel refused {what}")
        };
        Error::StructOps {
            map: name.clone(),
            type_name: type_name.clone(),
            reason,
            source: Some(e.source),
        }
    };
    if !s.written {
        sys::update(s.map.as_fd(), &s.value)
            .map_err(|e| error(e, "the value (its members, or the programs for them)"))?;
        s.written = true;
    }
    s.registered = Some(if s.link {
        Registration::Link(sys::link_create(s.map.as_fd()).map_err(|e| error(e, "its link"))?)
    } else {
        Registration::Update
    });
    log::debug!("struct_ops map `{}` registered", s.name);
    Ok(())
}
