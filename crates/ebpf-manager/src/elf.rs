//! The object's section index, read with `object`: which function lives in which section.
//!
//! aya names programs by function and does not expose their sections, which the manager needs
//! to select a program by section and to find a probe's default hook point
//! (`kprobe/vfs_mkdir` -> `vfs_mkdir`).

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

/// One program of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElfProgram {
    pub(crate) function: String,
    pub(crate) section: String,
}

/// The programs of an object, in symbol table order.
#[derive(Debug, Clone, Default)]
pub(crate) struct ElfIndex {
    pub(crate) programs: Vec<ElfProgram>,
}

impl ElfIndex {
    /// Indexes an eBPF ELF object; `Err` says why the bytes are not one.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
        if file.architecture() != object::Architecture::Bpf {
            return Err(format!(
                "it is an object for {:?}, not for BPF (compile with clang -target bpf)",
                file.architecture()
            ));
        }
        let mut programs = Vec::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text || !sym.is_definition() {
                continue;
            }
            let Some(index) = sym.section_index() else {
                continue;
            };
            let section = file
                .section_by_index(index)
                .and_then(|s| s.name().map(str::to_owned))
                .map_err(|e| e.to_string())?;
            // .text holds subprograms (static functions called by programs), not programs.
            if section == ".text" || section.is_empty() {
                continue;
            }
            let function = sym.name().map_err(|e| e.to_string())?.to_owned();
            programs.push(ElfProgram { function, section });
        }
        Ok(Self { programs })
    }

    /// The program whose function is `name`.
    pub(crate) fn by_function(&self, name: &str) -> Option<&ElfProgram> {
        self.programs.iter().find(|p| p.function == name)
    }

    /// The programs of `section`.
    pub(crate) fn in_section<'a>(
        &'a self,
        section: &'a str,
    ) -> impl Iterator<Item = &'a ElfProgram> {
        self.programs.iter().filter(move |p| p.section == section)
    }

    /// The comma-separated function names, for error messages.
    pub(crate) fn functions(&self) -> String {
        join(self.programs.iter().map(|p| p.function.as_str()))
    }

    /// The comma-separated section names, for error messages.
    pub(crate) fn sections(&self) -> String {
        join(self.programs.iter().map(|p| p.section.as_str()))
    }
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// What follows the first `/` of a section name: `kprobe/vfs_mkdir` -> `vfs_mkdir`,
/// `tracepoint/syscalls/sys_enter_mkdir` -> `syscalls/sys_enter_mkdir`.
pub(crate) fn section_target(section: &str) -> Option<&str> {
    section
        .split_once('/')
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = include_bytes!("../../../ebpf-fixtures/helloworld.bpf.o");
    const PROBES: &[u8] = include_bytes!("../../../ebpf-fixtures/probes.bpf.o");

    #[test]
    fn indexes_programs_by_function_and_section() {
        let idx = ElfIndex::parse(HELLO).unwrap();
        assert_eq!(
            idx.programs,
            vec![
                ElfProgram {
                    function: "kprobe_vfs_mkdir".into(),
                    section: "kprobe/vfs_mkdir".into()
                },
                ElfProgram {
                    function: "tracepoint_sys_enter_mkdir".into(),
                    section: "tracepoint/syscalls/sys_enter_mkdir".into()
                },
            ]
        );
        let idx = ElfIndex::parse(PROBES).unwrap();
        assert_eq!(idx.programs.len(), 6);
        assert_eq!(
            idx.by_function("kretprobe_vfs_mkdir").unwrap().section,
            "kretprobe/vfs_mkdir"
        );
        assert_eq!(idx.in_section("raw_tracepoint/sys_enter").count(), 1);
    }

    #[test]
    fn refuses_what_is_not_a_bpf_object() {
        assert!(ElfIndex::parse(b"not an elf at all").is_err());
        assert!(ElfIndex::parse(&HELLO[..HELLO.len() / 3]).is_err());
        // The test binary itself is an ELF, but not for BPF.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = ElfIndex::parse(&me).unwrap_err();
        assert!(err.contains("not for BPF"), "{err}");
    }

    #[test]
    fn section_targets() {
        assert_eq!(section_target("kprobe/vfs_mkdir"), Some("vfs_mkdir"));
        assert_eq!(
            section_target("tracepoint/syscalls/sys_enter_mkdir"),
            Some("syscalls/sys_enter_mkdir")
        );
        assert_eq!(section_target("kprobe/"), None);
        assert_eq!(section_target("kprobe"), None);
    }
}
