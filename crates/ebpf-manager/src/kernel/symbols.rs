//! The kernel's traceable functions: `available_filter_functions`, or the text symbols of
//! `/proc/kallsyms` where that file cannot be read (it needs tracefs and, on some kernels,
//! more than root: reading it fails with EPERM on locked-down kernels).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Syscall symbol prefixes, in the order they are tried.
pub(crate) const SYSCALL_PREFIXES: &[&str] = &["__x64_sys_", "__ia32_sys_", "__arm64_sys_", "sys_"];

const KALLSYMS: &str = "/proc/kallsyms";

/// The addresses `/proc/kallsyms` gives `names` (those it lists; root sees real addresses).
pub(crate) fn kallsyms_addresses(names: &[&str]) -> Result<std::collections::HashMap<String, u64>> {
    let text = std::fs::read_to_string(KALLSYMS).map_err(|source| Error::Io {
        path: KALLSYMS.into(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, _kind, name) = (f.next()?, f.next()?, f.next()?);
            names
                .contains(&name)
                .then(|| Some((name.to_owned(), u64::from_str_radix(addr, 16).ok()?)))?
        })
        .collect())
}

/// The kernel's function names, in file order, read once, with an index by their first two
/// bytes that answers a pattern from its literal prefix instead of a scan (100 patterns:
/// 1.3-1.6 ms against 284-359 ms of scans, measured in the 6.12 guest). The names are one
/// string and the index a counting sort: no allocation per name and no comparison sort, which
/// took a quarter of the list's time in the 6.12 guest (54 of 205 ms).
#[derive(Debug, Clone)]
pub struct FunctionIndex {
    source: PathBuf,
    /// Every name, one after the other.
    text: String,
    /// Where each name ends in `text` (it starts where the previous one ends).
    ends: Vec<u32>,
    /// Positions of the names, grouped by [`head`] (in file order within a group).
    by_head: Vec<u32>,
    /// Where each head's group starts in `by_head` (one more entry than there are heads).
    groups: Vec<u32>,
}

/// Whether a text symbol of `/proc/kallsyms` is a function the kernel can trace, as
/// `available_filter_functions` would list it: not the `__pfx_` padding before each function
/// (Linux 6.2) or `__cfi_` preamble (6.4, kCFI), not a compiler-split `.cold` piece,
/// and not a text section marker (`_stext`, `__entry_text_start`, ...).
fn is_function(name: &str) -> bool {
    const MARKERS: &[&str] = &["_stext", "_etext", "_sinittext", "_einittext", "_text"];
    !(name.starts_with("__pfx_")
        || name.starts_with("__cfi_")
        || name.contains(".cold")
        || MARKERS.contains(&name)
        || name.ends_with("_text_start")
        || name.ends_with("_text_end"))
}

/// The group of a name or prefix: its first two bytes (a missing second byte is 0).
fn head(name: &[u8]) -> usize {
    (usize::from(name.first().copied().unwrap_or(0)) << 8)
        | usize::from(name.get(1).copied().unwrap_or(0))
}

impl FunctionIndex {
    /// Reads `available_filter_functions` under `tracefs`, falling back to `/proc/kallsyms`.
    pub fn load(tracefs: Option<&Path>) -> Result<Self> {
        let aff = tracefs
            .unwrap_or(Path::new("/sys/kernel/tracing"))
            .join("available_filter_functions");
        match std::fs::read_to_string(&aff) {
            Ok(text) => Ok(Self::from_available_filter_functions(aff, &text)),
            Err(aff_error) => {
                log::debug!("{}: {aff_error}; using {KALLSYMS}", aff.display());
                match std::fs::read_to_string(KALLSYMS) {
                    Ok(text) => Ok(Self::from_kallsyms(KALLSYMS.into(), &text)),
                    Err(source) => Err(Error::FunctionList {
                        available_filter_functions: aff,
                        aff_error,
                        source,
                    }),
                }
            }
        }
    }

