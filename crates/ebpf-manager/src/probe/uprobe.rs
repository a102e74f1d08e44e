//! Uprobes and uretprobes (Linux 4.17 for the uprobe PMU): a function of an executable or
//! shared library, by symbol (an exact name or a glob over its symbol table) and/or offset.

use std::path::{Path, PathBuf};

use super::{
    binary_symbols, pattern::Pattern, AttachInfo, AttachMethod, Link, Probe, UprobeAttachMethod,
};
use crate::{
    kernel::{perf, tracefs},
    Error, ProbeIdentificationPair, Result,
};
use aya::programs::{uprobe::UProbeScope, UProbe};

/// What a uprobe attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) binary: PathBuf,
    symbol: Option<String>,
    offset: u64,
    pub(crate) pid: Option<u32>,
    /// With [`Probe::match_all_functions`]: every function the pattern matches, with its file
    /// offset (what uprobe.multi links take).
    pub(crate) all: Vec<(String, u64)>,
    pattern: Option<String>,
    /// The PMU or tracefs `uprobe_events` (never `Default`: the manager's default is applied).
    pub(crate) method: UprobeAttachMethod,
    /// The file offset of `symbol`, when already known (one function of `all`): tracefs then
    /// does not read the binary again.
    symbol_offset: Option<u64>,
}

impl Target {
    pub(crate) fn describe(&self) -> String {
        if let Some(pattern) = self.pattern.as_ref().filter(|_| !self.all.is_empty()) {
            return format!(
                "{}:{pattern} ({} functions)",
                self.binary.display(),
                self.all.len()
            );
        }
        match (&self.symbol, self.offset) {
            (Some(s), 0) => format!("{}:{s}", self.binary.display()),
            (Some(s), o) => format!("{}:{s}+{o:#x}", self.binary.display()),
            (None, o) => format!("{}:{o:#x}", self.binary.display()),
        }
    }
}

/// The function symbols an ELF file defines, in symbol table order (`.symtab`, then
/// `.dynsym`), without undefined imports.
pub fn elf_functions(binary: &Path) -> std::io::Result<Vec<String>> {
    Ok(binary_symbols::functions(binary)?
        .list
        .iter()
        .map(|(name, _)| name.clone())
        .collect())
}

/// The uprobe target of a probe: `binary_path` (else the binary of a libbpf-style
/// `uprobe/<path>:<function>` section), then `hook_func_name`, else an `attach_to_func_name`
/// pattern over the binary's symbols, else the section's function, else `uprobe_offset` alone.
/// A `uprobe.multi/<path>:<glob>` section means every function its glob matches, as in libbpf
/// (and as `match_all_functions` does), unless the probe names its own function.
pub(crate) fn resolve(
    id: &ProbeIdentificationPair,
    probe: &Probe,
    section: &str,
    section_target: Option<&str>,
) -> Result<Target> {
    let invalid = |reason: String| Error::InvalidProbe {
        id: id.clone(),
        reason,
    };
    // libbpf splits `<path>:<function>` at the first colon.
    let (section_binary, section_function) = match section_target.and_then(|t| t.split_once(':')) {
        Some((path, function)) if !path.is_empty() => (Some(PathBuf::from(path)), Some(function)),
        _ => (
            None,
            // A bare name only: another `/` or `:` is no function of ours to look up.
            section_target.filter(|t| !t.contains(['/', ':'])),
        ),
    };
    let binary = probe.binary_path.clone().or(section_binary).ok_or_else(|| {
        invalid(
            "a uprobe needs binary_path, or a section `uprobe/<path>:<function>`: the executable or library to probe"
                .into(),
        )
    })?;
    // 0 is every process, as in Go (`perf_event_open` would read it as the caller).
    let pid = probe
        .uprobe_pid
        .or(probe.perf_event_pid)
        .filter(|&pid| pid != 0);
    let method = match probe.uprobe_attach_method {
        UprobeAttachMethod::Default => UprobeAttachMethod::PerfEventOpen,
        explicit => explicit,
    };
    if !binary.exists() {
        return Err(invalid(format!(
            "binary_path {} does not exist",
            binary.display()
        )));
    }
    let multi_section = matches!(
        section.split_once('/').map(|(kind, _)| kind),
        Some("uprobe.multi" | "uretprobe.multi" | "uprobe.multi.s" | "uretprobe.multi.s")
    );
    let names_a_function = probe.hook_func_name.is_some()
        || probe.attach_to_func_name.is_some()
        || probe.match_func_name.is_some();
    let section_glob = section_function.filter(|_| multi_section && !names_a_function);
    if probe.match_all_functions || section_glob.is_some() {
        let compiled = match section_glob {
            Some(glob) if !probe.match_all_functions => Pattern::of_section(id, Some(glob))?,
            _ => Pattern::of(id, probe)?,
        };
        let Some(compiled) = compiled else {
            return Err(invalid(
                "match_all_functions needs a pattern: set attach_to_func_name or match_func_name"
                    .into(),
            ));
        };
        let io = |source| Error::Io {
            path: binary.clone(),
            source,
        };
        let all = function_offsets(&binary, &compiled).map_err(io)?;
        if all.is_empty() {
            return Err(compiled.no_match(id, elf_functions(&binary).map_err(io)?.len(), &binary));
        }
        return Ok(Target {
            binary,
            symbol: Some(all[0].0.clone()),
            offset: 0,
            pid,
            all,
            pattern: Some(compiled.as_str().to_owned()),
            method,
            symbol_offset: None,
        });
    }
    let symbol = if let Some(symbol) = &probe.hook_func_name {
        Some(symbol.clone())
    } else if let Some(compiled) = Pattern::of(id, probe)? {
        let names = elf_functions(&binary).map_err(|source| Error::Io {
            path: binary.clone(),
            source,
        })?;
        let pattern = compiled.as_str();
        let found = names
            .iter()
            .find(|n| *n == pattern)
            .or_else(|| names.iter().find(|n| compiled.matches(n)))
            .ok_or_else(|| compiled.no_match(id, names.len(), &binary))?;
        Some(found.clone())
    } else if probe.uprobe_offset > 0 {
        // The Go `UprobeOffset`: an offset with no declared symbol is where the probe goes; the
        // section's target is not looked up.
        None
    } else {
        section_function.map(str::to_owned)
    };
    if symbol.is_none() && probe.uprobe_offset == 0 {
        return Err(invalid(
            "a uprobe needs a function: hook_func_name, attach_to_func_name, a section \
             `uprobe/<function>`, or uprobe_offset"
                .into(),
        ));
    }
    // Resolved here from the binary's cached table, so that attach does not make aya read the
    // file again; a symbol not found (a stripped binary with a debug link) is left to aya.
    let symbol_offset = symbol.as_deref().and_then(|s| {
        binary_symbols::functions(&binary)
            .ok()
            .and_then(|f| f.offset_of(s))
    });
    Ok(Target {
        binary,
        symbol,
        offset: probe.uprobe_offset,
        pid,
        all: Vec::new(),
        pattern: None,
        method,
        symbol_offset,
    })
}

