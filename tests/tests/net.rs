//! XDP, TC classifiers and socket filters, in network namespaces the tests make themselves.
//!
//! Every test makes its own namespaces (`/var/run/netns/ebpfm<pid>-<tag>`) and sends traffic
//! only inside them (127.0.0.1 in a test namespace, or 10.199.N.0/24 between the two ends of
//! a veth pair), except the socket filter tests, which use 127.0.0.1 sockets of their own.
//!
//! What runs where:
//! - XDP on `lo` of a test namespace: everywhere (generic XDP needs no driver).
//! - TCX (Linux 6.6): the host and the 6.12 guest for real; in older kernels the test checks
//!   the precise error.
//! - netlink clsact + cls_bpf: the host for real. In the guests of tier 3, clsact and cls_bpf
//!   are modules that are not loaded: the test checks that the kernel answers ENOENT (unknown
//!   qdisc kind) through the manager's error.
//! - veth pairs between namespaces: the host for real. The guests have no veth driver (a
//!   module): the test checks that the kernel answers EOPNOTSUPP (unknown link kind) and says
//!   so on its output.
//!
//! After `stop`, each test checks that the kernel no longer holds the programs (a program
//! still attached anywhere would stay loaded), and where netlink was used, that `tc` shows no
//! filter (and no qdisc when the probe asked for its cleanup).

use std::{
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
};

use aya::{programs::TcAttachType, util::KernelVersion};
use ebpf_manager::{
    AttachMethod, CleanupType, ConstantEditor, Error, Manager, Netns, NetworkDirection, Options,
    Probe, ProbeState, SharedFd, TcAttachMethod, XdpAttachMode,
};
use integration_tests::{net::*, *};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A manager over `probes`, initialized from net.bpf.o counting UDP datagrams to `port`.
fn net_manager(probes: Vec<Probe>, port: u16) -> Manager {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init_with_options(
        NET,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_port", port)],
            ..Default::default()
        },
    )
    .expect("init of net.bpf.o");
    m
}

/// The init error of a manager over `probes`.
fn init_error(probes: Vec<Probe>) -> Error {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init(NET).expect_err("init should refuse these probes")
}

fn xdp_probe(uid: &str) -> Probe {
    Probe {
        if_name: Some("lo".into()),
        ..probe(uid, "xdp_count")
    }
}

fn tc_probe(uid: &str, function: &str) -> Probe {
    Probe {
        if_name: Some("lo".into()),
        ..probe(uid, function)
    }
}

/// Two UDP sockets on 127.0.0.1 of `ns`: the sender and the receiver.
fn lo_sockets(ns: &TestNetns) -> (UdpSocket, UdpSocket) {
    (ns.udp_socket(LOCALHOST), ns.udp_socket(LOCALHOST))
}

fn port(rx: &UdpSocket) -> u16 {
    rx.local_addr().expect("bound").port()
}

/// Starts a manager whose TC probes attach through netlink. On a kernel without the clsact
/// qdisc (the guests: sch_ingress is a module they do not load), checks that the manager
/// reports the kernel's precise answer (ENOENT: unknown qdisc kind) and returns false.
fn start_netlink(m: &mut Manager) -> bool {
    match m.start() {
        Ok(()) => true,
        Err(Error::Attach {
            method,
            source,
            hook,
            ..
        }) if method == AttachMethod::TcNetlink
            && os_error(source.as_ref()) == Some(libc::ENOENT) =>
        {
            assert_eq!(
                kernel_config_builtin("CONFIG_NET_SCH_INGRESS"),
                Some(false),
                "adding clsact failed ({source}): the kernel's configuration must say it is \
                 not built in (None: no /proc/config.gz nor /boot/config-<release> to tell)"
            );
            println!(
                "this kernel has no clsact qdisc (attaching to {hook}: {source}): checked \
                 that error, the netlink part of this test cannot run here"
            );
            false
        }
        Err(e) => panic!("start: {e}"),
    }
}

