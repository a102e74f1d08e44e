//! The function symbols of the executables and libraries uprobes go to, read once per file.
//!
//! Resolving a uprobe reads its binary's symbol tables, and attaching by symbol makes aya read
//! the whole file again; a manager with many uprobes on one large binary read it once per probe
//! and twice per attach. Here each file is read once and its functions (name and file offset)
//! kept while the file is unchanged (same device, inode, size and modification time), for the
//! few binaries last used.

use std::{
    collections::HashSet,
    io,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, Mutex},
};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// How many binaries' tables are kept.
const KEPT: usize = 8;

/// Reads per file (device, inode), for [`reads`].
static READS: Mutex<Vec<((u64, u64), usize)>> = Mutex::new(Vec::new());

/// The defined functions of one binary, in symbol table order (`.symtab`, then `.dynsym`),
/// each name once: the name and, where the symbol lies in a section of the file, its file
/// offset (what uprobes take).
#[derive(Debug, Default)]
pub(crate) struct Functions {
    pub(crate) list: Vec<(String, Option<u64>)>,
}

impl Functions {
    /// The file offset of `symbol`, if the binary defines it in a section of the file.
    pub(crate) fn offset_of(&self, symbol: &str) -> Option<u64> {
        self.list
            .iter()
            .find(|(name, _)| name == symbol)
            .and_then(|(_, offset)| *offset)
    }
}

/// Identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The functions of `binary`, from the cache when the file is unchanged.
pub(crate) fn functions(binary: &Path) -> io::Result<Arc<Functions>> {
    static CACHE: Mutex<Vec<(Key, Arc<Functions>)>> = Mutex::new(Vec::new());
    let m = std::fs::metadata(binary)?;
    let key = Key {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    };
    {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(f.clone());
        }
    }
    let read = Arc::new(read(binary, (key.dev, key.ino))?);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(k, _)| (k.dev, k.ino) != (key.dev, key.ino));
    if cache.len() >= KEPT {
        cache.remove(0);
    }
    cache.push((key, read.clone()));
    Ok(read)
}

/// How many times `binary` was read for its symbols in this process: a diagnostic for tests
/// and benchmarks.
pub(crate) fn reads(binary: &Path) -> usize {
    let Ok(m) = std::fs::metadata(binary) else {
        return 0;
    };
    let reads = READS.lock().unwrap_or_else(|e| e.into_inner());
    reads
        .iter()
        .find(|(file, _)| *file == (m.dev(), m.ino()))
        .map_or(0, |(_, n)| *n)
}

fn count_read(file: (u64, u64)) {
    let mut reads = READS.lock().unwrap_or_else(|e| e.into_inner());
    match reads.iter_mut().find(|(f, _)| *f == file) {
        Some((_, n)) => *n += 1,
        None => reads.push((file, 1)),
    }
}

fn read(binary: &Path, file_id: (u64, u64)) -> io::Result<Functions> {
    count_read(file_id);
    parse(&std::fs::read(binary)?)
}

/// The functions of an ELF file's bytes.
pub(crate) fn parse(data: &[u8]) -> io::Result<Functions> {
    let file = object::File::parse(data)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut list = Vec::new();
    // A set, not a scan of `list`: binaries have tens of thousands of symbols.
    let mut seen = HashSet::new();
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() != object::SymbolKind::Text || !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() || !seen.insert(name) {
            continue;
        }
        // address - section address + section file offset, as the kernel's uprobes count.
        let offset = sym
            .section_index()
            .and_then(|i| file.section_by_index(i).ok())
            .and_then(|section| {
                let (file_offset, _) = section.file_range()?;
                sym.address()
                    .checked_sub(section.address())?
                    .checked_add(file_offset)
            });
        list.push((name.to_owned(), offset));
    }
    Ok(Functions { list })
}
