//! Helpers of the network and cgroup tests: private network namespaces, veth pairs between
//! them, traffic that stays inside them, and child cgroups. Every kernel object is named
//! `ebpfm<pid>...` and removed when its guard drops, even when the test fails.
//!
//! Namespaces and veth pairs are made with raw syscalls and rtnetlink rather than `ip`, so the
//! helpers work the same on the host and in the guests (which have busybox only), and so a
//! kernel without veth answers with its own precise error (`EOPNOTSUPP`: unknown link kind).

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    mem::size_of,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// net.bpf.o: `xdp_count`, `tc_ingress`, `tc_egress` and `socket_count`, counting in `hits`
/// the UDP datagrams sent to the constant `filter_port` (every packet when 0).
pub const NET: &[u8] = include_bytes!("../../ebpf-fixtures/net.bpf.o");
/// cgroup.bpf.o: one program of each cgroup family, counting its runs in `hits`.
pub const CGROUP: &[u8] = include_bytes!("../../ebpf-fixtures/cgroup.bpf.o");

/// The slots of `hits` in net.bpf.o.
pub mod net_slot {
    /// xdp_count
    pub const XDP: u32 = 0;
    /// tc_ingress
    pub const TC_INGRESS: u32 = 1;
    /// tc_egress
    pub const TC_EGRESS: u32 = 2;
    /// socket_count
    pub const SOCKET: u32 = 3;
}

/// The slots of `hits` in cgroup.bpf.o.
pub mod cgroup_slot {
    /// cgroup_skb/ingress skb_ingress
    pub const SKB_INGRESS: u32 = 0;
    /// cgroup_skb/egress skb_egress
    pub const SKB_EGRESS: u32 = 1;
    /// cgroup/sock_create sock_create
    pub const SOCK_CREATE: u32 = 2;
    /// cgroup/connect4 connect4
    pub const CONNECT4: u32 = 3;
    /// cgroup/getsockopt getsockopt
    pub const GETSOCKOPT: u32 = 4;
    /// cgroup/sysctl sysctl
    pub const SYSCTL: u32 = 5;
    /// cgroup/dev device
    pub const DEVICE: u32 = 6;
    /// sockops sock_ops
    pub const SOCK_OPS: u32 = 7;
}

/// `ebpfm<pid><tag>`: an interface name unique to this process (at most 15 bytes, so `tag`
/// has at most 3).
pub fn if_name(tag: &str) -> String {
    let name = format!("ebpfm{}{tag}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} is too long");
    name
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid fd and a namespace type.
    check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Whether the kernel's configuration sets `option` to `y`: `/proc/config.gz` (read with
/// zcat), else `/boot/config-<release>` as distributions install it (the QEMU tier puts the
/// guest kernel's there). `None` only when neither exists.
pub fn kernel_config_builtin(option: &str) -> Option<bool> {
    let text = if Path::new("/proc/config.gz").exists() {
        let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?
    };
    let wanted = format!("{option}=y");
    Some(text.lines().any(|l| l == wanted))
}

/// A network namespace of a test, bound at `/var/run/netns/ebpfm<pid>-<tag>` like
/// `ip netns add` does (so `ip -n NAME` and `tc -n NAME` see it), with `lo` up. Dropping it
/// unmounts and removes the file; the kernel then deletes the namespace and its interfaces.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
}

impl TestNetns {
    /// A new namespace named `ebpfm<pid>-<tag>`.
    pub fn new(tag: &str) -> Self {
        let name = format!("ebpfm{}-{tag}", std::process::id());
        let dir = Path::new("/var/run/netns");
        fs::create_dir_all(dir).expect("creating /var/run/netns");
        let path = dir.join(&name);
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let ns = Self { name, path };
        let target = CString::new(ns.path.as_os_str().as_encoded_bytes()).expect("no NUL");
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                // SAFETY: unshare and mount with valid NUL-terminated strings; the thread
                // ends right after, so no other code runs in the new namespace by accident.
                unsafe {
                    check(libc::unshare(libc::CLONE_NEWNET))?;
                    check(libc::mount(
                        c"/proc/thread-self/ns/net".as_ptr(),
                        target.as_ptr(),
                        c"none".as_ptr(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                set_up("lo")
            })
            .join()
            .expect("the namespace thread panicked")
        })
        .unwrap_or_else(|e| panic!("making network namespace {}: {e}", ns.name));
        ns
    }

    /// Its name, for `ip -n` and `tc -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An open file of the namespace (for `Netns::Fd`).
    pub fn open(&self) -> File {
        File::open(&self.path).expect("opening the namespace file")
    }

