//! XDP in another network namespace: the example makes two namespaces joined by a veth pair
//! (`ip netns add`, `ip link add ... type veth peer ...`), attaches an XDP program to the
//! receiving end through `Probe::netns`, sends UDP datagrams from the other end, and prints how
//! many the program counted. Everything it made is deleted at the end, even on failure.
//!
//! Run: `cargo run --example xdp` (as root; needs iproute2 and the veth driver).

use std::{
    error::Error,
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, ExitCode},
    time::Duration,
};

use ebpf_manager::{aya::maps::Array, CleanupType, ConstantEditor, Manager, Netns, Options, Probe};

/// `xdp_count` (section `xdp`) counts in slot 0 of the array `hits` the UDP datagrams sent to
/// the constant `filter_port`, and lets every packet through.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/net.bpf.o");
const DATAGRAMS: u64 = 5;

fn ip(args: &[&str]) -> Result<(), Box<dyn Error>> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Two namespaces and a veth pair between them; dropping it deletes them all.
struct Veth {
    ns: [String; 2],
    ends: [String; 2],
}

impl Veth {
    fn new() -> Result<Self, Box<dyn Error>> {
        let pid = std::process::id();
        let veth = Veth {
            ns: [format!("ebpfm{pid}-xdp-a"), format!("ebpfm{pid}-xdp-b")],
            ends: [format!("ebpfm{pid}xa"), format!("ebpfm{pid}xb")],
        };
        let [na, nb] = &veth.ns;
        let [a, b] = &veth.ends;
        ip(&["netns", "add", na])?;
        ip(&["netns", "add", nb])?;
        ip(&[
            "-n", na, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nb,
        ])?;
        ip(&["-n", na, "addr", "add", "10.200.1.1/24", "dev", a])?;
        ip(&["-n", nb, "addr", "add", "10.200.1.2/24", "dev", b])?;
        ip(&["-n", na, "link", "set", a, "up"])?;
        ip(&["-n", nb, "link", "set", b, "up"])?;
        Ok(veth)
    }

    fn path(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.ns[i]))
    }

    /// A UDP socket bound to `addr` in namespace `i`: made by a thread that entered it.
    fn socket(&self, i: usize, addr: Ipv4Addr) -> Result<UdpSocket, Box<dyn Error>> {
        let ns = File::open(self.path(i))?;
        let socket = std::thread::spawn(move || {
            // SAFETY: a valid namespace fd; only this short-lived thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            UdpSocket::bind(SocketAddrV4::new(addr, 0))
        })
        .join()
        .expect("the socket thread panicked")?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(socket)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, and so the pair.
        for ns in &self.ns {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("{e}");
            }
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    examples::check_privileges();
    let veth = Veth::new()?;
    println!(
        "made {} <-> {} between namespaces {} and {}",
        veth.ends[0], veth.ends[1], veth.ns[0], veth.ns[1]
    );
    let tx = veth.socket(0, Ipv4Addr::new(10, 200, 1, 1))?;
    let rx = veth.socket(1, Ipv4Addr::new(10, 200, 1, 2))?;
    let port = rx.local_addr()?.port();

    let probe = Probe {
        uid: "veth".into(),
        ebpf_func_name: "xdp_count".into(),
        if_name: Some(veth.ends[1].clone()),
        netns: Some(Netns::Path(veth.path(1))),
        ..Default::default()
    };
    let id = probe.id();
    let mut m = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_port", port)],
            ..Default::default()
        },
    )?;
    m.start()?;
    let info = m.attach_info(&id).expect("started");
    println!("attached through {} to {}", info.method, info.hook);

    let to = rx.local_addr()?;
    let mut buf = [0u8; 64];
    for i in 0..DATAGRAMS {
        tx.send_to(format!("datagram {i}").as_bytes(), to)?;
        rx.recv_from(&mut buf)?;
    }
    let hits = Array::<_, u64>::try_from(m.get_map("hits").expect("net.bpf.o has hits"))?;
    let counted = hits.get(&0, 0)?;
    println!("sent {DATAGRAMS} datagrams to {to}; xdp_count saw {counted}");
    m.stop(CleanupType::CleanAll)?;
    if counted != DATAGRAMS {
        return Err(
            format!("expected {DATAGRAMS} datagrams, the program counted {counted}").into(),
        );
    }
    println!("xdp: ok");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdp: error: {e}");
            ExitCode::FAILURE
        }
    }
}
