//! Network programs: XDP and TC classifiers on an interface of any network namespace, and
//! socket filters. XDP and TC enter the probe's namespace on the calling thread to attach, and
//! again to detach where the detach goes through netlink.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::programs::{
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
    LinkOrder, SchedClassifier, SocketFilter, TcAttachType, Xdp, XdpMode,
};

use super::{
    AttachInfo, AttachMethod, Link, Netns, NetworkDirection, Probe, SharedFd, TcAttachMethod,
    XdpAttachMode,
};
use crate::{kernel::netlink, kernel::netns, Error, ProbeIdentificationPair, Result};

/// An interface, and how to attach to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    if_name: Option<String>,
    if_index: Option<u32>,
    netns: Option<Netns>,
    direction: NetworkDirection,
    prio: u16,
    handle: u32,
    /// Host byte order; `ETH_P_ALL` when the probe left it at 0.
    protocol: u16,
    cleanup_qdisc: bool,
    tc_method: TcAttachMethod,
    xdp_mode: XdpAttachMode,
}

pub(crate) fn resolve(id: &ProbeIdentificationPair, probe: &Probe) -> Result<Option<Target>> {
    if probe.tc_attach_method == TcAttachMethod::Tcx
        && (probe.tc_filter_prio > 0 || probe.tc_filter_handle > 0)
    {
        return Err(Error::InvalidProbe {
            id: id.clone(),
            reason: "tc_filter_prio and tc_filter_handle apply to netlink filters, not TCX links"
                .into(),
        });
    }
    let protocol = match probe.tc_filter_protocol {
        0 => ETH_P_ALL,
        p => p,
    };
    if probe.tc_attach_method == TcAttachMethod::Tcx && protocol != ETH_P_ALL {
        return Err(Error::InvalidProbe {
            id: id.clone(),
            reason: "tc_filter_protocol applies to netlink filters; TCX links see every protocol"
                .into(),
        });
    }
    if probe.tc_attach_method == TcAttachMethod::Tcx && probe.tc_cleanup_qdisc {
        return Err(Error::InvalidProbe {
            id: id.clone(),
            reason: "tc_cleanup_qdisc applies to netlink filters (a clsact qdisc), not TCX links"
                .into(),
        });
    }
    if probe.if_name.is_none() && probe.if_index.is_none() {
        // A template (cloned or hooked per interface later, as Go users do): it loads, and
        // only attaching it is an error.
        return Ok(None);
    }
    Ok(Some(Target {
        if_name: probe.if_name.clone(),
        if_index: probe.if_index,
        netns: probe.netns.clone(),
        direction: probe.network_direction,
        prio: probe.tc_filter_prio,
        handle: probe.tc_filter_handle,
        protocol,
        cleanup_qdisc: probe.tc_cleanup_qdisc,
        tc_method: probe.tc_attach_method,
        xdp_mode: probe.xdp_attach_mode,
    }))
}

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// Enters the namespace a link was made in, to detach it there. `None` when it cannot be
/// entered (the process lost CAP_SYS_ADMIN, say): the link must then not be detached through
/// netlink, which would act on the interface of the same index in the calling thread's
/// namespace, another tool's perhaps.
fn enter_to_detach(ns: &OwnedFd) -> Option<netns::Entered> {
    netns::enter(ns.as_fd())
        .map_err(|e| {
            log::error!(
                "cannot enter the network namespace of a link to detach it: {}",
                crate::error::chain(&e)
            )
        })
        .ok()
}

/// An XDP link made inside a network namespace, dropped inside it too. Where the namespace
/// cannot be entered it is dropped here anyway: a BPF link detaches by closing its fd, and
/// aya's netlink detach replaces only its own program (`XDP_FLAGS_REPLACE`), so neither can
/// touch another program on the same interface index of this namespace.
#[derive(Debug)]
pub(crate) struct InNetns<T> {
    inner: Option<T>,
    netns: Option<OwnedFd>,
}

impl<T> Drop for InNetns<T> {
    fn drop(&mut self) {
        let _entered = self.netns.as_ref().and_then(enter_to_detach);
        drop(self.inner.take());
    }
}

/// A cls_bpf filter of one protocol, added by the manager; deleted on drop.
#[derive(Debug)]
pub(crate) struct OwnFilter(netlink::BpfFilter);

impl Drop for OwnFilter {
    fn drop(&mut self) {
        if let Err(e) = netlink::delete_bpf_filter(&self.0) {
            log::warn!(
                "deleting the TC filter (prio {}, handle {:#x}) of interface {}: {}",
                self.0.prio,
                self.0.handle,
                self.0.if_index,
                crate::error::chain(&e)
            );
        }
    }
}

/// A TC attachment: aya's (a TCX link, or a netlink filter of every protocol), or the
/// manager's own filter of one protocol.
#[expect(dead_code, reason = "held for its Drop, which detaches")]
#[derive(Debug)]
enum TcFilter {
    Aya(SchedClassifierLink),
    Own(OwnFilter),
}

