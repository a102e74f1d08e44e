//! One program of a loaded object made a loaded program: BTF-typed ones against the kernel's
//! BTF, the others as aya loads them; errors that name the probe and what the kernel lacks; and
//! programs taken from pins and unloaded.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use aya::{programs::Program, Btf};

use super::KernelBtf;
use crate::{kernel, Error, ProbeIdentificationPair, Result};

/// Loads one program into the kernel; BTF-typed programs load against the kernel's BTF for
/// their hook.
pub(crate) fn load_program(
    prog: &mut Program,
    id: &ProbeIdentificationPair,
    function: &str,
    btf_target: Option<&str>,
    btf: &mut KernelBtf,
) -> Result<()> {
    crate::phases::time(crate::phases::Phase::ProgramLoads, || {
        load_timed(prog, id, function, btf_target, btf)
    })
}

fn load_timed(
    prog: &mut Program,
    id: &ProbeIdentificationPair,
    function: &str,
    btf_target: Option<&str>,
    btf: &mut KernelBtf,
) -> Result<()> {
    use aya::programs::ProgramError;
    crate::fault::check("load")?;
    let program_type = type_name(prog);
    let result = match (prog, btf_target) {
        (prog, Some(target)) => {
            let source = btf.source();
            let btf = btf.get()?;
            if let Some(missing) = missing_target(prog, target, btf) {
                // Before aya's `unknown BTF type`: a kernel without the function is told apart
                // from a bad declaration, as for kprobes.
                return Err(Error::SymbolNotFound {
                    id: id.clone(),
                    symbol: missing,
                    source_file: source,
                });
            }
            load_btf(prog, target, btf).expect("a BTF hook is only resolved for BTF programs")
        }
        (Program::KProbe(p), _) => p.load(),
        (Program::TracePoint(p), _) => p.load(),
        (Program::RawTracePoint(p), _) => p.load(),
        (Program::UProbe(p), _) => p.load(),
        (Program::PerfEvent(p), _) => p.load(),
        (Program::SocketFilter(p), _) => p.load(),
        (Program::Xdp(p), _) => p.load(),
        (Program::SchedClassifier(p), _) => p.load(),
        (Program::CgroupSkb(p), _) => p.load(),
        (Program::CgroupSock(p), _) => p.load(),
        (Program::CgroupSockAddr(p), _) => p.load(),
        (Program::CgroupSockopt(p), _) => p.load(),
        (Program::CgroupSysctl(p), _) => p.load(),
        (Program::CgroupDevice(p), _) => p.load(),
        (Program::SockOps(p), _) => p.load(),
        (other, _) => {
            return Err(Error::UnsupportedProgramType {
                id: id.clone(),
                function: function.to_owned(),
                program_type: type_name(other),
            })
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            if is_permission_error(&io_error) {
                return Err(Error::PermissionDenied {
                    operation: format!("loading `{function}` of probe {id}"),
                    source: Box::new(io_error),
                });
            }
            if io_error.raw_os_error() == Some(libc::EPERM) && verifier_log.to_string().is_empty() {
                // Privileged, and no verifier log: the verifier did not reject the program,
                // the kernel refused its type before verifying it.
                return Err(Error::ProgramTypeRefused {
                    id: id.clone(),
                    function: function.to_owned(),
                    program_type,
                    needs: needs(program_type),
                    source: io_error,
                });
            }
            Err(Error::Verifier {
                id: id.clone(),
                function: function.to_owned(),
                source: io_error,
                log: verifier_log.to_string(),
            })
        }
        Err(e) => Err(Error::Load {
            id: id.clone(),
            function: function.to_owned(),
            source: Box::new(e),
        }),
    }
}

/// What a program type needs from the kernel, for [`Error::ProgramTypeRefused`].
fn needs(program_type: &str) -> &'static str {
    match program_type {
        "fentry" | "fexit" => "BPF trampolines: Linux 5.5 with BTF",
        "LSM" => {
            "BPF trampolines and the BPF LSM: Linux 5.7 with `bpf` in the `lsm=` boot parameter"
        }
        "tp_btf" => "Linux 5.5 with BTF",
        "iterator" => "Linux 5.8 with BTF",
        _ => "a kernel that supports them",
    }
}

