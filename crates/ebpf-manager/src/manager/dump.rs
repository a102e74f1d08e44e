//! `Manager::dump_maps`: the contents of maps, for debugging.

use super::table::ObjectKey;
use std::{io::Write, os::fd::AsFd};

use aya::maps::{Map, MapType};

use super::Manager;
use crate::{kernel::bpf_map, Error, Result};

/// One entry of a map, as [`Manager::dump_maps_with`] hands it to its handler.
#[derive(Debug, Clone, Copy)]
pub struct MapEntry<'a> {
    /// The map's name.
    pub map: &'a str,
    /// The key's bytes.
    pub key: &'a [u8],
    /// The value's bytes (for per-CPU maps, every possible CPU's value, each padded to 8 bytes).
    pub value: &'a [u8],
}

/// A duplicate fd of every map of `ebpf`, by name.
pub(super) fn map_fds(ebpf: &aya::Ebpf) -> std::collections::HashMap<String, std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    ebpf.maps()
        .filter_map(|(name, map)| {
            let fd = data(map).fd().as_fd().try_clone_to_owned().ok()?;
            Some((name.to_owned(), fd))
        })
        .collect()
}

pub(super) use crate::kernel::bpf_map::map_data as data;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manager {
    /// Writes the entries of the maps named in `names` (every map of the object when empty)
    /// to `out`, one `map key=<hex> value=<hex>` line each. Maps that hold no key-value pairs
    /// (ring buffers, perf event arrays, queues, stacks) have no lines. When dumping every map,
    /// one the kernel will not list (a `BPF_F_WRONLY` map, local storage) is skipped with a
    /// warning in the log; a map named in `names` that cannot be listed is an error.
    ///
    /// ```no_run
    /// # let manager = ebpf_manager::Manager::default();
    /// manager.dump_maps(&mut std::io::stdout(), &["hits"])?;
    /// # Ok::<(), ebpf_manager::Error>(())
    /// ```
    pub fn dump_maps(&self, out: &mut dyn Write, names: &[&str]) -> Result<()> {
        let mut failed = None;
        self.dump_maps_with(names, &mut |e: MapEntry<'_>| {
            if failed.is_none() {
                if let Err(err) =
                    writeln!(out, "{} key={} value={}", e.map, hex(e.key), hex(e.value))
                {
                    failed = Some(err);
                }
            }
        })?;
        match failed {
            Some(source) => Err(Error::Io {
                path: "dump_maps output".into(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Hands every entry of the maps named in `names` (every map when empty) to `handler`.
    pub fn dump_maps_with(
        &self,
        names: &[&str],
        handler: &mut dyn FnMut(MapEntry<'_>),
    ) -> Result<()> {
        let ebpf = self
            .state
            .objects
            .get(ObjectKey::MAIN)
            .ok_or(Error::InvalidState {
                operation: "dump the maps of",
                state: self.state(),
                hint: "maps exist between init and stop",
            })?;
        let mut maps: Vec<(&str, &Map)> = ebpf.maps().collect();
        maps.sort_by_key(|(name, _)| *name);
        for name in names {
            if !maps.iter().any(|(n, _)| n == name) {
                return Err(Error::InvalidOption {
                    option: "dump_maps".into(),
                    reason: format!(
                        "the object has no map `{name}` (it has: {})",
                        maps.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        for (name, map) in maps {
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            match dump_one(name, map, handler) {
                Ok(()) => {}
                // Dumping everything: one map the kernel will not list does not hide the others.
                Err(e) if names.is_empty() => {
                    log::warn!("dump_maps: skipping map {name}: {}", e.report())
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Hands every entry of one map to `handler`.
fn dump_one(name: &str, map: &Map, handler: &mut dyn FnMut(MapEntry<'_>)) -> Result<()> {
    let io = |source| Error::Io {
        path: format!("map {name}").into(),
        source,
    };
    let info = data(map).info().map_err(|e| io(std::io::Error::other(e)))?;
    let map_type = info.map_type().ok();
    if matches!(
        map_type,
        Some(
            MapType::RingBuf
                | MapType::PerfEventArray
                | MapType::Queue
                | MapType::Stack
                | MapType::BloomFilter
        )
    ) {
        return Ok(());
    }
    let per_cpu = matches!(
        map_type,
        Some(
            MapType::PerCpuArray
                | MapType::PerCpuHash
                | MapType::LruPerCpuHash
                | MapType::PerCpuCgroupStorage
        )
    );
    let value_size = if per_cpu {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io(e))?;
        (info.value_size() as usize).div_ceil(8) * 8 * cpus
    } else {
        info.value_size() as usize
    };
    let fd = data(map).fd();
    let entries = bpf_map::entries(fd.as_fd(), info.key_size() as usize, value_size).map_err(io)?;
    for (key, value) in &entries {
        handler(MapEntry {
            map: name,
            key,
            value,
        });
    }
    Ok(())
}
