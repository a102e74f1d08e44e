//! The serde codecs of declaration fields that are not plain data: durations with a unit,
//! constant values. Beside the leaf types, so that every layer's declarations may use them;
//! codecs of a layer's own types live beside those types (`probe::netns_codec`,
//! `options::kernel_types_codec`).

use std::time::Duration;

use serde::Deserialize;

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
