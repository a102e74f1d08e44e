//! Maps and programs pinned on bpffs through [`Map::pin_path`](crate::Map::pin_path) and
//! [`Probe::pin_path`](crate::Probe::pin_path): a pin found at load is reused (external: another
//! manager or tool made it), a missing one is created (internal: this manager made it). `stop`
//! removes pins by [`CleanupType`]; detaching never does.

use std::path::{Path, PathBuf};

use super::CleanupType;
use crate::{kernel::bpffs, Error, Result};

/// What to do about a pin path off bpffs.
const FIX: &str = "mount bpffs there (`mount -t bpf bpf /sys/fs/bpf`, or \
                   Options::mount_bpffs for /sys/fs/bpf), or pin under a bpffs directory";

/// Checks, before anything is loaded, that every pin path the user gave (declared map and
/// program pins, pinned map editors, pins by name) is on a bpffs: a pin elsewhere fails in
/// the kernel with a bare ENOENT or EPERM deep in aya's load. With `mount`, an empty
/// `/sys/fs/bpf` (the default pin directory) gets a bpffs first.
pub(super) fn check_on_bpffs<'a>(paths: impl Iterator<Item = &'a Path>, mount: bool) -> Result<()> {
    let mut mounted = false;
    for path in paths {
        let (dir, magic) = bpffs::fs_of_pin(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        if magic == bpffs::BPF_FS_MAGIC {
            continue;
        }
        let default = Path::new(crate::kernel::instance::BPFFS);
        if mount && !mounted && dir == default && magic == bpffs::SYSFS_MAGIC {
            // Only /sys/fs/bpf, and only when nothing is mounted there (it is sysfs's).
            bpffs::mount_at(default).map_err(|source| Error::Bpffs {
                path: default.to_owned(),
                reason: format!(
                    "Options::mount_bpffs: mounting bpffs failed: {}",
                    crate::error::chain(&source)
                ),
                fix: "mount it yourself (`mount -t bpf bpf /sys/fs/bpf`, CAP_SYS_ADMIN)",
            })?;
            log::info!(
                "mounted bpffs at {} (Options::mount_bpffs)",
                default.display()
            );
            mounted = true;
            continue;
        }
        if mounted && dir == default {
            continue;
        }
        return Err(Error::Bpffs {
            path: path.to_owned(),
            reason: format!(
                "a pin must be on a bpffs, and {} is on {}",
                dir.display(),
                bpffs::fs_name(magic)
            ),
            fix: FIX,
        });
    }
    Ok(())
}

/// A map or program pin of this manager.
#[derive(Debug, Clone)]
pub(super) struct Pin {
    pub(super) path: PathBuf,
    /// Whether this manager created the pin (else it reused one).
    pub(super) created: bool,
}

/// Removes the pins `cleanup` covers; a pin already gone is fine.
pub(super) fn remove(pins: &[Pin], cleanup: CleanupType) {
    for pin in pins {
        let remove = match cleanup {
            CleanupType::CleanInternal => pin.created,
            CleanupType::CleanExternal => !pin.created,
            CleanupType::CleanAll => true,
        };
        if remove {
            if let Err(e) = std::fs::remove_file(&pin.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!(
                        "removing the pin {}: {}",
                        pin.path.display(),
                        crate::error::chain(&e)
                    );
                }
            }
        }
    }
}