    /// Runs `f` on a thread inside the namespace. Sockets it makes stay in the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.open();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(file.as_fd()).expect("entering the test's network namespace");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// A UDP socket bound to `addr` (port 0: any) inside the namespace.
    pub fn udp_socket(&self, addr: Ipv4Addr) -> UdpSocket {
        let socket = self
            .run(|| UdpSocket::bind(SocketAddrV4::new(addr, 0)))
            .unwrap_or_else(|e| panic!("binding a UDP socket to {addr} in {}: {e}", self.name));
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("SO_RCVTIMEO");
        socket
    }

    /// `tc -n <name> ARGS...` (iproute2 on the host); its output.
    pub fn tc(&self, args: &[&str]) -> String {
        self.iproute2("tc", args)
    }

    /// `ip -n <name> ARGS...` (iproute2 on the host); its output.
    pub fn ip(&self, args: &[&str]) -> String {
        self.iproute2("ip", args)
    }

    fn iproute2(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool)
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {tool} (iproute2): {e}"));
        assert!(
            out.status.success(),
            "{tool} -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The programs attached through TCX to `if_name` in `direction` (Linux 6.6).
    pub fn tcx_programs(&self, if_name: &str, direction: aya::programs::TcAttachType) -> Vec<u32> {
        self.run(|| aya::programs::SchedClassifier::query_tcx(if_name, direction))
            .expect("querying TCX programs")
            .1
            .iter()
            .map(|p| p.id())
            .collect()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Ok(path) = CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid path; failing (not mounted) is harmless.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        if let Err(e) = fs::remove_file(&self.path) {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}

/// An `ifreq` for the interface ioctls: the name, then a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

const _: () = assert!(size_of::<IfReq>() == 40);

fn ifreq(name: &str) -> IfReq {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    assert!(name.len() < libc::IFNAMSIZ);
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    req
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the result.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: req is a valid ifreq for these requests.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut IfReq) }).map(drop)
}

/// Sets the interface up, in the calling thread's namespace.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(name);
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]) | libc::IFF_UP as i16;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
}

/// Gives the interface the address `addr/24` and sets it up, in the calling thread's
/// namespace.
pub fn set_address(name: &str, addr: Ipv4Addr) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let sockaddr = |a: Ipv4Addr| {
        let mut data = [0u8; 24];
        data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        data[4..8].copy_from_slice(&a.octets());
        data
    };
    let mut req = ifreq(name);
    req.data = sockaddr(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
    req.data = sockaddr(Ipv4Addr::new(255, 255, 255, 0));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req)?;
    set_up(name)
}

// rtnetlink, for the one request the ioctls cannot make: a veth pair.
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
/// `struct ifinfomsg`, all zero: AF_UNSPEC, no index, no flags.
const IFINFOMSG: [u8; 16] = [0; 16];

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn push_nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
}

fn name_attr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// Sends one rtnetlink request from the calling thread's namespace and waits for its ack.
fn rtnetlink(kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned by the result.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: a fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel's
    msg.extend_from_slice(body);
    // SAFETY: msg is valid for its length.
    check(unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } as i32)?;
    let mut rx = vec![0u8; 8192];
    loop {
        // SAFETY: rx is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), rx.as_mut_ptr().cast(), rx.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(rx[off..off + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(rx[off + 4..off + 6].try_into().expect("2 bytes"));
            if kind == NLMSG_ERROR && off + 20 <= n {
                let code = i32::from_ne_bytes(rx[off + 16..off + 20].try_into().expect("4 bytes"));
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            if len < 16 {
                break;
            }
            off += len.next_multiple_of(4);
        }
    }
}

/// Creates the veth pair `name` (in `ns`) and `peer` (in `peer_ns`) with rtnetlink, the
/// request `ip -n NS link add NAME type veth peer name PEER netns PEER_NS` sends. A kernel
/// without veth answers `EOPNOTSUPP` (no such link kind).
pub fn create_veth(ns: &TestNetns, name: &str, peer_ns: &TestNetns, peer: &str) -> io::Result<()> {
    let peer_file = peer_ns.open();
    let mut body = IFINFOMSG.to_vec();
    push_attr(&mut body, IFLA_IFNAME, &name_attr(name));
    push_nested(&mut body, IFLA_LINKINFO, |b| {
        push_attr(b, IFLA_INFO_KIND, b"veth");
        push_nested(b, IFLA_INFO_DATA, |b| {
            push_nested(b, VETH_INFO_PEER, |b| {
                b.extend_from_slice(&IFINFOMSG);
                push_attr(b, IFLA_IFNAME, &name_attr(peer));
                push_attr(
                    b,
                    IFLA_NET_NS_FD,
                    &(peer_file.as_raw_fd() as u32).to_ne_bytes(),
                );
            });
        });
    });
    ns.run(|| rtnetlink(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body))
}

