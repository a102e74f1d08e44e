//! [`ObjectInfo`]: what an object holds, read without the kernel: its programs (function,
//! section, the program type aya gives the section, whether it can load) and its maps, as the
//! manager sees them after its pipeline (Go-world section names and legacy map definitions
//! included).

use crate::{elf::ElfIndex, pipeline, Error, Result};

/// The programs and maps of an object ([`ObjectInfo::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectInfo {
    /// Its programs, in the object's order.
    pub programs: Vec<ObjectProgram>,
    /// Its maps, by name.
    pub maps: Vec<ObjectMap>,
}

/// One program of an [`ObjectInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectProgram {
    /// Its function: a probe's `ebpf_func_name`.
    pub function: String,
    /// Its section, as the object names it.
    pub section: String,
    /// The program type aya loads it as (`KProbe`, `TracePoint`, `Xdp`, ...); `None` when it
    /// cannot load (see `unloadable`).
    pub program_type: Option<String>,
    /// Why it cannot be loaded (aya 0.14 has no such program type), when it cannot.
    pub unloadable: Option<String>,
}

/// One map of an [`ObjectInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectMap {
    /// Its name.
    pub name: String,
    /// `BPF_MAP_TYPE_*` as a number (`bpftool map` names them).
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// As declared (perf event arrays and ring buffers are sized at load).
    pub max_entries: u32,
    /// Whether the definition pins it by name (`LIBBPF_PIN_BY_NAME`).
    pub pinned_by_name: bool,
}

impl ObjectInfo {
    /// Reads `object`: the same checks as `init`, no kernel.
    ///
    /// ```no_run
    /// let info = ebpf_manager::ObjectInfo::parse(&std::fs::read("probes.bpf.o")?)?;
    /// for p in &info.programs {
    ///     println!("{} in {}", p.function, p.section);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(object: &[u8]) -> Result<Self> {
        let object = crate::loader::aligned_copy(object).unwrap_or_else(|| object.to_vec());
        let elf = ElfIndex::parse(&object).map_err(|reason| Error::InvalidObject { reason })?;
        let prepared = pipeline::prepare(&object, &elf, pipeline::Settings::default())?;
        let (bytes, _) = prepared.instantiate(&[])?;
        let parsed = aya_obj::Object::parse(&bytes).map_err(|e| Error::InvalidObject {
            reason: crate::error::chain(&e),
        })?;
        let programs = elf
            .programs
            .iter()
            .map(|p| {
                let unloadable = prepared
                    .hidden(&p.function)
                    .map(|(_, why)| (*why).to_owned());
                let program_type = parsed
                    .programs
                    .get(&p.function)
                    .filter(|_| unloadable.is_none())
                    .map(|prog| {
                        let debug = format!("{:?}", prog.section);
                        debug
                            .split(|c: char| !c.is_alphanumeric())
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    });
                ObjectProgram {
                    function: p.function.clone(),
                    section: p.section.clone(),
                    program_type,
                    unloadable,
                }
            })
            .collect();
        let mut maps: Vec<ObjectMap> = parsed
            .maps
            .iter()
            .filter(|(name, _)| !name.starts_with('.'))
            .map(|(name, m)| ObjectMap {
                name: name.clone(),
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                pinned_by_name: prepared.pinned_by_name().contains(name),
            })
            .collect();
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { programs, maps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_and_maps_of_a_go_object_and_a_pinned_map() {
        let info =
            ObjectInfo::parse(include_bytes!("../../../ebpf-fixtures/gocompat.bpf.o")).unwrap();
        let xdp = info
            .programs
            .iter()
            .find(|p| p.section.starts_with("xdp/"))
            .expect("a Go-world xdp/ section");
        assert_eq!(xdp.program_type.as_deref(), Some("Xdp"), "{xdp:?}");
        assert!(!info.maps.is_empty());
        let info =
            ObjectInfo::parse(include_bytes!("../../../ebpf-fixtures/pinned.bpf.o")).unwrap();
        assert_eq!(info.programs.len(), 1);
        assert_eq!(info.programs[0].function, "count_mkdir");
        assert_eq!(
            info.programs[0].section,
            "tracepoint/syscalls/sys_enter_mkdir"
        );
        assert_eq!(info.programs[0].program_type.as_deref(), Some("TracePoint"));
        let map = &info.maps[0];
        assert_eq!(
            (
                map.name.as_str(),
                map.map_type,
                map.key_size,
                map.value_size,
                map.max_entries
            ),
            ("shared_counts", 2, 4, 8, 4)
        );
        assert!(map.pinned_by_name);
        assert!(ObjectInfo::parse(b"not an object").is_err());
    }
}
