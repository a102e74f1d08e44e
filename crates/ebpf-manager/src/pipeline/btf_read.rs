//! A read-only view of a BTF blob (an object's `.BTF`, or the running kernel's
//! `/sys/kernel/btf/vmlinux`): types by id, by name and kind, struct members and sizes. aya's
//! parsed `Btf` does not show its types; struct_ops needs the kernel's layouts.

/// BTF kinds this view names.
pub(crate) mod kind {
    pub(crate) const INT: u32 = 1;
    pub(crate) const PTR: u32 = 2;
    pub(crate) const ARRAY: u32 = 3;
    pub(crate) const STRUCT: u32 = 4;
    pub(crate) const UNION: u32 = 5;
    pub(crate) const ENUM: u32 = 6;
    pub(crate) const TYPEDEF: u32 = 8;
    pub(crate) const VOLATILE: u32 = 9;
    pub(crate) const CONST: u32 = 10;
    pub(crate) const RESTRICT: u32 = 11;
    pub(crate) const FUNC_PROTO: u32 = 13;
    pub(crate) const VAR: u32 = 14;
    pub(crate) const DATASEC: u32 = 15;
    pub(crate) const FLOAT: u32 = 16;
    pub(crate) const TYPE_TAG: u32 = 18;
    pub(crate) const ENUM64: u32 = 19;
}

/// A blob's header fields: where its types and strings are.
pub(crate) struct Layout {
    pub(crate) types: std::ops::Range<usize>,
    pub(crate) strings: std::ops::Range<usize>,
}

