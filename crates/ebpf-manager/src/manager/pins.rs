//! Maps and programs pinned on bpffs through [`Map::pin_path`](crate::Map::pin_path) and
//! [`Probe::pin_path`](crate::Probe::pin_path): a pin found at load is reused (external: another
//! manager or tool made it), a missing one is created (internal: this manager made it). `stop`
//! removes pins by [`CleanupType`]; detaching never does.

use std::path::PathBuf;

use super::CleanupType;

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
