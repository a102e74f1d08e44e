//! The kernel's traceable functions: `available_filter_functions`, or the text symbols of
//! `/proc/kallsyms` where that file cannot be read (it needs tracefs and, on some kernels,
//! more than root: reading it fails with EPERM on locked-down kernels).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Syscall symbol prefixes, in the order they are tried.
pub const SYSCALL_PREFIXES: &[&str] = &["__x64_sys_", "__ia32_sys_", "__arm64_sys_", "sys_"];

const KALLSYMS: &str = "/proc/kallsyms";

/// The kernel's function names, in file order, read once.
#[derive(Debug, Clone)]
pub struct FunctionIndex {
    source: PathBuf,
    names: Vec<String>,
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
        let names = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        Self { source, names }
    }

    /// Parses the text of `/proc/kallsyms` (`address type name [module]`), keeping text
    /// symbols (types `t`, `T`, `w`, `W`).
    pub fn from_kallsyms(source: PathBuf, text: &str) -> Self {
        let names = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (_addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
                matches!(kind, "t" | "T" | "w" | "W").then(|| name.to_owned())
            })
            .collect();
        Self { source, names }
    }

    /// The file the names came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// How many names there are (duplicates included: static functions may repeat).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is no name at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `name` is one of the functions.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The function a glob pattern selects: the pattern itself when it is a function's exact
    /// name, else the first match in file order.
    pub fn find(&self, pattern: &glob::Pattern) -> Option<&str> {
        let exact = self.names.iter().find(|n| *n == pattern.as_str());
        exact
            .or_else(|| self.names.iter().find(|name| pattern.matches(name)))
            .map(String::as_str)
    }

    /// Every function a glob pattern matches, in file order, each once (static functions of
    /// the same name are listed once per definition; attaching by name reaches one of them).
    pub fn find_all(&self, pattern: &glob::Pattern) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.names
            .iter()
            .filter(|n| pattern.matches(n))
            .filter(|n| seen.insert(n.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// The symbol of a syscall: `name` itself when it already carries a known prefix, else the
    /// first of [`SYSCALL_PREFIXES`] + `name` that exists. `Err` lists the symbols tried.
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

/// A [`FunctionIndex`] read on first use, then kept: once per manager, not once per probe.
#[derive(Debug, Default)]
pub(crate) struct LazyFunctions(Option<FunctionIndex>);

impl LazyFunctions {
    pub(crate) fn get(&mut self) -> Result<&FunctionIndex> {
        if self.0.is_none() {
            let root = super::tracefs::root().ok();
            self.0 = Some(FunctionIndex::load(root)?);
        }
        Ok(self.0.as_ref().expect("just set"))
    }
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
        assert!(!idx.names.iter().any(|n| n.contains('[')));
    }

    #[test]
    fn aff_strips_module_suffix() {
        let idx = aff();
        assert!(idx.contains("vfs_mkdir"));
        assert!(idx.contains("ext4_mkdir"));
        assert!(!idx.names.iter().any(|n| n.contains('[')));
    }

    #[test]
    fn exact_name_wins_over_earlier_match() {
        let idx = aff();
        // `vfs_mkdir*` would first match whatever comes first; an exact name is taken as is.
        assert_eq!(idx.find(&pat("vfs_mkdir")), Some("vfs_mkdir"));
    }

    #[test]
    fn pattern_takes_first_match_in_file_order() {
        let idx = aff();
        let first = idx
            .names
            .iter()
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