/// The defined functions of `binary` that `pattern` matches, each once, with the file offset
/// of its first instruction (address - section address + section file offset).
fn function_offsets(binary: &Path, pattern: &Pattern) -> std::io::Result<Vec<(String, u64)>> {
    offsets_where(binary, |name| pattern.matches(name))
}

/// The file offset of the function `symbol` of `binary`.
fn symbol_offset(binary: &Path, symbol: &str) -> std::io::Result<Option<u64>> {
    Ok(offsets_where(binary, |name| name == symbol)?
        .first()
        .map(|(_, offset)| *offset))
}

fn offsets_where(
    binary: &Path,
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<Vec<(String, u64)>> {
    Ok(binary_symbols::functions(binary)?
        .list
        .iter()
        .filter(|(name, _)| keep(name))
        .filter_map(|(name, offset)| Some((name.clone(), (*offset)?)))
        .collect())
}

/// Attaches `prog` to every function of `target.all`, one uprobe each, undone if one fails.
pub(crate) fn attach_each(
    prog: &mut UProbe,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    let mut links = Vec::with_capacity(target.all.len());
    let mut method = AttachMethod::Uprobe;
    for (name, offset) in &target.all {
        let one = Target {
            symbol: Some(name.clone()),
            symbol_offset: Some(*offset),
            all: Vec::new(),
            pattern: None,
            ..target.clone()
        };
        match attach(prog, id, &one) {
            Ok((link, info)) => {
                links.push(link);
                method = info.method;
            }
            Err(e) => {
                while let Some(l) = links.pop() {
                    drop(l);
                }
                return Err(e);
            }
        }
    }
    let info = AttachInfo {
        hook: target.describe(),
        method,
    };
    Ok((Link::Many(links), info))
}

pub(crate) fn attach(
    prog: &mut UProbe,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    if target.method == UprobeAttachMethod::Tracefs {
        return attach_tracefs(prog, id, target);
    }
    use aya::programs::uprobe::UProbeAttachLocation as Loc;
    let hook = target.describe();
    let location = match (&target.symbol, target.symbol_offset, target.offset) {
        // Known offset: aya does not read the binary again.
        (Some(_), Some(base), o) => {
            Loc::AbsoluteOffset(base.checked_add(o).ok_or_else(|| Error::Attach {
                id: id.clone(),
                hook: hook.clone(),
                method: AttachMethod::Uprobe,
                source: "the symbol's offset plus uprobe_offset overflows".into(),
            })?)
        }
        (Some(s), None, 0) => Loc::Symbol(s),
        (Some(s), None, o) => Loc::SymbolOffset(s, o),
        (None, _, o) => Loc::AbsoluteOffset(o),
    };
    let scope = match target.pid.and_then(std::num::NonZeroU32::new) {
        Some(pid) => UProbeScope::OneProcess(pid),
        None => UProbeScope::AllProcesses,
    };
    let link = prog
        .attach(location, &target.binary, scope)
        .and_then(|link_id| prog.take_link(link_id))
        .map_err(|e| {
            let hint = match (super::syscall_errno(&e), target.pid) {
                (Some(libc::ESRCH), Some(pid)) => {
                    Some(format!("uprobe_pid {pid} names no running process"))
                }
                _ => None,
            };
            Error::Attach {
                id: id.clone(),
                hook: hook.clone(),
                method: AttachMethod::Uprobe,
                source: super::with_hint(e, hint),
            }
        })?;
    Ok((
        Link::Uprobe(link),
        AttachInfo {
            hook,
            method: AttachMethod::Uprobe,
        },
    ))
}

/// Attaches through a tracefs `uprobe_events` entry (`p:<group>/<event> <path>:<offset>`),
/// opened as a tracepoint of every process or of `target.pid`.
fn attach_tracefs(
    prog: &mut UProbe,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    let hook = target.describe();
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method: AttachMethod::UprobeTracefs,
        source,
    };
    let root = tracefs::root()?;
    if !root.join("uprobe_events").exists() {
        return Err(fail(
            "tracefs has no uprobe_events (CONFIG_UPROBE_EVENTS): use UprobeAttachMethod::PerfEventOpen"
                .into(),
        ));
    }
    // The kernel splits a definition at whitespace: a path holding any cannot be written.
    let binary = target
        .binary
        .canonicalize()
        .map_err(|e| fail(Box::new(e)))?;
    let path = binary
        .to_str()
        .filter(|p| !p.contains(char::is_whitespace))
        .ok_or_else(|| {
            fail(
                format!(
                    "{} cannot be written to uprobe_events (whitespace or not UTF-8): \
                     use UprobeAttachMethod::PerfEventOpen",
                    binary.display()
                )
                .into(),
            )
        })?;
    let base = match (&target.symbol, target.symbol_offset) {
        (_, Some(known)) => known,
        (Some(symbol), None) => symbol_offset(&binary, symbol)
            .map_err(|e| fail(Box::new(e)))?
            .ok_or_else(|| fail(format!("no function `{symbol}` in {path}").into()))?,
        (None, None) => 0,
    };
    let offset = base
        .checked_add(target.offset)
        .ok_or_else(|| fail("the symbol's offset plus uprobe_offset overflows".into()))?;
    let retprobe = matches!(prog.kind(), aya::programs::ProbeKind::Return);
    let prefix = if retprobe { "r" } else { "p" };
    let event = tracefs::ProbeEvent::create(
        root,
        "uprobe_events",
        prefix,
        (retprobe, target.symbol.as_deref().unwrap_or("offset")),
        &format!("{path}:{offset:#x}"),
    )
    .map_err(|e| fail(Box::new(e)))?;
    let perf = perf::open_tracepoint_of(event.id, target.pid).map_err(|e| {
        let hint = match (crate::kernel::sys::errno(&e), target.pid) {
            (Some(libc::ESRCH), Some(pid)) => {
                Some(format!("uprobe_pid {pid} names no running process"))
            }
            _ => None,
        };
        fail(super::with_hint(e, hint))
    })?;
    let prog_fd = prog.fd().map_err(|e| fail(Box::new(e)))?;
    perf::attach_bpf(&perf, std::os::fd::AsFd::as_fd(prog_fd)).map_err(|e| fail(Box::new(e)))?;
    Ok((
        Link::UprobeTracefs(super::kprobe::TracefsLink::new(perf, event)),
        AttachInfo {
            hook,
            method: AttachMethod::UprobeTracefs,
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn symbols_of_an_elf_in_table_order_without_imports() {
        // The test binary itself: it defines main, and imports (never defines) malloc.
        let me = std::env::current_exe().unwrap();
        let names = super::elf_functions(&me).unwrap();
        assert!(names.iter().any(|n| n == "main"), "no main");
        assert!(!names.iter().any(|n| n == "malloc"), "an import was listed");
        assert_eq!(
            names,
            super::elf_functions(&me).unwrap(),
            "not deterministic"
        );
    }
}
