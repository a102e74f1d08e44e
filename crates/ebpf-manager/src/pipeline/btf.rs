//! The two BTF edits a section rename needs: aya-obj finds a program's func info, line info and
//! CO-RE relocations in `.BTF.ext` by the section's name, read from the `.BTF` string table, so
//! a renamed section needs its new name in that table and `.BTF.ext`'s records pointing at it.
//!
//! Layouts (little-endian, as clang's `-target bpf` writes on x86): `.BTF` is a header
//! (magic 0xeB9F, version, flags, hdr_len, type_off, type_len, str_off, str_len) then types and
//! strings; `.BTF.ext` is a header (magic, version, flags, hdr_len, func_info off/len,
//! line_info off/len, and core_relo off/len when hdr_len >= 32) then, per region, a record size
//! and blocks of {sec_name_off, num_info, records}.

const MAGIC: u16 = 0xeb9f;

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn check_magic(data: &[u8], what: &str) -> Result<usize, String> {
    match data.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) {
        Some(MAGIC) => Ok(u32_at(data, 4)? as usize),
        Some(m) if m.swap_bytes() == MAGIC => Err(format!("{what} is big-endian: unsupported")),
        _ => Err(format!("{what} has no BTF magic")),
    }
}

/// The `.BTF` string at `offset`.
pub(crate) fn string_at(btf: &[u8], offset: u32) -> Result<&str, String> {
    let hdr = check_magic(btf, ".BTF")?;
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let start = hdr + str_off;
    let strings = btf
        .get(start..start + str_len)
        .ok_or(".BTF: string table out of bounds")?;
    let rest = strings
        .get(offset as usize..)
        .ok_or_else(|| format!(".BTF: string offset {offset} out of bounds"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(".BTF: unterminated string")?;
    std::str::from_utf8(&rest[..end]).map_err(|e| format!(".BTF: {e}"))
}

/// Appends `s` to the string table of `btf` (which must end the section, as compilers write it)
/// and returns its offset.
pub(crate) fn append_string(btf: &mut Vec<u8>, s: &str) -> Result<u32, String> {
    let hdr = check_magic(btf, ".BTF")?;
    let (str_off, str_len) = (u32_at(btf, 16)?, u32_at(btf, 20)?);
    if hdr + str_off as usize + str_len as usize != btf.len() {
        return Err(".BTF: the string table does not end the section".into());
    }
    btf.extend_from_slice(s.as_bytes());
    btf.push(0);
    let added = u32::try_from(s.len() + 1).map_err(|_| ".BTF: string too long")?;
    btf[20..24].copy_from_slice(&(str_len + added).to_le_bytes());
    Ok(str_len)
}

/// `.BTF.ext` parsed into its regions (func info, line info, CO-RE relocations), each a record
/// size and blocks of records per section name offset.
#[derive(Debug, Clone)]
pub(crate) struct Ext {
    header: Vec<u8>,
    regions: Vec<Region>,
}

#[derive(Debug, Clone)]
struct Region {
    rec_size: usize,
    blocks: Vec<(u32, Vec<u8>)>,
}

impl Ext {
    /// Parses `.BTF.ext`.
    pub(crate) fn parse(ext: &[u8]) -> Result<Self, String> {
        let hdr = check_magic(ext, ".BTF.ext")?;
        if hdr < 24 {
            return Err(format!(".BTF.ext: a {hdr}-byte header (24 at least)"));
        }
        let header = ext.get(..hdr).ok_or(".BTF.ext: truncated header")?.to_vec();
        let count = if hdr >= 32 { 3 } else { 2 };
        let mut regions = Vec::with_capacity(count);
        for r in 0..count {
            let (off, len) = (
                u32_at(ext, 8 + r * 8)? as usize,
                u32_at(ext, 12 + r * 8)? as usize,
            );
            let start = hdr + off;
            let end = start.checked_add(len).filter(|&e| e <= ext.len());
            let end = end.ok_or_else(|| format!(".BTF.ext: region {r} out of bounds"))?;
            if len == 0 {
                regions.push(Region {
                    rec_size: 0,
                    blocks: Vec::new(),
                });
                continue;
            }
            let rec_size = u32_at(ext, start)? as usize;
            let mut blocks = Vec::new();
            let mut at = start + 4;
            while at < end {
                let name_off = u32_at(ext, at)?;
                let n = u32_at(ext, at + 4)? as usize;
                let size = n
                    .checked_mul(rec_size)
                    .ok_or(".BTF.ext: record count overflows")?;
                let recs = ext
                    .get(at + 8..at + 8 + size)
                    .filter(|_| at + 8 + size <= end)
                    .ok_or(".BTF.ext: blocks overrun their region")?;
                blocks.push((name_off, recs.to_vec()));
                at += 8 + size;
            }
            regions.push(Region { rec_size, blocks });
        }
        Ok(Self { header, regions })
    }

    /// The CO-RE relocation records of the section whose name is at `name_off`:
    /// `[insn_off, type_id, access_str_off, kind]`.
    pub(crate) fn core_relos(&self, name_off: u32) -> Vec<[u32; 4]> {
        let Some(region) = self.regions.get(2).filter(|r| r.rec_size >= 16) else {
            return Vec::new();
        };
        region
            .blocks
            .iter()
            .filter(|(name, _)| *name == name_off)
            .flat_map(|(_, recs)| recs.chunks_exact(region.rec_size))
            .map(|r| {
                let w = |i: usize| u32::from_le_bytes(r[i * 4..i * 4 + 4].try_into().expect("4"));
                [w(0), w(1), w(2), w(3)]
            })
            .collect()
    }

    /// The section name offsets of the CO-RE relocation blocks.
    pub(crate) fn core_sections(&self) -> Vec<u32> {
        self.regions
            .get(2)
            .map(|r| r.blocks.iter().map(|b| b.0).collect())
            .unwrap_or_default()
    }

    /// The section name offsets of every block.
    pub(crate) fn names(&self) -> impl Iterator<Item = u32> + '_ {
        self.regions
            .iter()
            .flat_map(|r| r.blocks.iter().map(|b| b.0))
    }

    /// Moves every block of section `from` to section `to`, adding `shift` bytes to each
    /// record's instruction offset (its first field, in all three regions); blocks of the same
    /// section are merged, since aya-obj keeps one block per section name.
    pub(crate) fn move_section(&mut self, from: u32, to: u32, shift: u32) -> Result<(), String> {
        for region in &mut self.regions {
            let rec_size = region.rec_size;
            let mut moved = Vec::new();
            for (name, recs) in &mut region.blocks {
                if *name != from {
                    continue;
                }
                for rec in recs.chunks_exact_mut(rec_size.max(4)) {
                    let off = u32_at(rec, 0)?
                        .checked_add(shift)
                        .ok_or(".BTF.ext: offset overflows")?;
                    rec[..4].copy_from_slice(&off.to_le_bytes());
                }
                moved.push(std::mem::take(recs));
            }
            region
                .blocks
                .retain(|(name, recs)| *name != from || !recs.is_empty());
            if moved.is_empty() {
                continue;
            }
            match region.blocks.iter_mut().find(|(name, _)| *name == to) {
                Some((_, recs)) => moved.iter().for_each(|m| recs.extend_from_slice(m)),
                None => region.blocks.push((to, moved.concat())),
            }
            // aya-obj and the kernel want a section's records by increasing offset.
            if let Some((_, recs)) = region.blocks.iter_mut().find(|(name, _)| *name == to) {
                let mut sorted: Vec<&[u8]> = recs.chunks_exact(rec_size.max(4)).collect();
                sorted.sort_by_key(|r| u32::from_le_bytes(r[..4].try_into().expect("4 bytes")));
                *recs = sorted.concat();
            }
        }
        Ok(())
    }

    /// Adds `by` to the instruction offset of every record of section `name` at or after `at`
    /// (instructions were inserted there).
    pub(crate) fn shift(&mut self, name: u32, at: u32, by: u32) -> Result<(), String> {
        for region in &mut self.regions {
            let rec_size = region.rec_size.max(4);
            for (_, recs) in region.blocks.iter_mut().filter(|(n, _)| *n == name) {
                for rec in recs.chunks_exact_mut(rec_size) {
                    let off = u32_at(rec, 0)?;
                    if off >= at {
                        let moved = off.checked_add(by).ok_or(".BTF.ext: offset overflows")?;
                        rec[..4].copy_from_slice(&moved.to_le_bytes());
                    }
                }
            }
        }
        Ok(())
    }

    /// Serializes back, with the same header size and region order.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut header = self.header.clone();
        for (r, region) in self.regions.iter().enumerate() {
            let off = body.len() as u32;
            if !region.blocks.is_empty() || region.rec_size != 0 {
                body.extend_from_slice(&(region.rec_size as u32).to_le_bytes());
                for (name, recs) in &region.blocks {
                    body.extend_from_slice(&name.to_le_bytes());
                    let n = recs.len() / region.rec_size.max(1);
                    body.extend_from_slice(&(n as u32).to_le_bytes());
                    body.extend_from_slice(recs);
                }
            }
            let len = body.len() as u32 - off;
            header[8 + r * 8..12 + r * 8].copy_from_slice(&off.to_le_bytes());
            header[12 + r * 8..16 + r * 8].copy_from_slice(&len.to_le_bytes());
        }
        [header, body].concat()
    }
}

