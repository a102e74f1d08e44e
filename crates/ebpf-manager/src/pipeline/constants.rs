//! Constants and patchers, for each load of a prepared object: asm constants written into
//! their `ld_imm64` instructions, data globals into their section, and per-probe asm constants
//! written in place, into the instructions of their probes' programs only (Go's `editConstant`
//! on one `ProgramSpec`), so that they cost no copy of the object.

use super::{bypass, list, AsmSite, Global, Prepared};
use crate::{
    insns::{self, Instruction, ProgramInstructions},
    ConstantEditor, Error, Result,
};

/// An editor and, for a per-probe constant written in place, the functions it is for.
type Scoped<'e> = (&'e ConstantEditor, Option<&'e [String]>);

/// The constant editors of one load, in two groups written in this order with the per-probe
/// constants written in place ([`Prepared::scope`]) between them: `every`, the editors of
/// `Options` for every probe; `own`, those of this load alone (a copy's per-probe editors, a
/// clone's). Within a group, later editors win.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Constants<'a, 'e> {
    pub(crate) every: &'a [&'e ConstantEditor],
    pub(crate) own: &'a [&'e ConstantEditor],
}

impl<'a, 'e> Constants<'a, 'e> {
    /// Editors for every probe only.
    pub(crate) fn every(every: &'a [&'e ConstantEditor]) -> Self {
        Self { every, own: &[] }
    }
}

/// Whether `site` takes the value of `editor` restricted to `scope`.
fn in_scope(site: &AsmSite, editor: &ConstantEditor, scope: Option<&[String]>) -> bool {
    site.name == editor.name && scope.is_none_or(|functions| functions.contains(&site.function))
}

impl Prepared {
    /// Writes the per-probe asm constant `editor` in place for the programs of `functions`,
    /// in every load from now on, when that sets it for those programs only: it names an asm
    /// constant (not a data global, which is one value per object) whose every `ld_imm64`
    /// lies in one of them (not in a subprogram or another program they share). Returns
    /// whether it did; when not, the probes take a copy of the object of their own.
    pub(crate) fn scope(&mut self, editor: &ConstantEditor, functions: &[String]) -> bool {
        let mut sites = self.asm.iter().filter(|s| s.name == editor.name).peekable();
        let fits = editor.value.len() <= 8
            && !self.globals.contains_key(&editor.name)
            && sites.peek().is_some()
            && sites.all(|s| functions.contains(&s.function))
            // Two editors of one constant for one program: the copies decide between them.
            && !self.scoped.iter().any(|(e, fns)| {
                e.name == editor.name && fns.iter().any(|f| functions.contains(f))
            });
        if fits {
            self.scoped.push((editor.clone(), functions.to_vec()));
        }
        fits
    }