fn tcx_available() -> bool {
    KernelVersion::current().expect("kernel version") >= KernelVersion::new(6, 6, 0)
}

#[test]
fn net_xdp_on_lo_of_a_netns_given_by_path() {
    let ns = TestNetns::new("xdp-path");
    let (tx, rx) = lo_sockets(&ns);
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        ..xdp_probe("xdp-path")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.method, AttachMethod::Xdp);
    assert_eq!(info.hook, format!("lo in netns {}", ns.path().display()));
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::XDP), 3);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Stopped));
    assert_unloaded(&prog_ids);
    // Still delivered, and nothing counts them any more.
    send_and_receive(&tx, &rx, 1);
}

#[test]
fn net_xdp_by_if_index_in_a_netns_given_by_fd() {
    let ns = TestNetns::new("xdp-fd");
    // The declaration takes the file over: the caller's handle may close at once.
    let netns = SharedFd::from(std::os::fd::OwnedFd::from(ns.open()));
    let (tx, rx) = lo_sockets(&ns);
    let p = Probe {
        if_name: None,
        if_index: Some(1), // lo is always the first interface of a namespace
        netns: Some(Netns::Fd(netns.clone())),
        xdp_attach_mode: XdpAttachMode::Skb,
        ..xdp_probe("xdp-fd")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&id).unwrap().hook,
        format!("lo in netns fd {}", netns.as_raw_fd())
    );
    send_and_receive(&tx, &rx, 2);
    assert_eq!(read_slot(&m, "hits", net_slot::XDP), 2);
    // Pause detaches: nothing counted meanwhile; resume attaches again.
    m.pause().unwrap();
    send_and_receive(&tx, &rx, 1);
    assert_eq!(read_slot(&m, "hits", net_slot::XDP), 2);
    m.resume().unwrap();
    send_and_receive(&tx, &rx, 1);
    assert_eq!(read_slot(&m, "hits", net_slot::XDP), 3);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

