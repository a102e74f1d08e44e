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

/// Checks `.BTF.ext` of `file`, if it has one, against its `.BTF` strings.
pub(super) fn check(file: &object::File<'_>) -> Result<()> {
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
