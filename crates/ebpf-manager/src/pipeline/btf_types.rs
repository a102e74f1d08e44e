//! Editing the type section of `.BTF` where BTF-defined maps (`SEC(".maps")`) need it: aya-obj
//! reads a map's type, sizes and flags from its BTF struct (`__uint(type, N)` is a member
//! `int (*type)[N]`), and creates one map per entry of the `.maps` DATASEC. So an edit gives
//! the member a new pointer-to-array type (appended; type ids do not move), and an excluded map
//! loses its DATASEC entry.

use crate::MapSpecEditor;

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const FUNC: u32 = 12;
const VAR: u32 = 14;
const DATASEC: u32 = 15;

/// What an extern is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KsymKind {
    /// A kfunc (`extern void f(void) __ksym;`).
    Func,
    /// A variable with a type (`extern const struct rq runqueues __ksym;`).
    TypedVar,
    /// A variable whose address only is wanted (`extern const void init_task __ksym;`).
    UntypedVar,
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn put(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// A `.BTF` with no types and the empty string only (little-endian, version 1).
pub(crate) fn empty() -> Vec<u8> {
    let mut btf = vec![0x9f, 0xeb, 1, 0];
    for field in [24u32, 0, 0, 0, 1] {
        btf.extend_from_slice(&field.to_le_bytes());
    }
    btf.push(0);
    btf
}

/// The bytes a BTF type of `kind` with `vlen` members takes after its 12-byte header; `None`
/// for a kind this crate does not know.
pub(crate) fn tail_size(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,
        3 => 12,
        4 | 5 | 15 | 19 => vlen * 12,
        6 | 13 => vlen * 8,
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    })
}

/// `.BTF` split into header, types (type id `i` at index `i - 1`) and strings.
pub(crate) struct Types {
    header: Vec<u8>,
    types: Vec<Vec<u8>>,
    strings: Vec<u8>,
}

impl Types {
    /// Parses `.BTF`; its types must come first and its strings right after, as compilers
    /// write them.
    pub(crate) fn parse(btf: &[u8]) -> Result<Self, String> {
        let field = |at: usize| {
            btf.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or(".BTF: truncated header")
        };
        if btf.get(..2) != Some(&[0x9f, 0xeb]) {
            return Err(".BTF: no little-endian BTF magic".into());
        }
        let (hdr, type_off, type_len, str_off, str_len) =
            (field(4)?, field(8)?, field(12)?, field(16)?, field(20)?);
        if hdr < 24 || type_off != 0 || str_off != type_len || hdr + str_off + str_len != btf.len()
        {
            return Err(".BTF: unusual section layout".into());
        }
        let mut types = Vec::new();
        let mut at = hdr;
        while at < hdr + type_len {
            let info = btf.get(at + 4..at + 8).ok_or(".BTF: truncated type")?;
            let info = u32::from_le_bytes(info.try_into().expect("4 bytes"));
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let tail = tail_size(kind, vlen).ok_or(format!(".BTF: unknown type kind {kind}"))?;
            let end = at + 12 + tail;
            types.push(btf.get(at..end).ok_or(".BTF: truncated type")?.to_vec());
            at = end;
        }
        Ok(Self {
            header: btf[..hdr].to_vec(),
            types,
            strings: btf[hdr + str_off..].to_vec(),
        })
    }