#[test]
fn net_xdp_in_the_callers_netns_is_detached_from_any_thread() {
    let ns = TestNetns::new("xdp-caller");
    let (tx, rx) = lo_sockets(&ns);
    let p = xdp_probe("xdp-caller");
    let id = p.id();
    let port = port(&rx);
    // No netns: the probe attaches in the namespace of the thread that starts the manager.
    let (mut m, prog_ids) = ns.run(|| {
        let mut m = net_manager(vec![p], port);
        let prog_ids = program_ids(&m, std::slice::from_ref(&id));
        m.start().unwrap();
        (m, prog_ids)
    });
    assert_eq!(m.attach_info(&id).unwrap().hook, "lo");
    send_and_receive(&tx, &rx, 2);
    assert_eq!(read_slot(&m, "hits", net_slot::XDP), 2);
    // Stopped from this thread, which is in another namespace.
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

#[test]
fn net_xdp_driver_mode_needs_a_driver_with_xdp() {
    // lo has no native XDP: the kernel refuses driver mode with EOPNOTSUPP.
    let ns = TestNetns::new("xdp-drv");
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        xdp_attach_mode: XdpAttachMode::Driver,
        ..xdp_probe("xdp-drv")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], 0);
    match m.start().unwrap_err() {
        Error::Attach {
            id: failed,
            hook,
            method,
            source,
        } => {
            assert_eq!(failed, id);
            assert_eq!(hook, format!("lo in netns {}", ns.path().display()));
            assert_eq!(method, AttachMethod::Xdp);
            assert_eq!(
                os_error(source.as_ref()),
                Some(libc::EOPNOTSUPP),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
    m.stop(CleanupType::CleanAll).unwrap();
    // Nor can lo offload XDP to hardware.
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        xdp_attach_mode: XdpAttachMode::Hardware,
        ..xdp_probe("xdp-hw")
    };
    let mut m = net_manager(vec![p], 0);
    match m.start().unwrap_err() {
        Error::Attach { method, source, .. } => {
            assert_eq!(method, AttachMethod::Xdp);
            assert_eq!(
                os_error(source.as_ref()),
                Some(libc::EOPNOTSUPP),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn net_xdp_missing_interface_or_netns_fails_start() {
    let ns = TestNetns::new("xdp-missing");
    // An interface that exists nowhere.
    let missing = if_name("zz");
    let p = Probe {
        if_name: Some(missing.clone()),
        netns: Some(Netns::Path(ns.path().into())),
        ..xdp_probe("no-such-if")
    };
    let mut m = net_manager(vec![p], 0);
    match m.start().unwrap_err() {
        Error::Attach { hook, source, .. } => {
            assert!(hook.starts_with(&missing), "{hook}");
            assert_eq!(os_error(source.as_ref()), Some(libc::ENODEV), "{source}");
        }
        other => panic!("{other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
    // A namespace file that does not exist.
    let gone = ns.path().with_extension("gone");
    let p = Probe {
        netns: Some(Netns::Path(gone.clone())),
        ..xdp_probe("no-such-netns")
    };
    let mut m = net_manager(vec![p], 0);
    match m.start().unwrap_err() {
        Error::Attach { hook, source, .. } => {
            assert!(hook.contains(&gone.display().to_string()), "{hook}");
            assert_eq!(os_error(source.as_ref()), Some(libc::ENOENT), "{source}");
        }
        other => panic!("{other:?}"),
    }
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn net_xdp_on_a_veth_end_in_driver_mode() {
    let Some(pair) = VethPair::new_or_no_veth("xv", 1) else {
        return;
    };
    let tx = pair.ns_a.udp_socket(pair.addr_a);
    let rx = pair.ns_b.udp_socket(pair.addr_b);
    // veth has native XDP: driver mode on the receiving end.
    let p = Probe {
        if_name: Some(pair.b.clone()),
        netns: Some(Netns::Path(pair.ns_b.path().into())),
        xdp_attach_mode: XdpAttachMode::Driver,
        ..probe("xdp-veth", "xdp_count")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::XDP), 3);
    let link = pair.ns_b.ip(&["link", "show", "dev", &pair.b]);
    assert!(
        link.contains(" xdp "),
        "no XDP program on {}: {link}",
        pair.b
    );
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    let link = pair.ns_b.ip(&["link", "show", "dev", &pair.b]);
    assert!(!link.contains("xdp"), "XDP left on {}: {link}", pair.b);
}

#[test]
fn net_tc_tcx_on_lo_or_the_precise_error_before_linux_6_6() {
    let ns = TestNetns::new("tcx");
    let (tx, rx) = lo_sockets(&ns);
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        tc_attach_method: TcAttachMethod::Tcx,
        ..tc_probe("tcx", "tc_ingress")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    if !tcx_available() {
        match m.start().unwrap_err() {
            Error::Attach { method, source, .. } => {
                assert_eq!(method, AttachMethod::Tcx);
                let text = source.to_string();
                assert!(
                    text.contains("TCX links need Linux 6.6")
                        && text.contains("TcAttachMethod::Netlink"),
                    "{text}"
                );
                println!("TCX is refused on this kernel, as expected: {text}");
            }
            other => panic!("{other:?}"),
        }
        m.stop(CleanupType::CleanAll).unwrap();
        assert_unloaded(&prog_ids);
        return;
    }
    m.start().unwrap();
    assert_eq!(m.attach_info(&id).unwrap().method, AttachMethod::Tcx);
    assert_eq!(
        ns.tcx_programs("lo", TcAttachType::Ingress),
        prog_ids,
        "the TCX program of lo"
    );
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_INGRESS), 3);
    m.stop(CleanupType::CleanAll).unwrap();
    // The kernel may release a closed link a moment later (deferred bpf_link_put).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ns.tcx_programs("lo", TcAttachType::Ingress).is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ns.tcx_programs("lo", TcAttachType::Ingress).is_empty());
    assert_unloaded(&prog_ids);
}

#[test]
fn net_tc_default_method_is_tcx_from_linux_6_6_else_netlink() {
    let ns = TestNetns::new("tc-default");
    let (tx, rx) = lo_sockets(&ns);
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        network_direction: NetworkDirection::Egress,
        ..tc_probe("tc-default", "tc_egress")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    let expected = if tcx_available() {
        m.start().unwrap();
        AttachMethod::Tcx
    } else {
        if !start_netlink(&mut m) {
            m.stop(CleanupType::CleanAll).unwrap();
            return;
        }
        AttachMethod::TcNetlink
    };
    assert_eq!(m.attach_info(&id).unwrap().method, expected);
    send_and_receive(&tx, &rx, 2);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_EGRESS), 2);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

#[test]
fn net_tc_netlink_with_priority_and_handle() {
    let ns = TestNetns::new("tc-prio");
    let (tx, rx) = lo_sockets(&ns);
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        tc_attach_method: TcAttachMethod::Netlink,
        tc_filter_prio: 42,
        tc_filter_handle: 7,
        ..tc_probe("tc-prio", "tc_ingress")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    if !start_netlink(&mut m) {
        m.stop(CleanupType::CleanAll).unwrap();
        assert_unloaded(&prog_ids);
        return;
    }
    assert_eq!(m.attach_info(&id).unwrap().method, AttachMethod::TcNetlink);
    let filters = ns.tc(&["filter", "show", "dev", "lo", "ingress"]);
    assert!(
        filters.contains("pref 42 bpf")
            && filters.contains("handle 0x7 tc_ingress")
            && filters.contains(&format!("id {}", prog_ids[0])),
        "{filters}"
    );
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_INGRESS), 3);
    // Pause deletes the filter; resume adds it again, with the same priority and handle.
    m.pause().unwrap();
    assert_eq!(ns.tc(&["filter", "show", "dev", "lo", "ingress"]), "");
    send_and_receive(&tx, &rx, 1);
    m.resume().unwrap();
    let filters = ns.tc(&["filter", "show", "dev", "lo", "ingress"]);
    assert!(
        filters.contains("handle 0x7 tc_ingress") && filters.contains("pref 42 bpf"),
        "{filters}"
    );
    send_and_receive(&tx, &rx, 1);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_INGRESS), 4);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    assert_eq!(ns.tc(&["filter", "show", "dev", "lo", "ingress"]), "");
    // tc_cleanup_qdisc is off: the clsact qdisc the probe added stays.
    let qdiscs = ns.tc(&["qdisc", "show", "dev", "lo"]);
    assert!(qdiscs.contains("clsact"), "{qdiscs}");
}