    /// Parses the text of `available_filter_functions`: one function a line, with an optional
    /// ` [module]` suffix that is stripped.
    pub fn from_available_filter_functions(source: PathBuf, text: &str) -> Self {
        Self::new(
            source,
            text.len(),
            text.lines()
                .filter_map(|line| line.split_whitespace().next()),
        )
    }

    fn new<'a>(source: PathBuf, capacity: usize, names: impl Iterator<Item = &'a str>) -> Self {
        let mut text = String::with_capacity(capacity);
        let mut ends = Vec::new();
        let mut counts = vec![0u32; (1 << 16) + 1];
        for name in names {
            text.push_str(name);
            // Names are short and the lists hold about 40,000 (kallsyms about 150,000): a
            // u32 offset cannot overflow for a function list.
            ends.push(text.len() as u32);
            counts[head(name.as_bytes()) + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let groups = counts.clone();
        let mut next = counts;
        let mut by_head = vec![0u32; ends.len()];
        let mut start = 0usize;
        for (i, &end) in ends.iter().enumerate() {
            let h = head(&text.as_bytes()[start..end as usize]);
            by_head[next[h] as usize] = i as u32;
            next[h] += 1;
            start = end as usize;
        }
        READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            source,
            text,
            ends,
            by_head,
            groups,
        }
    }

    /// The name at position `i`.
    fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Every name, in file order.
    fn names(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len()).map(|i| self.name(i))
    }

    /// Positions of the names that start with `prefix` (in file order for a prefix of two bytes
    /// or more).
    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = usize> + 'a {
        let bytes = prefix.as_bytes();
        let (from, to) = match bytes.len() {
            0 => (0, self.by_head.len()),
            1 => (
                self.groups[head(bytes)] as usize,
                self.groups[head(bytes) + 256] as usize,
            ),
            _ => (
                self.groups[head(bytes)] as usize,
                self.groups[head(bytes) + 1] as usize,
            ),
        };
        self.by_head[from..to]
            .iter()
            .map(|&i| i as usize)
            .filter(move |&i| self.name(i).starts_with(prefix))
    }

    /// Parses the text of `/proc/kallsyms` (`address type name [module]`), keeping text
    /// symbols (types `t`, `T`, `w`, `W`).
    pub fn from_kallsyms(source: PathBuf, text: &str) -> Self {
        let names = text.lines().filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            (matches!(kind, "t" | "T" | "w" | "W") && is_function(name)).then_some(name)
        });
        Self::new(source, text.len() / 2, names)
    }

    /// The file the names came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// How many names there are (duplicates included: static functions may repeat).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no name at all.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether `name` is one of the functions.
    pub fn contains(&self, name: &str) -> bool {
        self.with_prefix(name).any(|i| self.name(i) == name)
    }

    /// Positions of the names `pattern` matches, in file order.
    fn matches(&self, pattern: &glob::Pattern) -> Vec<usize> {
        let text = pattern.as_str();
        let prefix = &text[..text.find(['*', '?', '[']).unwrap_or(text.len())];
        let mut found: Vec<usize> = self
            .with_prefix(prefix)
            .filter(|&i| pattern.matches(self.name(i)))
            .collect();
        found.sort_unstable();
        found
    }

    /// The function a glob pattern selects: the pattern itself when it is a function's exact
    /// name, else the first match in file order.
    pub fn find(&self, pattern: &glob::Pattern) -> Option<&str> {
        let text = pattern.as_str();
        // The exact name wins only where the pattern selects it at all (`m$vd` is a name in a
        // list, and as a regex it matches nothing).
        if let Some(exact) = self
            .with_prefix(text)
            .find(|&i| self.name(i) == text && pattern.matches(text))
        {
            return Some(self.name(exact));
        }
        self.matches(pattern).first().map(|&i| self.name(i))
    }

    /// Every function a glob pattern matches, in file order, each once (static functions of
    /// the same name are listed once per definition; attaching by name reaches one of them).
    pub fn find_all(&self, pattern: &glob::Pattern) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.matches(pattern)
            .into_iter()
            .map(|i| self.name(i))
            .filter(|n| seen.insert(*n))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn names_for_tests(&self) -> Vec<String> {
        self.names().map(str::to_owned).collect()
    }

    /// The function a regular expression selects: the expression itself when it is a
    /// function's exact name, else the first name it matches (unanchored) in file order.
    pub fn find_regex(&self, re: &regex::Regex) -> Option<&str> {
        let text = re.as_str();
        if let Some(exact) = self
            .with_prefix(text)
            .find(|&i| self.name(i) == text && re.is_match(text))
        {
            return Some(self.name(exact));
        }
        self.names().find(|n| re.is_match(n))
    }

    /// Every function a regular expression matches, in file order, each once.
    pub fn find_all_regex(&self, re: &regex::Regex) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.names()
            .filter(|n| re.is_match(n))
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// The symbol of a syscall: `name` itself when it already carries a known prefix, else the
    /// first of the syscall prefixes (`__x64_sys_`, `__ia32_sys_`, `__arm64_sys_`, `sys_`) + `name` that exists. `Err` lists the symbols tried.
    pub fn syscall(&self, name: &str) -> std::result::Result<String, Vec<String>> {
        let candidates: Vec<String> = if SYSCALL_PREFIXES.iter().any(|p| name.starts_with(p)) {
            vec![name.to_owned()]
        } else {
            SYSCALL_PREFIXES
                .iter()
                .map(|p| format!("{p}{name}"))
                .collect()
        };
        match candidates.iter().find(|c| self.contains(c)) {
            Some(found) => Ok(found.clone()),
            None => Err(candidates),
        }
    }
}

static READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many times this process read and indexed the kernel's function list.
pub fn function_list_reads() -> usize {
    READS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The index the process's managers share while one of them holds it, with the
/// `/proc/modules` it was read under.
static SHARED: std::sync::Mutex<Option<(std::sync::Weak<FunctionIndex>, u64)>> =
    std::sync::Mutex::new(None);

/// A fingerprint of the loaded modules: a module that loads or goes changes the function list
/// (best effort: a module replaced by one of the same size goes unnoticed).
fn modules_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>())
        .collect::<Vec<_>>()
        .hash(&mut h);
    h.finish()
}

/// A [`FunctionIndex`] read on first use and shared by the process's managers: read once while
/// any manager holds it, again after every holder released it or a module loaded. Reading it
/// may start early on a thread of its own ([`prefetch`](Self::prefetch)).
#[derive(Debug, Default)]
pub(crate) struct LazyFunctions {
    index: Option<std::sync::Arc<FunctionIndex>>,
    /// A read started by `prefetch`, joined by `get` or on drop: never left running.
    pending: Option<std::thread::JoinHandle<Result<std::sync::Arc<FunctionIndex>>>>,
}

impl LazyFunctions {
    /// Starts reading the list on a thread, so that the kernel's generation of it (tens of
    /// milliseconds, hundreds in a slow VM) overlaps the object's load: `init` calls this when
    /// a probe will need it. Without a thread, the list is read on first use as before.
    pub(crate) fn prefetch() -> Self {
        let pending = std::thread::Builder::new()
            .name("ebpfm-functions".into())
            .spawn(shared_index)
            .inspect_err(|e| log::debug!("reading the function list on first use: {e}"))
            .ok();
        Self {
            index: None,
            pending,
        }
    }

    pub(crate) fn get(&mut self) -> Result<&FunctionIndex> {
        if self.index.is_none() {
            let index = match self.pending.take().map(std::thread::JoinHandle::join) {
                Some(Ok(read)) => read?,
                // The thread panicked (it never should): read it here instead.
                Some(Err(_)) | None => shared_index()?,
            };
            self.index = Some(index);
        }
        Ok(self.index.as_deref().expect("just set"))
    }

    /// Lets go of the index (freed when no other manager holds it).
    pub(crate) fn release(&mut self) {
        self.join();
        self.index = None;
    }

    fn join(&mut self) {
        if let Some(pending) = self.pending.take() {
            let _ = pending.join();
        }
    }
}

impl Drop for LazyFunctions {
    fn drop(&mut self) {
        self.join();
    }
}

