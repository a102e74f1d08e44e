//! Loading a program below aya, for what aya 0.14 cannot pass: a kprobe program with
//! `expected_attach_type = BPF_TRACE_KPROBE_MULTI` (Linux 5.18) or `BPF_TRACE_UPROBE_MULTI`
//! (6.6), and the fd array of module BTFs that kfunc calls of modules index (5.14); its
//! instructions are private. The path: aya has created the maps (`Ebpf::load` of the same bytes); aya-obj parses
//! the bytes and relocates them against aya's map fds (`relocate_maps`), links BPF functions
//! (`relocate_calls`) and applies CO-RE against the kernel's BTF (`relocate_btf`); the kernel
//! loads the result with the object's BTF, func info and line info (`kernel/bpf_prog.rs`).

use std::{
    collections::HashSet,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use crate::kernel::bpf_prog::{self, BpfError};

/// Why the load failed.
#[derive(Debug)]
pub(crate) enum MultiError {
    /// aya-obj could not parse or relocate the object, or `function` is not in it.
    Object(String),
    /// The kernel refused a command.
    Kernel(BpfError),
}

/// Loads `function` of `bytes` (as instantiated for the aya object whose map fds, by name, are
/// `map_fds`) with `attach_type` (`BPF_TRACE_KPROBE_MULTI` or `BPF_TRACE_UPROBE_MULTI`) and
/// the `fd_array` of module BTFs its kfunc calls index.
pub(crate) fn load_multi(
    attach_type: u32,
    fd_array: &[i32],
    bytes: &[u8],
    map_fds: &std::collections::HashMap<String, std::os::fd::RawFd>,
    function: &str,
    target_btf: Option<&aya::Btf>,
) -> Result<OwnedFd, MultiError> {
    load_raw(
        Raw {
            prog_type: bpf_prog::PROG_TYPE_KPROBE,
            attach_type,
            fd_array,
            attach_btf_id: 0,
            flags: 0,
        },
        bytes,
        map_fds,
        function,
        target_btf,
    )
}

/// How [`load_raw`] loads a program.
#[derive(Clone, Copy)]
pub(crate) struct Raw<'a> {
    /// `BPF_PROG_TYPE_*`.
    pub(crate) prog_type: u32,
    /// The expected attach type (0: none).
    pub(crate) attach_type: u32,
    /// The module BTF fds kfunc calls index (from 1), or empty.
    pub(crate) fd_array: &'a [i32],
    /// The BTF type it attaches to (struct_ops: the kernel struct), or 0.
    pub(crate) attach_btf_id: u32,
    /// `BPF_F_*` load flags, or 0.
    pub(crate) flags: u32,
}

/// Loads `function` of `bytes` the way aya would, with what aya 0.14 cannot pass ([`Raw`]).
pub(crate) fn load_raw(
    raw: Raw<'_>,
    bytes: &[u8],
    map_fds: &std::collections::HashMap<String, std::os::fd::RawFd>,
    function: &str,
    target_btf: Option<&aya::Btf>,
) -> Result<OwnedFd, MultiError> {
    let mut obj = relocated(bytes, map_fds, target_btf)?;
    let btf_fd = object_btf(&mut obj);
    load_one(&obj, btf_fd.as_ref().map(|fd| fd.as_fd()), raw, function)
}

