//! TC classifiers on both ends of a veth pair between two network namespaces the example makes
//! (`ip netns add`, `ip link add ... type veth peer ...`): `tc_egress` on the sending end with
//! the default method (a TCX link from Linux 6.6, else netlink), and `tc_ingress` on the
//! receiving end through netlink (a clsact qdisc and a cls_bpf filter) with an explicit
//! priority and handle, removing the qdisc it added at stop (`tc_cleanup_qdisc`). It shows the
//! filter with `tc filter show`, sends UDP datagrams, and prints what each program counted.
//! Everything it made is deleted at the end, even on failure.
//!
//! Run: `cargo run --example tc` (as root; needs iproute2, the veth driver and clsact).

use std::{
    error::Error,
    net::Ipv4Addr,
    process::{Command, ExitCode},
};

use ebpf_manager::{
    aya::maps::Array, CleanupType, ConstantEditor, Manager, Netns, NetworkDirection, Options,
    Probe, TcAttachMethod,
};

/// `tc_ingress` and `tc_egress` (section `classifier`) count in slots 1 and 2 of the array
/// `hits` the UDP datagrams sent to the constant `filter_port`, and let every packet through.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/net.bpf.o");
const DATAGRAMS: u64 = 5;

fn tc(ns: &str, args: &[&str]) -> Result<String, Box<dyn Error>> {
    let out = Command::new("tc").args(["-n", ns]).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run() -> Result<(), Box<dyn Error>> {
    examples::check_privileges();
    let veth = examples::veth::Veth::new("tc", 2)?;
    println!(
        "made {} <-> {} between namespaces {} and {}",
        veth.ends[0], veth.ends[1], veth.ns[0], veth.ns[1]
    );
    let tx = veth.socket(0, Ipv4Addr::new(10, 200, 2, 1))?;
    let rx = veth.socket(1, Ipv4Addr::new(10, 200, 2, 2))?;
    let port = rx.local_addr()?.port();

    let egress = Probe {
        uid: "sender".into(),
        ebpf_func_name: "tc_egress".into(),
        if_name: Some(veth.ends[0].clone()),
        netns: Some(Netns::Path(veth.path(0))),
        network_direction: NetworkDirection::Egress,
        ..Default::default()
    };
    let ingress = Probe {
        uid: "receiver".into(),
        ebpf_func_name: "tc_ingress".into(),
        if_name: Some(veth.ends[1].clone()),
        netns: Some(Netns::Path(veth.path(1))),
        network_direction: NetworkDirection::Ingress,
        tc_attach_method: TcAttachMethod::Netlink,
        tc_filter_prio: 10,
        tc_filter_handle: 1,
        tc_cleanup_qdisc: true,
        ..Default::default()
    };
    let ids = [egress.id(), ingress.id()];
    let mut m = Manager {
        probes: vec![egress, ingress],
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
    for id in &ids {
        let info = m.attach_info(id).expect("started");
        println!(
            "{} attached through {} to {}",
            id.ebpf_func_name, info.method, info.hook
        );
    }
    let (nb, b) = (&veth.ns[1], &veth.ends[1]);
    print!(
        "tc filter show dev {b} ingress:\n{}",
        tc(nb, &["filter", "show", "dev", b, "ingress"])?
    );

    let to = rx.local_addr()?;
    let mut buf = [0u8; 64];
    for i in 0..DATAGRAMS {
        tx.send_to(format!("datagram {i}").as_bytes(), to)?;
        rx.recv_from(&mut buf)?;
    }
    let hits = Array::<_, u64>::try_from(m.get_map("hits").expect("net.bpf.o has hits"))?;
    let (ingress, egress) = (hits.get(&1, 0)?, hits.get(&2, 0)?);
    println!(
        "sent {DATAGRAMS} datagrams to {to}; tc_egress saw {egress}, tc_ingress saw {ingress}"
    );
    m.stop(CleanupType::CleanAll)?;
    let qdiscs = tc(nb, &["qdisc", "show", "dev", b])?;
    println!("after stop, tc qdisc show dev {b}: {}", qdiscs.trim());
    if ingress != DATAGRAMS || egress != DATAGRAMS {
        return Err(format!("expected {DATAGRAMS} datagrams each way").into());
    }
    if qdiscs.contains("clsact") {
        return Err("the clsact qdisc the probe added is still there".into());
    }
    println!("tc: ok");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tc: error: {e}");
            ExitCode::FAILURE
        }
    }
}
