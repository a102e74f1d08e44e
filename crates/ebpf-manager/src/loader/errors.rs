//! aya's load errors made the manager's: maps named with their type and the kernel that added
//! it, a missing privilege said as such.

use aya::EbpfError;

use crate::{kernel, Error};

/// The error of aya's load of `object`.
pub(super) fn load_error(e: EbpfError, object: &[u8]) -> Error {
    match e {
        EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) => {
            map_create_error(object, name, io_error)
        }
        EbpfError::MapError(aya::maps::MapError::InvalidMapType { map_type }) => {
            let maps: Vec<String> = aya_obj::Object::parse(object)
                .map(|o| {
                    o.maps
                        .iter()
                        .filter(|(_, m)| m.map_type() == map_type)
                        .map(|(n, _)| format!("`{n}`"))
                        .collect()
                })
                .unwrap_or_default();
            Error::InvalidObject {
                reason: format!(
                    "map {} has type {map_type}, which no kernel this library knows has (map types go up to 33, BPF_MAP_TYPE_ARENA)",
                    maps.join(", ")
                ),
            }
        }
        e => object_error(e),
    }
}

/// A map aya could not create, named with its type and the kernel that added the type.
fn map_create_error(object: &[u8], map: String, source: std::io::Error) -> Error {
    let map_type = aya_obj::Object::parse(object)
        .ok()
        .and_then(|o| o.maps.get(&map).map(|m| m.map_type()))
        .and_then(kernel::map_types::map_type);
    let Some((map_type, since)) = map_type else {
        return object_error(EbpfError::MapError(aya::maps::MapError::CreateError {
            name: map,
            io_error: source,
        }));
    };
    let version = |(major, minor): (u32, u32)| format!("{major}.{minor}");
    match kernel::map_types::running() {
        Some(running) if running < since => Error::MapTypeUnsupported {
            map,
            map_type,
            since: version(since),
            running: version(running),
            source,
        },
        _ if super::program::is_permission_error(&source) => Error::PermissionDenied {
            operation: format!("creating map `{map}`"),
            source: Box::new(source),
        },
        _ => Error::MapCreate {
            map,
            map_type,
            since: version(since),
            source,
        },
    }
}

pub(super) fn object_error(e: EbpfError) -> Error {
    if let EbpfError::ParseError(_) = &e {
        return Error::InvalidObject {
            reason: crate::error::chain(&e),
        };
    }
    // Without BPF capabilities aya fails in many places (feature probes, relocations, map
    // creation), each with its own message; the cause to report is the missing privilege.
    if !kernel::has_bpf_capabilities() {
        return Error::PermissionDenied {
            operation: "loading the object".into(),
            source: Box::new(e),
        };
    }
    Error::Object {
        source: Box::new(e),
    }
}
