//! `init`: the object through the pipeline, each probe matched to its program, the maps
//! created and the enabled programs loaded.

use std::collections::HashSet;

use super::{dump, pins, CleanupType, Manager, ManagerState, State};
use crate::{
    elf::ElfIndex, kernel::symbols::LazyFunctions, loader, pipeline, ConstantEditor, Error,
    MapEditor, Options, Probe, ProbeIdentificationPair, ProbesSelector, Result,
};

impl Manager {
    /// Loads the object with default [`Options`]. See [`init_with_options`](Self::init_with_options).
    pub fn init(&mut self, object: &[u8]) -> Result<()> {
        self.init_with_options(object, Options::default())
    }

    /// Parses the object, matches every probe to a program, resolves its hook point, creates
    /// the maps and loads the enabled programs into the kernel (the verifier runs here).
    ///
    /// `object` may have any alignment. On error, nothing stays loaded. With
    /// [`Options::activated_probes`], a program that fails to load only fails its probe, and
    /// `start` decides through the selectors; without, it fails `init`.
    pub fn init_with_options(&mut self, object: &[u8], options: Options) -> Result<()> {
        let start = std::time::Instant::now();
        crate::phases::begin();
        let result = self.init_timed(object, options);
        crate::phases::end(start.elapsed());
        result
    }

    fn init_timed(&mut self, object: &[u8], options: Options) -> Result<()> {
        self.expect("init", &[ManagerState::New])?;
        let object = loader::aligned_copy(object).unwrap_or_else(|| object.to_vec());
        // aya's loader (its kernel BTF parse) is made on a thread meanwhile.
        let ahead = loader::Ahead::start();
        let elf = ElfIndex::parse(&object).map_err(|reason| Error::InvalidObject { reason })?;
        let mut options = options;
        // As in Go, excluded probes vanish before programs are matched: the object may lack
        // their programs (they are excluded on this kernel for that reason).
        let excluded = &options.excluded_functions;
        let (declared, excluded_probes): (Vec<&Probe>, Vec<&Probe>) = self
            .probes
            .iter()
            .partition(|p| !excluded.contains(&p.ebpf_func_name));
        let (matched, by_section) = match_programs(declared, &elf)?
            .into_iter()
            .partition::<Vec<_>, _>(|(_, function, _)| !excluded.contains(function));
        let excluded_probes: Vec<ProbeIdentificationPair> = excluded_probes
            .into_iter()
            .map(Probe::id)
            .chain(by_section.iter().map(|(p, ..)| p.id()))
            .collect();
        drop_excluded_editors(&mut options.constant_editors, excluded);
        check_selectors(
            &options.activated_probes,
            matched
                .iter()
                .map(|(p, ..)| p.id())
                .chain(excluded_probes.iter().cloned()),
        )?;
        // Patterns and syscall names need the kernel's function list: its read (the kernel
        // generates it: tens of ms, hundreds in a slow VM) overlaps the object's preparation
        // and load on a thread, joined when resolution needs it.
        let functions = if matched.iter().any(|(p, _, s)| needs_function_list(p, s)) {
            LazyFunctions::prefetch()
        } else {
            LazyFunctions::default()
        };
        let mut btf = loader::KernelBtf::given(options.kernel_btf.as_ref(), ahead)?;
        let (ksyms, kfunc_btfs) = resolve_ksyms(&object, &mut btf)?;
        let prepared = crate::phases::time(crate::phases::Phase::Prepare, || {
            pipeline::prepare(
                &object,
                &elf,
                pipeline::Settings {
                    spec_editors: &options.map_spec_editors,
                    excluded_maps: &options.excluded_maps,
                    inner_outer: &options.inner_outer_map_specs,
                    patchers: options.instruction_patchers.clone(),
                    strict_constants: options.strict_constants,
                    bypass_enabled: options.bypass_enabled,
                    ksyms: &ksyms,
                },
            )
        })?;
        let matched = without_hidden(matched, &prepared, &options)?;
        let mut prepared = prepared;
        let constants_in_place =
            constants_in_place(&mut prepared, &options.constant_editors, &matched);
        let stats = options
            .enable_stats
            .then(|| {
                aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| Error::InvalidOption {
                    option: "enable_stats".into(),
                    reason: format!(
                        "{}: run statistics need Linux 5.8 and CAP_SYS_ADMIN",
                        crate::error::chain(&e)
                    ),
                })
            })
            .transpose()?;
        let source = loader::Source {
            object: prepared,
            verifier_log_level: options.verifier_log_level,
            map_pin_directory: options.map_pin_directory,
        };

