//! A socket filter on a UDP socket of this process (127.0.0.1): the program runs for every
//! datagram the socket receives, counts it, and keeps it. The example sends a few datagrams,
//! prints the count, pauses the probe (the filter is detached: nothing counted), and stops.
//!
//! Run: `cargo run --example socket` (as root).

use std::{
    error::Error,
    net::{Ipv4Addr, UdpSocket},
    process::ExitCode,
    time::Duration,
};

use ebpf_manager::{aya::maps::Array, CleanupType, Manager, Probe, SharedFd};

/// `socket_count` (section `socket`) counts in slot 3 of the array `hits` what its socket
/// receives, and keeps it all.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/net.bpf.o");
const SLOT: u32 = 3;

fn send(tx: &UdpSocket, rx: &UdpSocket, n: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 64];
    for i in 0..n {
        tx.send_to(format!("datagram {i}").as_bytes(), rx.local_addr()?)?;
        rx.recv_from(&mut buf)?;
    }
    Ok(())
}

fn count(m: &Manager) -> Result<u64, Box<dyn Error>> {
    let hits = Array::<_, u64>::try_from(m.get_map("hits").expect("net.bpf.o has hits"))?;
    Ok(hits.get(&SLOT, 0)?)
}

fn run() -> Result<(), Box<dyn Error>> {
    examples::check_privileges();
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))?;
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let probe = Probe {
        uid: "loopback".into(),
        ebpf_func_name: "socket_count".into(),
        // The probe holds a descriptor of its own of this socket.
        socket_fd: Some(SharedFd::dup(&rx)?),
        ..Default::default()
    };
    let id = probe.id();
    let mut m = Manager {
        probes: vec![probe],
        ..Default::default()
    };
    m.init(OBJECT)?;
    m.start()?;
    let info = m.attach_info(&id).expect("started");
    println!(
        "attached through {} to {} ({})",
        info.method,
        info.hook,
        rx.local_addr()?
    );
    send(&tx, &rx, 3)?;
    let running = count(&m)?;
    println!("sent 3 datagrams: socket_count saw {running}");
    m.pause()?;
    send(&tx, &rx, 2)?;
    let paused = count(&m)? - running;
    println!("paused, sent 2 more: socket_count saw {paused} of them");
    m.stop(CleanupType::CleanAll)?;
    if running != 3 || paused != 0 {
        return Err("the counts are not the expected 3 and 0".into());
    }
    println!("socket: ok");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socket: error: {e}");
            ExitCode::FAILURE
        }
    }
}