/// A TC filter, and the clsact qdisc to remove after it when this probe created it.
#[derive(Debug)]
pub(crate) struct TcLink {
    link: Option<TcFilter>,
    /// A netlink filter (deleted by interface index, priority and handle), not a TCX link
    /// (detached by closing its fd, from any namespace).
    netlink: bool,
    remove_qdisc: Option<u32>,
    netns: Option<OwnedFd>,
}

impl Drop for TcLink {
    fn drop(&mut self) {
        let _entered = match &self.netns {
            Some(ns) => match enter_to_detach(ns) {
                Some(entered) => Some(entered),
                None if self.netlink => {
                    // Forgotten, not dropped: its drop would delete a filter (and perhaps a
                    // qdisc) of the same interface index in this thread's namespace.
                    log::error!(
                        "a netlink TC filter is left attached in its namespace, where it goes \
                         with the namespace, rather than deleted in another one"
                    );
                    std::mem::forget(self.link.take());
                    return;
                }
                None => None,
            },
            None => None,
        };
        drop(self.link.take());
        if let Some(if_index) = self.remove_qdisc {
            // Only when no filter (ours or another tool's) is left on it.
            match netlink::tc_filter_count(if_index) {
                Ok(0) => {
                    if let Err(e) = netlink::delete_clsact(if_index) {
                        log::warn!(
                            "removing the clsact qdisc of interface {if_index}: {}",
                            crate::error::chain(&e)
                        );
                    }
                }
                Ok(n) => log::debug!("clsact of interface {if_index} kept: {n} filters left"),
                Err(e) => log::warn!(
                    "listing the filters of interface {if_index}: {}",
                    crate::error::chain(&e)
                ),
            }
        }
    }
}

/// A socket filter, with a share of its socket: dropping it detaches the filter from that
/// socket, which it keeps open, so the number cannot have been reused by another.
#[derive(Debug)]
pub(crate) struct SocketLink(SharedFd);

