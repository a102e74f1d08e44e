//! Cgroup programs on a child cgroup of the cgroup v2 hierarchy that the example makes: a
//! `cgroup/sock_create` program and the two `cgroup_skb` directions. The example runs itself
//! again as a child process placed in that cgroup, which opens a UDP socket on 127.0.0.1 and
//! sends datagrams to itself; the programs count only what that cgroup does. The cgroup is
//! removed at the end, even on failure.
//!
//! Run: `cargo run --example cgroup` (as root, with cgroup v2 mounted: /sys/fs/cgroup, or
//! /sys/fs/cgroup/unified in the hybrid layout).

use std::{
    error::Error,
    fs,
    io::Write,
    net::{Ipv4Addr, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use ebpf_manager::{aya::maps::Array, CleanupType, Manager, Probe};

/// cgroup.bpf.o: `skb_ingress` (slot 0), `skb_egress` (1), `sock_create` (2), and others,
/// each counting its runs in the array `hits` and allowing the operation.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/cgroup.bpf.o");
const DATAGRAMS: u64 = 3;
const CHILD: &str = "--child-in-cgroup";

/// The mount point of the cgroup v2 hierarchy.
fn cgroup2_root() -> Result<PathBuf, Box<dyn Error>> {
    fs::read_to_string("/proc/mounts")?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .ok_or_else(|| "no cgroup2 file system is mounted".into())
}

/// A cgroup of its own; dropping it removes it.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A child that just exited may take a moment to leave the cgroup (EBUSY).
        for _ in 0..50 {
            match fs::remove_dir(&self.0) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                // Never made (the example failed before): nothing to remove.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => return eprintln!("removing {}: {e}", self.0.display()),
                Ok(()) => return,
            }
        }
        eprintln!("removing {}: still busy", self.0.display());
    }
}

/// What the child does inside the cgroup: one socket, datagrams to itself.
fn child() -> std::io::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 16];
    for _ in 0..DATAGRAMS {
        socket.send_to(b"hello", socket.local_addr()?)?;
        socket.recv_from(&mut buf)?;
    }
    Ok(())
}

/// Runs this program again with CHILD, moved into `cgroup` before it starts.
fn run_child_in(cgroup: &Path) -> Result<(), Box<dyn Error>> {
    let mut procs = fs::File::options()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(CHILD);
    // SAFETY: between fork and exec the child only writes "0" (itself) to cgroup.procs.
    unsafe {
        cmd.pre_exec(move || procs.write_all(b"0"));
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("the child failed: {status}").into());
    }
    Ok(())
}

fn run() -> Result<(), Box<dyn Error>> {
    examples::check_privileges();
    let root = cgroup2_root()?;
    let cgroup = Cgroup(root.join(format!("ebpfm{}-example", std::process::id())));
    fs::create_dir(&cgroup.0).map_err(|e| {
        // A container's cgroup hierarchy is read-only, or root's (mode 0555) without
        // CAP_DAC_OVERRIDE: say which, rather than a bare errno.
        let what = match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "{} is not writable by this process: a child cgroup needs CAP_DAC_OVERRIDE there, \
                 or a cgroup delegated to this process (cgroup namespace)",
                root.display()
            ),
            std::io::ErrorKind::ReadOnlyFilesystem => format!(
                "{} is mounted read-only: mount cgroup2 read-write, or delegate a cgroup",
                root.display()
            ),
            _ => root.display().to_string(),
        };
        format!(
            "making the example's cgroup {}: {e}: {what}",
            cgroup.0.display()
        )
    })?;
    println!("made cgroup {}", cgroup.0.display());
    let probe = |function: &str| Probe {
        uid: "example".into(),
        ebpf_func_name: function.into(),
        cgroup_path: Some(cgroup.0.clone()),
        ..Default::default()
    };
    let mut m = Manager {
        probes: vec![
            probe("sock_create"),
            probe("skb_egress"),
            probe("skb_ingress"),
        ],
        ..Default::default()
    };
    m.init(OBJECT)?;
    m.start()?;
    for p in &m.probes {
        let info = m.attach_info(&p.id()).expect("started");
        println!(
            "{} attached through {} to {}",
            p.ebpf_func_name, info.method, info.hook
        );
    }
    // This process is not in the cgroup: its own socket is not counted.
    drop(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?);
    run_child_in(&cgroup.0)?;
    let hits = Array::<_, u64>::try_from(m.get_map("hits").expect("cgroup.bpf.o has hits"))?;
    let [ingress, egress, created] = [hits.get(&0, 0)?, hits.get(&1, 0)?, hits.get(&2, 0)?];
    println!("the child made {created} socket(s) and sent {egress} packet(s), received {ingress}");
    m.stop(CleanupType::CleanAll)?;
    if (created, egress, ingress) != (1, DATAGRAMS, DATAGRAMS) {
        return Err(format!("expected 1 socket and {DATAGRAMS} packets each way").into());
    }
    println!("cgroup: ok");
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(CHILD) {
        return match child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cgroup child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgroup: error: {e}");
            ExitCode::FAILURE
        }
    }
}