        if !options.keep_memlock_rlimit {
            crate::kernel::lift_memlock_rlimit();
        }
        crate::kernel::lift_nofile_rlimit();
        log_unmatched_constant_editors(&options.constant_editors, &matched);
        // Per-probe editors apply to those probes' own copies, below.
        let constants: Vec<&ConstantEditor> = options
            .constant_editors
            .iter()
            .filter(|e| e.probes.is_empty())
            .collect();
        // Declared pins: reused when present (external), created by aya otherwise (internal).
        let pins: Vec<pins::Pin> = self
            .maps
            .iter()
            .filter_map(|m| m.pin_path.clone())
            .map(|path| pins::Pin {
                created: !path.exists(),
                path,
            })
            .collect();
        let pinned: Vec<MapEditor> = self
            .maps
            .iter()
            .filter_map(|m| {
                m.pin_path
                    .clone()
                    .map(|pin_path| MapEditor::pinned(&m.name, pin_path))
            })
            .collect();
        // Pins by name (`LIBBPF_PIN_BY_NAME`) outlive `stop`, as libbpf's do; only a failed
        // init removes the ones it created.
        let elsewhere: Vec<&str> = pinned
            .iter()
            .chain(&options.map_editors)
            .map(|m| m.name.as_str())
            .collect();
        let by_name: Vec<pins::Pin> = source
            .pins_by_name(&elsewhere)
            .into_iter()
            .map(|m| pins::Pin {
                created: !m.pin_path.exists(),
                path: m.pin_path,
            })
            .collect();
        pins::check_on_bpffs(
            pinned
                .iter()
                .chain(options.map_editors.iter().filter(|e| e.map.is_none()))
                .map(|e| e.pin_path.as_path())
                .chain(by_name.iter().map(|p| p.path.as_path()))
                .chain(matched.iter().filter_map(|(p, ..)| p.pin_path.as_deref())),
            options.mount_bpffs,
        )?;
        let ebpf = loader::load_object_pinning(
            &source,
            &mut btf,
            pipeline::Constants::every(&constants),
            &options.map_editors,
            &options.map_spec_editors,
            &pinned,
        )
        .inspect_err(|_| {
            // A failed init removes the pins it created, and only those.
            pins::remove(&pins, CleanupType::CleanInternal);
            pins::remove(&by_name, CleanupType::CleanInternal);
        })?;