/// The Go `TCFilterProtocol`: a filter runs only for its link-layer protocol. The manager
/// adds these filters itself (aya's are always ETH_P_ALL), and the kernel picks their prio.
#[test]
fn net_tc_filter_protocol_sees_only_its_protocol() {
    let ns = TestNetns::new("tc-proto");
    let (tx, rx) = lo_sockets(&ns);
    let netns = Some(Netns::Path(ns.path().into()));
    let ipv6 = Probe {
        netns: netns.clone(),
        tc_filter_protocol: libc::ETH_P_IPV6 as u16,
        tc_cleanup_qdisc: true,
        ..tc_probe("tc-ipv6", "tc_ingress")
    };
    let ipv4 = Probe {
        netns,
        network_direction: NetworkDirection::Egress,
        tc_filter_protocol: libc::ETH_P_IP as u16,
        tc_cleanup_qdisc: true,
        ..tc_probe("tc-ipv4", "tc_egress")
    };
    let ids = [ipv6.id(), ipv4.id()];
    let mut m = net_manager(vec![ipv6, ipv4], port(&rx));
    let prog_ids = program_ids(&m, &ids);
    if !start_netlink(&mut m) {
        m.stop(CleanupType::CleanAll).unwrap();
        assert_unloaded(&prog_ids);
        return;
    }
    for id in &ids {
        // A protocol makes the Default method netlink, even where TCX exists.
        assert_eq!(m.attach_info(id).unwrap().method, AttachMethod::TcNetlink);
    }
    let ingress = ns.tc(&["filter", "show", "dev", "lo", "ingress"]);
    assert!(
        ingress.contains("protocol ipv6") && ingress.contains("tc_ingress direct-action"),
        "{ingress}"
    );
    let egress = ns.tc(&["filter", "show", "dev", "lo", "egress"]);
    assert!(
        egress.contains("protocol ip ") && egress.contains("tc_egress direct-action"),
        "{egress}"
    );
    // IPv4 datagrams: the IPv4 filter runs for each, the IPv6 one never.
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_EGRESS), 3);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_INGRESS), 0);
    // Pause deletes the manager's filters (by the prio the kernel gave them); resume adds
    // them again.
    m.pause().unwrap();
    assert_eq!(ns.tc(&["filter", "show", "dev", "lo", "egress"]), "");
    m.resume().unwrap();
    send_and_receive(&tx, &rx, 1);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_EGRESS), 4);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    assert_eq!(ns.tc(&["filter", "show", "dev", "lo", "ingress"]), "");
    assert_eq!(ns.tc(&["filter", "show", "dev", "lo", "egress"]), "");
    let qdiscs = ns.tc(&["qdisc", "show", "dev", "lo"]);
    assert!(
        !qdiscs.contains("clsact"),
        "the clsact it added is gone: {qdiscs}"
    );
}

