//! [`ObjectInfo`]: what an object holds, read without the kernel: its programs (function,
//! section, the program type aya gives the section, whether it can load) and its maps, as the
//! manager sees them after its pipeline (Go-world section names and legacy map definitions
//! included); and [`ObjectInfo::resolve_hooks`], the hook each declared probe would get on
//! this kernel, with nothing loaded.

use crate::{
    elf::{ElfIndex, ElfProgram},
    kernel::{self, bpf_prog, symbols::LazyFunctions},
    pipeline,
    probe::{
        kprobe,
        resolve::{self, ProgKind},
        Hook,
    },
    AttachMethod, Error, KprobeAttachMethod, Options, Probe, ProbeIdentificationPair, Result,
    UprobeAttachMethod,
};

/// The programs and maps of an object ([`ObjectInfo::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectInfo {
    /// Its programs, in the object's order.
    pub programs: Vec<ObjectProgram>,
    /// Its maps, by name.
    pub maps: Vec<ObjectMap>,
}

/// One program of an [`ObjectInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectProgram {
    /// Its function: a probe's `ebpf_func_name`.
    pub function: String,
    /// Its section, as the object names it.
    pub section: String,
    /// The program type aya loads it as (`KProbe`, `TracePoint`, `Xdp`, ...), or `StructOps`
    /// for a program the manager loads for its struct_ops map; `None` when it cannot load (see
    /// `unloadable`).
    pub program_type: Option<String>,
    /// Why no probe can load it (aya 0.14 has no such program type, or it runs through a
    /// struct_ops map), when none can.
    pub unloadable: Option<String>,
    /// What resolving a hook needs of its type.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub(crate) kind: Option<ProgKind>,
}

/// One map of an [`ObjectInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectMap {
    /// Its name.
    pub name: String,
    /// `BPF_MAP_TYPE_*` as a number.
    pub map_type: u32,
    /// Its type as `bpftool map` names it (`hash`, `array`, `ringbuf`, ...); `None` for a
    /// number aya-obj 0.3 does not know.
    pub map_type_name: Option<String>,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// As declared (perf event arrays and ring buffers are sized at load).
    pub max_entries: u32,
    /// Whether the definition pins it by name (`LIBBPF_PIN_BY_NAME`).
    pub pinned_by_name: bool,
}

impl ObjectInfo {
    /// Reads `object`: the same checks as `init`, no kernel.
    ///
    /// ```no_run
    /// let info = ebpf_manager::ObjectInfo::parse(&std::fs::read("probes.bpf.o")?)?;
    /// for p in &info.programs {
    ///     println!("{} in {}", p.function, p.section);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(object: &[u8]) -> Result<Self> {
        let object = crate::loader::aligned_copy(object).unwrap_or_else(|| object.to_vec());
        let elf = ElfIndex::parse(&object).map_err(|reason| Error::InvalidObject { reason })?;
        let prepared = pipeline::prepare(&object, &elf, pipeline::Settings::default())?;
        let (bytes, _) = prepared.instantiate(pipeline::Constants::default())?;
        let parsed = aya_obj::Object::parse(&bytes).map_err(|e| Error::InvalidObject {
            reason: crate::error::chain(&e),
        })?;
        let programs = elf
            .programs
            .iter()
            .map(|p| {
                let unloadable = prepared
                    .hidden(&p.function)
                    .map(|(_, why)| (*why).to_owned());
                let section = parsed
                    .programs
                    .get(&p.function)
                    .filter(|_| unloadable.is_none())
                    .map(|prog| &prog.section);
                let program_type = section
                    .map(|section| {
                        let debug = format!("{section:?}");
                        debug
                            .split(|c: char| !c.is_alphanumeric())
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    // Not a probe, but loaded by the manager for its struct_ops map.
                    .or_else(|| {
                        prepared
                            .hidden(&p.function)
                            .filter(|(s, _)| s.starts_with("struct_ops"))
                            .map(|_| "StructOps".to_owned())
                    });
                ObjectProgram {
                    function: p.function.clone(),
                    section: p.section.clone(),
                    program_type,
                    unloadable,
                    kind: section.map(ProgKind::of_section),
                }
            })
            .collect();
        let mut maps: Vec<ObjectMap> = parsed
            .maps
            .iter()
            .filter(|(name, _)| !name.starts_with('.'))
            .map(|(name, m)| ObjectMap {
                name: name.clone(),
                map_type: m.map_type(),
                map_type_name: map_type_name(m.map_type()),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                pinned_by_name: prepared.pinned_by_name().contains(name),
            })
            .collect();
        // struct_ops maps, made by the manager (their value size is the kernel's: the object's
        // struct's here).
        let struct_ops =
            pipeline::struct_ops::specs(&object).map_err(|reason| Error::InvalidObject {
                reason: format!("its struct_ops maps: {reason}"),
            })?;
        maps.extend(struct_ops.into_iter().map(|s| ObjectMap {
            name: s.name,
            map_type: crate::kernel::struct_ops::MAP_TYPE,
            map_type_name: map_type_name(crate::kernel::struct_ops::MAP_TYPE),
            key_size: 4,
            value_size: s.size,
            max_entries: 1,
            pinned_by_name: false,
        }));
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { programs, maps })
    }
}

