//! The two rtnetlink requests aya lacks: counting the TC filters of an interface, and deleting
//! its clsact qdisc.

use std::{io, mem::size_of, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

const RTM_DELQDISC: u16 = 37;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
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
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request and returns the types of the messages that answer it, up to the ack or
/// the end of the dump; a netlink error becomes an `io::Error`.
fn request(kind: u16, flags: u16, msg: TcMsg, kind_attr: Option<&[u8]>) -> io::Result<Vec<u16>> {
    let sock = socket()?;
    let mut buf = Vec::new();
    let attr_len = kind_attr.map_or(0, |k| 4 + k.len());
    let padded = (attr_len + 3) & !3;
    let len = size_of::<Header>() + size_of::<TcMsg>() + padded;
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
    if let Some(k) = kind_attr {
        buf.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        buf.extend_from_slice(&TCA_KIND.to_ne_bytes());
        buf.extend_from_slice(k);
        buf.resize(len, 0);
    }
    // SAFETY: buf is valid for its length.
    if unsafe { libc::send(sock.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut kinds = Vec::new();
    let mut rx = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: rx is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), rx.as_mut_ptr().cast(), rx.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut off = 0usize;
        let n = n as usize;
        while off + size_of::<Header>() <= n {
            // SAFETY: in bounds; read_unaligned copes with any alignment.
            let h: Header = unsafe { std::ptr::read_unaligned(rx[off..].as_ptr().cast()) };
            if h.len < size_of::<Header>() as u32 {
                return Ok(kinds);
            }
            match h.kind {
                NLMSG_DONE => return Ok(kinds),
                NLMSG_ERROR => {
                    let code: i32 = unsafe {
                        // SAFETY: an error message carries an i32 after its header.
                        std::ptr::read_unaligned(rx[off + size_of::<Header>()..].as_ptr().cast())
                    };
                    return if code == 0 {
                        Ok(kinds) // the ack
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                other => kinds.push(other),
            }
            off += (h.len as usize + 3) & !3;
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
        total += request(RTM_GETTFILTER, NLM_F_DUMP, msg, None)?.len();
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
    request(RTM_DELQDISC, NLM_F_ACK, msg, Some(b"clsact\0")).map(|_| ())
}
