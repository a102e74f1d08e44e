//! Programs that call kfuncs of modules. Such a call names its module by an index into the fd
//! array of `BPF_PROG_LOAD` (Linux 5.14; the pipeline writes it, `pipeline/ksyms.rs`), which
//! aya 0.14 does not pass: the kernel refuses aya's load (`kfunc offset > 0 without fd_array is
//! invalid`). The manager then loads the program itself with the array (`pipeline/multi.rs`)
//! and hands it to aya through a pin in a private bpffs (`loader::from_pin`), so that it
//! attaches, runs and unloads as any other. The same for a program whose CO-RE relocations
//! name types only a loaded module has: aya-obj relocated it against vmlinux alone, the
//! manager loads it against vmlinux's BTF with the module's.

use std::os::fd::{AsFd, AsRawFd};

use super::{table::ObjectKey, State};
use crate::{
    kernel::{instance::PrivateDir, module_btf},
    loader,
    pipeline::multi::{self, MultiError},
    Error, ProbeIdentificationPair, Result,
};

/// The verifier's words for a kfunc call of a module in a load without an fd array.
const NO_FD_ARRAY: &str = "without fd_array";

impl State {
    /// The fd array of the module BTFs kfunc calls index; empty without any.
    pub(super) fn fd_array(&self) -> Vec<i32> {
        if self.kfunc_btfs.is_empty() {
            return Vec::new();
        }
        // Slot 0 is vmlinux's and unused: module slots count from 1.
        std::iter::once(0)
            .chain(self.kfunc_btfs.iter().map(|fd| fd.as_raw_fd()))
            .collect()
    }

    /// Whether `e`, aya's load of a program, failed for want of the fd array this manager has:
    /// the verifier says so, or (its log off) the kernel's errno for it, `EPROTO`.
    fn wants_fd_array(&self, e: &Error) -> bool {
        !self.kfunc_btfs.is_empty()
            && matches!(e, Error::Verifier { log, source, .. }
                if log.contains(NO_FD_ARRAY) || source.raw_os_error() == Some(libc::EPROTO))
    }

    /// aya's load of `function` of `object` (for probe `id`) failed with `e`: loads it with
    /// the fd array of module BTFs when that is what it lacked, else returns `e` as the
    /// pipeline names it.
    pub(super) fn load_failed(
        &mut self,
        object: ObjectKey,
        function: &str,
        id: &ProbeIdentificationPair,
        e: Error,
    ) -> Result<()> {
        if self.wants_fd_array(&e) {
            return self.load_with_fd_array(object, function, id);
        }
        let e = self.source.object.name_load_error(e);
        // aya relocated against vmlinux only: a relocation of a type a module has is loaded
        // here, against vmlinux's BTF with that module's, when the manager can load it.
        let of_module = match &e {
            Error::CoreRelocation { relocation, .. } if !self.btf.is_given() => self
                .module_types()
                .is_some_and(|m| m.names.iter().any(|n| relocation.contains(n.as_str()))),
            _ => false,
        };
        if of_module && self.loadable_here(object, function).is_none() {
            return self.load_with_fd_array(object, function, id);
        }
        Err(e)
    }

    /// Why the manager cannot load `function` of `object` itself, if it cannot.
    fn loadable_here(&self, object: ObjectKey, function: &str) -> Option<String> {
        let section = self
            .elf
            .by_function(function)
            .map(|p| p.section.clone())
            .unwrap_or_default();
        let prog = self.objects.get(object).and_then(|o| o.program(function))?;
        not_loadable_here(prog, &section)
    }

    /// The BTF CO-RE relocations of the manager's own loads are resolved against: the user's
    /// (`Options::kernel_btf`), else the running kernel's with the types of the module that
    /// has the object's types vmlinux lacks, else the running kernel's; none without CO-RE.
    pub(super) fn core_target(&mut self) -> Option<&aya::Btf> {
        if !self.source.object.has_core() {
            return None;
        }
        if !self.btf.is_given() && self.module_types().is_some() {
            return self
                .module_core
                .as_ref()
                .and_then(Option::as_ref)
                .map(|m| &m.btf);
        }
        self.btf.get().ok()
    }

    /// vmlinux's BTF with the types of the loaded module that has the object's CO-RE types
    /// vmlinux lacks (libbpf searches modules' BTF so), found once; `None` when vmlinux has them
    /// all or no module has them.
    fn module_types(&mut self) -> Option<&ModuleTypes> {
        if self.module_core.is_none() {
            let names = crate::pipeline::diagnose::core_type_names(self.source.object.bytes());
            self.module_core = Some(with_module_types(&names));
        }
        self.module_core.as_ref().and_then(Option::as_ref)
    }

