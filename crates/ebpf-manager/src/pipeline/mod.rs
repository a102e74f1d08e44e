//! The object pipeline: between the user's bytes and aya, it makes objects written for the Go
//! ebpf-manager (and cilium/ebpf under it) loadable by aya 0.14, which cannot be configured to
//! accept them. aya parses an object from bytes and exposes neither its sections nor its
//! instructions before loading, so the pipeline rewrites a copy of the ELF (with `object`'s
//! builder) once at `init`:
//! - program sections aya-obj does not know are renamed to the aya name of the same program
//!   type, or hidden when aya cannot load that type ([`sections`]); `.BTF.ext`, where aya-obj
//!   finds func info, line info and CO-RE relocations by section name, follows ([`btf`]);
//! - legacy map definitions are normalized and edited ([`maps`]);
//!
//! then, for each load (the main object, per-probe constant copies, clones), writes asm
//! constants into their `ld_imm64` instructions (aya-obj skips relocations against undefined
//! symbols and leaves them 0) and runs the user's instruction patchers ([`insns`]).
//! The manager keeps the original section names for hook resolution and messages.

mod btf;
pub(crate) mod btf_read;
mod btf_types;
mod bypass;
mod constants;
pub(crate) use constants::Constants;
pub(crate) mod diagnose;
pub(crate) mod ksyms;
mod maps;
pub(crate) mod multi;
mod rewrite;
pub(crate) mod sections;
pub(crate) mod split_btf;
pub(crate) mod struct_ops;
pub(crate) mod validate;
mod validate_btf;

pub(crate) use validate::message as panic_message;

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionKind};

use crate::insns;
pub use crate::insns::{Instruction, InstructionPatcher};
pub(crate) use sections::{targets_pattern, targets_syscall};

use crate::{elf::ElfIndex, ConstantEditor, Error, MapSpecEditor, Result};

/// What shapes the pipeline, from [`Options`](crate::Options).
#[derive(Debug, Default)]
pub(crate) struct Settings<'a> {
    pub(crate) spec_editors: &'a [MapSpecEditor],
    pub(crate) excluded_maps: &'a [String],
    pub(crate) inner_outer: &'a [crate::InnerOuterMapSpec],
    pub(crate) patchers: Vec<InstructionPatcher>,
    pub(crate) strict_constants: bool,
    pub(crate) bypass_enabled: bool,
    /// The object's `__ksym` externs and what the running kernel has for them.
    pub(crate) ksyms: &'a [(ksyms::Extern, ksyms::Resolved)],
}