/// Drops CAP_SYS_ADMIN from the calling thread's effective set (it stays permitted): `setns`
/// fails from then on, on this thread only.
fn drop_sys_admin_on_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_ADMIN: u32 = 21;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset of the calling thread with version-3 buffers of two entries.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_SYS_ADMIN);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

/// A link whose namespace cannot be entered at stop (the process lost CAP_SYS_ADMIN) is left
/// attached in its namespace, never detached through netlink in the caller's: there, the
/// interface of the same index (lo is 1 everywhere) has a filter of the same priority and
/// handle, another tool's, which must survive (issue 13).
#[test]
fn net_tc_detach_never_runs_in_the_wrong_namespace() {
    let a = TestNetns::new("detach-a");
    let b = TestNetns::new("detach-b");
    let on = |ns: &TestNetns, uid: &str| Probe {
        netns: Some(Netns::Path(ns.path().into())),
        tc_attach_method: TcAttachMethod::Netlink,
        tc_filter_prio: 42,
        tc_filter_handle: 7,
        ..tc_probe(uid, "tc_ingress")
    };
    // The other tool: a filter in b with the same keys.
    let mut other = net_manager(vec![on(&b, "other-tool")], 0);
    if !start_netlink(&mut other) {
        other.stop(CleanupType::CleanAll).unwrap();
        return;
    }
    let mut m = net_manager(vec![on(&a, "ours")], 0);
    m.start().unwrap();
    let stopped = b.run(|| {
        drop_sys_admin_on_this_thread();
        m.stop(CleanupType::CleanAll)
    });
    stopped.unwrap();
    let in_b = b.tc(&["filter", "show", "dev", "lo", "ingress"]);
    assert!(
        in_b.contains("pref 42 bpf") && in_b.contains("handle 0x7"),
        "the other tool's filter in b was deleted: {in_b:?}"
    );
    // Ours stays in a until a goes (when the test drops it).
    let in_a = a.tc(&["filter", "show", "dev", "lo", "ingress"]);
    assert!(in_a.contains("handle 0x7"), "{in_a:?}");
    other.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(b.tc(&["filter", "show", "dev", "lo", "ingress"]), "");
}

