//! XDP in another network namespace: the example makes two namespaces joined by a veth pair
//! (`ip netns add`, `ip link add ... type veth peer ...`), attaches an XDP program to the
//! receiving end through `Probe::netns`, sends UDP datagrams from the other end, and prints how
//! many the program counted. Everything it made is deleted at the end, even on failure.
//!
//! Run: `cargo run --example xdp` (as root; needs iproute2 and the veth driver).

use std::{error::Error, net::Ipv4Addr, process::ExitCode};

use ebpf_manager::{aya::maps::Array, CleanupType, ConstantEditor, Manager, Netns, Options, Probe};

/// `xdp_count` (section `xdp`) counts in slot 0 of the array `hits` the UDP datagrams sent to
/// the constant `filter_port`, and lets every packet through.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/net.bpf.o");
const DATAGRAMS: u64 = 5;

fn run() -> Result<(), Box<dyn Error>> {
    examples::check_privileges();
    let veth = examples::veth::Veth::new("xdp", 1)?;
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