/// An object made loadable by aya, ready to be instantiated for each load.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    bytes: Vec<u8>,
    /// Programs aya cannot load, by function, with the reason.
    hidden: HashMap<String, (String, &'static str)>,
    asm: Vec<AsmSite>,
    globals: HashMap<String, Global>,
    programs: Vec<ProgramRange>,
    patchers: Vec<InstructionPatcher>,
    strict_constants: bool,
    /// Bypass index of each patched program.
    bypass: bypass::Indexes,
    /// Whether `.BTF.ext` has CO-RE relocations (which need the kernel's BTF).
    has_core: bool,
    /// Whether the bytes were freed after `start`.
    released: bool,
    /// Maps whose definition says `pinning` = `LIBBPF_PIN_BY_NAME`: aya reuses or creates a pin
    /// named after them.
    pinned_by_name: Vec<String>,
    /// `__ksym` externs the kernel lacks, poisoned in the instructions (see [`ksyms`]).
    poisoned: Vec<(ksyms::Extern, &'static str)>,
    /// Per-probe asm constants written in place, with the functions they are for
    /// ([`constants`]).
    scoped: Vec<(ConstantEditor, Vec<String>)>,
    /// User ring buffers created at the size libbpf rounds theirs to.
    rounded_rings: Vec<(String, u32)>,
}

/// An `ld_imm64` of an undefined symbol: an asm constant.
#[derive(Debug)]
struct AsmSite {
    name: String,
    /// File offset of the instruction pair.
    at: usize,
    function: String,
}

/// A data global (`.rodata`, `.data`, `.bss`).
#[derive(Debug)]
struct Global {
    /// File offset of its bytes; `None` in a section without file data (`.bss`), which aya
    /// sets.
    at: Option<usize>,
    size: u64,
}

/// A program's instructions in the prepared bytes.
#[derive(Debug)]
struct ProgramRange {
    function: String,
    section: String,
    at: usize,
    len: usize,
    /// The symbol each relocated instruction refers to, by instruction index, sorted.
    references: Vec<(usize, String)>,
}

fn invalid(reason: impl std::fmt::Display) -> Error {
    Error::InvalidObject {
        reason: reason.to_string(),
    }
}

/// Runs the init-time stage over `original` (indexed as `elf`).
pub(crate) fn prepare(original: &[u8], elf: &ElfIndex, settings: Settings<'_>) -> Result<Prepared> {
    let file = object::File::parse(original).map_err(invalid)?;
    // Before anything reads sections by symbols: ours, then aya-obj's.
    let facts = validate::check(original, settings.spec_editors)?;
    let legacy_maps = file
        .sections()
        .any(|s| s.name().is_ok_and(|n| n.starts_with("maps")));
    let renames = file.sections().any(|s| {
        is_program_section(s.kind(), s.name().unwrap_or(""))
            && sections::fate(s.name().unwrap_or("")) != sections::Fate::Keep
    });
    let bypass_map = file.symbols().any(|s| s.name() == Ok(bypass::MAP));
    let edits = settings.spec_editors.iter().any(|e| {
        e.map_type.is_some() || e.key_size.is_some() || e.value_size.is_some() || e.flags.is_some()
    });
    let rewrite = renames
        || legacy_maps
        || bypass_map
        || edits
        || !settings.excluded_maps.is_empty()
        || !settings.ksyms.is_empty();
    let (mut bytes, bypass) = if rewrite {
        rewrite::rewrite(original, &settings)?
    } else {
        (original.to_vec(), Vec::new())
    };
    let poisoned = ksyms::patch(&mut bytes, settings.ksyms)?;
    let mut prepared = analyze(bytes, elf, settings.ksyms)?;
    prepared.bypass = bypass;
    prepared.poisoned = poisoned;
    for p in &elf.programs {
        if let sections::Fate::Hide(reason) = sections::fate(&p.section) {
            prepared
                .hidden
                .insert(p.function.clone(), (p.section.clone(), reason));
        }
    }
    prepared.rounded_rings = facts.rounded_rings;
    prepared.pinned_by_name = facts
        .pinned_by_name
        .into_iter()
        .filter(|m| !settings.excluded_maps.contains(m))
        .collect();
    prepared.patchers = settings.patchers;
    prepared.strict_constants = settings.strict_constants;
    Ok(prepared)
}

fn is_program_section(kind: SectionKind, name: &str) -> bool {
    kind == SectionKind::Text && !name.starts_with(".text") && !name.is_empty()
}

/// Finds asm constants, data globals and program ranges in the prepared bytes.
fn analyze(
    bytes: Vec<u8>,
    elf: &ElfIndex,
    externs: &[(ksyms::Extern, ksyms::Resolved)],
) -> Result<Prepared> {
    let file = object::File::parse(bytes.as_slice()).map_err(invalid)?;
    let mut asm = Vec::new();
    let mut globals = HashMap::new();
    let mut programs = Vec::new();
    let function_at = |section: object::SectionIndex, offset: u64| {
        file.symbols()
            .find(|s| {
                s.section_index() == Some(section)
                    && s.kind() == object::SymbolKind::Text
                    && (s.address()..s.address() + s.size()).contains(&offset)
            })
            .and_then(|s| s.name().ok().map(str::to_owned))
            .unwrap_or_default()
    };
    for section in file.sections() {
        let name = section.name().unwrap_or("");
        if name.starts_with(".rodata") || name.starts_with(".data") || name.starts_with(".bss") {
            let file_range = section.file_range().filter(|_| !name.starts_with(".bss"));
            for s in file
                .symbols()
                .filter(|s| s.section_index() == Some(section.index()))
            {
                if s.kind() != object::SymbolKind::Data {
                    continue;
                }
                let end = s.address().checked_add(s.size());
                let at = match file_range {
                    Some((off, size)) if end.is_some_and(|e| e <= size) => {
                        Some((off + s.address()) as usize)
                    }
                    Some(_) => {
                        return Err(invalid(format!(
                            "global `{}` lies outside its section `{name}`",
                            s.name().unwrap_or("")
                        )))
                    }
                    None => None,
                };
                let global = Global { at, size: s.size() };
                globals.insert(s.name().unwrap_or("").to_owned(), global);
            }
        }
        if section.kind() != SectionKind::Text {
            continue;
        }
        let Some((file_off, size)) = section.file_range() else {
            continue;
        };
        // Every relocated instruction of the section (file offset, symbol), for patchers.
        let mut relocated: Vec<(usize, String)> = Vec::new();
        for (offset, rel) in section.relocations() {
            let object::RelocationTarget::Symbol(si) = rel.target() else {
                continue;
            };
            let Ok(sym) = file.symbol_by_index(si) else {
                continue;
            };
            let insn = bytes.get((file_off + offset) as usize..(file_off + offset + 8) as usize);
            if let Some(name) = reference_name(&file, &sym, insn) {
                relocated.push(((file_off + offset) as usize, name));
            }
            // A relocation outside its section is aya's to refuse; it is no asm constant.
            if offset.checked_add(16).is_none_or(|end| end > size) {
                continue;
            }
            let at = file_off + offset;
            let is_ld64 = bytes.get(at as usize) == Some(&insns::LD_IMM64);
            let sym_name = sym.name().unwrap_or("");
            let is_ksym = externs.iter().any(|(e, _)| e.name == sym_name);
            if sym.is_undefined() && is_ld64 && !sym_name.is_empty() && !is_ksym {
                asm.push(AsmSite {
                    name: sym.name().unwrap_or("").to_owned(),
                    at: at as usize,
                    function: function_at(section.index(), offset),
                });
            }
        }
        if name.starts_with(".text") {
            continue;
        }
        for s in file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()))
        {
            if s.kind() != object::SymbolKind::Text || s.size() == 0 {
                continue;
            }
            let function = s.name().unwrap_or("").to_owned();
            let (start, len) = (s.address(), s.size());
            if start.checked_add(len).is_none_or(|end| end > size) || len % 8 != 0 {
                return Err(invalid(format!(
                    "function `{function}` lies outside its section `{name}`"
                )));
            }
            let section = elf
                .by_function(&function)
                .map_or_else(|| name.to_owned(), |p| p.section.clone());
            let at = (file_off + start) as usize;
            let mut references: Vec<(usize, String)> = relocated
                .iter()
                .filter(|(r, _)| (at..at + len as usize).contains(r) && (r - at).is_multiple_of(8))
                .map(|(r, name)| ((r - at) / 8, name.clone()))
                .collect();
            references.sort_unstable();
            programs.push(ProgramRange {
                function,
                section,
                at,
                len: len as usize,
                references,
            });
        }
    }
    let has_core = file
        .section_by_name(".BTF.ext")
        .and_then(|s| s.data().ok())
        .filter(|d| d.len() >= 32 && u32::from_le_bytes([d[4], d[5], d[6], d[7]]) >= 32)
        .is_some_and(|d| u32::from_le_bytes([d[28], d[29], d[30], d[31]]) > 0);
    drop(file);
    Ok(Prepared {
        has_core,
        bytes,
        asm,
        globals,
        programs,
        ..Default::default()
    })
}

