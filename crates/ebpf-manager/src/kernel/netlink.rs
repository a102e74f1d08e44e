//! The rtnetlink requests aya lacks: counting the TC filters of an interface, deleting its
//! clsact qdisc, and adding (and deleting) a cls_bpf filter of a given protocol (aya 0.14's
//! filter always matches `ETH_P_ALL`).

use std::{io, mem::size_of, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_ECHO: u16 = 8;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCA_KIND: u16 = 1;
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_MIN_INGRESS: u32 = 0xFFF2;
const TC_H_MIN_EGRESS: u32 = 0xFFF3;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Header {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct TcMsg {
    family: u8,
    pad: [u8; 3],
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(super::sys::last_error("socket"));
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One netlink attribute: its type and its payload, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize((buf.len() + 3) & !3, 0);
}

/// Sends one request (a `tcmsg` and `attrs`) and returns the messages that answer it, as
/// (type, payload after the netlink header), up to the ack or the end of the dump; a netlink
/// error becomes an `io::Error`.
fn request(kind: u16, flags: u16, msg: TcMsg, attrs: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let sock = socket()?;
    let mut buf = Vec::new();
    let len = size_of::<Header>() + size_of::<TcMsg>() + attrs.len();
    let header = Header {
        len: len as u32,
        kind,
        flags: NLM_F_REQUEST | flags,
        seq: 1,
        pid: 0,
    };
    // SAFETY: both are plain repr(C) structs without padding holes that matter.
    unsafe {
        buf.extend_from_slice(std::slice::from_raw_parts(
            (&header as *const Header).cast::<u8>(),
            size_of::<Header>(),
        ));
        buf.extend_from_slice(std::slice::from_raw_parts(
            (&msg as *const TcMsg).cast::<u8>(),
            size_of::<TcMsg>(),
        ));
    }
    buf.extend_from_slice(attrs);
    // SAFETY: buf is valid for its length.
    if unsafe { libc::send(sock.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) } < 0 {
        return Err(super::sys::last_error("send"));
    }
    let truncated = || io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message");
    let mut answers = Vec::new();
    let mut rx = vec![0u8; 32 * 1024];
    loop {
        // MSG_TRUNC: the datagram's real length, to tell a cut one.
        // SAFETY: rx is valid for its length.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                rx.as_mut_ptr().cast(),
                rx.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(super::sys::last_error("recv"));
        }
        if n as usize > rx.len() {
            return Err(truncated());
        }
        // Only what this datagram holds is read, never stale bytes past it.
        let data = &rx[..n as usize];
        let mut off = 0usize;
        while off + size_of::<Header>() <= data.len() {
            // SAFETY: in bounds (checked above); read_unaligned copes with any alignment.
            let h: Header = unsafe { std::ptr::read_unaligned(data[off..].as_ptr().cast()) };
            let end = off + h.len as usize;
            if (h.len as usize) < size_of::<Header>() || end > data.len() {
                return Err(truncated());
            }
            let payload = &data[off + size_of::<Header>()..end];
            match h.kind {
                NLMSG_DONE => return Ok(answers),
                NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        .ok_or_else(truncated)?;
                    return if code == 0 {
                        Ok(answers) // the ack
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                other => answers.push((other, payload.to_vec())),
            }
            off = (end + 3) & !3;
        }
        if off < data.len() {
            return Err(truncated());
        }
    }
}

/// How many TC filters hang on the clsact qdisc of `if_index` (ingress and egress).
pub(crate) fn tc_filter_count(if_index: u32) -> io::Result<usize> {
    let mut total = 0;
    for minor in [TC_H_MIN_INGRESS, TC_H_MIN_EGRESS] {
        let msg = TcMsg {
            family: libc::AF_UNSPEC as u8,
            ifindex: if_index as i32,
            parent: (TC_H_CLSACT & 0xFFFF_0000) | minor,
            ..Default::default()
        };
        total += request(RTM_GETTFILTER, NLM_F_DUMP, msg, &[])?.len();
    }
    Ok(total)
}

/// Deletes the clsact qdisc of `if_index`.
pub(crate) fn delete_clsact(if_index: u32) -> io::Result<()> {
    let msg = TcMsg {
        family: libc::AF_UNSPEC as u8,
        ifindex: if_index as i32,
        handle: TC_H_CLSACT & 0xFFFF_0000,
        parent: TC_H_CLSACT,
        ..Default::default()
    };
    let mut attrs = Vec::new();
    attr(&mut attrs, TCA_KIND, b"clsact\0");
    request(RTM_DELQDISC, NLM_F_ACK, msg, &attrs).map(|_| ())
}

/// A cls_bpf filter on a clsact qdisc, by the keys the kernel knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfFilter {
    pub(crate) if_index: u32,
    pub(crate) egress: bool,
    pub(crate) prio: u16,
    pub(crate) handle: u32,
    /// In host byte order.
    pub(crate) protocol: u16,
}

impl BpfFilter {
    fn msg(&self) -> TcMsg {
        let minor = if self.egress {
            TC_H_MIN_EGRESS
        } else {
            TC_H_MIN_INGRESS
        };
        TcMsg {
            family: libc::AF_UNSPEC as u8,
            ifindex: self.if_index as i32,
            handle: self.handle,
            parent: (TC_H_CLSACT & 0xFFFF_0000) | minor,
            // The protocol is in network byte order in the low 16 bits.
            info: (u32::from(self.prio) << 16) | u32::from(self.protocol.to_be()),
            ..Default::default()
        }
    }
}

/// Adds `filter` (prio and handle 0: the kernel picks) running `prog` in direct-action mode,
/// named `name`; returns it with the prio and handle the kernel gave it.
pub(crate) fn add_bpf_filter(
    filter: BpfFilter,
    prog: std::os::fd::BorrowedFd<'_>,
    name: &str,
) -> io::Result<BpfFilter> {
    let mut options = Vec::new();
    attr(
        &mut options,
        TCA_BPF_FD,
        &(prog.as_raw_fd() as u32).to_ne_bytes(),
    );
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    attr(&mut options, TCA_BPF_NAME, &cname);
    attr(
        &mut options,
        TCA_BPF_FLAGS,
        &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes(),
    );
    let mut attrs = Vec::new();
    attr(&mut attrs, TCA_KIND, b"bpf\0");
    attr(&mut attrs, TCA_OPTIONS | NLA_F_NESTED, &options);
    let answers = request(
        RTM_NEWTFILTER,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        filter.msg(),
        &attrs,
    )?;
    // The echo of the new filter carries the prio and handle the kernel chose.
    let echo = answers
        .iter()
        .find(|(kind, payload)| *kind == RTM_NEWTFILTER && payload.len() >= size_of::<TcMsg>())
        .map(|(_, payload)| {
            // SAFETY: at least a tcmsg long; read_unaligned copes with any alignment.
            unsafe { std::ptr::read_unaligned(payload.as_ptr().cast::<TcMsg>()) }
        });
    match echo {
        Some(m) => Ok(BpfFilter {
            prio: (m.info >> 16) as u16,
            handle: m.handle,
            ..filter
        }),
        // Both keys are known: the filter can be deleted by them.
        None if filter.prio != 0 && filter.handle != 0 => Ok(filter),
        // A delete with a zero prio or handle would flush every filter of the hook, other
        // tools' too: refuse rather than keep a filter that cannot be deleted safely.
        None => Err(io::Error::other(
            "the kernel did not echo the new filter's priority and handle; set \
             tc_filter_prio and tc_filter_handle to delete it by them",
        )),
    }
}

/// Deletes `filter`.
pub(crate) fn delete_bpf_filter(filter: &BpfFilter) -> io::Result<()> {
    let mut attrs = Vec::new();
    attr(&mut attrs, TCA_KIND, b"bpf\0");
    request(RTM_DELTFILTER, NLM_F_ACK, filter.msg(), &attrs).map(|_| ())
}
