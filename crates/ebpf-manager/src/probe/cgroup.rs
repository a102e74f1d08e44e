//! Cgroup programs on a cgroup v2 directory: cgroup_skb (Linux 4.10), cgroup sock (4.10),
//! sock_addr (4.17), sockopt (5.3), sysctl (5.2), device (4.15) and sock_ops (4.13). aya uses
//! a BPF link where the kernel has one (5.7) and `BPF_PROG_ATTACH` otherwise.

use std::{fs::File, path::Path};

use aya::programs::{
    cgroup_device::CgroupDeviceLink, cgroup_skb::CgroupSkbLink, cgroup_sock::CgroupSockLink,
    cgroup_sock_addr::CgroupSockAddrLink, cgroup_sockopt::CgroupSockoptLink,
    cgroup_sysctl::CgroupSysctlLink, links::CgroupAttachMode, sock_ops::SockOpsLink,
    CgroupSkbAttachType, Program,
};
use aya::util::KernelVersion;

use super::{AttachInfo, AttachMethod, Link};
use crate::{Error, ProbeIdentificationPair, Result};

/// The link of any cgroup program; dropping it detaches.
#[expect(dead_code, reason = "each link is held for its Drop, which detaches")]
#[derive(Debug)]
pub(crate) enum CgroupLink {
    Skb(CgroupSkbLink),
    Sock(CgroupSockLink),
    SockAddr(CgroupSockAddrLink),
    Sockopt(CgroupSockoptLink),
    Sysctl(CgroupSysctlLink),
    Device(CgroupDeviceLink),
    SockOps(SockOpsLink),
}

/// Whether the program is one of the cgroup family.
pub(crate) fn is_cgroup(prog: &Program) -> bool {
    matches!(
        prog,
        Program::CgroupSkb(_)
            | Program::CgroupSock(_)
            | Program::CgroupSockAddr(_)
            | Program::CgroupSockopt(_)
            | Program::CgroupSysctl(_)
            | Program::CgroupDevice(_)
            | Program::SockOps(_)
    )
}

pub(crate) fn attach(
    prog: &mut Program,
    id: &ProbeIdentificationPair,
    cgroup: &Path,
) -> Result<(Link, AttachInfo)> {
    let hook = cgroup.display().to_string();
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method: AttachMethod::Cgroup,
        source,
    };
    let fd = File::open(cgroup).map_err(|e| fail(Box::new(e)))?;
    // From 5.7 aya makes a BPF link, which always allows other programs on the cgroup and
    // whose flags must be 0 (the kernel answers EINVAL to BPF_F_ALLOW_MULTI); before, it uses
    // BPF_PROG_ATTACH, which needs BPF_F_ALLOW_MULTI not to exclude other programs. aya picks
    // the path with this same test.
    let links = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 7, 0));
    let mode = if links {
        CgroupAttachMode::Single
    } else {
        CgroupAttachMode::AllowMultiple
    };
    let link = match prog {
        Program::CgroupSkb(p) => {
            // The section (cgroup_skb/ingress or /egress) gives the direction.
            let direction = p
                .expected_attach_type()
                .unwrap_or(CgroupSkbAttachType::Ingress);
            p.attach(&fd, direction, mode)
                .and_then(|l| p.take_link(l))
                .map(CgroupLink::Skb)
        }
        Program::CgroupSock(p) => p
            .attach(&fd, mode)
            .and_then(|l| p.take_link(l))
            .map(CgroupLink::Sock),
        Program::CgroupSockAddr(p) => p
            .attach(&fd, mode)
            .and_then(|l| p.take_link(l))
            .map(CgroupLink::SockAddr),
        Program::CgroupSockopt(p) => p
            .attach(&fd, mode)
            .and_then(|l| p.take_link(l))
            .map(CgroupLink::Sockopt),
        Program::CgroupSysctl(p) => p
            .attach(&fd, mode)
            .and_then(|l| p.take_link(l))
            .map(CgroupLink::Sysctl),
        Program::CgroupDevice(p) => p
            .attach(&fd, mode)
            .and_then(|l| p.take_link(l))
            .map(CgroupLink::Device),
        Program::SockOps(p) => p
            .attach(&fd, mode)
            .and_then(|l| p.take_link(l))
            .map(CgroupLink::SockOps),
        _ => unreachable!("resolved as a cgroup program"),
    }
    .map_err(|e| fail(Box::new(e)))?;
    Ok((
        Link::Cgroup(link),
        AttachInfo {
            hook,
            method: AttachMethod::Cgroup,
        },
    ))
}