#[test]
fn net_tc_cleanup_qdisc_removes_the_clsact_it_added() {
    let ns = TestNetns::new("tc-cleanup");
    let (tx, rx) = lo_sockets(&ns);
    let p = Probe {
        netns: Some(Netns::Path(ns.path().into())),
        network_direction: NetworkDirection::Egress,
        tc_attach_method: TcAttachMethod::Netlink,
        tc_cleanup_qdisc: true,
        ..tc_probe("tc-cleanup", "tc_egress")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], port(&rx));
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    if !start_netlink(&mut m) {
        m.stop(CleanupType::CleanAll).unwrap();
        return;
    }
    assert!(ns.tc(&["qdisc", "show", "dev", "lo"]).contains("clsact"));
    send_and_receive(&tx, &rx, 1);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_EGRESS), 1);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    let qdiscs = ns.tc(&["qdisc", "show", "dev", "lo"]);
    assert!(!qdiscs.contains("clsact"), "{qdiscs}");
}

#[test]
fn net_tc_cleanup_qdisc_keeps_a_clsact_in_use_or_not_its_own() {
    let ns = TestNetns::new("tc-keep");
    let probe_with_prio = |uid: &str, prio| Probe {
        netns: Some(Netns::Path(ns.path().into())),
        tc_attach_method: TcAttachMethod::Netlink,
        tc_filter_prio: prio,
        tc_cleanup_qdisc: true,
        ..tc_probe(uid, "tc_ingress")
    };
    // The first manager adds the qdisc; the second finds it there.
    let mut first = net_manager(vec![probe_with_prio("first", 1)], 0);
    let mut second = net_manager(vec![probe_with_prio("second", 2)], 0);
    if !start_netlink(&mut first) {
        first.stop(CleanupType::CleanAll).unwrap();
        second.stop(CleanupType::CleanAll).unwrap();
        return;
    }
    second.start().unwrap();
    let show = || ns.tc(&["filter", "show", "dev", "lo", "ingress"]);
    assert!(
        show().contains("pref 1 ") && show().contains("pref 2 "),
        "{}",
        show()
    );
    // The second filter still uses the qdisc: it stays.
    first.stop(CleanupType::CleanAll).unwrap();
    let filters = show();
    assert!(
        !filters.contains("pref 1 ") && filters.contains("pref 2 "),
        "{filters}"
    );
    assert!(ns.tc(&["qdisc", "show", "dev", "lo"]).contains("clsact"));
    // The second probe did not add the qdisc: it leaves it, even with no filter left.
    second.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(show(), "");
    assert!(ns.tc(&["qdisc", "show", "dev", "lo"]).contains("clsact"));
}

#[test]
fn net_tc_netlink_in_the_callers_netns_is_detached_from_any_thread() {
    let ns = TestNetns::new("tc-caller");
    let p = Probe {
        tc_attach_method: TcAttachMethod::Netlink,
        tc_filter_prio: 3,
        tc_cleanup_qdisc: true,
        ..tc_probe("tc-caller", "tc_ingress")
    };
    let id = p.id();
    // No netns: the filter goes to lo of the namespace of the thread that starts.
    let started = ns.run(|| {
        let mut m = net_manager(vec![p], 0);
        let started = start_netlink(&mut m);
        (m, started)
    });
    let (mut m, started) = started;
    if !started {
        m.stop(CleanupType::CleanAll).unwrap();
        return;
    }
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    assert_eq!(m.attach_info(&id).unwrap().hook, "lo");
    assert!(ns
        .tc(&["filter", "show", "dev", "lo", "ingress"])
        .contains("pref 3 "));
    // Stopped from this thread, in another namespace: the filter and the qdisc of the
    // namespace it was attached in go.
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    assert_eq!(ns.tc(&["filter", "show", "dev", "lo", "ingress"]), "");
    assert!(!ns.tc(&["qdisc", "show", "dev", "lo"]).contains("clsact"));
}