/// Two namespaces joined by a veth pair: `a` (10.199.`net`.1/24 in `ns_a`) and `b`
/// (10.199.`net`.2/24 in `ns_b`). Deleting the namespaces deletes the pair.
#[derive(Debug)]
pub struct VethPair {
    /// The namespace of `a`.
    pub ns_a: TestNetns,
    /// The namespace of `b`.
    pub ns_b: TestNetns,
    /// One end, `ebpfm<pid><tag>a`.
    pub a: String,
    /// The other end, `ebpfm<pid><tag>b`.
    pub b: String,
    /// The address of `a`.
    pub addr_a: Ipv4Addr,
    /// The address of `b`.
    pub addr_b: Ipv4Addr,
}

impl VethPair {
    /// Two new namespaces and a veth pair between them, or the kernel's error when it
    /// cannot make a veth pair; `tag` has at most 2 bytes, `net` picks the /24.
    pub fn new(tag: &str, net: u8) -> io::Result<Self> {
        let ns_a = TestNetns::new(&format!("{tag}a"));
        let ns_b = TestNetns::new(&format!("{tag}b"));
        let a = if_name(&format!("{tag}a"));
        let b = if_name(&format!("{tag}b"));
        create_veth(&ns_a, &a, &ns_b, &b)?;
        let addr_a = Ipv4Addr::new(10, 199, net, 1);
        let addr_b = Ipv4Addr::new(10, 199, net, 2);
        ns_a.run(|| set_address(&a, addr_a))
            .expect("configuring end a");
        ns_b.run(|| set_address(&b, addr_b))
            .expect("configuring end b");
        Ok(Self {
            ns_a,
            ns_b,
            a,
            b,
            addr_a,
            addr_b,
        })
    }

    /// A veth pair, or `None` on a kernel without veth, after checking that this is exactly
    /// why: the kernel answered `EOPNOTSUPP` to the veth link kind, and (where the kernel
    /// publishes its configuration) veth is not built in. The Debian guests of tier 3 have
    /// veth as a module, which they do not load: the caller then tests what it can on `lo`.
    pub fn new_or_no_veth(tag: &str, net: u8) -> Option<Self> {
        match Self::new(tag, net) {
            Ok(pair) => Some(pair),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                assert_eq!(
                    kernel_config_builtin("CONFIG_VETH"),
                    Some(false),
                    "creating a veth pair failed ({e}): the kernel's configuration must say \
                     veth is not built in (None: no /proc/config.gz nor /boot/config-<release>)"
                );
                println!(
                    "this kernel has no veth driver (creating a veth pair: {e}): \
                     checked that error, the veth part of this test cannot run here"
                );
                None
            }
            Err(e) => panic!("creating a veth pair: {e}"),
        }
    }
}

/// Sends `n` datagrams from `tx` to `rx` and checks that each arrives.
pub fn send_and_receive(tx: &UdpSocket, rx: &UdpSocket, n: usize) {
    let to = rx.local_addr().expect("bound");
    let mut buf = [0u8; 64];
    for i in 0..n {
        let payload = format!("ebpf-manager test datagram {i}");
        tx.send_to(payload.as_bytes(), to).expect("sendto");
        let (len, _) = rx
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} to {to} did not arrive: {e}"));
        assert_eq!(&buf[..len], payload.as_bytes());
    }
}

/// The mount point of the cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on the host (hybrid
/// layout), `/sys/fs/cgroup` in the guests.
pub fn cgroup2_root() -> PathBuf {
    fs::read_to_string("/proc/mounts")
        .expect("reading /proc/mounts")
        .lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let (_, at, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(at))
        })
        .expect("no cgroup2 file system is mounted")
}

/// A child cgroup of the cgroup v2 root, `ebpfm<pid>-<tag>`; removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// A new, empty cgroup.
    pub fn new(tag: &str) -> Self {
        let path = cgroup2_root().join(format!("ebpfm{}-{tag}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forks a child that moves itself into the cgroup, runs `action` and exits with its
    /// result; checks that the result is 0. The child makes raw syscalls only (it is the fork
    /// of a multithreaded process), so `action` must not allocate, lock or panic.
    pub fn run(&self, action: fn() -> i32) {
        let procs = File::options()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .expect("opening cgroup.procs");
        let procs_fd = procs.as_raw_fd();
        // SAFETY: the child only makes raw syscalls, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe calls only; "0" moves the writer itself.
            unsafe {
                let code = if libc::write(procs_fd, b"0".as_ptr().cast(), 1) == 1 {
                    action()
                } else {
                    100
                };
                libc::_exit(code)
            }
        }
        assert!(pid > 0, "fork: {}", io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child in {} failed (wait status {status:#x}; exit 100: it could not join the cgroup)",
            self.path.display()
        );
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The exited child may take a moment to leave the cgroup.
        for _ in 0..50 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    eprintln!("removing {}: {e}", self.path.display());
                    return;
                }
            }
        }
        eprintln!("removing {}: still busy", self.path.display());
    }
}

