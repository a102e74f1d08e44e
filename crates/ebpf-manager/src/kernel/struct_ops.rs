//! struct_ops maps (Linux 5.6): `BPF_MAP_CREATE` with the kernel's value type, the update that
//! registers the value (or readies it, for a map with `BPF_F_LINK`, Linux 6.4, which a
//! `BPF_LINK_CREATE` then registers), and the delete that unregisters it.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::bpf_prog::{bpf_error, sys_bpf, BpfError};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_MAP_TYPE_STRUCT_OPS`.
pub(crate) const MAP_TYPE: u32 = 26;
/// `BPF_PROG_TYPE_STRUCT_OPS`.
pub(crate) const PROG_TYPE: u32 = 27;
/// `BPF_STRUCT_OPS`, the link's attach type.
const ATTACH_STRUCT_OPS: u32 = 44;
/// `BPF_F_LINK`: the map is registered by a link (Linux 6.4).
const F_LINK: u32 = 1 << 13;
/// `BPF_F_SLEEPABLE`, for programs of `struct_ops.s/` sections.
pub(crate) const F_SLEEPABLE: u32 = 1 << 4;

/// The `BPF_MAP_CREATE` member of `union bpf_attr`, up to `btf_vmlinux_value_type_id`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
}

/// Creates the struct_ops map `name` of one entry whose value is the kernel's
/// `value_type_id` (`struct bpf_struct_ops_<type>`) of `value_size` bytes. The kernel wants
/// the object's BTF (`btf`) beside it, though it reads the kernel's.
pub(crate) fn map_create(
    name: &str,
    value_type_id: u32,
    value_size: u32,
    link: bool,
    btf: BorrowedFd<'_>,
) -> Result<OwnedFd, BpfError> {
    let mut map_name = [0u8; 16];
    let n = name.len().min(15);
    map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = MapCreateAttr {
        map_type: MAP_TYPE,
        key_size: 4,
        value_size,
        max_entries: 1,
        map_flags: if link { F_LINK } else { 0 },
        map_name,
        btf_fd: btf.as_raw_fd() as u32,
        btf_vmlinux_value_type_id: value_type_id,
        ..Default::default()
    };
    sys_bpf(BPF_MAP_CREATE, "BPF_MAP_CREATE", &mut attr)
}

/// Writes `value` (program fds in its pointer slots) into the map: registers it, or for a
/// `BPF_F_LINK` map readies it for [`link_create`].
pub(crate) fn update(map: BorrowedFd<'_>, value: &[u8]) -> Result<(), BpfError> {
    super::bpf_map::update_u32_key(map, 0, value).map_err(|e| bpf_error("BPF_MAP_UPDATE_ELEM", &e))
}

/// Unregisters a map [`update`] registered (not one with `BPF_F_LINK`: its link goes).
pub(crate) fn delete(map: BorrowedFd<'_>) -> Result<(), BpfError> {
    super::bpf_map::delete_u32_key(map, 0).map_err(|e| bpf_error("BPF_MAP_DELETE_ELEM", &e))
}

/// The `link_create` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Registers a `BPF_F_LINK` map (Linux 6.4); closing the link unregisters it.
pub(crate) fn link_create(map: BorrowedFd<'_>) -> Result<OwnedFd, BpfError> {
    let mut attr = LinkCreateAttr {
        prog_fd: map.as_raw_fd() as u32,
        attach_type: ATTACH_STRUCT_OPS,
        ..Default::default()
    };
    sys_bpf(BPF_LINK_CREATE, "BPF_LINK_CREATE", &mut attr)
}