/// The program pinned at `path`, as the same kind of program as `prog` (the object's, not yet
/// loaded), to use in its place.
pub(crate) fn from_pin(
    prog: &Program,
    path: &Path,
    id: &ProbeIdentificationPair,
) -> Result<Program> {
    use aya::programs::*;
    let pinned = match prog {
        Program::KProbe(p) => KProbe::from_pin(path, p.kind()).map(Program::KProbe),
        Program::UProbe(p) => UProbe::from_pin(path, p.kind()).map(Program::UProbe),
        Program::TracePoint(_) => TracePoint::from_pin(path).map(Program::TracePoint),
        Program::RawTracePoint(_) => RawTracePoint::from_pin(path).map(Program::RawTracePoint),
        Program::PerfEvent(_) => PerfEvent::from_pin(path).map(Program::PerfEvent),
        Program::BtfTracePoint(_) => BtfTracePoint::from_pin(path).map(Program::BtfTracePoint),
        Program::FEntry(_) => FEntry::from_pin(path).map(Program::FEntry),
        Program::FExit(_) => FExit::from_pin(path).map(Program::FExit),
        Program::Lsm(_) => Lsm::from_pin(path).map(Program::Lsm),
        Program::Iter(_) => Iter::from_pin(path).map(Program::Iter),
        Program::SocketFilter(_) => SocketFilter::from_pin(path).map(Program::SocketFilter),
        Program::SchedClassifier(_) => {
            SchedClassifier::from_pin(path).map(Program::SchedClassifier)
        }
        Program::Xdp(_) => {
            Xdp::from_pin(path, aya_obj::programs::XdpAttachType::Interface).map(Program::Xdp)
        }
        Program::CgroupSkb(p) => match p.expected_attach_type() {
            Some(kind) => CgroupSkb::from_pin(path, *kind).map(Program::CgroupSkb),
            None => {
                return Err(Error::InvalidProbe {
                    id: id.clone(),
                    reason: "pin_path: a cgroup_skb program without an expected attach type cannot be reused from a pin; use cgroup_skb/ingress or cgroup_skb/egress".into(),
                })
            }
        },
        Program::CgroupSysctl(_) => CgroupSysctl::from_pin(path).map(Program::CgroupSysctl),
        Program::CgroupDevice(_) => CgroupDevice::from_pin(path).map(Program::CgroupDevice),
        Program::SockOps(_) => SockOps::from_pin(path).map(Program::SockOps),
        other => {
            return Err(Error::InvalidProbe {
                id: id.clone(),
                reason: format!(
                    "pin_path: reusing a pinned {:?} program is not supported (aya 0.14 needs details the pin does not keep); remove pin_path",
                    other.prog_type()
                ),
            })
        }
    };
    let unusable = |why: String| Error::InvalidProbe {
        id: id.clone(),
        reason: format!(
            "pin_path: {} holds no usable program of this type: {why}; \
             remove the stale pin or pick another path",
            path.display()
        ),
    };
    let pinned = pinned.map_err(|e| unusable(crate::error::chain(&e)))?;
    // aya reads a pinned map's info as if it were a program's: ask the kernel what the fd is.
    let fd = pinned.fd().map_err(|e| unusable(crate::error::chain(&e)))?;
    let fdinfo = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
    match std::fs::read_to_string(&fdinfo) {
        Ok(info) if info.contains("prog_type:") => {}
        Ok(_) => return Err(unusable("it is not a program (a map or a link?)".into())),
        Err(e) => return Err(unusable(format!("{fdinfo}: {e}"))),
    }
    let found = pinned
        .info()
        .map_err(|e| unusable(crate::error::chain(&e)))?
        .program_type();
    let expected = aya_obj::generated::bpf_prog_type::from(prog.prog_type());
    if found != expected {
        return Err(unusable(format!(
            "it is a {found:?} program, the object's is a {expected:?} program"
        )));
    }
    Ok(pinned)
}

