//! Helpers shared by the examples.

use std::time::Duration;

use ebpf_manager::TracePipe;

/// Says which privileges are missing, when they are.
pub fn check_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "note: not running as root: loading eBPF programs needs root, or CAP_BPF, \
             CAP_PERFMON and CAP_SYS_ADMIN (try: sudo -E cargo run --example helloworld)"
        );
    }
}

/// Makes and removes a directory from this thread, then prints the trace_pipe lines of this
/// thread that contain `message`. Returns whether one arrived within `timeout`.
pub fn mkdir_and_show_trace_pipe(message: &str, timeout: Duration) -> ebpf_manager::Result<bool> {
    let mut pipe = TracePipe::open()?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let dir = std::env::temp_dir().join(format!("ebpf-manager-helloworld-{}", std::process::id()));
    let io = |source, path: &std::path::Path| ebpf_manager::Error::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir(&dir).map_err(|e| io(e, &dir))?;
    std::fs::remove_dir(&dir).map_err(|e| io(e, &dir))?;
    println!("made and removed {}", dir.display());
    // trace_pipe lines start with `<comm>-<tid>`: keep this thread's only.
    let tag = format!("-{tid} ");
    let lines = pipe
        .read_until(timeout, |line| {
            line.contains(message) && line.contains(&tag)
        })
        .map_err(|e| io(e, std::path::Path::new("trace_pipe")))?;
    for line in &lines {
        println!("{line}");
    }
    Ok(!lines.is_empty())
}

/// Makes and removes `n` directories named after `tag` and this process (mkdir(2), rmdir(2)).
pub fn make_directories(tag: &str, n: u64) -> ebpf_manager::Result<()> {
    for i in 0..n {
        let dir =
            std::env::temp_dir().join(format!("ebpf-manager-{tag}-{}-{i}", std::process::id()));
        let io = |source| ebpf_manager::Error::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir(&dir).map_err(io)?;
        std::fs::remove_dir(&dir).map_err(io)?;
    }
    Ok(())
}

/// The error of an example whose expected events did not show.
pub fn not_seen() -> ebpf_manager::Error {
    ebpf_manager::Error::Io {
        path: "trace_pipe".into(),
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the expected events did not arrive",
        ),
    }
}

/// Prints the error, if any, and turns the result into an exit code.
pub fn exit(result: ebpf_manager::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.report());
            std::process::ExitCode::FAILURE
        }
    }
}

/// Network namespaces and veth pairs for the XDP and TC examples (iproute2 needed).
pub mod veth {
    use std::{
        error::Error,
        fs::File,
        net::{Ipv4Addr, SocketAddrV4, UdpSocket},
        os::fd::AsRawFd,
        path::PathBuf,
        process::Command,
        time::Duration,
    };

    /// Runs `ip ARGS`; its stderr becomes the error.
    pub fn ip(args: &[&str]) -> Result<(), Box<dyn Error>> {
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
    pub struct Veth {
        /// The namespaces' names (under /var/run/netns).
        pub ns: [String; 2],
        /// The pair's ends: `ends[i]` lives in `ns[i]`.
        pub ends: [String; 2],
        /// The addresses of the ends.
        pub addrs: [std::net::Ipv4Addr; 2],
    }

    impl Veth {
        /// Namespaces `ebpfm<pid>-<tag>-a`/`-b` joined by the pair `ebpfm<pid><t>a`/`b` (`t`: the
        /// tag's first letter), addressed `10.200.<subnet>.1` and `.2`.
        pub fn new(tag: &str, subnet: u8) -> Result<Self, Box<dyn Error>> {
            let pid = std::process::id();
            let t = &tag[..1];
            let veth = Veth {
                ns: [format!("ebpfm{pid}-{tag}-a"), format!("ebpfm{pid}-{tag}-b")],
                ends: [format!("ebpfm{pid}{t}a"), format!("ebpfm{pid}{t}b")],
                addrs: [
                    std::net::Ipv4Addr::new(10, 200, subnet, 1),
                    std::net::Ipv4Addr::new(10, 200, subnet, 2),
                ],
            };
            let (a_addr, b_addr) = (
                format!("{}/24", veth.addrs[0]),
                format!("{}/24", veth.addrs[1]),
            );
            let [na, nb] = &veth.ns;
            let [a, b] = &veth.ends;
            ip(&["netns", "add", na])?;
            ip(&["netns", "add", nb])?;
            ip(&[
                "-n", na, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nb,
            ])?;
            ip(&["-n", na, "addr", "add", &a_addr, "dev", a])?;
            ip(&["-n", nb, "addr", "add", &b_addr, "dev", b])?;
            ip(&["-n", na, "link", "set", a, "up"])?;
            ip(&["-n", nb, "link", "set", b, "up"])?;
            Ok(veth)
        }

        /// The namespace file of `ns[i]`.
        pub fn path(&self, i: usize) -> PathBuf {
            PathBuf::from(format!("/var/run/netns/{}", self.ns[i]))
        }

        /// A UDP socket bound to `addr` in namespace `i`: made by a thread that entered it.
        pub fn socket(&self, i: usize, addr: Ipv4Addr) -> Result<UdpSocket, Box<dyn Error>> {
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
}

/// Slot `slot` of the `u64` array `map` of the manager's object; an error says which map.
pub fn read_u64(m: &ebpf_manager::Manager, map: &str, slot: u32) -> ebpf_manager::Result<u64> {
    let io = |source| ebpf_manager::Error::Io {
        path: format!("map {map}").into(),
        source,
    };
    let found = m.get_map(map).ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not in the object",
        ))
    })?;
    let array = ebpf_manager::aya::maps::Array::<_, u64>::try_from(found)
        .map_err(|e| io(std::io::Error::other(e)))?;
    array
        .get(&slot, 0)
        .map_err(|e| io(std::io::Error::other(e)))
}