        let mut state = State {
            phase: ManagerState::New,
            main_map_fds: dump::map_fds(&ebpf),
            source,
            own_constants: Default::default(),
            elf,
            objects: {
                let mut objects = super::table::Table::default();
                objects.push(ebpf);
                objects
            },
            records: super::table::Table::with_capacity(matched.len()),
            attached: Vec::new(),
            functions,
            btf,
            keep_kernel_btf: options.keep_kernel_btf,
            release_object_after_start: options.release_object_after_start,
            default_kprobe_attach_method: options.default_kprobe_attach_method,
            default_kprobe_max_active: options.default_kprobe_max_active,
            maxactive_noted: false,
            default_uprobe_attach_method: options.default_uprobe_attach_method,
            default_probe_retry: options.default_probe_retry,
            default_probe_retry_delay: options.default_probe_retry_delay,
            selectors: options.activated_probes,
            readers: crate::maps::Readers::new(options.reader_stop_timeout, !options.skip_aya_log),
            perf_maps: self
                .perf_maps
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    if p.perf_ring_pages == 0 {
                        p.perf_ring_pages = options.default_perf_ring_pages;
                    }
                    if p.watermark == 0 && p.wakeup_events == 0 {
                        p.watermark = options.default_watermark;
                    }
                    p
                })
                .collect(),
            ring_buffers: self.ring_buffers.clone(),
            excluded: options.excluded_functions,
            excluded_probes,
            constant_editors: options.constant_editors,
            constants_in_place,
            map_editors: options.map_editors,
            map_spec_editors: options.map_spec_editors,
            tail_call_router: options.tail_call_router,
            map_router: options.map_router,
            pins,
            stats,
            kfunc_btfs,
            struct_ops: Vec::new(),
            module_core: None,
        };
        let populated = state
            .populate(matched, options.load_unselected_probes)
            .and_then(|()| state.make_struct_ops(&object, &options.excluded_maps));
        if let Err(e) = populated {
            // Dropping `state` unloads what it loaded; the pins it created go too.
            pins::remove(&state.pins, CleanupType::CleanInternal);
            pins::remove(&by_name, CleanupType::CleanInternal);
            return Err(e);
        }
        state.phase = ManagerState::Initialized;
        self.state = state;
        Ok(())
    }
}