/// Actions for [`TestCgroup::run`]: raw syscalls only, each returning 0 on success and a
/// distinct code on failure.
pub mod child {
    use std::mem::size_of;

    /// How many datagrams [`udp_to_self`] sends.
    pub const DATAGRAMS: u64 = 3;

    fn loopback(port: u16) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        }
    }

    const ADDR_LEN: libc::socklen_t = size_of::<libc::sockaddr_in>() as libc::socklen_t;

    /// A socket bound to 127.0.0.1 on any port, and its address; `None` on failure.
    fn bound(kind: libc::c_int) -> Option<(libc::c_int, libc::sockaddr_in)> {
        // SAFETY: raw syscalls on valid buffers.
        unsafe {
            let fd = libc::socket(libc::AF_INET, kind, 0);
            if fd < 0 {
                return None;
            }
            let mut addr = loopback(0);
            if libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), ADDR_LEN) != 0 {
                return None;
            }
            let mut len = ADDR_LEN;
            if libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
                return None;
            }
            Some((fd, addr))
        }
    }

    /// One UDP socket on 127.0.0.1 sends [`DATAGRAMS`] datagrams to itself and receives
    /// them: as many egress and ingress packets in the cgroup.
    pub fn udp_to_self() -> i32 {
        let Some((fd, addr)) = bound(libc::SOCK_DGRAM) else {
            return 1;
        };
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: raw syscalls on valid buffers.
        unsafe {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            ) != 0
            {
                return 2;
            }
            let mut buf = [0u8; 16];
            for _ in 0..DATAGRAMS {
                let sent = libc::sendto(
                    fd,
                    b"ping".as_ptr().cast(),
                    4,
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    ADDR_LEN,
                );
                if sent != 4 {
                    return 3;
                }
                if libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) != 4 {
                    return 4;
                }
            }
            libc::close(fd);
        }
        0
    }

    /// Creates one UDP socket.
    pub fn create_socket() -> i32 {
        // SAFETY: raw syscalls.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return 1;
            }
            libc::close(fd);
        }
        0
    }

    /// Connects one UDP socket to 127.0.0.1:9 (a UDP connect sends nothing).
    pub fn connect_udp() -> i32 {
        let addr = loopback(9);
        // SAFETY: raw syscalls on valid buffers.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return 1;
            }
            if libc::connect(fd, (&addr as *const libc::sockaddr_in).cast(), ADDR_LEN) != 0 {
                return 2;
            }
            libc::close(fd);
        }
        0
    }

    /// One getsockopt(SO_TYPE) on a UDP socket; checks the answer.
    pub fn get_socket_type() -> i32 {
        // SAFETY: raw syscalls on valid buffers.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return 1;
            }
            let mut kind: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            ) != 0
            {
                return 2;
            }
            if kind != libc::SOCK_DGRAM {
                return 3;
            }
            libc::close(fd);
        }
        0
    }

    /// One read of /proc/sys/kernel/ostype.
    pub fn read_sysctl() -> i32 {
        // SAFETY: raw syscalls on valid buffers.
        unsafe {
            let fd = libc::open(c"/proc/sys/kernel/ostype".as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return 1;
            }
            let mut buf = [0u8; 64];
            if libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) <= 0 {
                return 2;
            }
            libc::close(fd);
        }
        0
    }

    /// Opens /dev/null.
    pub fn open_dev_null() -> i32 {
        // SAFETY: raw syscalls.
        unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return 1;
            }
            libc::close(fd);
        }
        0
    }

    /// A TCP connection over 127.0.0.1 to a listener of the same process.
    pub fn tcp_to_self() -> i32 {
        let Some((listener, addr)) = bound(libc::SOCK_STREAM) else {
            return 1;
        };
        // SAFETY: raw syscalls on valid buffers.
        unsafe {
            if libc::listen(listener, 1) != 0 {
                return 2;
            }
            let client = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if client < 0 {
                return 3;
            }
            if libc::connect(client, (&addr as *const libc::sockaddr_in).cast(), ADDR_LEN) != 0 {
                return 4;
            }
            let server = libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut());
            if server < 0 {
                return 5;
            }
            libc::close(server);
            libc::close(client);
            libc::close(listener);
        }
        0
    }
}

/// The first OS error code in the chain of `error`'s sources.
pub fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        next = e.source();
    }
    None
}
