//! The BTF of loaded kernel modules (Linux 5.11, `CONFIG_DEBUG_INFO_BTF_MODULES`), where the
//! kfuncs of modules are described, and `BPF_OBJ_PIN` of a program the manager loaded itself.
//! aya 0.14 lists neither.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use super::bpf_prog::sys_bpf;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_BTF_GET_NEXT_ID: libc::c_long = 23;

/// One module's BTF: its name, an fd that keeps it (a program's fd array names it), and its
/// types (split BTF over vmlinux's).
#[derive(Debug)]
pub(crate) struct ModuleBtf {
    pub(crate) name: String,
    pub(crate) fd: OwnedFd,
    pub(crate) data: Vec<u8>,
}

/// `BPF_*_GET_NEXT_ID` / `BPF_*_GET_FD_BY_ID` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` member.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_btf_info`.
#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

/// `BPF_OBJ_PIN` member.
#[repr(C)]
#[derive(Default)]
struct PinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf(cmd, attr)` ([`super::sys::bpf`]) of a command that returns 0.
fn sys_bpf_0<T>(cmd: libc::c_long, call: &'static str, attr: &mut T) -> io::Result<()> {
    super::sys::bpf(cmd, call, attr).map(drop)
}

/// Every loaded module's BTF (vmlinux's left out), read now.
pub(crate) fn module_btfs() -> io::Result<Vec<ModuleBtf>> {
    let mut found = Vec::new();
    let mut id = 0;
    loop {
        let mut next = IdAttr {
            id,
            ..Default::default()
        };
        match sys_bpf_0(BPF_BTF_GET_NEXT_ID, "BPF_BTF_GET_NEXT_ID", &mut next) {
            Ok(()) => id = next.next_id,
            Err(e) if super::sys::errno(&e) == Some(libc::ENOENT) => return Ok(found),
            Err(e) => return Err(e),
        }
        let mut by_id = IdAttr {
            id,
            ..Default::default()
        };
        let fd = match sys_bpf(BPF_BTF_GET_FD_BY_ID, "BPF_BTF_GET_FD_BY_ID", &mut by_id) {
            Ok(fd) => fd,
            // Freed between the two calls.
            Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io::Error::other(e)),
        };
        let mut name = [0u8; 64];
        let mut info = BtfInfo {
            name: name.as_mut_ptr() as u64,
            name_len: name.len() as u32,
            ..Default::default()
        };
        btf_info(fd.as_fd(), &mut info)?;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let module = String::from_utf8_lossy(&name[..end]).into_owned();
        if info.kernel_btf == 0 || module == "vmlinux" {
            continue;
        }
        let mut data = vec![0u8; info.btf_size as usize];
        let mut info = BtfInfo {
            btf: data.as_mut_ptr() as u64,
            btf_size: data.len() as u32,
            ..Default::default()
        };
        btf_info(fd.as_fd(), &mut info)?;
        data.truncate(info.btf_size as usize);
        found.push(ModuleBtf {
            name: module,
            fd,
            data,
        });
    }
}

fn btf_info(fd: BorrowedFd<'_>, info: &mut BtfInfo) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<BtfInfo>() as u32,
        info: info as *mut BtfInfo as u64,
    };
    sys_bpf_0(BPF_OBJ_GET_INFO_BY_FD, "BPF_OBJ_GET_INFO_BY_FD", &mut attr)
}

/// Pins the object `fd` at `path` (on a bpffs).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the pin path"))?;
    let mut attr = PinAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    sys_bpf_0(BPF_OBJ_PIN, "BPF_OBJ_PIN", &mut attr)
}