/// The hook a declared probe would get on this kernel ([`ObjectInfo::resolve_hooks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HookPreview {
    /// The probe.
    pub id: ProbeIdentificationPair,
    /// The function of the program it runs, when the object has one for it.
    pub function: Option<String>,
    /// Its hook, as [`ProbeStatus::hook`](crate::ProbeStatus::hook) shows it: the kernel
    /// function (for `syscall_func_name`, this architecture's wrapper), "N functions matching
    /// P" for a pattern, a tracepoint, `binary:symbol`; `None` for hooks that are not a name
    /// (network, cgroup, perf event, socket).
    pub hook: Option<String>,
    /// How it would attach, where the declaration and the kernel decide it.
    pub method: Option<AttachMethod>,
    /// Why that method, for kprobes and uprobes.
    pub why: Option<String>,
    /// Why it cannot be resolved: what `init` would fail with. A probe whose program is in
    /// [`Options::excluded_functions`] says so here.
    pub error: Option<String>,
}

impl ObjectInfo {
    /// The program `probe` runs, chosen as `init` chooses it: by `ebpf_func_name` (in
    /// `section`, when that is set too), else the only program of `section`; the error `init`
    /// gives otherwise ([`Error::ProgramNotFound`], [`Error::AmbiguousSection`], ...).
    pub fn program_of(&self, probe: &Probe) -> Result<&ObjectProgram> {
        let index = ElfIndex {
            programs: self
                .programs
                .iter()
                .map(|p| ElfProgram {
                    function: p.function.clone(),
                    section: p.section.clone(),
                })
                .collect(),
        };
        let (function, _) = crate::manager::match_program(probe, &index)?;
        Ok(self
            .programs
            .iter()
            .find(|p| p.function == function)
            .expect("matched among these programs"))
    }

    /// Resolves each of `probes` as `init` would on this kernel, with `options`' defaults and
    /// as if every probe were enabled (`init` lets a probe no selector enables keep a hook it
    /// cannot resolve): patterns against the kernel's functions, syscall names to this
    /// architecture's wrapper, tracepoints from sections, uprobe symbols in their binaries;
    /// for kprobes and uprobes, the attach method and why, and the errors `start` would give
    /// for a missing function or facility. Nothing of the object is loaded or attached; the
    /// kernel's function list is read, and whether it has kprobe.multi (Linux 5.18) and
    /// uprobe.multi (6.6) is probed as `start` probes it, by loading a two-instruction
    /// program (without the privileges `start` needs, that says no).
    ///
    /// ```no_run
    /// use ebpf_manager::{ObjectInfo, Options, Probe};
    ///
    /// let info = ObjectInfo::parse(&std::fs::read("probes.bpf.o")?)?;
    /// let probes = [Probe {
    ///     uid: "mkdir".into(),
    ///     ebpf_func_name: "kprobe_vfs_mkdir".into(),
    ///     ..Default::default()
    /// }];
    /// for p in info.resolve_hooks(&probes, &Options::default()) {
    ///     println!("{}: {:?} by {:?} ({:?})", p.id, p.hook, p.method, p.why);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resolve_hooks(&self, probes: &[Probe], options: &Options) -> Vec<HookPreview> {
        let mut functions = LazyFunctions::default();
        probes
            .iter()
            .map(|probe| self.resolve_one(probe, options, &mut functions))
            .collect()
    }

    fn resolve_one(
        &self,
        probe: &Probe,
        options: &Options,
        functions: &mut LazyFunctions,
    ) -> HookPreview {
        let id = probe.id();
        let mut preview = HookPreview {
            id: id.clone(),
            function: None,
            hook: None,
            method: None,
            why: None,
            error: None,
        };
        let program = match self.program_of(probe) {
            Ok(program) => program,
            Err(e) => {
                preview.error = Some(e.report().to_string());
                return preview;
            }
        };
        preview.function = Some(program.function.clone());
        let Some(kind) = program.kind else {
            preview.error = program.unloadable.clone();
            return preview;
        };
        if options.excluded_functions.contains(&program.function) {
            preview.error = Some(format!(
                "`{}` is in Options::excluded_functions",
                program.function
            ));
            return preview;
        }
        // The defaults `init` gives the manager's copy of the probe.
        let mut probe = probe.clone();
        if matches!(kind, ProgKind::Kprobe { retprobe: true }) && probe.kprobe_max_active == 0 {
            probe.kprobe_max_active = options.default_kprobe_max_active;
        }
        if probe.uprobe_attach_method == UprobeAttachMethod::Default {
            probe.uprobe_attach_method = options.default_uprobe_attach_method;
        }
        let hook = match resolve::hook(
            &id,
            &probe,
            &program.function,
            &program.section,
            kind,
            functions,
        ) {
            Ok(hook) => hook,
            Err(e) => {
                preview.error = Some(e.report().to_string());
                return preview;
            }
        };
        if let Hook::Unresolved(why) = &hook {
            // A template: init loads it, start fails to attach it.
            preview.error = Some(format!("{id}: loads, but attaching fails: {why}"));
            return preview;
        }
        preview.hook = hook.summary();
        match attach_method(&id, &probe, kind, &hook, options, functions) {
            Ok((method, why)) => {
                preview.method = method;
                preview.why = why;
            }
            Err(e) => preview.error = Some(e),
        }
        preview
    }
}