impl Drop for SocketLink {
    fn drop(&mut self) {
        let zero: libc::c_int = 0;
        // SAFETY: SO_DETACH_BPF ignores its value; the fd is open (held by self).
        unsafe {
            libc::setsockopt(
                self.0.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DETACH_BPF,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
    }
}

/// The namespace to attach in: the probe's, else the calling thread's. It is kept with the
/// link, so that a detach through netlink reaches the same interface whichever thread stops
/// the manager.
fn open_netns(target: &Target) -> std::io::Result<Option<OwnedFd>> {
    match &target.netns {
        None => netns::current().map(Some),
        Some(Netns::Path(p)) => netns::open(p).map(Some),
        Some(Netns::Fd(fd)) => netns::dup(fd.as_fd()).map(Some),
    }
}

/// The interface's name and index, looked up in the current namespace.
fn interface(target: &Target) -> std::io::Result<(String, u32)> {
    match (&target.if_name, target.if_index) {
        (Some(name), _) => {
            let c = std::ffi::CString::new(name.as_str())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            // SAFETY: a valid C string.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if index == 0 {
                return Err(crate::kernel::sys::last_error("if_nametoindex"));
            }
            Ok((name.clone(), index))
        }
        (None, Some(index)) => {
            let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
            // SAFETY: buf has IF_NAMESIZE bytes.
            let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
            if p.is_null() {
                return Err(crate::kernel::sys::last_error("if_indextoname"));
            }
            // SAFETY: if_indextoname wrote a NUL-terminated name.
            let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            Ok((name.to_string_lossy().into_owned(), index))
        }
        (None, None) => unreachable!("resolve requires one"),
    }
}

fn describe(target: &Target, name: &str) -> String {
    match &target.netns {
        None => name.to_owned(),
        Some(Netns::Path(p)) => format!("{name} in netns {}", p.display()),
        Some(Netns::Fd(fd)) => format!("{name} in netns fd {}", fd.as_raw_fd()),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Enters the target's namespace and finds the interface; returns its name and index.
fn enter(
    target: &Target,
) -> Result<(Option<OwnedFd>, Option<netns::Entered>, String, u32), BoxError> {
    let ns = open_netns(target)?;
    let entered = ns.as_ref().map(|ns| netns::enter(ns.as_fd())).transpose()?;
    let (name, index) = interface(target)?;
    Ok((ns, entered, name, index))
}

pub(crate) fn attach_xdp(
    prog: &mut Xdp,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    let flags = match target.xdp_mode {
        XdpAttachMode::Default => XdpMode::Default,
        XdpAttachMode::Skb => XdpMode::Skb,
        XdpAttachMode::Driver => XdpMode::Driver,
        XdpAttachMode::Hardware => XdpMode::Hardware,
    };
    let mut hook = describe(target, target.if_name.as_deref().unwrap_or("?"));
    let result = (|| -> Result<(Option<OwnedFd>, XdpLink), BoxError> {
        let (ns, entered, name, index) = enter(target)?;
        hook = describe(target, &name);
        let link_id = prog.attach_to_if_index(index, flags)?;
        let link = prog.take_link(link_id)?;
        drop(entered);
        Ok((ns, link))
    })();
    let (netns, link) = result.map_err(|source| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method: AttachMethod::Xdp,
        source,
    })?;
    Ok((
        Link::Xdp(InNetns {
            inner: Some(link),
            netns,
        }),
        AttachInfo {
            hook,
            method: AttachMethod::Xdp,
        },
    ))
}

pub(crate) fn attach_tc(
    prog: &mut SchedClassifier,
    id: &ProbeIdentificationPair,
    target: &Target,
) -> Result<(Link, AttachInfo)> {
    let attach_type = match target.direction {
        NetworkDirection::Ingress => TcAttachType::Ingress,
        NetworkDirection::Egress => TcAttachType::Egress,
    };
    use aya::util::KernelVersion;
    // TCX links arrived in Linux 6.6.
    let tcx_available = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    let netlink = match target.tc_method {
        TcAttachMethod::Netlink => true,
        TcAttachMethod::Tcx => false,
        // prio and handle only mean something to netlink filters.
        TcAttachMethod::Default => {
            !tcx_available || target.prio > 0 || target.handle > 0 || target.protocol != ETH_P_ALL
        }
    };
    let method = if netlink {
        AttachMethod::TcNetlink
    } else {
        AttachMethod::Tcx
    };
    let mut hook = describe(target, target.if_name.as_deref().unwrap_or("?"));
    let result = (|| -> Result<(Option<OwnedFd>, TcFilter, Option<u32>), BoxError> {
        let (ns, entered, name, index) = enter(target)?;
        hook = describe(target, &name);
        let mut created_qdisc = false;
        let options = if netlink {
            match aya::programs::tc::qdisc_add_clsact(&name) {
                Ok(()) => created_qdisc = true,
                Err(aya::programs::tc::TcError::NetlinkError(e))
                    if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(Box::new(e)),
            }
            TcAttachOptions::Netlink(NlOptions {
                priority: target.prio,
                handle: target.handle.into(),
                ..Default::default()
            })
        } else {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        };
        let attached: Result<TcFilter, BoxError> = if netlink && target.protocol != ETH_P_ALL {
            // aya's filter is always ETH_P_ALL: this one is the manager's.
            let filter = netlink::BpfFilter {
                if_index: index,
                egress: target.direction == NetworkDirection::Egress,
                prio: target.prio,
                handle: target.handle,
                protocol: target.protocol,
            };
            prog.fd()
                .map_err(BoxError::from)
                .and_then(|fd| {
                    netlink::add_bpf_filter(filter, fd.as_fd(), &name_of(prog))
                        .map_err(BoxError::from)
                })
                .map(|f| TcFilter::Own(OwnFilter(f)))
        } else {
            prog.attach_with_options(&name, attach_type, options)
                .and_then(|link_id| prog.take_link(link_id))
                .map(TcFilter::Aya)
                .map_err(BoxError::from)
        };
        let link = match attached {
            Ok(link) => link,
            Err(e) => {
                if created_qdisc {
                    let _ = netlink::delete_clsact(index);
                }
                return Err(e);
            }
        };
        drop(entered);
        let remove_qdisc = (created_qdisc && target.cleanup_qdisc).then_some(index);
        Ok((ns, link, remove_qdisc))
    })();
    let (ns, link, remove_qdisc) = result.map_err(|source| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method,
        // The kernel only says EINVAL: name the cause.
        source: if netlink || tcx_available {
            source
        } else {
            let cause = crate::error::chain(source.as_ref());
            format!(
                "{cause}; TCX links need Linux 6.6, and this kernel is older: \
                 use TcAttachMethod::Netlink (TcAttachMethod::Default picks it here)"
            )
            .into()
        },
    })?;
    Ok((
        Link::Tc(TcLink {
            link: Some(link),
            netlink,
            remove_qdisc,
            netns: ns,
        }),
        AttachInfo { hook, method },
    ))
}

/// The filter's name as `tc filter show` prints it, as aya names its own: the program's name.
fn name_of(prog: &SchedClassifier) -> String {
    prog.info()
        .ok()
        .and_then(|info| info.name_as_str().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "ebpf_manager".into())
}

pub(crate) fn attach_socket(
    prog: &mut SocketFilter,
    id: &ProbeIdentificationPair,
    socket: &SharedFd,
) -> Result<(Link, AttachInfo)> {
    let hook = format!("socket fd {}", socket.as_fd().as_raw_fd());
    prog.attach(socket.as_fd()).map_err(|e| Error::Attach {
        id: id.clone(),
        hook: hook.clone(),
        method: AttachMethod::SocketOption,
        source: Box::new(e),
    })?;
    Ok((
        Link::Socket(SocketLink(socket.clone())),
        AttachInfo {
            hook,
            method: AttachMethod::SocketOption,
        },
    ))
}