impl Prepared {
    /// Why aya cannot load `function` (its section and the reason), when it cannot.
    pub(crate) fn hidden(&self, function: &str) -> Option<&(String, &'static str)> {
        self.hidden.get(function)
    }

    /// The prepared bytes (empty after [`release_bytes`](Self::release_bytes)).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Frees the bytes (and what points into them), keeping what running probes need (bypass
    /// indexes); later loads fail with [`Error::ObjectReleased`].
    pub(crate) fn release_bytes(&mut self) {
        self.bytes = Vec::new();
        self.asm = Vec::new();
        self.programs = Vec::new();
        self.globals = HashMap::new();
        self.released = true;
    }

    /// The typed error of a program the verifier rejected for a poisoned call the pipeline can
    /// explain: a `__ksym` extern the running kernel lacks, or a CO-RE relocation its types
    /// cannot satisfy; other errors unchanged.
    pub(crate) fn name_load_error(&self, e: Error) -> Error {
        let Error::Verifier {
            id, function, log, ..
        } = &e
        else {
            return e;
        };
        if let Some(ext) = ksyms::in_verifier_log(&self.poisoned, log) {
            return ksyms::missing_error(id, function, ext);
        }
        match diagnose::core_failure(&self.bytes, function, log) {
            Some(relocation) => Error::CoreRelocation {
                id: id.clone(),
                function: function.clone(),
                relocation,
            },
            None => e,
        }
    }

