//! Checks of `.BTF.ext` (function, line and CO-RE relocation records), which aya-obj 0.3 walks
//! by lengths and counts it reads from the file without checking them: a count past the end
//! of its section, a record size of zero, or a section name that is not in `.BTF`'s strings
//! panics inside aya-obj (found by the `object` fuzz target).

use object::{Object as _, ObjectSection as _};

use crate::{Error, Result};

fn invalid(reason: String) -> Error {
    Error::InvalidObject {
        reason: format!(".BTF.ext: {reason}"),
    }
}

/// The smallest record of each `.BTF.ext` table: `bpf_func_info` (8 bytes), `bpf_line_info`
/// (16), `bpf_core_relo` (16).
const MIN_RECORD: [(&str, usize); 3] = [("func_info", 8), ("line_info", 16), ("core_relo", 16)];

/// Checks `.BTF` of `file`, then its `.BTF.ext` against the `.BTF` strings.
pub(super) fn check(file: &object::File<'_>) -> Result<()> {
    check_btf(file)?;
    check_ext(file)
}

/// The kinds of BTF types (`BTF_KIND_*`) whose trailing records start with a name offset, and
/// the size of one record.
fn named_records(kind: u32) -> Option<usize> {
    match kind {
        4 | 5 => Some(12), // STRUCT, UNION: name_off, type, offset
        6 => Some(8),      // ENUM: name_off, val
        13 => Some(8),     // FUNC_PROTO: name_off, type
        19 => Some(12),    // ENUM64: name_off, val_lo32, val_hi32
        _ => None,
    }
}

/// The bytes after a type's 12-byte head, by kind; `None` for a kind aya-obj refuses itself.
fn tail_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        _ => return None,
    })
}

/// aya-obj 0.3 bounds a string offset by the string table's end measured from the start of
/// `.BTF`, not from the table's start, and slices the table with it: a type or member name
/// offset between the two panics. So every name offset must name a string of the table, and
/// the header's offsets must add up inside the section (aya-obj adds them as u32).
fn check_btf(file: &object::File<'_>) -> Result<()> {
    let bad = |reason: String| Error::InvalidObject {
        reason: format!(".BTF: {reason}"),
    };
    let Some(data) = file.section_by_name(".BTF").and_then(|s| s.data().ok()) else {
        return Ok(());
    };
    let little = match data.get(..2) {
        Some([0x9f, 0xeb]) => true,
        Some([0xeb, 0x9f]) => false,
        // aya-obj refuses a bad magic itself.
        _ => return Ok(()),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
        (u32_at(4), u32_at(8), u32_at(12), u32_at(16), u32_at(20))
    else {
        return Err(bad("shorter than its header".into()));
    };
    let region = |what: &str, off: u32, len: u32| -> Result<std::ops::Range<usize>> {
        let start = hdr_len.checked_add(off);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(start), Some(end)) if end as usize <= data.len() => {
                Ok(start as usize..end as usize)
            }
            _ => Err(bad(format!(
                "its {what} ({len} bytes at {off} after a {hdr_len}-byte header) run past the \
                 section's {} bytes",
                data.len()
            ))),
        }
    };
    let types = region("types", type_off, type_len)?;
    let strings = &data[region("strings", str_off, str_len)?];
    let name = |what: String, offset: u32| -> Result<()> {
        // aya-obj reads up to the NUL, lossily: any bytes will do.
        if strings
            .get(offset as usize..)
            .is_some_and(|rest| rest.contains(&0))
        {
            Ok(())
        } else {
            Err(bad(format!(
                "{what} has the name offset {offset}, which is not a string of the {str_len}-byte \
                 string table"
            )))
        }
    };
    let mut at = types.start;
    let mut id = 1u32;
    while at < types.end {
        let (Some(name_off), Some(info)) = (u32_at(at), u32_at(at + 4)) else {
            return Ok(()); // truncated: aya-obj refuses it
        };
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        name(format!("type {id}"), name_off)?;
        let Some(tail) = tail_len(kind, vlen) else {
            return Ok(()); // unknown kind: aya-obj refuses it
        };
        if let Some(record) = named_records(kind) {
            for i in 0..vlen {
                let Some(member) = u32_at(at + 12 + i * record) else {
                    return Ok(());
                };
                name(format!("member {i} of type {id}"), member)?;
            }
        }
        at += 12 + tail;
        id += 1;
    }
    Ok(())
}

