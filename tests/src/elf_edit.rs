//! Byte-level edits of 64-bit little-endian ELF objects, to make hostile objects out of the
//! fixtures: header fields, section header fields, symbol fields, string table bytes.

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// Offsets of fields in an ELF64 header, section header and symbol.
pub mod field {
    /// `e_machine` (u16).
    pub const E_MACHINE: usize = 18;
    /// `e_shoff` (u64).
    pub const E_SHOFF: usize = 0x28;
    /// `e_shnum` (u16).
    pub const E_SHNUM: usize = 0x3C;
    /// `e_shstrndx` (u16).
    pub const E_SHSTRNDX: usize = 0x3E;
    /// `sh_type` (u32).
    pub const SH_TYPE: usize = 4;
    /// `sh_flags` (u64).
    pub const SH_FLAGS: usize = 8;
    /// `sh_offset` (u64).
    pub const SH_OFFSET: usize = 24;
    /// `sh_size` (u64).
    pub const SH_SIZE: usize = 32;
    /// `sh_info` (u32).
    pub const SH_INFO: usize = 44;
    /// `st_name` (u32).
    pub const ST_NAME: usize = 0;
    /// `st_shndx` (u16).
    pub const ST_SHNDX: usize = 6;
    /// `st_value` (u64).
    pub const ST_VALUE: usize = 8;
    /// `st_size` (u64).
    pub const ST_SIZE: usize = 16;
}

/// A copy of an object to edit.
#[derive(Clone)]
pub struct ElfEdit(pub Vec<u8>);

impl ElfEdit {
    /// A copy of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// Writes `value` as `width` little-endian bytes at `offset`.
    pub fn put(mut self, offset: usize, width: usize, value: u64) -> Self {
        self.0[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..width]);
        self
    }

    fn u64_at(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.0[offset..offset + 8].try_into().unwrap())
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.0[offset..offset + 2].try_into().unwrap())
    }

    /// The file offset of the header of section `name`.
    pub fn section_header(&self, name: &str) -> usize {
        let index = {
            let file = object::File::parse(self.0.as_slice()).expect("a valid object to edit");
            file.section_by_name(name)
                .unwrap_or_else(|| panic!("no section {name}"))
                .index()
                .0
        };
        self.u64_at(field::E_SHOFF) as usize + index * usize::from(self.u16_at(0x3A))
    }

    /// Sets a field of the header of section `name`.
    pub fn section(self, name: &str, field: usize, width: usize, value: u64) -> Self {
        let at = self.section_header(name) + field;
        self.put(at, width, value)
    }

    /// The file offset of symbol `name` in `.symtab`.
    pub fn symbol_entry(&self, name: &str) -> usize {
        let file = object::File::parse(self.0.as_slice()).expect("a valid object to edit");
        let index = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .index()
            .0;
        let (symtab, _) = file
            .section_by_name(".symtab")
            .and_then(|s| s.file_range())
            .expect(".symtab");
        symtab as usize + index * 24
    }

    /// Sets a field of symbol `name`.
    pub fn symbol(self, name: &str, field: usize, width: usize, value: u64) -> Self {
        let at = self.symbol_entry(name) + field;
        self.put(at, width, value)
    }

    /// Replaces every occurrence of `from` by `to` (the same length), in the whole file.
    pub fn replace(mut self, from: &[u8], to: &[u8]) -> Self {
        assert_eq!(from.len(), to.len());
        let mut i = 0;
        let mut found = false;
        while i + from.len() <= self.0.len() {
            if &self.0[i..i + from.len()] == from {
                self.0[i..i + from.len()].copy_from_slice(to);
                found = true;
                i += from.len();
            } else {
                i += 1;
            }
        }
        assert!(found, "{from:?} is not in the object");
        self
    }

    /// The first `len` bytes.
    pub fn truncate(mut self, len: usize) -> Self {
        self.0.truncate(len);
        self
    }

    /// The file offset of the first relocation of section `rel_section`.
    pub fn first_relocation(&self, rel_section: &str) -> usize {
        let file = object::File::parse(self.0.as_slice()).expect("a valid object to edit");
        file.section_by_name(rel_section)
            .and_then(|s| s.file_range())
            .unwrap_or_else(|| panic!("no section {rel_section}"))
            .0 as usize
    }
}

/// The BPF maps and programs this process holds fds of (`anon_inode:bpf-map`,
/// `anon_inode:bpf-prog`, `anon_inode:bpf_link`, BTF): a failed init must leave none.
pub fn bpf_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| {
                        let t = t.to_string_lossy();
                        t.starts_with("anon_inode:bpf")
                            || t == "anon_inode:btf"
                            || t == "anon_inode:[perf_event]"
                    })
                })
                .count()
        })
        .unwrap_or(0)
}