    /// Serializes back.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let type_len: usize = self.types.iter().map(Vec::len).sum();
        let mut header = self.header.clone();
        put(&mut header, 8, 0);
        put(&mut header, 12, type_len as u32);
        put(&mut header, 16, type_len as u32);
        put(&mut header, 20, self.strings.len() as u32);
        let mut out = header;
        self.types.iter().for_each(|t| out.extend_from_slice(t));
        out.extend_from_slice(&self.strings);
        out
    }

    fn ty(&self, id: u32) -> Option<&Vec<u8>> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    fn kind(&self, id: u32) -> u32 {
        self.ty(id).map_or(0, |t| (word(t, 4) >> 24) & 0x1f)
    }

    fn name(&self, id: u32) -> &str {
        let Some(t) = self.ty(id) else { return "" };
        let rest = self.strings.get(word(t, 0) as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn string(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn add(&mut self, name_off: u32, kind: u32, size_or_type: u32, tail: &[u32]) -> u32 {
        let mut t = Vec::with_capacity(12 + tail.len() * 4);
        for w in [name_off, kind << 24, size_or_type].iter().chain(tail) {
            t.extend_from_slice(&w.to_le_bytes());
        }
        self.types.push(t);
        self.types.len() as u32
    }

    /// An INT of `size` bytes, found or added.
    fn int(&mut self, size: u32) -> u32 {
        let found = (1..=self.types.len() as u32)
            .find(|&id| self.kind(id) == INT && self.ty(id).is_some_and(|t| word(t, 8) == size));
        found.unwrap_or_else(|| {
            let name = self.string(if size == 1 { "unsigned char" } else { "int" });
            let encoding = if size == 1 { 0 } else { 1 << 24 };
            self.add(name, INT, size, &[encoding | (size * 8)])
        })
    }

    /// `int (*)[n]`, the type of an `__uint(name, n)` member.
    fn uint_member(&mut self, n: u32) -> u32 {
        let int = self.int(4);
        let array = self.add(0, ARRAY, 0, &[int, int, n]);
        self.add(0, PTR, array, &[])
    }

    /// `unsigned char (*)[n]`: a pointer to an n-byte type, for `key` and `value`.
    fn bytes_member(&mut self, n: u32) -> u32 {
        let (byte, int) = (self.int(1), self.int(4));
        let array = self.add(0, ARRAY, 0, &[byte, int, n]);
        self.add(0, PTR, array, &[])
    }

    fn datasec(&self, name: &str) -> Option<u32> {
        (1..=self.types.len() as u32).find(|&id| self.kind(id) == DATASEC && self.name(id) == name)
    }

    /// The VARs of DATASEC `datasec`, by name.
    pub(crate) fn vars(&self, datasec: &str) -> Vec<String> {
        let Some(ds) = self.datasec(datasec).and_then(|id| self.ty(id)) else {
            return Vec::new();
        };
        ds[12..]
            .chunks_exact(12)
            .map(|e| self.name(word(e, 0)).to_owned())
            .collect()
    }

    /// Removes the entries of `names` from DATASEC `datasec`; returns how many went.
    pub(crate) fn remove_vars(&mut self, datasec: &str, names: &[String]) -> usize {
        let Some(id) = self.datasec(datasec) else {
            return 0;
        };
        let old = self.ty(id).expect("found").clone();
        let kept: Vec<&[u8]> = old[12..]
            .chunks_exact(12)
            .filter(|e| !names.iter().any(|n| n == self.name(word(e, 0))))
            .collect();
        let removed = (old.len() - 12) / 12 - kept.len();
        let mut new = old[..12].to_vec();
        let info = (word(&old, 4) & !0xffff) | kept.len() as u32;
        put(&mut new, 4, info);
        kept.iter().for_each(|e| new.extend_from_slice(e));
        self.types[id as usize - 1] = new;
        removed
    }

    /// The entries of the `.ksyms` DATASEC (libbpf's `__ksym` externs), with their kind: a
    /// FUNC is a kfunc, a VAR a kernel variable, typed unless its type is `void`.
    pub(crate) fn ksyms(&self) -> Result<Vec<(String, KsymKind)>, String> {
        use KsymKind as Kind;
        let Some(ds) = self.datasec(".ksyms").and_then(|id| self.ty(id)) else {
            return Ok(Vec::new());
        };
        ds[12..]
            .chunks_exact(12)
            .map(|e| {
                let id = word(e, 0);
                let kind = match self.kind(id) {
                    FUNC => Kind::Func,
                    VAR if self.strip_modifiers(self.ty(id).map_or(0, |t| word(t, 8))) == 0 => {
                        Kind::UntypedVar
                    }
                    VAR => Kind::TypedVar,
                    other => return Err(format!(
                        "the `.ksyms` DATASEC has an entry of BTF kind {other} (type {id}): only kfuncs (FUNC) and variables (VAR) can be `__ksym` externs"
                    )),
                };
                Ok((self.name(id).to_owned(), kind))
            })
            .collect()
    }

    fn strip_modifiers(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.kind(id) {
                // typedef, volatile, const, restrict, type tag
                8..=11 | 18 => id = self.ty(id).map_or(0, |t| word(t, 8)),
                _ => return id,
            }
        }
        id
    }

    /// Makes the `.ksyms` DATASEC acceptable to the kernel and to aya-obj, as libbpf does:
    /// the kernel refuses extern linkage and DATASEC entries that are not VARs, aya-obj a
    /// DATASEC without an ELF section unless its size is set. Each VAR becomes a global `int`,
    /// each FUNC a global function whose entry points at one dummy `int` VAR; entries get 4
    /// bytes each. An entry of another kind is an error.
    pub(crate) fn fix_ksyms(&mut self) -> Result<(), String> {
        let Some(ds) = self.datasec(".ksyms") else {
            return Ok(());
        };
        let int = self.int(4);
        let mut dummy = None;
        let entries: Vec<u32> = self.types[ds as usize - 1][12..]
            .chunks_exact(12)
            .map(|e| word(e, 0))
            .collect();
        for (i, id) in entries.iter().copied().enumerate() {
            let target = match self.kind(id) {
                FUNC => {
                    let t = &mut self.types[id as usize - 1];
                    let info = word(t, 4);
                    put(t, 4, (info & !0xffff) | 1); // BTF_FUNC_GLOBAL
                    *dummy.get_or_insert_with(|| {
                        let name = self.string("__ksym_func");
                        self.add(name, VAR, int, &[1])
                    })
                }
                VAR => {
                    let t = &mut self.types[id as usize - 1];
                    put(t, 8, int);
                    put(t, 12, 1); // BTF_VAR_GLOBAL_ALLOCATED
                    id
                }
                other => {
                    return Err(format!(
                        "the `.ksyms` DATASEC has an entry of BTF kind {other} (type {id}): only kfuncs (FUNC) and variables (VAR) can be `__ksym` externs"
                    ))
                }
            };
            let t = &mut self.types[ds as usize - 1];
            let at = 12 + i * 12;
            put(t, at, target);
            put(t, at + 4, i as u32 * 4);
            put(t, at + 8, 4);
        }
        put(
            &mut self.types[ds as usize - 1],
            8,
            entries.len() as u32 * 4,
        );
        Ok(())
    }

    /// The string at `off` of the string section.
    pub(crate) fn string_at(&self, off: u32) -> &str {
        self.strings_at(off)
    }

    /// A CO-RE access of type `id` in words: the type's name, then `.member`, `[index]` or
    /// `::enumerator` for each index of the access string after the first (which indexes the
    /// pointer the access starts from).
    pub(crate) fn describe_access(&self, id: u32, access: &str, enum_value: bool) -> String {
        const UNION: u32 = 5;
        const ENUM: u32 = 6;
        const ENUM64: u32 = 19;
        let named = self.strip_modifiers(id);
        let kind = |k: u32| match k {
            STRUCT => "struct ",
            UNION => "union ",
            ENUM | ENUM64 => "enum ",
            _ => "",
        };
        let mut out = format!("{}{}", kind(self.kind(named)), self.name(named));
        let mut at = named;
        let indexes = access.split(':').filter_map(|i| i.parse::<usize>().ok());
        for (n, i) in indexes.enumerate() {
            let Some(t) = self.ty(at) else { break };
            if enum_value {
                let size = if self.kind(at) == ENUM64 { 12 } else { 8 };
                let name = t.get(12 + i * size..).map_or(0, |e| word(e, 0));
                out.push_str(&format!("::{}", self.strings_at(name)));
                break;
            }
            if n == 0 {
                continue;
            }
            match self.kind(at) {
                STRUCT | UNION => {
                    let Some(m) = t.get(12 + i * 12..12 + i * 12 + 12) else {
                        break;
                    };
                    let name = self.strings_at(word(m, 0));
                    out.push_str(&format!(
                        ".{}",
                        if name.is_empty() { "<anon>" } else { name }
                    ));
                    at = self.strip_modifiers(word(m, 4));
                }
                ARRAY => {
                    out.push_str(&format!("[{i}]"));
                    at = self.strip_modifiers(word(t, 12));
                }
                _ => break,
            }
        }
        out
    }

    /// Points the first entry of DATASEC `datasec` at `to` (hostile inputs, in tests).
    #[cfg(test)]
    pub(crate) fn point_first_entry_for_tests(&mut self, datasec: &str, to: u32) {
        let id = self.datasec(datasec).expect("datasec");
        put(&mut self.types[id as usize - 1], 12, to);
    }

    /// A struct of `__uint` members (`int (*name)[value]`, 8 bytes each), plus a `values`
    /// member (`struct inner *values[]`) when `values` is given.
    fn map_def_struct(&mut self, fields: &[(&str, u32)], values: Option<u32>) -> u32 {
        let mut members = Vec::new();
        for (i, &(name, v)) in fields.iter().enumerate() {
            let ty = self.uint_member(v);
            members.extend([self.string(name), ty, i as u32 * 64]);
        }
        let size = fields.len() as u32 * 8;
        if let Some(inner) = values {
            let int = self.int(4);
            let ptr = self.add(0, PTR, inner, &[]);
            let array = self.add(0, ARRAY, 0, &[ptr, int, 0]);
            members.extend([self.string("values"), array, size * 8]);
        }
        let vlen = members.len() as u32 / 3;
        self.add(0, STRUCT, 0, &[]);
        let id = self.types.len() as u32;
        let t = &mut self.types[id as usize - 1];
        put(t, 4, (STRUCT << 24) | vlen);
        put(t, 8, size);
        members
            .iter()
            .for_each(|w| t.extend_from_slice(&w.to_le_bytes()));
        id
    }

    /// Describes a legacy map of maps moved to `.maps` as a BTF-defined one (what aya-obj reads
    /// an inner map definition from), at `offset` in a `.maps` section of `section_size` bytes.
    /// Definitions are (type, key size, value size, max entries, flags).
    pub(crate) fn add_map_of_maps(
        &mut self,
        name: &str,
        outer: [u32; 5],
        inner: [u32; 5],
        offset: u32,
        section_size: u32,
    ) {
        let fields = |d: [u32; 5]| {
            [
                ("type", d[0]),
                ("key_size", d[1]),
                ("value_size", d[2]),
                ("max_entries", d[3]),
                ("map_flags", d[4]),
            ]
        };
        let inner = self.map_def_struct(&fields(inner), None);
        // The outer map's value is an fd: 4 bytes, whatever the definition says.
        let outer = [outer[0], outer[1], 4, outer[3], outer[4]];
        let outer = self.map_def_struct(&fields(outer), Some(inner));
        let name_off = self.string(name);
        let var = self.add(name_off, VAR, outer, &[1]); // global
        let entry = [var, offset, super::maps::CONVERTED_SIZE as u32];
        match self.datasec(".maps") {
            Some(id) => {
                let t = &mut self.types[id as usize - 1];
                let info = word(t, 4);
                put(t, 4, (info & !0xffff) | ((info & 0xffff) + 1));
                put(t, 8, section_size);
                entry
                    .iter()
                    .for_each(|w| t.extend_from_slice(&w.to_le_bytes()));
            }
            None => {
                let ds_name = self.string(".maps");
                let id = self.add(ds_name, DATASEC, section_size, &entry);
                put(&mut self.types[id as usize - 1], 4, (DATASEC << 24) | 1);
            }
        }
    }

    /// The VAR of BTF map `map` and the struct defining it (the VAR's type through modifiers).
    fn map_struct(&self, map: &str) -> Option<(u32, u32)> {
        let ds = self.ty(self.datasec(".maps")?)?;
        let var = ds[12..]
            .chunks_exact(12)
            .map(|e| word(e, 0))
            .find(|&v| self.kind(v) == VAR && self.name(v) == map)?;
        self.resolve_struct(word(self.ty(var)?, 8))
            .map(|s| (var, s))
    }

    fn resolve_struct(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            match self.kind(id) {
                STRUCT => return Some(id),
                // typedef, volatile, const, restrict, type tag
                8..=11 | 18 => id = word(self.ty(id)?, 8),
                _ => return None,
            }
        }
        None
    }

    /// Points member `name` of struct `s` at type `to`, adding the member when missing (at the
    /// last member's offset: the kernel wants offsets in order and inside the struct).
    fn set_member(&mut self, s: u32, name: &str, to: u32) {
        let t = &self.types[s as usize - 1];
        let at = t[12..]
            .chunks_exact(12)
            .position(|m| self.strings_at(word(m, 0)) == name);
        if let Some(i) = at {
            put(&mut self.types[s as usize - 1], 12 + i * 12 + 4, to);
            return;
        }
        let last_offset = t[12..].chunks_exact(12).last().map_or(0, |m| word(m, 8));
        let name_off = self.string(name);
        let t = &mut self.types[s as usize - 1];
        let info = word(t, 4);
        put(t, 4, (info & !0xffff) | ((info & 0xffff) + 1));
        for w in [name_off, to, last_offset] {
            t.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn strings_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn has_member(&self, s: u32, name: &str) -> bool {
        self.ty(s).is_some_and(|t| {
            t[12..]
                .chunks_exact(12)
                .any(|m| self.strings_at(word(m, 0)) == name)
        })
    }

    /// Applies the type, key size, value size and flags of `e` to BTF map `e.name`; `false`
    /// when the object has no such BTF map.
    pub(crate) fn edit_map(&mut self, e: &MapSpecEditor) -> bool {
        let Some((var, shared)) = self.map_struct(&e.name) else {
            return false;
        };
        // Maps declared together (`struct {...} a, b SEC(".maps")`) share their struct: the
        // edited map gets a copy of its own.
        let copy = self.ty(shared).expect("found").clone();
        self.types.push(copy);
        let s = self.types.len() as u32;
        put(&mut self.types[var as usize - 1], 8, s);
        for (member, value) in [("type", e.map_type), ("map_flags", e.flags)] {
            if let Some(v) = value {
                let to = self.uint_member(v);
                self.set_member(s, member, to);
            }
        }
        for (typed, sized, value) in [
            ("key", "key_size", e.key_size),
            ("value", "value_size", e.value_size),
        ] {
            let Some(v) = value else { continue };
            if self.has_member(s, typed) {
                let to = self.bytes_member(v);
                self.set_member(s, typed, to);
            } else {
                let to = self.uint_member(v);
                self.set_member(s, sized, to);
            }
        }
        true
    }
}