/// The per-probe constant editors written in place into the object, by index: an asm constant
/// whose every `ld_imm64` is in the programs of the probes the editor names, programs no other
/// probe uses. Go's `editConstant` edits such a program's instructions the same way; the probes
/// then need no copy of the object (another load, and a bpffs for the maps they share).
fn constants_in_place(
    prepared: &mut pipeline::Prepared,
    editors: &[ConstantEditor],
    matched: &[(Probe, String, String)],
) -> Vec<usize> {
    let mut in_place = Vec::new();
    for (i, editor) in editors.iter().enumerate() {
        if editor.probes.is_empty() {
            continue;
        }
        let functions: Vec<String> = matched
            .iter()
            .filter(|(p, ..)| editor.probes.contains(&p.id()))
            .map(|(_, function, _)| function.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let shared = matched.iter().any(|(p, function, _)| {
            functions.contains(function) && !editor.probes.contains(&p.id())
        });
        // Another per-probe editor of the constant for one of these probes: the copies keep
        // the editors' order (the later wins).
        let rival = editors.iter().enumerate().any(|(j, other)| {
            j != i
                && other.name == editor.name
                && other.probes.iter().any(|id| editor.probes.contains(id))
        });
        if !functions.is_empty() && !shared && !rival && prepared.scope(editor, &functions) {
            log::debug!(
                "constant `{}` written in place in {}",
                editor.name,
                functions.join(", ")
            );
            in_place.push(i);
        }
    }
    in_place
}

/// The object's `__ksym` externs, looked up in the running kernel (its BTF, parsed once for the
/// manager; `/proc/kallsyms` for untyped variables), with the fds of the module BTFs that kfunc
/// calls index, in fd array order (from 1).
type Ksyms = (
    Vec<(pipeline::ksyms::Extern, pipeline::ksyms::Resolved)>,
    Vec<std::os::fd::OwnedFd>,
);

fn resolve_ksyms(object: &[u8], btf: &mut loader::KernelBtf) -> Result<Ksyms> {
    use pipeline::ksyms::{self, Kind};
    let externs = ksyms::list(object)?;
    if externs.is_empty() {
        return Ok(Default::default());
    }
    let variables: Vec<&str> = externs
        .iter()
        .filter(|e| e.kind != Kind::Func)
        .map(|e| e.name.as_str())
        .collect();
    let addresses = if variables.is_empty() {
        Default::default()
    } else {
        crate::kernel::symbols::kallsyms_addresses(&variables)?
    };
    let mut resolved = ksyms::resolve(&externs, btf.running()?, &addresses);
    let fds = resolve_module_kfuncs(&mut resolved);
    Ok((resolved, fds))
}

/// The kfuncs vmlinux lacks, looked up in the BTF of loaded modules (as libbpf does): each
/// module a kfunc is found in takes the next slot of the fd array, from 1. Returns the fds of
/// those modules' BTF in slot order. A kfunc found nowhere stays missing.
fn resolve_module_kfuncs(
    resolved: &mut [(pipeline::ksyms::Extern, pipeline::ksyms::Resolved)],
) -> Vec<std::os::fd::OwnedFd> {
    use pipeline::ksyms::{self, Kind, Resolved, NO_KFUNC};
    use std::os::fd::AsRawFd;
    let unresolved = |(e, r): &(pipeline::ksyms::Extern, Resolved)| {
        e.kind == Kind::Func && *r == Resolved::Missing(NO_KFUNC)
    };
    if !resolved.iter().any(unresolved) {
        return Vec::new();
    }
    let mut modules = match crate::kernel::module_btf::module_btfs() {
        Ok(modules) if !modules.is_empty() => modules,
        Ok(_) => return Vec::new(),
        Err(e) => {
            log::debug!("module BTF not listed: {}", crate::error::chain(&e));
            for entry in resolved.iter_mut().filter(|e| unresolved(e)) {
                entry.1 = Resolved::Missing(ksyms::NO_KFUNC_UNLISTED);
            }
            return Vec::new();
        }
    };
    let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
    let Some(base) = pipeline::split_btf::base(&vmlinux) else {
        return Vec::new();
    };
    let mut slots: Vec<usize> = Vec::new();
    for entry in resolved.iter_mut() {
        if !unresolved(entry) {
            continue;
        }
        let found = modules.iter().enumerate().find_map(|(i, m)| {
            pipeline::split_btf::func_id(&m.data, base, &entry.0.name).map(|id| (i, id))
        });
        if let Some((module, id)) = found {
            let slot = match slots.iter().position(|&m| m == module) {
                Some(s) => s + 1,
                None => {
                    slots.push(module);
                    slots.len()
                }
            };
            log::debug!(
                "kfunc `{}` is in module {} (BTF id {id}, fd array slot {slot})",
                entry.0.name,
                modules[module].name
            );
            entry.1 = Resolved::ModuleFunc {
                id,
                slot: slot as u16,
                fd: modules[module].fd.as_raw_fd(),
            };
        }
    }
    let mut taken: Vec<Option<crate::kernel::module_btf::ModuleBtf>> =
        modules.drain(..).map(Some).collect();
    slots
        .iter()
        .filter_map(|&m| taken[m].take().map(|m| m.fd))
        .collect()
}

/// Per-probe constant editors lose the pairs of excluded functions, and go when none is
/// left (Go's `InitWithOptions` does the same): otherwise they would apply to every probe.
fn drop_excluded_editors(editors: &mut Vec<ConstantEditor>, excluded: &[String]) {
    editors.retain_mut(|editor| {
        if editor.probes.is_empty() {
            return true;
        }
        editor
            .probes
            .retain(|id| !excluded.contains(&id.ebpf_func_name));
        if editor.probes.is_empty() {
            log::debug!(
                "constant editor `{}` dropped: every probe it names is excluded",
                editor.name
            );
        }
        !editor.probes.is_empty()
    });
}

/// Each declared probe with the function and section of its program.
/// Whether resolving `probe`'s hook reads the kernel's function list: a pattern, a syscall
/// name, or a section whose target is a glob; an exact `hook_func_name` needs none.
fn needs_function_list(probe: &Probe, section: &str) -> bool {
    probe.hook_func_name.is_none()
        && (probe.attach_to_func_name.is_some()
            || probe.match_func_name.is_some()
            || probe.syscall_func_name.is_some()
            || section.contains(['*', '?', '[']))
}

fn match_programs(probes: Vec<&Probe>, elf: &ElfIndex) -> Result<Vec<(Probe, String, String)>> {
    let mut seen = HashSet::new();
    let mut matched = Vec::with_capacity(probes.len());
    for probe in probes {
        let id = probe.id();
        if !seen.insert(id.clone()) {
            return Err(Error::DuplicateProbe { id });
        }
        let (function, section) = match_program(probe, elf)?;
        matched.push((probe.clone(), function, section));
    }
    Ok(matched)
}

/// The function and section of a probe's program.
pub(crate) fn match_program(probe: &Probe, elf: &ElfIndex) -> Result<(String, String)> {
    let id = probe.id();
    let program = match (&probe.section, probe.ebpf_func_name.as_str()) {
        (None, "") => return Err(Error::NoProgramName { id }),
        (section, name) if !name.is_empty() => {
            let found = elf
                .by_function(name)
                .ok_or_else(|| Error::ProgramNotFound {
                    id: id.clone(),
                    name: name.to_owned(),
                    available: elf.functions(),
                })?;
            if let Some(section) = section.as_deref().filter(|s| *s != found.section) {
                return Err(Error::InvalidProbe {
                    id,
                    reason: format!(
                        "`{name}` is in section `{}`, not `{section}`: with ebpf_func_name set, \
                         section must name the program's own section (as in DataDog's Go \
                         library); to attach it elsewhere, leave section unset and name the \
                         hook with hook_func_name, attach_to_func_name or tracepoint_name \
                         (gojue/ebpfmanager's Section picks only the program type)",
                        found.section
                    ),
                });
            }
            found
        }
        (Some(section), _) => {
            let mut in_section = elf.in_section(section);
            let first = in_section.next().ok_or_else(|| Error::SectionNotFound {
                id: id.clone(),
                section: section.clone(),
                available: elf.sections(),
            })?;
            if in_section.next().is_some() {
                return Err(Error::AmbiguousSection {
                    id,
                    section: section.clone(),
                    functions: elf
                        .in_section(section)
                        .map(|p| p.function.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            first
        }
        (None, _) => unreachable!("an empty name without a section is handled above"),
    };
    Ok((program.function.clone(), program.section.clone()))
}

/// The matched probes without those whose program aya cannot load (see `pipeline`): an
/// enabled one is an error; a disabled or excluded one is left out with a log line.
fn without_hidden(
    matched: Vec<(Probe, String, String)>,
    prepared: &pipeline::Prepared,
    options: &Options,
) -> Result<Vec<(Probe, String, String)>> {
    let mut kept = Vec::with_capacity(matched.len());
    for (probe, function, section) in matched {
        let Some((_, reason)) = prepared.hidden(&function) else {
            kept.push((probe, function, section));
            continue;
        };
        let id = probe.id();
        let enabled = options.activated_probes.is_empty()
            || options
                .activated_probes
                .iter()
                .any(|s| s.probes().contains(&&id));
        if enabled && !options.excluded_functions.contains(&function) {
            return Err(Error::UnsupportedSection {
                id,
                function,
                section,
                reason,
            });
        }
        log::info!("probe {id} left out: `{function}` in `{section}` cannot be loaded ({reason})");
    }
    Ok(kept)
}

/// Constant editors may name probes that a later `clone_program` declares (as in Go): those
/// wait for it; a debug line says so, for typos.
fn log_unmatched_constant_editors(editors: &[ConstantEditor], matched: &[(Probe, String, String)]) {
    for editor in editors {
        for id in &editor.probes {
            if !matched.iter().any(|(p, ..)| &p.id() == id) {
                log::debug!(
                    "constant editor `{}` names {id}, which is not declared: it applies when clone_program declares it",
                    editor.name
                );
            }
        }
    }
}

/// Selectors may only name declared probes: a typo would otherwise pass silently in a
/// `BestEffort`.
pub(super) fn check_selectors(
    selectors: &[ProbesSelector],
    declared: impl Iterator<Item = ProbeIdentificationPair>,
) -> Result<()> {
    let declared: HashSet<ProbeIdentificationPair> = declared.collect();
    for selector in selectors {
        if let Some(unknown) = selector
            .probes()
            .into_iter()
            .find(|id| !declared.contains(id))
        {
            return Err(Error::InvalidOption {
                option: "activated_probes".into(),
                reason: format!("{selector} names {unknown}, which is not declared"),
            });
        }
    }
    Ok(())
}