/// Points the DATASEC named `old` at the string `new_off` (the DATASEC of a renamed data
/// section: aya-obj sizes DATASECs by looking their section up by name). Returns whether one
/// was found.
pub(crate) fn rename_datasec(btf: &mut [u8], old: &str, new_off: u32) -> Result<bool, String> {
    let hdr = check_magic(btf, ".BTF")?;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let mut at = hdr + type_off;
    let end = at + type_len;
    if end > btf.len() {
        return Err(".BTF: type section out of bounds".into());
    }
    while at < end {
        let name_off = u32_at(btf, at)?;
        let info = u32_at(btf, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == 15 && string_at(btf, name_off)? == old {
            btf[at..at + 4].copy_from_slice(&new_off.to_le_bytes());
            return Ok(true);
        }
        // Each kind's fixed tail after the 12-byte common header.
        at += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => vlen * 12,
                6 | 13 => vlen * 8,
                2 | 7..=12 | 16 | 18 => 0,
                other => return Err(format!(".BTF: unknown type kind {other}")),
            };
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object as _, ObjectSection as _};

    fn section(obj: &[u8], name: &str) -> Vec<u8> {
        let file = object::File::parse(obj).unwrap();
        file.section_by_name(name).unwrap().data().unwrap().to_vec()
    }

    #[test]
    fn appended_strings_are_found_and_ext_blocks_moved() {
        let obj = include_bytes!("../../../../ebpf-fixtures/helloworld.bpf.o");
        let mut btf = section(obj, ".BTF");
        let raw = section(obj, ".BTF.ext");
        let mut ext = Ext::parse(&raw).unwrap();
        // Parsing and writing back is the identity.
        assert_eq!(ext.to_bytes(), raw);
        let before = btf.len();
        let off = append_string(&mut btf, "kprobe").unwrap();
        assert_eq!(btf.len(), before + 7);
        assert_eq!(string_at(&btf, off).unwrap(), "kprobe");
        let from = ext
            .names()
            .find(|&o| string_at(&btf, o).unwrap() == "kprobe/vfs_mkdir")
            .unwrap();
        ext.move_section(from, off, 0).unwrap();
        let names: Vec<String> = ext
            .names()
            .map(|o| string_at(&btf, o).unwrap().into())
            .collect();
        assert!(names.contains(&"kprobe".to_owned()), "{names:?}");
        assert!(!names.contains(&"kprobe/vfs_mkdir".to_owned()), "{names:?}");
        // Moving the tracepoint's blocks onto the kprobe's merges them, shifted.
        let tp = ext
            .names()
            .find(|&o| string_at(&btf, o).unwrap().starts_with("tracepoint/"))
            .unwrap();
        ext.move_section(tp, off, 64).unwrap();
        let again = Ext::parse(&ext.to_bytes()).unwrap();
        assert_eq!(
            again.names().filter(|&o| o == off).count(),
            2,
            "one block per region"
        );
    }

    #[test]
    fn malformed_btf_is_an_error_not_a_panic() {
        assert!(append_string(&mut vec![0u8; 3], "x").is_err());
        assert!(append_string(&mut vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0], "x").is_err());
        let mut ext = vec![0x9f, 0xeb, 1, 0, 32, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0];
        ext.resize(32, 0);
        assert!(Ext::parse(&ext).is_err());
        assert!(string_at(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0], 0).is_err());
    }
}
