//! Declarative managers (feature `serde`): probes, maps, readers and options written in TOML
//! or JSON, read into a [`Manager`] and its [`Options`]. What only code can give (handlers,
//! instruction patchers, open fds, parsed BTF) is left out of the file and set on the result.
//!
//! Field names are those of the Rust types ([`Probe`], [`Options`], [`PerfMap`], ...); enum
//! values are in snake case (`kprobe_attach_method = "tracefs"`); durations are strings with a
//! unit (`"20ms"`, `"5s"`); a constant's value is either its bytes or one sized integer
//! (`value = { u32 = 7 }`). An unknown key or a bad value is [`Error::InvalidDeclaration`],
//! naming the key, the line and the column.

use serde::{Deserialize, Serialize};

use crate::{Error, Manager, Map, Options, PerfMap, Probe, Result, RingBuffer};

/// A manager as a file declares it: its probes, maps and readers (without handlers) and its
/// options.
///
/// ```no_run
/// use ebpf_manager::Declaration;
///
/// let declared = Declaration::from_toml(r#"
///     [[probes]]
///     uid = "mkdir"
///     ebpf_func_name = "kprobe_vfs_mkdir"
///     kprobe_attach_method = "tracefs"
///
///     [options]
///     excluded_functions = ["kretprobe_vfs_mkdir"]
///     default_probe_retry_delay = "20ms"
/// "#)?;
/// let (mut manager, options) = declared.into_manager();
/// manager.init_with_options(&std::fs::read("probes.bpf.o")?, options)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Declaration {
    /// [`Manager::probes`].
    pub probes: Vec<Probe>,
    /// [`Manager::maps`].
    pub maps: Vec<Map>,
    /// [`Manager::perf_maps`]: without handlers, set them before `start`.
    pub perf_maps: Vec<PerfMap>,
    /// [`Manager::ring_buffers`]: without handlers, set them before `start`.
    pub ring_buffers: Vec<RingBuffer>,
    /// The options for [`Manager::init_with_options`].
    pub options: Options,
}

impl Declaration {
    /// Reads a declaration from TOML.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((0, 0));
            Error::InvalidDeclaration {
                format: "TOML",
                line,
                column,
                message: e.message().to_owned(),
            }
        })
    }

    /// Reads a declaration from JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::InvalidDeclaration {
            format: "JSON",
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })
    }

    /// The declaration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::InvalidDeclaration {
            format: "TOML",
            line: 0,
            column: 0,
            message: e.to_string(),
        })
    }

    /// The declaration as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::InvalidDeclaration {
            format: "JSON",
            line: 0,
            column: 0,
            message: e.to_string(),
        })
    }

    /// A manager of these probes, maps and readers, and the options to initialize it with.
    pub fn into_manager(self) -> (Manager, Options) {
        let manager = Manager {
            probes: self.probes,
            maps: self.maps,
            perf_maps: self.perf_maps,
            ring_buffers: self.ring_buffers,
            ..Default::default()
        };
        (manager, self.options)
    }
}

/// The 1-based line and column of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// serde_json's message without its " at line L column C" suffix (the error carries both).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
