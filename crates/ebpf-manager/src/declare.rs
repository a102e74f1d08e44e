//! Declarative managers (feature `serde`): probes, maps, readers and options written in TOML
//! or JSON, read into a [`Manager`] and its [`Options`]. What only code can give (handlers,
//! instruction patchers, open fds, parsed BTF) is left out of the file and set on the result.
//!
//! Field names are those of the Rust types ([`Probe`], [`Options`], [`PerfMap`], ...); enum
//! values are in snake case (`kprobe_attach_method = "tracefs"`); durations are strings with a
//! unit (`"20ms"`, `"5s"`); a constant's value is either its bytes or one sized integer
//! (`value = { u32 = 7 }`). An unknown key or a bad value is [`Error::InvalidDeclaration`],
//! naming the key, the line and the column.

use std::{path::PathBuf, time::Duration};

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

/// Durations as strings with a unit: `"250ms"`, `"5s"`, `"100us"`, `"40ns"`, `"2m"`.
pub(crate) mod duration {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub(crate) fn format(d: Duration) -> String {
        let ns = d.as_nanos();
        match () {
            _ if ns.is_multiple_of(1_000_000_000) => format!("{}s", ns / 1_000_000_000),
            _ if ns.is_multiple_of(1_000_000) => format!("{}ms", ns / 1_000_000),
            _ if ns.is_multiple_of(1_000) => format!("{}us", ns / 1_000),
            _ => format!("{ns}ns"),
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration `{text}` has no unit: write it as 20ms, 5s, ..."))?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("duration `{text}` does not start with a whole number"))?;
        let nanos_per = match unit.trim() {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            other => {
                return Err(format!(
                    "duration `{text}`: unknown unit `{other}` (ns, us, ms, s, m)"
                ))
            }
        };
        n.checked_mul(nanos_per)
            .map(Duration::from_nanos)
            .ok_or_else(|| format!("duration `{text}` is too long"))
    }
}

/// `Option<Duration>` as an optional duration string.
pub(crate) mod option_duration {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&duration::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| duration::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A network namespace as its file's path (an open fd cannot be written in a file).
pub(crate) mod netns {
    use super::*;
    use crate::Netns;

    pub(crate) fn serialize<S: serde::Serializer>(
        n: &Option<Netns>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match n {
            None => s.serialize_none(),
            Some(Netns::Path(p)) => s.serialize_some(p),
            Some(Netns::Fd(_)) => Err(serde::ser::Error::custom(
                "netns: an open namespace fd cannot be declared in a file; use its path",
            )),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Netns>, D::Error> {
        Ok(Option::<PathBuf>::deserialize(d)?.map(Netns::Path))
    }
}

/// Kernel types as the path of a BTF file (parsed BTF cannot be written in a file).
pub(crate) mod kernel_types {
    use super::*;
    use crate::KernelTypes;

    pub(crate) fn serialize<S: serde::Serializer>(
        k: &Option<KernelTypes>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match k {
            None => s.serialize_none(),
            Some(KernelTypes::File(p)) => s.serialize_some(p),
            Some(KernelTypes::Parsed(_)) => Err(serde::ser::Error::custom(
                "kernel_btf: parsed BTF cannot be declared in a file; use the file's path",
            )),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<KernelTypes>, D::Error> {
        Ok(Option::<PathBuf>::deserialize(d)?.map(KernelTypes::File))
    }
}

/// A constant's value: its bytes (`[7, 0, 0, 0]`), or one integer with its size
/// (`{ u32 = 7 }`, `{ i64 = -1 }`), written in the machine's byte order.
pub(crate) mod constant_value {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Bytes(Vec<u8>),
        Sized(Sized),
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Sized {
        U8(u8),
        U16(u16),
        U32(u32),
        U64(u64),
        I8(i8),
        I16(i16),
        I32(i32),
        I64(i64),
    }

    pub(crate) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(
            match Value::deserialize(d).map_err(|_| {
                serde::de::Error::custom(
                "a constant's value is its bytes ([7, 0, 0, 0]) or one sized integer ({ u32 = 7 })",
            )
            })? {
                Value::Bytes(b) => b,
                Value::Sized(Sized::U8(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::U16(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::U32(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::U64(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::I8(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::I16(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::I32(v)) => v.to_ne_bytes().to_vec(),
                Value::Sized(Sized::I64(v)) => v.to_ne_bytes().to_vec(),
            },
        )
    }
}

#[cfg(test)]
mod tests;