#[test]
fn net_tc_on_both_ends_of_a_veth_pair() {
    let Some(pair) = VethPair::new_or_no_veth("tv", 2) else {
        return;
    };
    let tx = pair.ns_a.udp_socket(pair.addr_a);
    let rx = pair.ns_b.udp_socket(pair.addr_b);
    let ns_a = pair.ns_a.open();
    let egress = Probe {
        if_name: Some(pair.a.clone()),
        netns: Some(Netns::Fd(SharedFd::dup(&ns_a).unwrap())),
        network_direction: NetworkDirection::Egress,
        ..probe("veth-egress", "tc_egress")
    };
    let ingress = Probe {
        if_name: Some(pair.b.clone()),
        netns: Some(Netns::Path(pair.ns_b.path().into())),
        tc_attach_method: TcAttachMethod::Netlink,
        tc_cleanup_qdisc: true,
        ..probe("veth-ingress", "tc_ingress")
    };
    let ids = [egress.id(), ingress.id()];
    let mut m = net_manager(vec![egress, ingress], port(&rx));
    let prog_ids = program_ids(&m, &ids);
    m.start().unwrap();
    assert_eq!(
        m.attach_info(&ids[1]).unwrap().method,
        AttachMethod::TcNetlink
    );
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_EGRESS), 3);
    assert_eq!(read_slot(&m, "hits", net_slot::TC_INGRESS), 3);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    assert_eq!(
        pair.ns_b.tc(&["filter", "show", "dev", &pair.b, "ingress"]),
        ""
    );
    assert!(!pair
        .ns_b
        .tc(&["qdisc", "show", "dev", &pair.b])
        .contains("clsact"));
    assert_eq!(
        pair.ns_a.tc(&["filter", "show", "dev", &pair.a, "egress"]),
        ""
    );
}

#[test]
fn net_socket_filter_counts_what_its_socket_receives() {
    let rx = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let tx = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let socket = SharedFd::dup(&rx).unwrap();
    let p = Probe {
        socket_fd: Some(socket.clone()),
        ..probe("socket", "socket_count")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], 0);
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.method, AttachMethod::SocketOption);
    assert_eq!(info.hook, format!("socket fd {}", socket.as_raw_fd()));
    send_and_receive(&tx, &rx, 3);
    assert_eq!(read_slot(&m, "hits", net_slot::SOCKET), 3);
    m.pause().unwrap();
    send_and_receive(&tx, &rx, 2);
    assert_eq!(read_slot(&m, "hits", net_slot::SOCKET), 3);
    m.resume().unwrap();
    send_and_receive(&tx, &rx, 1);
    assert_eq!(read_slot(&m, "hits", net_slot::SOCKET), 4);
    m.stop(CleanupType::CleanAll).unwrap();
    // The socket held the program while attached: unloaded means detached.
    assert_unloaded(&prog_ids);
    send_and_receive(&tx, &rx, 1);
}

/// The socket of a socket filter is held by the declaration: when the caller closes theirs and
/// another socket takes the number, the filter still runs on the first socket, and `stop`
/// detaches it from that one, never from the newcomer (issue 13: a raw fd number did).
#[test]
fn net_socket_filter_keeps_its_socket_and_detaches_from_it_only() {
    let rx = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let tx = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let p = Probe {
        socket_fd: Some(SharedFd::dup(&rx).unwrap()),
        ..probe("socket-owned", "socket_count")
    };
    let id = p.id();
    let mut m = net_manager(vec![p], 0);
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    let number = rx.as_raw_fd();
    drop(rx);
    // The lowest free number: the one just closed, unless another thread took it first.
    let other = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    println!(
        "the caller's socket was fd {number}; the new socket is fd {}",
        other.as_raw_fd()
    );
    drop_all_with_a_classic_filter(&other);
    // The first socket lives on through the declaration: the program counts what it gets.
    tx.send_to(b"to the first socket", rx_addr).unwrap();
    let counted = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        read_slot(&m, "hits", net_slot::SOCKET) == 1
    });
    assert!(counted, "the filter stopped with the caller's descriptor");
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
    // The newcomer's own filter is still there: it drops what is sent to it.
    other
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    tx.send_to(b"to the new socket", other.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 64];
    let got = other.recv_from(&mut buf);
    assert!(
        got.is_err(),
        "stop detached the new socket's filter: it received {got:?}"
    );
}