/// Loads each `(raw, function)` of `bytes` as [`load_raw`] does, parsing and relocating the
/// object once; also returns the object's loaded BTF (struct_ops maps are created with it).
pub(crate) fn load_several(
    programs: &[(Raw<'_>, &str)],
    bytes: &[u8],
    map_fds: &std::collections::HashMap<String, std::os::fd::RawFd>,
    target_btf: Option<&aya::Btf>,
) -> Result<(Vec<OwnedFd>, Option<OwnedFd>), (String, MultiError)> {
    let mut obj = relocated(bytes, map_fds, target_btf).map_err(|e| (String::new(), e))?;
    let btf_fd = object_btf(&mut obj);
    let fds = programs
        .iter()
        .map(|(raw, function)| {
            load_one(&obj, btf_fd.as_ref().map(|fd| fd.as_fd()), *raw, function)
                .map_err(|e| ((*function).to_owned(), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((fds, btf_fd))
}

/// `bytes` parsed by aya-obj and relocated: CO-RE against `target_btf`, maps against
/// `map_fds`, BPF function calls linked.
fn relocated(
    bytes: &[u8],
    map_fds: &std::collections::HashMap<String, std::os::fd::RawFd>,
    target_btf: Option<&aya::Btf>,
) -> Result<aya_obj::Object, MultiError> {
    let object = |e: &dyn std::fmt::Display| MultiError::Object(e.to_string());
    let mut obj = aya_obj::Object::parse(bytes).map_err(|e| object(&e))?;
    // CO-RE first, as aya does: call linking copies subprograms into the program.
    if let Some(target) = target_btf.filter(|_| obj.has_btf_relocations()) {
        obj.relocate_btf(target).map_err(|e| object(&e))?;
    }
    let mut fds = Vec::new();
    for (name, map) in &obj.maps {
        match map_fds.get(name) {
            Some(&fd) => fds.push((name.clone(), fd, map.clone())),
            // aya skips the data maps of kernels without global data: so does the relocation.
            None if name.starts_with('.') => {}
            // Left out, aya-obj would relocate to another map of the same section.
            None => return Err(object(&format!("map `{name}` has no fd to relocate to"))),
        }
    }
    let text: HashSet<usize> = obj.functions.keys().map(|&(section, _)| section).collect();
    obj.relocate_maps(fds.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)), &text)
        .map_err(|e| object(&e))?;
    obj.relocate_calls(&text).map_err(|e| object(&e))?;
    Ok(obj)
}

/// The object's BTF, made loadable as aya makes it, loaded; none where the kernel has no BTF.
fn object_btf(obj: &mut aya_obj::Object) -> Option<OwnedFd> {
    let features = aya::features().btf()?;
    match obj.fixup_and_sanitize_btf(features) {
        Ok(Some(btf)) => bpf_prog::btf_load(&btf.to_bytes()).ok(),
        _ => None,
    }
}

/// Loads `function` of the relocated `obj`, with the object's loaded BTF `btf_fd`.
fn load_one(
    obj: &aya_obj::Object,
    btf_fd: Option<std::os::fd::BorrowedFd<'_>>,
    raw: Raw<'_>,
    function: &str,
) -> Result<OwnedFd, MultiError> {
    let object = |e: &dyn std::fmt::Display| MultiError::Object(e.to_string());
    let program = obj
        .programs
        .get(function)
        .ok_or_else(|| object(&format!("the object has no program `{function}`")))?;
    let license = program.license.clone();
    let f = obj
        .functions
        .get(&program.function_key())
        .ok_or_else(|| object(&format!("no code for `{function}`")))?;
    let insns: Vec<u8> = f
        .instructions
        .iter()
        .flat_map(|i| {
            // SAFETY: bpf_insn is 8 bytes of plain data.
            unsafe {
                std::slice::from_raw_parts(
                    (i as *const aya_obj::generated::bpf_insn).cast::<u8>(),
                    8,
                )
            }
            .to_vec()
        })
        .collect();
    let func_info = f.func_info.func_info_bytes();
    let line_info = f.line_info.line_info_bytes();
    let btf = btf_fd.map(|fd| bpf_prog::ProgBtf {
        fd,
        func_info: (f.func_info_rec_size as u32, func_info.as_slice()),
        line_info: (f.line_info_rec_size as u32, line_info.as_slice()),
    });
    let fd = bpf_prog::prog_load(&bpf_prog::ProgLoad {
        prog_type: raw.prog_type,
        expected_attach_type: raw.attach_type,
        fd_array: raw.fd_array,
        attach_btf_id: raw.attach_btf_id,
        prog_flags: raw.flags,
        insns: &insns,
        license: &license,
        kern_version: program.kernel_version.unwrap_or(0),
        name: function,
        btf,
    })
    .map_err(MultiError::Kernel)?;
    log::debug!(
        "`{function}` loaded by the manager (program type {}) as fd {}",
        raw.prog_type,
        fd.as_raw_fd()
    );
    Ok(fd)
}