    /// Loads `function` of `object` with the fd array of module BTFs (and CO-RE against their
    /// types), in place of aya's load.
    fn load_with_fd_array(
        &mut self,
        object: ObjectKey,
        function: &str,
        id: &ProbeIdentificationPair,
    ) -> Result<()> {
        let (id, function) = (id.clone(), function.to_owned());
        if let Some(why) = self.loadable_here(object, &function) {
            return Err(Error::InvalidProbe {
                id,
                reason: format!(
                    "`{function}` calls kfuncs of modules, which need the fd array aya 0.14 \
                     does not pass; the manager loads such programs itself only when they \
                     need no attach type, BTF target or flags (kprobes, uprobes, \
                     tracepoints, raw tracepoints, perf events, socket filters, XDP and TC \
                     programs): {why}"
                ),
            });
        }
        let prog_type = self
            .objects
            .get(object)
            .and_then(|o| o.program(&function))
            .map(|p| aya_obj::generated::bpf_prog_type::from(p.prog_type()) as u32)
            .expect("records point at existing programs");
        let (bytes, map_fds) = self.raw_inputs(object)?;
        let fd_array = self.fd_array();
        let btf = self.core_target();
        let raw = multi::Raw {
            prog_type,
            attach_type: 0,
            fd_array: &fd_array,
            attach_btf_id: 0,
            flags: 0,
        };
        let fd = multi::load_raw(raw, &bytes, &map_fds, &function, btf).map_err(|e| match e {
            MultiError::Object(reason) => Error::InvalidProbe {
                id: id.clone(),
                reason: format!("loading `{function}` with the BTF of modules: {reason}"),
            },
            MultiError::Kernel(e) => self.source.object.name_load_error(Error::Verifier {
                id: id.clone(),
                function: function.clone(),
                source: e.source,
                log: e.log,
            }),
        })?;
        let dir = PrivateDir::create("kfunc").map_err(|source| Error::Bpffs {
            path: crate::kernel::instance::BPFFS.into(),
            reason: format!(
                "`{function}` calls kfuncs of modules: the manager loads it itself and hands it \
                 to aya through a pin, and has nowhere to pin it: {}",
                crate::error::chain(&source)
            ),
            fix: "run with CAP_SYS_ADMIN (a private bpffs instance, Linux 5.2), or mount \
                  bpffs: `mount -t bpf bpf /sys/fs/bpf`",
        })?;
        let path = dir.path().join("prog");
        module_btf::obj_pin(fd.as_fd(), &path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let prog = self
            .objects
            .get_mut(object)
            .and_then(|o| o.program_mut(&function))
            .expect("records point at existing programs");
        *prog = loader::from_pin(prog, &path, &id).map_err(|e| Error::InvalidProbe {
            id: id.clone(),
            reason: format!(
                "`{function}`, loaded with the BTF of modules, could not be handed to aya: {}",
                e.report()
            ),
        })?;
        // The pin and the directory go with `dir`; aya holds the program by its own fd.
        Ok(())
    }
}

/// vmlinux's BTF with one module's, for CO-RE relocations of types vmlinux lacks.
#[derive(Debug)]
pub(super) struct ModuleTypes {
    /// vmlinux's types, then the module's (those of a name vmlinux has made anonymous, so that
    /// a relocation vmlinux can satisfy finds vmlinux's alone, as libbpf looks in modules only
    /// for what vmlinux lacks).
    btf: aya::Btf,
    /// The object's CO-RE types found in the module.
    names: Vec<String>,
}

/// vmlinux's BTF merged with the split BTF of the loaded module that has the most of the
/// type `names` vmlinux lacks, parsed; `None` when vmlinux has them all, or no module any.
/// Types in a second module are not found.
fn with_module_types(names: &[String]) -> Option<ModuleTypes> {
    use crate::pipeline::{btf_read, split_btf};
    if names.is_empty() {
        return None;
    }
    let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    let view = btf_read::BtfView::parse(&vmlinux).ok()?;
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !split_btf::NAMED_TYPES
                .iter()
                .any(|&k| view.find(n, k).is_some())
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let base = split_btf::base(&vmlinux)?;
    let modules = module_btf::module_btfs().ok()?;
    let (module, found) = modules
        .iter()
        .map(|m| {
            let found: Vec<String> = missing
                .iter()
                .filter(|n| split_btf::type_id(&m.data, base, n, &split_btf::NAMED_TYPES).is_some())
                .map(|n| (*n).clone())
                .collect();
            (m, found)
        })
        .max_by_key(|(_, found)| found.len())?;
    if found.is_empty() {
        return None;
    }
    log::debug!(
        "CO-RE: {} of the types vmlinux lacks ({}) are in module {}",
        found.len(),
        missing
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        module.name
    );
    let shadowed = view.named(&split_btf::NAMED_TYPES);
    let merged = split_btf::merged(&vmlinux, &module.data, &shadowed)?;
    let btf = aya::Btf::parse(&merged, aya::Endianness::default()).ok()?;
    Some(ModuleTypes { btf, names: found })
}

/// Why the manager cannot load `prog` (of ELF section `section`) itself, if it cannot: its
/// type needs an expected attach type or a BTF target, or its section asks for flags
/// (sleepable `.s`, `xdp.frags`) that [`multi::load_raw`] does not pass.
fn not_loadable_here(prog: &aya::programs::Program, section: &str) -> Option<String> {
    use aya::programs::Program;
    let simple = matches!(
        prog,
        Program::KProbe(_)
            | Program::UProbe(_)
            | Program::TracePoint(_)
            | Program::RawTracePoint(_)
            | Program::PerfEvent(_)
            | Program::SocketFilter(_)
            | Program::Xdp(_)
            | Program::SchedClassifier(_)
    );
    let kind = section.split('/').next().unwrap_or_default();
    if !simple {
        Some(format!("this is a {} program", loader::type_name(prog)))
    } else if kind.ends_with(".s") || kind.contains("frags") {
        Some(format!("its section `{section}` asks for flags"))
    } else {
        None
    }
}
