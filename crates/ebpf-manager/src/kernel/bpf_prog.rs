//! The three `bpf(2)` commands of the kprobe.multi path that aya 0.14 keeps private or lacks:
//! `BPF_BTF_LOAD` (the object's BTF, for func and line info), `BPF_PROG_LOAD` with an expected
//! attach type aya does not pass for kprobes, and `BPF_LINK_CREATE` of a kprobe.multi link.
//! Each returns an owned fd, or the errno with the command (and the verifier's log).

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PROG_TYPE_KPROBE`.
pub const PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_TRACE_KPROBE_MULTI` (Linux 5.18).
pub const TRACE_KPROBE_MULTI: u32 = 42;
/// `BPF_TRACE_UPROBE_MULTI` (Linux 6.6).
pub const TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_F_KPROBE_MULTI_RETURN`.
const KPROBE_MULTI_RETURN: u32 = 1;
/// `BPF_F_UPROBE_MULTI_RETURN`.
const UPROBE_MULTI_RETURN: u32 = 1;

pub use crate::error::BpfError;

/// `bpf(cmd, attr)` ([`super::sys::bpf`]) of a command that returns a new fd.
pub(crate) fn sys_bpf<T>(
    cmd: libc::c_long,
    command: &'static str,
    attr: &mut T,
) -> Result<OwnedFd, BpfError> {
    let fd = super::sys::bpf(cmd, command, attr).map_err(|e| bpf_error(command, &e))?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The [`BpfError`] of a failed `command` ([`super::sys::bpf`]'s error), without a log.
pub(crate) fn bpf_error(command: &'static str, e: &io::Error) -> BpfError {
    BpfError {
        command,
        source: io::Error::from_raw_os_error(super::sys::errno(e).unwrap_or(libc::EIO)),
        log: String::new(),
    }
}

/// The `BPF_BTF_LOAD` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BtfLoad {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    // Named, so that it is zeroed: padding is not, and the kernel reads it (Linux 6.4+).
    btf_log_true_size: u32,
}

/// Loads raw BTF (Linux 4.18).
pub fn btf_load(btf: &[u8]) -> Result<OwnedFd, BpfError> {
    let mut attr = BtfLoad {
        btf: btf.as_ptr() as u64,
        btf_size: btf.len() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_BTF_LOAD, "BPF_BTF_LOAD", &mut attr)
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `attach_btf_id`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    // Named, so that it is zeroed: padding is not, and the kernel reads it.
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    /// The fds a kfunc call's offset indexes (Linux 5.14): module BTFs.
    fd_array: u64,
}

/// What [`prog_load`] loads.
pub struct ProgLoad<'a> {
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// `BPF_*` attach type.
    pub expected_attach_type: u32,
    /// Instructions, 8 bytes each.
    pub insns: &'a [u8],
    /// The license, NUL-terminated.
    pub license: &'a std::ffi::CStr,
    /// The kernel version the program was built for (0: any).
    pub kern_version: u32,
    /// The name (the first 15 bytes are kept).
    pub name: &'a str,
    /// The object's BTF with its func and line info, or none.
    pub btf: Option<ProgBtf<'a>>,
    /// The fd array kfunc calls of modules index (its first entry unused), or empty.
    pub fd_array: &'a [i32],
    /// The BTF type the program attaches to (struct_ops: the kernel struct), or 0.
    pub attach_btf_id: u32,
    /// `BPF_F_*` load flags (`BPF_F_SLEEPABLE`), or 0.
    pub prog_flags: u32,
}

/// A program's BTF: the loaded object BTF and the program's info records.
pub struct ProgBtf<'a> {
    /// The object's loaded BTF.
    pub fd: BorrowedFd<'a>,
    /// `bpf_func_info` records: record size, bytes.
    pub func_info: (u32, &'a [u8]),
    /// `bpf_line_info` records: record size, bytes.
    pub line_info: (u32, &'a [u8]),
}

/// Loads a program; on a refusal, loads it again with a log so the error carries it.
pub fn prog_load(p: &ProgLoad<'_>) -> Result<OwnedFd, BpfError> {
    let mut name = [0u8; 16];
    let n = p.name.len().min(15);
    name[..n].copy_from_slice(&p.name.as_bytes()[..n]);
    let attr = |log: &mut Vec<u8>| {
        let mut a = ProgLoadAttr {
            prog_type: p.prog_type,
            insn_cnt: (p.insns.len() / 8) as u32,
            insns: p.insns.as_ptr() as u64,
            license: p.license.as_ptr() as u64,
            kern_version: p.kern_version,
            prog_name: name,
            expected_attach_type: p.expected_attach_type,
            attach_btf_id: p.attach_btf_id,
            prog_flags: p.prog_flags,
            fd_array: if p.fd_array.is_empty() {
                0
            } else {
                p.fd_array.as_ptr() as u64
            },
            ..Default::default()
        };
        if !log.is_empty() {
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
        }
        if let Some(ProgBtf {
            fd,
            func_info: (fi_size, fi),
            line_info: (li_size, li),
        }) = &p.btf
        {
            let (fi_size, li_size) = (*fi_size, *li_size);
            a.prog_btf_fd = fd.as_raw_fd() as u32;
            a.func_info_rec_size = fi_size;
            a.func_info = fi.as_ptr() as u64;
            a.func_info_cnt = fi.len() as u32 / fi_size.max(1);
            a.line_info_rec_size = li_size;
            a.line_info = li.as_ptr() as u64;
            a.line_info_cnt = li.len() as u32 / li_size.max(1);
        }
        a
    };
    let mut no_log = Vec::new();
    match sys_bpf(BPF_PROG_LOAD, "BPF_PROG_LOAD", &mut attr(&mut no_log)) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 1 << 20];
            match sys_bpf(BPF_PROG_LOAD, "BPF_PROG_LOAD", &mut attr(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(e) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err(BpfError {
                        log: String::from_utf8_lossy(&log[..end]).into_owned(),
                        ..e
                    })
                }
            }
            .map_err(|e| if e.log.is_empty() { first } else { e })
        }
    }
}

/// The `BPF_LINK_CREATE` member of `union bpf_attr` with its `kprobe_multi` part.
#[repr(C)]
#[derive(Default)]
struct KprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    multi_flags: u32,
    cnt: u32,
    syms: u64,
    addrs: u64,
    cookies: u64,
}

/// One kprobe.multi link (Linux 5.18, CONFIG_FPROBE) of `prog` on every function of
/// `symbols`, with a BPF cookie per function when `cookies` is given.
pub fn kprobe_multi_link(
    prog: BorrowedFd<'_>,
    symbols: &[&str],
    cookies: Option<&[u64]>,
    retprobe: bool,
) -> Result<OwnedFd, BpfError> {
    let names: Vec<CString> = symbols
        .iter()
        .map(|s| CString::new(*s))
        .collect::<Result<_, _>>()
        .map_err(|e| BpfError {
            command: "BPF_LINK_CREATE",
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
            log: String::new(),
        })?;
    let pointers: Vec<*const libc::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    if cookies.is_some_and(|c| c.len() != symbols.len()) {
        return Err(BpfError {
            command: "BPF_LINK_CREATE",
            source: io::Error::new(io::ErrorKind::InvalidInput, "one cookie per symbol"),
            log: String::new(),
        });
    }
    let mut attr = KprobeMultiLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: TRACE_KPROBE_MULTI,
        multi_flags: if retprobe { KPROBE_MULTI_RETURN } else { 0 },
        cnt: symbols.len() as u32,
        syms: pointers.as_ptr() as u64,
        cookies: cookies.map_or(0, |c| c.as_ptr() as u64),
        ..Default::default()
    };
    sys_bpf(BPF_LINK_CREATE, "BPF_LINK_CREATE", &mut attr)
}

/// Whether the kernel has kprobe.multi links (Linux 5.18 built with CONFIG_FPROBE), probed once
/// per process: a two-instruction program loaded with `BPF_TRACE_KPROBE_MULTI` and a link on a
/// function that does not exist. A kernel with them looks the function up and fails with ESRCH;
/// without CONFIG_FPROBE it fails with EOPNOTSUPP, before 5.18 (an unknown attach type) with
/// EINVAL. An EINVAL of a kernel that has them only costs the fallback to single kprobes.
pub fn kprobe_multi_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Some(prog) = probe_program(TRACE_KPROBE_MULTI) else {
            return false;
        };
        use std::os::fd::AsFd;
        match kprobe_multi_link(
            prog.as_fd(),
            &["ebpf_manager_no_such_function"],
            None,
            false,
        ) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.source.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EINVAL)
            ),
        }
    })
}

/// The `BPF_LINK_CREATE` member of `union bpf_attr` with its `uprobe_multi` part.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    // Named, so that it is zeroed: padding is not.
    _pad: u32,
}

/// One uprobe.multi link (Linux 6.6) of `prog` on the file offsets `offsets` of `binary`, for
/// process `pid` only when given, with a BPF cookie per offset when `cookies` is given.
pub fn uprobe_multi_link(
    prog: BorrowedFd<'_>,
    binary: &std::path::Path,
    offsets: &[u64],
    cookies: Option<&[u64]>,
    retprobe: bool,
    pid: Option<u32>,
) -> Result<OwnedFd, BpfError> {
    use std::os::unix::ffi::OsStrExt;
    let invalid = |what: &str| BpfError {
        command: "BPF_LINK_CREATE",
        source: io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()),
        log: String::new(),
    };
    let path =
        CString::new(binary.as_os_str().as_bytes()).map_err(|_| invalid("a path with NUL"))?;
    if cookies.is_some_and(|c| c.len() != offsets.len()) {
        return Err(invalid("one cookie per offset"));
    }
    let mut attr = UprobeMultiLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: TRACE_UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cookies: cookies.map_or(0, |c| c.as_ptr() as u64),
        cnt: offsets.len() as u32,
        multi_flags: if retprobe { UPROBE_MULTI_RETURN } else { 0 },
        pid: pid.unwrap_or(0),
        ..Default::default()
    };
    sys_bpf(BPF_LINK_CREATE, "BPF_LINK_CREATE", &mut attr)
}

/// Whether the kernel has uprobe.multi links (Linux 6.6 with CONFIG_UPROBES), probed once per
/// process: a two-instruction program loaded with `BPF_TRACE_UPROBE_MULTI` and a link on `/`,
/// which such a kernel refuses with EBADF (not a regular file) and others otherwise.
pub fn uprobe_multi_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Some(prog) = probe_program(TRACE_UPROBE_MULTI) else {
            return false;
        };
        use std::os::fd::AsFd;
        let link = uprobe_multi_link(
            prog.as_fd(),
            std::path::Path::new("/"),
            &[0],
            None,
            false,
            None,
        );
        matches!(link, Err(e) if e.source.raw_os_error() == Some(libc::EBADF))
    })
}

/// A kprobe program of two instructions (`r0 = 0; exit`) loaded with `attach_type`, for feature
/// probes; `None` when the kernel refuses it.
fn probe_program(attach_type: u32) -> Option<OwnedFd> {
    let insns = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    prog_load(&ProgLoad {
        prog_type: PROG_TYPE_KPROBE,
        expected_attach_type: attach_type,
        insns: &insns,
        license: c"GPL",
        kern_version: 0,
        name: "ebpf_mgr_probe",
        btf: None,
        fd_array: &[],
        attach_btf_id: 0,
        prog_flags: 0,
    })
    .ok()
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (Linux 4.12; context 5.2; flags, cpu 5.10).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    // Named, so that it is zeroed: padding is not.
    _pad: u32,
}

/// What one `BPF_PROG_TEST_RUN` gave back.
pub struct TestRunResult {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Bytes of packet written out.
    pub data_len: usize,
    /// Bytes of context written out.
    pub context_len: usize,
    /// The mean run time, in ns.
    pub duration_ns: u32,
}

/// Runs `prog` `repeat` times on `data` (and `context`), writing the packet and context it
/// leaves into `data_out` and `context_out`.
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    data_out: &mut [u8],
    context: &[u8],
    context_out: &mut [u8],
    repeat: u32,
) -> Result<TestRunResult, BpfError> {
    let ptr = |b: &[u8]| if b.is_empty() { 0 } else { b.as_ptr() as u64 };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_size_out: data_out.len() as u32,
        data_in: ptr(data),
        data_out: if data_out.is_empty() {
            0
        } else {
            data_out.as_mut_ptr() as u64
        },
        repeat,
        ctx_size_in: context.len() as u32,
        ctx_size_out: context_out.len() as u32,
        ctx_in: ptr(context),
        ctx_out: if context_out.is_empty() {
            0
        } else {
            context_out.as_mut_ptr() as u64
        },
        ..Default::default()
    };
    // Every pointer in `attr` points to a buffer of the size given beside it, writable for the
    // `_out` ones, alive across the call.
    super::sys::bpf(BPF_PROG_TEST_RUN, "BPF_PROG_TEST_RUN", &mut attr)
        .map_err(|e| bpf_error("BPF_PROG_TEST_RUN", &e))?;
    Ok(TestRunResult {
        retval: attr.retval,
        data_len: (attr.data_size_out as usize).min(data_out.len()),
        context_len: (attr.ctx_size_out as usize).min(context_out.len()),
        duration_ns: attr.duration,
    })
}