/// Unloads the program (closes the manager's fd of it; a pinned program stays for its pin),
/// keeping it in the object so that it can be loaded again.
pub(crate) fn unload(prog: &mut Program) -> std::result::Result<(), aya::programs::ProgramError> {
    // aya's `Program::unload` takes the program by value; the per-type one does not.
    match prog {
        Program::KProbe(p) => p.unload(),
        Program::UProbe(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::SocketFilter(p) => p.unload(),
        Program::ReusePortSocketFilter(p) => p.unload(),
        Program::Xdp(p) => p.unload(),
        Program::SkMsg(p) => p.unload(),
        Program::SkSkb(p) => p.unload(),
        Program::SockOps(p) => p.unload(),
        Program::SchedClassifier(p) => p.unload(),
        Program::CgroupSkb(p) => p.unload(),
        Program::CgroupSysctl(p) => p.unload(),
        Program::CgroupSockopt(p) => p.unload(),
        Program::LircMode2(p) => p.unload(),
        Program::PerfEvent(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::Lsm(p) => p.unload(),
        Program::LsmCgroup(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::FlowDissector(p) => p.unload(),
        Program::Extension(p) => p.unload(),
        Program::CgroupSockAddr(p) => p.unload(),
        Program::SkLookup(p) => p.unload(),
        Program::SkReuseport(p) => p.unload(),
        Program::CgroupSock(p) => p.unload(),
        Program::CgroupDevice(p) => p.unload(),
        Program::Iter(p) => p.unload(),
    }
}

/// Whether the program is loaded in the kernel.
pub(crate) fn is_loaded(prog: &Program) -> bool {
    prog.fd().is_ok()
}

/// EPERM means missing capabilities only when the process has neither CAP_BPF nor
/// CAP_SYS_ADMIN; with them, it is the kernel refusing the program itself (as fentry under
/// lockdown).
pub(super) fn is_permission_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EPERM) && !kernel::has_bpf_capabilities()
}

/// aya's name of a program's type, for messages.
pub(crate) fn type_name(prog: &Program) -> &'static str {
    match prog {
        Program::KProbe(_) => "kprobe",
        Program::UProbe(_) => "uprobe",
        Program::TracePoint(_) => "tracepoint",
        Program::SocketFilter(_) => "socket filter",
        Program::ReusePortSocketFilter(_) => "reuseport socket filter",
        Program::Xdp(_) => "XDP",
        Program::SkMsg(_) => "sk_msg",
        Program::SkSkb(_) => "sk_skb",
        Program::CgroupSockAddr(_) => "cgroup sock_addr",
        Program::SockOps(_) => "sock_ops",
        Program::SchedClassifier(_) => "TC classifier",
        Program::CgroupSkb(_) => "cgroup_skb",
        Program::CgroupSysctl(_) => "cgroup sysctl",
        Program::CgroupSockopt(_) => "cgroup sockopt",
        Program::LircMode2(_) => "lirc_mode2",
        Program::PerfEvent(_) => "perf_event",
        Program::RawTracePoint(_) => "raw tracepoint",
        Program::Lsm(_) => "LSM",
        Program::LsmCgroup(_) => "LSM cgroup",
        Program::BtfTracePoint(_) => "tp_btf",
        Program::FEntry(_) => "fentry",
        Program::FExit(_) => "fexit",
        Program::FlowDissector(_) => "flow dissector",
        Program::Extension(_) => "freplace extension",
        Program::SkLookup(_) => "sk_lookup",
        Program::SkReuseport(_) => "sk_reuseport",
        Program::CgroupSock(_) => "cgroup sock",
        Program::CgroupDevice(_) => "cgroup device",
        Program::Iter(_) => "iterator",
    }
}

/// Loads a BTF-typed program against `btf`, for `target`.
fn load_btf(
    prog: &mut Program,
    target: &str,
    btf: &Btf,
) -> Option<Result<(), aya::programs::ProgramError>> {
    Some(match prog {
        Program::FEntry(p) => p.load(target, btf),
        Program::FExit(p) => p.load(target, btf),
        Program::BtfTracePoint(p) => p.load(target, btf),
        Program::Lsm(p) => p.load(target, btf),
        Program::Iter(p) => p.load(target, btf),
        _ => return None,
    })
}

/// The kernel function `prog` would be loaded against for `target` when `btf` lacks it
/// (fentry and fexit: `target`; LSM: `bpf_lsm_<target>`); `None` when present, or for the
/// kinds whose targets are not functions.
fn missing_target(prog: &Program, target: &str, btf: &Btf) -> Option<String> {
    let function = match prog {
        Program::FEntry(_) | Program::FExit(_) => target.to_owned(),
        Program::Lsm(_) => format!("bpf_lsm_{target}"),
        _ => return None,
    };
    btf.id_by_type_name_kind(&function, aya_obj::btf::BtfKind::Func)
        .is_err()
        .then_some(function)
}