/// The [`Layout`] of `btf`, if its header is whole and little-endian.
pub(crate) fn layout(btf: &[u8]) -> Option<Layout> {
    let field = |at: usize| {
        btf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    if btf.get(..2) != Some(&[0x9f, 0xeb]) {
        return None;
    }
    let (hdr, type_off, type_len, str_off, str_len) =
        (field(4)?, field(8)?, field(12)?, field(16)?, field(20)?);
    let types = hdr.checked_add(type_off)?..hdr.checked_add(type_off)?.checked_add(type_len)?;
    let strings = hdr.checked_add(str_off)?..hdr.checked_add(str_off)?.checked_add(str_len)?;
    (types.end <= btf.len() && strings.end <= btf.len()).then_some(Layout { types, strings })
}

/// Calls `f(position, kind, name_off, at)` for each type of the section (`at`: its offset in
/// the section); the count, or `None` when a type is truncated or of a kind not known here.
pub(crate) fn walk(section: &[u8], mut f: impl FnMut(u32, u32, u32, usize)) -> Option<u32> {
    let word = |at: usize| {
        section
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let (mut at, mut n) = (0usize, 0u32);
    while at < section.len() {
        let (name_off, info) = (word(at)?, word(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let tail = super::btf_types::tail_size(kind, vlen)?;
        f(n, kind, name_off, at);
        n += 1;
        at += 12 + tail;
    }
    (at == section.len()).then_some(n)
}

/// One type's record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ty<'a> {
    pub(crate) kind: u32,
    pub(crate) name: &'a str,
    vlen: usize,
    kind_flag: bool,
    /// `size` or `type`, as the kind uses the word.
    size_or_type: u32,
    tail: &'a [u8],
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member<'a> {
    pub(crate) name: &'a str,
    pub(crate) type_id: u32,
    pub(crate) bit_offset: u32,
    /// Non-zero for a bitfield.
    pub(crate) bitfield_size: u32,
}

/// A whole BTF blob with an index of its types.
pub(crate) struct BtfView<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Offset in `types` of type id `i` at `i - 1`.
    offsets: Vec<u32>,
}

fn word(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

impl<'a> BtfView<'a> {
    /// Indexes `btf`; an error says what is wrong with it.
    pub(crate) fn parse(btf: &'a [u8]) -> Result<Self, String> {
        let l = layout(btf).ok_or("truncated BTF header, or not little-endian BTF")?;
        let types = &btf[l.types];
        let mut offsets = Vec::new();
        walk(types, |_, _, _, at| offsets.push(at as u32))
            .ok_or("a truncated type, or a type of an unknown kind")?;
        Ok(Self {
            types,
            strings: &btf[l.strings],
            offsets,
        })
    }

    fn string(&self, off: u32) -> &'a str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Type `id` (0 is void: none).
    pub(crate) fn get(&self, id: u32) -> Option<Ty<'a>> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let info = word(self.types, at + 4);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let tail = super::btf_types::tail_size(kind, vlen)?;
        Some(Ty {
            kind,
            name: self.string(word(self.types, at)),
            vlen,
            kind_flag: info >> 31 == 1,
            size_or_type: word(self.types, at + 8),
            tail: self.types.get(at + 12..at + 12 + tail)?,
        })
    }

    /// The first type named `name` of `kind`.
    pub(crate) fn find(&self, name: &str, kind: u32) -> Option<u32> {
        (1..=self.offsets.len() as u32).find(|&id| {
            let at = self.offsets[id as usize - 1] as usize;
            (word(self.types, at + 4) >> 24) & 0x1f == kind
                && self.string(word(self.types, at)) == name
        })
    }

    /// The names of the types of `kinds` (anonymous ones left out).
    pub(crate) fn named(&self, kinds: &[u32]) -> std::collections::HashSet<&'a str> {
        self.offsets
            .iter()
            .filter(|&&at| kinds.contains(&((word(self.types, at as usize + 4) >> 24) & 0x1f)))
            .map(|&at| self.string(word(self.types, at as usize)))
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The members of struct or union `id`.
    pub(crate) fn members(&self, id: u32) -> Vec<Member<'a>> {
        let Some(t) = self
            .get(id)
            .filter(|t| matches!(t.kind, kind::STRUCT | kind::UNION))
        else {
            return Vec::new();
        };
        (0..t.vlen)
            .map(|i| {
                let offset = word(t.tail, i * 12 + 8);
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (offset & 0xff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                Member {
                    name: self.string(word(t.tail, i * 12)),
                    type_id: word(t.tail, i * 12 + 4),
                    bit_offset,
                    bitfield_size,
                }
            })
            .collect()
    }

    /// The entries of DATASEC `id`: (VAR type id, offset, size).
    pub(crate) fn datasec_entries(&self, id: u32) -> Vec<(u32, u32, u32)> {
        let Some(t) = self.get(id).filter(|t| t.kind == kind::DATASEC) else {
            return Vec::new();
        };
        (0..t.vlen)
            .map(|i| {
                (
                    word(t.tail, i * 12),
                    word(t.tail, i * 12 + 4),
                    word(t.tail, i * 12 + 8),
                )
            })
            .collect()
    }

    /// The type a VAR, PTR, typedef or modifier refers to.
    pub(crate) fn target(&self, id: u32) -> Option<u32> {
        self.get(id)
            .filter(|t| {
                matches!(
                    t.kind,
                    kind::PTR
                        | kind::TYPEDEF
                        | kind::VOLATILE
                        | kind::CONST
                        | kind::RESTRICT
                        | kind::TYPE_TAG
                        | kind::VAR
                )
            })
            .map(|t| t.size_or_type)
    }

    /// `id` with typedefs and modifiers (const, volatile, restrict, type tags) skipped.
    pub(crate) fn skip_mods(&self, mut id: u32) -> u32 {
        // A bound, against cycles in a hostile blob.
        for _ in 0..64 {
            match self.get(id).map(|t| t.kind) {
                Some(
                    kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG,
                ) => id = self.target(id).unwrap_or(0),
                _ => break,
            }
        }
        id
    }

    /// Whether `id` is a pointer to a function prototype.
    pub(crate) fn is_func_ptr(&self, id: u32) -> bool {
        let id = self.skip_mods(id);
        self.get(id).is_some_and(|t| t.kind == kind::PTR)
            && self
                .get(self.skip_mods(self.target(id).unwrap_or(0)))
                .is_some_and(|t| t.kind == kind::FUNC_PROTO)
    }

    /// The size in bytes of type `id`, if it has one.
    pub(crate) fn size_of(&self, id: u32) -> Option<u32> {
        self.size_within(id, 16)
    }

    /// [`size_of`](Self::size_of) through at most `depth` nested arrays (a bound, against
    /// cycles in a hostile blob).
    fn size_within(&self, id: u32, depth: u32) -> Option<u32> {
        let id = self.skip_mods(id);
        let t = self.get(id)?;
        match t.kind {
            kind::INT
            | kind::STRUCT
            | kind::UNION
            | kind::ENUM
            | kind::ENUM64
            | kind::FLOAT
            | kind::DATASEC => Some(t.size_or_type),
            kind::PTR => Some(8),
            kind::ARRAY => {
                let (elem, n) = (word(t.tail, 0), word(t.tail, 8));
                self.size_within(elem, depth.checked_sub(1)?)?
                    .checked_mul(n)
            }
            _ => None,
        }
    }
}

/// A BTF blob of `types` (12-byte records with their tails) and `strings`, for tests.
#[cfg(test)]
pub(crate) fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut b = vec![0x9f, 0xeb, 1, 0];
    let (types_len, strings_len) = (types.len() as u32, strings.len() as u32);
    for f in [24u32, 0, types_len, types_len, strings_len] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(types);
    b.extend_from_slice(strings);
    b
}