/// Attaches a classic BPF filter that drops every packet (`ret #0`) to `socket`.
fn drop_all_with_a_classic_filter(socket: &UdpSocket) {
    let mut code = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: a valid sock_fprog of one instruction, copied by the kernel.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "SO_ATTACH_FILTER: {}",
        std::io::Error::last_os_error()
    );
}

/// Without an interface or a socket, a probe is a template (Go users clone it or add hooks to
/// it per interface): it loads at init, and only attaching it fails, at start.
#[test]
fn net_required_fields_are_checked_when_attaching() {
    let cases = [
        (probe("xdp", "xdp_count"), "XDP probes need an interface"),
        (probe("tc", "tc_ingress"), "TC probes need an interface"),
        (
            probe("socket", "socket_count"),
            "a socket filter needs socket_fd",
        ),
    ];
    for (p, reason) in cases {
        let id = p.id();
        setup();
        let mut m = Manager {
            probes: vec![p],
            ..Default::default()
        };
        m.init(NET).unwrap();
        assert_eq!(m.probe_state(&id), Some(ProbeState::Loaded));
        assert!(m.program_id(&id).is_some());
        match m.start().unwrap_err() {
            Error::InvalidProbe {
                id: failed,
                reason: r,
            } => {
                assert_eq!(failed, id);
                assert!(r.starts_with(reason), "{r}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.state(), ebpf_manager::ManagerState::Initialized);
    }
}

#[test]
fn net_fields_that_do_not_apply_are_refused_at_init() {
    let lo = |p: Probe| Probe {
        if_name: Some("lo".into()),
        ..p
    };
    let cases = [
        (
            Probe {
                network_direction: NetworkDirection::Egress,
                ..lo(probe("xdp", "xdp_count"))
            },
            "network_direction does not apply to `xdp_count`, a XDP program",
        ),
        (
            Probe {
                tc_filter_prio: 1,
                ..lo(probe("xdp", "xdp_count"))
            },
            "tc_filter_prio does not apply",
        ),
        (
            Probe {
                cgroup_path: Some("/sys/fs/cgroup".into()),
                ..lo(probe("xdp", "xdp_count"))
            },
            "cgroup_path does not apply",
        ),
        (
            Probe {
                xdp_attach_mode: XdpAttachMode::Skb,
                ..lo(probe("tc", "tc_ingress"))
            },
            "xdp_attach_mode does not apply to `tc_ingress`, a TC classifier program",
        ),
        (
            Probe {
                socket_fd: Some(SharedFd::dup(std::io::stdin()).unwrap()),
                ..lo(probe("tc", "tc_ingress"))
            },
            "socket_fd does not apply",
        ),
        (
            Probe {
                socket_fd: Some(SharedFd::dup(std::io::stdin()).unwrap()),
                ..lo(probe("socket", "socket_count"))
            },
            "if_name does not apply to `socket_count`, a socket filter program",
        ),
        (
            Probe {
                tc_attach_method: TcAttachMethod::Tcx,
                tc_filter_handle: 1,
                ..lo(probe("tcx", "tc_ingress"))
            },
            "tc_filter_prio and tc_filter_handle apply to netlink filters, not TCX links",
        ),
        (
            Probe {
                tc_attach_method: TcAttachMethod::Tcx,
                tc_cleanup_qdisc: true,
                ..lo(probe("tcx", "tc_ingress"))
            },
            "tc_cleanup_qdisc applies to netlink filters",
        ),
        (
            Probe {
                tc_attach_method: TcAttachMethod::Tcx,
                tc_filter_protocol: libc::ETH_P_ARP as u16,
                ..lo(probe("tcx", "tc_ingress"))
            },
            "tc_filter_protocol applies to netlink filters; TCX links see every protocol",
        ),
    ];
    for (p, reason) in cases {
        match init_error(vec![p]) {
            Error::InvalidProbe { reason: r, .. } => assert!(r.starts_with(reason), "{r}"),
            other => panic!("{other:?}"),
        }
    }
}