/// How a probe of `kind` on `hook` attaches, and why, as `start` decides it; `Err`, what
/// `start` would fail with.
fn attach_method(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    kind: ProgKind,
    hook: &Hook,
    options: &Options,
    functions: &mut LazyFunctions,
) -> std::result::Result<(Option<AttachMethod>, Option<String>), String> {
    let report = |e: Error| e.report().to_string();
    let asked = match probe.kprobe_attach_method {
        KprobeAttachMethod::Default => options.default_kprobe_attach_method,
        explicit => explicit,
    };
    let method = match (kind, hook) {
        (ProgKind::Kprobe { retprobe }, Hook::Kprobe { .. } | Hook::Kprobes { .. }) => {
            // A pattern attaches function by function where it takes no multi link: the first
            // is where `start` would fail.
            let (symbol, pattern) = match hook {
                Hook::Kprobe { symbol, .. } => (symbol.as_str(), false),
                Hook::Kprobes { symbols, .. } => (symbols.first().map_or("", String::as_str), true),
                _ => unreachable!("matched above"),
            };
            if !pattern {
                if let Some(e) = kprobe::missing_symbol(id, symbol, functions) {
                    return Err(report(e));
                }
            }
            // As `State::wants_multi` decides.
            let multi = bpf_prog::kprobe_multi_supported();
            if asked == KprobeAttachMethod::KprobeMulti {
                if !multi {
                    return Err(format!(
                        "probe {id}: kprobe_attach_method asks for a kprobe.multi link, which this \
                         kernel lacks (Linux 5.18 with CONFIG_FPROBE): start would fail"
                    ));
                }
                let why = "kprobe_attach_method asks for it";
                return Ok((Some(AttachMethod::KprobeMulti), Some(why.into())));
            }
            if pattern && asked == KprobeAttachMethod::Default && multi {
                let why = "one link for every match of the pattern: this kernel has kprobe.multi";
                return Ok((Some(AttachMethod::KprobeMulti), Some(why.into())));
            }
            let has_pmu = kernel::has_kprobe_pmu();
            let has_events =
                kernel::tracefs::root().is_ok_and(|root| root.join("kprobe_events").exists());
            let default = options.default_kprobe_attach_method;
            let (method, why) =
                kprobe::choose_method(probe, default, retprobe, has_pmu, has_events);
            kprobe::check_available(id, symbol, method, has_pmu, has_events, functions)
                .map_err(report)?;
            let why = match pattern {
                true => format!("{why}; one attachment per function (no kprobe.multi here)"),
                false => why.to_owned(),
            };
            return Ok((Some(method), Some(why)));
        }
        (ProgKind::Uprobe, Hook::Uprobe(target)) => {
            let (method, why) = match probe.uprobe_attach_method {
                UprobeAttachMethod::Tracefs => (
                    AttachMethod::UprobeTracefs,
                    "uprobe_attach_method is Tracefs",
                ),
                UprobeAttachMethod::Default | UprobeAttachMethod::PerfEventOpen
                    if !target.all.is_empty() && bpf_prog::uprobe_multi_supported() =>
                {
                    (
                        AttachMethod::UprobeMulti,
                        "one link for every match of the pattern: this kernel has uprobe.multi",
                    )
                }
                UprobeAttachMethod::Default | UprobeAttachMethod::PerfEventOpen => {
                    (AttachMethod::Uprobe, "the uprobe PMU (perf_event_open)")
                }
            };
            return Ok((Some(method), Some(why.into())));
        }
        (ProgKind::Tracepoint, _) => Some(AttachMethod::Tracepoint),
        (ProgKind::RawTracepoint, _) => Some(AttachMethod::RawTracepoint),
        (ProgKind::Tracing(_), _) => Some(AttachMethod::BtfLink),
        (ProgKind::PerfEvent, _) => Some(AttachMethod::PerfEvent),
        (ProgKind::SocketFilter, _) => Some(AttachMethod::SocketOption),
        (ProgKind::Cgroup(_), _) => Some(AttachMethod::Cgroup),
        (ProgKind::Xdp, _) => Some(AttachMethod::Xdp),
        // TCX or netlink: decided against the interface at start.
        (ProgKind::Tc, _)
        | (ProgKind::Kprobe { .. } | ProgKind::Uprobe | ProgKind::Other(_), _) => None,
    };
    Ok((method, None))
}