    /// `constants` in the order they are written: editors for every probe, then the in-place
    /// per-probe ones, then the load's own.
    fn ordered<'e>(&'e self, constants: Constants<'_, 'e>) -> Vec<Scoped<'e>> {
        let every = constants.every.iter().map(|&e| (e, None));
        let own = constants.own.iter().map(|&e| (e, None));
        every
            .chain(self.scoped.iter().map(|(e, f)| (e, Some(f.as_slice()))))
            .chain(own)
            .collect()
    }

    /// The bytes for one load: `constants` written into the asm constants and data globals
    /// they name, in the order of [`Constants`] (later editors win), then the patchers run.
    /// Returns them with the editors left for aya (those naming `.bss` globals, which have no
    /// bytes in the file).
    pub(crate) fn instantiate<'e>(
        &self,
        constants: Constants<'_, 'e>,
    ) -> Result<(Vec<u8>, Vec<&'e ConstantEditor>)> {
        if self.released {
            return Err(Error::ObjectReleased);
        }
        let mut bytes = self.bytes.clone();
        let ordered = self.ordered(constants);
        for &(editor, scope) in &ordered {
            let is_asm = self.asm.iter().any(|s| s.name == editor.name);
            let global = self.globals.get(&editor.name);
            let is_global = global.is_some();
            if !is_asm && !is_global && !editor.allow_missing {
                return Err(Error::InvalidOption {
                    option: format!("constant editor `{}`", editor.name),
                    reason: format!(
                        "the object has no constant `{}`: neither a `volatile const` global nor an asm constant (`ld_imm64` of an undefined symbol); it has globals: {}; asm constants: {}",
                        editor.name,
                        list(self.globals.keys().map(String::as_str)),
                        list(self.asm_constants()),
                    ),
                });
            }
            if is_asm {
                if editor.value.len() > 8 {
                    return Err(Error::InvalidOption {
                        option: format!("constant editor `{}`", editor.name),
                        reason: format!(
                            "its value is {} bytes; an asm constant is a 64-bit instruction immediate (8 bytes at most)",
                            editor.value.len()
                        ),
                    });
                }
                let mut v = [0u8; 8];
                v[..editor.value.len()].copy_from_slice(&editor.value);
                for site in self.asm.iter().filter(|s| in_scope(s, editor, scope)) {
                    insns::write_imm64(&mut bytes, site.at, u64::from_le_bytes(v));
                }
            }
            match global {
                Some(g) if editor.value.len() as u64 != g.size => {
                    return Err(Error::InvalidOption {
                        option: format!("constant editor `{}`", editor.name),
                        reason: format!(
                            "its value is {} bytes; the global is {} bytes",
                            editor.value.len(),
                            g.size
                        ),
                    })
                }
                Some(Global { at: Some(at), .. }) => {
                    bytes[*at..*at + editor.value.len()].copy_from_slice(&editor.value);
                }
                // aya sets it (below).
                Some(Global { at: None, .. }) => {}
                None => {}
            }
        }
        self.check_unset(&ordered)?;
        for range in &self.programs {
            if self.patchers.is_empty() {
                break;
            }
            let code = &mut bytes[range.at..range.at + range.len];
            let mut instructions = insns::decode(code);
            let mut prog = ProgramInstructions {
                function: &range.function,
                section: &range.section,
                instructions: &mut instructions,
                references: &range.references,
            };
            for p in &self.patchers {
                p.run(&mut prog)
                    .map_err(|reason| Error::InstructionPatcher {
                        function: range.function.clone(),
                        reason,
                    })?;
            }
            for (chunk, ins) in code.chunks_exact_mut(8).zip(&instructions) {
                chunk.copy_from_slice(&ins.to_bytes());
            }
        }
        // `.bss` globals have no bytes in the file: aya writes them, the last editor winning.
        let for_aya = constants
            .every
            .iter()
            .chain(constants.own)
            .filter(|e| matches!(self.globals.get(&e.name), Some(Global { at: None, .. })))
            .copied()
            .collect();
        Ok((bytes, for_aya))
    }

    /// Asm constants no editor sets load as 0: a warning naming them (the Go behaviour), or an
    /// error with strict constants.
    fn check_unset(&self, ordered: &[Scoped<'_>]) -> Result<()> {
        let mut unset: Vec<(&str, Vec<&str>)> = Vec::new();
        for site in &self.asm {
            if site.name == bypass::PLACEHOLDER
                || ordered.iter().any(|&(e, scope)| in_scope(site, e, scope))
            {
                continue;
            }
            match unset.iter_mut().find(|(n, _)| *n == site.name) {
                Some((_, fns)) if !fns.contains(&site.function.as_str()) => {
                    fns.push(&site.function)
                }
                Some(_) => {}
                None => unset.push((&site.name, vec![&site.function])),
            }
        }
        for (name, functions) in unset {
            if self.strict_constants {
                return Err(Error::UnsetConstant {
                    name: name.to_owned(),
                    functions: functions.join(", "),
                });
            }
            log::warn!(
                "asm constant `{name}` is set by no constant editor: it loads as 0 in {}",
                functions.join(", ")
            );
        }
        Ok(())
    }

    /// The instructions of `function` as they load (constants set, patchers run) with
    /// `constants`.
    pub(crate) fn instructions(
        &self,
        function: &str,
        constants: Constants<'_, '_>,
    ) -> Result<Option<Vec<Instruction>>> {
        let Some(range) = self.programs.iter().find(|r| r.function == function) else {
            return Ok(None);
        };
        let (bytes, _) = self.instantiate(constants)?;
        Ok(Some(insns::decode(&bytes[range.at..range.at + range.len])))
    }
}