/// The index the process's managers share, read now unless one holds it.
fn shared_index() -> Result<std::sync::Arc<FunctionIndex>> {
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let modules = modules_fingerprint();
    let held = shared
        .as_ref()
        .filter(|(_, m)| *m == modules)
        .and_then(|(weak, _)| weak.upgrade());
    Ok(match held {
        Some(index) => index,
        None => {
            let root = super::tracefs::root().ok();
            let index = std::sync::Arc::new(FunctionIndex::load(root)?);
            *shared = Some((std::sync::Arc::downgrade(&index), modules));
            index
        }
    })
}

/// The functions kprobes may not attach to (`<debugfs>/kprobes/blacklist`: address range and
/// name per line); empty when debugfs is not readable.
pub(crate) fn kprobe_blacklist() -> std::collections::HashSet<String> {
    std::fs::read_to_string("/sys/kernel/debug/kprobes/blacklist")
        .ok()
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first match and every match by scanning, as the index must answer.
    fn scan<'a>(names: &'a [String], pattern: &glob::Pattern) -> (Option<&'a str>, Vec<&'a str>) {
        let exact = names.iter().find(|n| *n == pattern.as_str());
        let first = exact.or_else(|| names.iter().find(|n| pattern.matches(n)));
        let mut seen = std::collections::HashSet::new();
        let all = names
            .iter()
            .filter(|n| pattern.matches(n))
            .filter(|n| seen.insert(n.as_str()))
            .map(String::as_str)
            .collect();
        (first.map(String::as_str), all)
    }

    #[test]
    fn the_sorted_index_answers_as_a_scan_does() {
        for index in [
            FunctionIndex::from_kallsyms("k".into(), KALLSYMS_FIXTURE),
            FunctionIndex::from_available_filter_functions("a".into(), AFF_FIXTURE),
        ] {
            let mut patterns: Vec<String> = [
                "*",
                "vfs_*",
                "*mkdir*",
                "do_?ys*",
                "[a-c]*",
                "__x64_sys_mkdir",
                "nope*",
                "vfs_[mr][km]dir",
                "v*",
                "_*",
                "x",
            ]
            .map(String::from)
            .to_vec();
            // Every name as an exact pattern, and its first three letters as a prefix.
            let names = index.names_for_tests();
            for n in names.iter().take(50) {
                patterns.push(n.clone());
                patterns.push(format!("{}*", &n[..n.len().min(3)]));
            }
            for p in patterns {
                let Ok(pattern) = glob::Pattern::new(&p) else {
                    continue;
                };
                let (first, all) = scan(&names, &pattern);
                assert_eq!(index.find(&pattern), first, "{p}");
                assert_eq!(index.find_all(&pattern), all, "{p}");
                assert_eq!(index.contains(&p), names.contains(&p), "{p}");
            }
        }
    }

    const KALLSYMS_FIXTURE: &str = include_str!("../../fixtures/kallsyms.txt");
    const AFF_FIXTURE: &str = include_str!("../../fixtures/available_filter_functions.txt");

    fn kallsyms() -> FunctionIndex {
        FunctionIndex::from_kallsyms("kallsyms".into(), KALLSYMS_FIXTURE)
    }

    fn aff() -> FunctionIndex {
        FunctionIndex::from_available_filter_functions("aff".into(), AFF_FIXTURE)
    }

    fn pat(p: &str) -> glob::Pattern {
        glob::Pattern::new(p).unwrap()
    }

    #[test]
    fn kallsyms_keeps_text_symbols_only_and_strips_modules() {
        let idx = kallsyms();
        assert!(idx.contains("vfs_mkdir"));
        assert!(idx.contains("__x64_sys_mkdir"));
        // `D`/`b` data symbols are not functions.
        assert!(!idx.contains("ext4_dir_operations"));
        // Module symbols keep their name, without the `[module]` field.
        assert!(idx.contains("ext4_mkdir"));
        assert!(!idx.names_for_tests().iter().any(|n| n.contains('[')));
    }

    #[test]
    fn kallsyms_leaves_out_padding_and_markers() {
        // Linux 6.2+ lists a `__pfx_` padding symbol before each function: a pattern must never
        // resolve to one (`*utimes` would otherwise find `__pfx_vfs_utimes` first).
        let idx = FunctionIndex::from_kallsyms(
            "k".into(),
            "ffffffff81000000 T _stext\n\
             ffffffff81000010 t __pfx_vfs_utimes\n\
             ffffffff81000020 T vfs_utimes\n\
             ffffffff81000030 t __cfi_do_utimes\n\
             ffffffff81000040 t do_utimes.cold\n\
             ffffffff81000050 t do_utimes\n\
             ffffffff81000060 T __entry_text_start\n",
        );
        assert_eq!(idx.names_for_tests(), vec!["vfs_utimes", "do_utimes"]);
        assert_eq!(idx.find(&pat("*utimes")), Some("vfs_utimes"));
        // The saved kallsyms of a 6.x kernel has padding symbols; none is kept.
        assert!(KALLSYMS_FIXTURE.contains("__pfx_"));
        assert!(!kallsyms()
            .names_for_tests()
            .iter()
            .any(|n| n.starts_with("__pfx_")));
    }

    #[test]
    fn aff_strips_module_suffix() {
        let idx = aff();
        assert!(idx.contains("vfs_mkdir"));
        assert!(idx.contains("ext4_mkdir"));
        assert!(!idx.names_for_tests().iter().any(|n| n.contains('[')));
    }

    #[test]
    fn exact_name_wins_over_earlier_match() {
        let idx = aff();
        // `vfs_mkdir*` would first match whatever comes first; an exact name is taken as is.
        assert_eq!(idx.find(&pat("vfs_mkdir")), Some("vfs_mkdir"));
    }

    #[test]
    fn an_exact_name_is_not_taken_when_the_expression_cannot_match_it() {
        // Found by the patterns fuzz target: `m$vd` names a function of the list, and as a
        // regular expression matches nothing; find and find_all must agree.
        let idx = FunctionIndex::from_available_filter_functions("t".into(), "m$vd\nmvd\n");
        let re = regex::Regex::new("m$vd").unwrap();
        assert_eq!(idx.find_regex(&re), None);
        assert!(idx.find_all_regex(&re).is_empty());
        let re = regex::Regex::new("mvd").unwrap();
        assert_eq!(idx.find_regex(&re), Some("mvd"));
    }

    #[test]
    fn pattern_takes_first_match_in_file_order() {
        let idx = aff();
        let first = idx
            .names_for_tests()
            .into_iter()
            .find(|n| n.starts_with("vfs_"))
            .unwrap()
            .clone();
        assert_eq!(idx.find(&pat("vfs_*")), Some(first.as_str()));
        assert_eq!(idx.find(&pat("do_mkdir?t")), Some("do_mkdirat"));
        assert_eq!(idx.find(&pat("no_such_function_*")), None);
    }

    #[test]
    fn syscall_prefix_added_once() {
        let idx = kallsyms();
        assert_eq!(idx.syscall("mkdir").unwrap(), "__x64_sys_mkdir");
        assert_eq!(idx.syscall("__x64_sys_mkdir").unwrap(), "__x64_sys_mkdir");
        let tried = idx.syscall("no_such_syscall").unwrap_err();
        assert_eq!(tried.len(), SYSCALL_PREFIXES.len());
        assert_eq!(tried[0], "__x64_sys_no_such_syscall");
        // Already prefixed but absent: tried as is, not prefixed again.
        assert_eq!(
            idx.syscall("__x64_sys_nope").unwrap_err(),
            vec!["__x64_sys_nope"]
        );
    }

    #[test]
    fn syscall_prefix_of_an_older_kernel() {
        // Kernels before 4.17 name syscalls sys_*.
        let idx = FunctionIndex::from_kallsyms(
            "k".into(),
            "ffffffff81000000 T sys_mkdir\nffffffff81000010 T vfs_mkdir\n",
        );
        assert_eq!(idx.syscall("mkdir").unwrap(), "sys_mkdir");
    }
}