/// `hash` for `BPF_MAP_TYPE_HASH`: the kernel's name, lower case, without the prefix (nor
/// the `_DEPRECATED` the UAPI header gives the cgroup storage types, which bpftool leaves out).
fn map_type_name(map_type: u32) -> Option<String> {
    let known = aya_obj::generated::bpf_map_type::try_from(map_type).ok()?;
    let debug = format!("{known:?}");
    let name = debug.strip_prefix("BPF_MAP_TYPE_")?;
    Some(name.trim_end_matches("_DEPRECATED").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_and_maps_of_a_go_object_and_a_pinned_map() {
        let info =
            ObjectInfo::parse(include_bytes!("../../../ebpf-fixtures/gocompat.bpf.o")).unwrap();
        let xdp = info
            .programs
            .iter()
            .find(|p| p.section.starts_with("xdp/"))
            .expect("a Go-world xdp/ section");
        assert_eq!(xdp.program_type.as_deref(), Some("Xdp"), "{xdp:?}");
        assert!(!info.maps.is_empty());
        let info =
            ObjectInfo::parse(include_bytes!("../../../ebpf-fixtures/pinned.bpf.o")).unwrap();
        assert_eq!(info.programs.len(), 1);
        assert_eq!(info.programs[0].function, "count_mkdir");
        assert_eq!(
            info.programs[0].section,
            "tracepoint/syscalls/sys_enter_mkdir"
        );
        assert_eq!(info.programs[0].program_type.as_deref(), Some("TracePoint"));
        let map = &info.maps[0];
        assert_eq!(
            (
                map.name.as_str(),
                map.map_type,
                map.key_size,
                map.value_size,
                map.max_entries
            ),
            ("shared_counts", 2, 4, 8, 4)
        );
        assert_eq!(map.map_type_name.as_deref(), Some("array"));
        assert_eq!(map_type_name(27).as_deref(), Some("ringbuf"));
        assert_eq!(map_type_name(4).as_deref(), Some("perf_event_array"));
        assert_eq!(map_type_name(19).as_deref(), Some("cgroup_storage"));
        assert_eq!(map_type_name(9999), None);
        assert!(map.pinned_by_name);
        assert!(ObjectInfo::parse(b"not an object").is_err());
    }

    #[test]
    fn struct_ops_maps_and_their_programs_are_listed() {
        let info =
            ObjectInfo::parse(include_bytes!("../../../ebpf-fixtures/struct_ops.bpf.o")).unwrap();
        let map = info.maps.iter().find(|m| m.name == "ebpfm_cc").unwrap();
        assert_eq!(
            (
                map.map_type,
                map.map_type_name.as_deref(),
                map.key_size,
                map.max_entries
            ),
            (26, Some("struct_ops"), 4, 1)
        );
        assert!(map.value_size > 0);
        let program = info
            .programs
            .iter()
            .find(|p| p.function == "ebpfm_cc_ssthresh")
            .unwrap();
        assert_eq!(program.program_type.as_deref(), Some("StructOps"));
        assert!(
            program
                .unloadable
                .as_deref()
                .is_some_and(|w| w.contains("not probes")),
            "{program:?}"
        );
    }
}