/// Checks `.BTF.ext` of `file`, if it has one, against its `.BTF` strings.
fn check_ext(file: &object::File<'_>) -> Result<()> {
    let Some(ext) = file.section_by_name(".BTF.ext") else {
        return Ok(());
    };
    let data = ext.data().map_err(|e| invalid(e.to_string()))?;
    let little = file.is_little_endian();
    let u32_at = |d: &[u8], at: usize| -> Option<u32> {
        let b: [u8; 4] = d.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    // aya-obj reads `.BTF.ext` only after a `.BTF` it could parse.
    let Some(strings) = btf_strings(file, little) else {
        return Ok(());
    };
    if data.len() < 8 {
        return Err(invalid("shorter than its header".into()));
    }
    let hdr_len = u32_at(data, 4).unwrap_or(0);
    if hdr_len as usize > data.len() {
        return Err(invalid(format!(
            "a header of {hdr_len} bytes in {}",
            data.len()
        )));
    }
    // The header as aya-obj reads it: the fields past hdr_len are zero.
    let mut header = [0u8; 32];
    let n = (hdr_len as usize).min(32);
    header[..n].copy_from_slice(&data[..n]);
    for (i, (table, min_record)) in MIN_RECORD.iter().enumerate() {
        let off = u32_at(&header, 8 + 8 * i).unwrap_or(0);
        let len = u32_at(&header, 12 + 8 * i).unwrap_or(0);
        if len == 0 {
            continue;
        }
        // aya-obj adds these as u32.
        let start = hdr_len
            .checked_add(off)
            .ok_or_else(|| invalid(format!("{table} offset {off} overflows")))?
            as usize;
        let end = start
            .checked_add(len as usize)
            .filter(|&end| end <= data.len() && len >= 4)
            .ok_or_else(|| {
                invalid(format!(
                    "{table} at {start}, {len} bytes, is not inside its {} bytes",
                    data.len()
                ))
            })?;
        let rec_size = u32_at(data, start).unwrap_or(0) as usize;
        if rec_size < *min_record || !rec_size.is_multiple_of(4) {
            return Err(invalid(format!("{table} records of {rec_size} bytes")));
        }
        // The walk aya-obj makes: (name offset, count, count records) while more than 8 bytes
        // are left.
        let records = &data[start + 4..end];
        let mut at = 0usize;
        while at + 8 < records.len() {
            let name = u32_at(records, at).unwrap_or(0);
            let count = u32_at(records, at + 4).unwrap_or(0) as usize;
            let bytes = count.checked_mul(rec_size);
            at = bytes
                .and_then(|b| (at + 8).checked_add(b))
                .filter(|&next| next <= records.len())
                .ok_or_else(|| {
                    invalid(format!(
                        "{table}: {count} records of {rec_size} bytes past the end of the table"
                    ))
                })?;
            if !is_string(strings, name) {
                return Err(invalid(format!(
                    "{table}: section name at {name} is not a string of .BTF"
                )));
            }
        }
    }
    Ok(())
}

/// The string table of `.BTF`; `None` without a readable one.
fn btf_strings<'d>(file: &object::File<'d>, little: bool) -> Option<&'d [u8]> {
    let data = file.section_by_name(".BTF")?.data().ok()?;
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize)
    };
    let start = u32_at(4)?.checked_add(u32_at(16)?)?;
    data.get(start..start.checked_add(u32_at(20)?)?)
}

/// Whether a NUL-terminated UTF-8 string starts at `offset` of `strings`.
fn is_string(strings: &[u8], offset: u32) -> bool {
    let Some(rest) = strings.get(offset as usize..) else {
        return false;
    };
    rest.iter()
        .position(|&b| b == 0)
        .is_some_and(|end| std::str::from_utf8(&rest[..end]).is_ok())
}