    /// Whether [`release_bytes`](Self::release_bytes) ran.
    pub(crate) fn is_released(&self) -> bool {
        self.released
    }

    /// User ring buffers whose declared (or edited) size the kernel would refuse, with the
    /// size to create them with: a power-of-two number of pages, as libbpf rounds it.
    pub(crate) fn rounded_rings(&self) -> &[(String, u32)] {
        &self.rounded_rings
    }

    /// The maps the object pins by name (`LIBBPF_PIN_BY_NAME`).
    pub(crate) fn pinned_by_name(&self) -> &[String] {
        &self.pinned_by_name
    }

    /// Whether loading needs the kernel's BTF for CO-RE relocations.
    pub(crate) fn has_core(&self) -> bool {
        self.has_core
    }

    /// The bypass index of `function`, when bypass patched it.
    pub(crate) fn bypass_index(&self, function: &str) -> Option<u32> {
        self.bypass
            .iter()
            .find(|(f, _)| f == function)
            .map(|&(_, i)| i)
    }

    /// The bypass map's name and the entries it needs, when a program was patched.
    pub(crate) fn bypass_map(&self) -> Option<(&'static str, u32)> {
        let max = self.bypass.iter().map(|&(_, i)| i).max()?;
        Some((bypass::MAP, max + 1))
    }

    /// The asm constants of the object (names of undefined symbols loaded by `ld_imm64`).
    pub(crate) fn asm_constants(&self) -> impl Iterator<Item = &str> {
        self.asm.iter().map(|s| s.name.as_str())
    }
}

/// What a relocation refers to, as cilium/ebpf names references: the symbol's name (a map, an
/// asm constant, a function, a kfunc); for a call relocated against its section (a static
/// function: the target is `(imm + 1)` instructions into the section, as libbpf reads it) the
/// function there; for other section-relative references (`.rodata`) the section's name.
fn reference_name(
    file: &object::File<'_>,
    sym: &object::Symbol<'_, '_>,
    insn: Option<&[u8]>,
) -> Option<String> {
    if let Ok(name) = sym.name().map(str::to_owned) {
        if !name.is_empty() {
            return Some(name);
        }
    }
    let section = sym.section_index()?;
    if let Some(&[0x85, _, _, _, i0, i1, i2, i3]) = insn {
        let target = (i64::from(i32::from_le_bytes([i0, i1, i2, i3])) + 1) * 8;
        let function = file.symbols().find(|s| {
            s.section_index() == Some(section)
                && s.kind() == object::SymbolKind::Text
                && s.address() as i64 == target
                && s.name().is_ok_and(|n| !n.is_empty())
        });
        if let Some(f) = function {
            return f.name().ok().map(str::to_owned);
        }
    }
    file.section_by_index(section)
        .ok()
        .and_then(|s| s.name().ok().map(str::to_owned))
        .filter(|n| !n.is_empty())
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.filter(|n| !n.is_empty()).collect();
    v.sort_unstable();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
