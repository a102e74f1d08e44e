//! The cgroup family on a child cgroup of the cgroup v2 hierarchy: cgroup_skb, sock,
//! sock_addr, sockopt, sysctl, device and sock_ops. They run for real on every kernel of the
//! project (cgroup v2 is at /sys/fs/cgroup/unified on the host, /sys/fs/cgroup in the guests).
//!
//! Each test makes its own cgroup `ebpfm<pid>-<tag>`, attaches one program to it, and forks a
//! child that joins the cgroup and makes the operation the program hooks; only that child is in
//! the cgroup, so the count in `hits` is the child's. After `stop`, the programs are no longer
//! loaded (an attached program would be), and the cgroup is removed.

use std::path::PathBuf;

use ebpf_manager::{AttachMethod, CleanupType, Error, Manager, Probe, ProbeState};
use integration_tests::{net::*, *};

fn cgroup_probe(function: &str, cgroup: &TestCgroup) -> Probe {
    Probe {
        cgroup_path: Some(cgroup.path().into()),
        ..probe(function, function)
    }
}

fn cgroup_manager(probes: Vec<Probe>) -> Manager {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init(CGROUP).expect("init of cgroup.bpf.o");
    m
}

/// Attaches `function` to a new cgroup, runs `action` in a child inside it, and returns the
/// count of `slot` after checking the attach info; stops and checks the program is gone.
fn count_in_cgroup(tag: &str, function: &str, slot: u32, action: fn() -> i32) -> u64 {
    let cgroup = TestCgroup::new(tag);
    let p = cgroup_probe(function, &cgroup);
    let id = p.id();
    let mut m = cgroup_manager(vec![p]);
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.start().unwrap();
    let info = m.attach_info(&id).unwrap();
    assert_eq!(info.method, AttachMethod::Cgroup);
    assert_eq!(info.hook, cgroup.path().display().to_string());
    // The test process is outside the cgroup: what it does is not counted.
    assert_eq!(action(), 0, "the same action outside the cgroup");
    assert_eq!(read_slot(&m, "hits", slot), 0, "counted outside its cgroup");
    cgroup.run(action);
    let count = read_slot(&m, "hits", slot);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(m.probe_state(&id), Some(ProbeState::Stopped));
    assert_unloaded(&prog_ids);
    count
}

#[test]
fn cgroup_skb_ingress_and_egress() {
    let cgroup = TestCgroup::new("skb");
    let ingress = cgroup_probe("skb_ingress", &cgroup);
    let egress = cgroup_probe("skb_egress", &cgroup);
    let ids = [ingress.id(), egress.id()];
    let mut m = cgroup_manager(vec![ingress, egress]);
    let prog_ids = program_ids(&m, &ids);
    m.start().unwrap();
    cgroup.run(child::udp_to_self);
    assert_eq!(
        read_slot(&m, "hits", cgroup_slot::SKB_INGRESS),
        child::DATAGRAMS
    );
    assert_eq!(
        read_slot(&m, "hits", cgroup_slot::SKB_EGRESS),
        child::DATAGRAMS
    );
    // Paused: the child's packets are not counted; resumed: they are again.
    m.pause().unwrap();
    cgroup.run(child::udp_to_self);
    assert_eq!(
        read_slot(&m, "hits", cgroup_slot::SKB_EGRESS),
        child::DATAGRAMS
    );
    m.resume().unwrap();
    cgroup.run(child::udp_to_self);
    assert_eq!(
        read_slot(&m, "hits", cgroup_slot::SKB_EGRESS),
        2 * child::DATAGRAMS
    );
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

#[test]
fn cgroup_sock_create() {
    let n = count_in_cgroup(
        "sock",
        "sock_create",
        cgroup_slot::SOCK_CREATE,
        child::create_socket,
    );
    assert_eq!(n, 1);
}

#[test]
fn cgroup_sock_addr_connect4() {
    let n = count_in_cgroup(
        "connect4",
        "connect4",
        cgroup_slot::CONNECT4,
        child::connect_udp,
    );
    assert_eq!(n, 1);
}

#[test]
fn cgroup_sockopt_getsockopt() {
    let n = count_in_cgroup(
        "sockopt",
        "getsockopt",
        cgroup_slot::GETSOCKOPT,
        child::get_socket_type,
    );
    assert_eq!(n, 1);
}

#[test]
fn cgroup_sysctl_read() {
    let n = count_in_cgroup("sysctl", "sysctl", cgroup_slot::SYSCTL, child::read_sysctl);
    assert_eq!(n, 1);
}

#[test]
fn cgroup_device_open() {
    let n = count_in_cgroup("dev", "device", cgroup_slot::DEVICE, child::open_dev_null);
    assert!(n >= 1, "opening /dev/null was not seen");
}

#[test]
fn cgroup_sock_ops_tcp_connection() {
    let n = count_in_cgroup(
        "sockops",
        "sock_ops",
        cgroup_slot::SOCK_OPS,
        child::tcp_to_self,
    );
    assert!(n >= 1, "the TCP connection was not seen");
}

#[test]
fn cgroup_every_family_in_one_manager() {
    let cgroup = TestCgroup::new("all");
    let functions = [
        "skb_ingress",
        "skb_egress",
        "sock_create",
        "connect4",
        "getsockopt",
        "sysctl",
        "device",
        "sock_ops",
    ];
    let probes: Vec<Probe> = functions.iter().map(|f| cgroup_probe(f, &cgroup)).collect();
    let ids: Vec<_> = probes.iter().map(Probe::id).collect();
    let mut m = cgroup_manager(probes);
    let prog_ids = program_ids(&m, &ids);
    m.start().unwrap();
    for action in [
        child::udp_to_self,
        child::connect_udp,
        child::get_socket_type,
        child::read_sysctl,
        child::open_dev_null,
        child::tcp_to_self,
    ] {
        cgroup.run(action);
    }
    for (slot, function) in functions.iter().enumerate() {
        assert!(
            read_slot(&m, "hits", slot as u32) >= 1,
            "{function} did not run"
        );
    }
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}

#[test]
fn cgroup_path_is_required_and_must_be_a_directory() {
    setup();
    let not_a_dir = cgroup2_root().join("cgroup.procs");
    let missing = PathBuf::from(format!(
        "/sys/fs/cgroup/ebpfm{}-missing",
        std::process::id()
    ));
    let cases = [
        (
            probe("skb", "skb_ingress"),
            "a cgroup_skb program needs cgroup_path".to_owned(),
        ),
        (
            probe("sock_ops", "sock_ops"),
            "a sock_ops program needs cgroup_path".into(),
        ),
        (
            Probe {
                cgroup_path: Some(not_a_dir.clone()),
                ..probe("file", "sysctl")
            },
            format!("cgroup_path {} is not a directory", not_a_dir.display()),
        ),
        (
            Probe {
                cgroup_path: Some(missing.clone()),
                ..probe("missing", "device")
            },
            format!("cgroup_path {} is not a directory", missing.display()),
        ),
    ];
    for (p, reason) in cases {
        let id = p.id();
        let template = p.cgroup_path.is_none();
        let mut m = Manager {
            probes: vec![p],
            ..Default::default()
        };
        // Without cgroup_path the probe is a template (as Go users declare what they hook per
        // cgroup later): it loads, and start is what fails; a bad path fails init.
        let err = match m.init(CGROUP) {
            Ok(()) if template => {
                assert_eq!(m.probe_state(&id), Some(ebpf_manager::ProbeState::Loaded));
                m.start().unwrap_err()
            }
            Ok(()) => panic!("{id}: init accepted {reason}"),
            Err(e) if !template => e,
            Err(e) => panic!("{id}: a template must load at init: {e:?}"),
        };
        match err {
            Error::InvalidProbe {
                id: failed,
                reason: r,
            } => {
                assert_eq!(failed, id);
                assert_eq!(r, reason);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn cgroup_fields_that_do_not_apply_are_refused_at_init() {
    setup();
    let root = cgroup2_root();
    let cases = [
        (
            Probe {
                if_name: Some("lo".into()),
                ..probe("skb", "skb_egress")
            },
            "if_name does not apply to `skb_egress`, a cgroup_skb program",
        ),
        (
            Probe {
                socket_fd: Some(ebpf_manager::SharedFd::dup(std::io::stdin()).unwrap()),
                ..probe("sock", "sock_create")
            },
            "socket_fd does not apply to `sock_create`, a cgroup sock program",
        ),
        (
            Probe {
                hook_func_name: Some("vfs_mkdir".into()),
                ..probe("connect4", "connect4")
            },
            "hook_func_name does not apply to `connect4`, a cgroup sock_addr program",
        ),
    ];
    for (p, reason) in cases {
        let p = Probe {
            cgroup_path: Some(root.clone()),
            ..p
        };
        let mut m = Manager {
            probes: vec![p],
            ..Default::default()
        };
        match m.init(CGROUP).unwrap_err() {
            Error::InvalidProbe { reason: r, .. } => assert_eq!(r, reason),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn cgroup_two_managers_share_one_hook() {
    // A cgroup hook takes several programs: a second manager does not replace the first.
    let cgroup = TestCgroup::new("shared");
    let mut first = cgroup_manager(vec![cgroup_probe("skb_egress", &cgroup)]);
    let mut second = cgroup_manager(vec![cgroup_probe("skb_egress", &cgroup)]);
    first.start().unwrap();
    second.start().unwrap();
    cgroup.run(child::udp_to_self);
    for m in [&first, &second] {
        assert_eq!(
            read_slot(m, "hits", cgroup_slot::SKB_EGRESS),
            child::DATAGRAMS
        );
    }
    first.stop(CleanupType::CleanAll).unwrap();
    cgroup.run(child::udp_to_self);
    assert_eq!(
        read_slot(&second, "hits", cgroup_slot::SKB_EGRESS),
        2 * child::DATAGRAMS
    );
    second.stop(CleanupType::CleanAll).unwrap();
}

/// The Go `ProbeRetry` / `ProbeRetryDelay`: a cgroup that is gone when `start` attaches and
/// back a moment later. Without retries `start` fails at once with the kernel's answer and
/// leaves nothing attached; with them (here from `Options`, the Go `DefaultProbeRetry`), the
/// probe attaches once the cgroup is back and counts.
#[test]
fn cgroup_probe_retry_attaches_once_the_cgroup_is_back() {
    let cgroup = TestCgroup::new("retry");
    let p = cgroup_probe("sock_create", &cgroup);
    let id = p.id();

    // No retry: the missing cgroup fails start with ENOENT.
    let mut m = cgroup_manager(vec![p.clone()]);
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    std::fs::remove_dir(cgroup.path()).unwrap();
    match m.start().unwrap_err() {
        Error::Attach { source, .. } => {
            assert_eq!(os_error(source.as_ref()), Some(libc::ENOENT), "{source}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(m.attach_info(&id), None);
    assert_eq!(m.state(), ebpf_manager::ManagerState::Initialized);
    // A failed start leaves a manager that can start again (the Go manager needs a new init).
    std::fs::create_dir(cgroup.path()).unwrap();
    m.start().unwrap();
    cgroup.run(child::create_socket);
    assert_eq!(read_slot(&m, "hits", cgroup_slot::SOCK_CREATE), 1);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);

    // Retries from the options: the cgroup comes back after about 200 ms.
    setup();
    let mut m = Manager {
        probes: vec![p],
        ..Default::default()
    };
    m.init_with_options(
        CGROUP,
        ebpf_manager::Options {
            default_probe_retry: 50,
            default_probe_retry_delay: std::time::Duration::from_millis(20),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::remove_dir(cgroup.path()).unwrap();
    let path = cgroup.path().to_owned();
    let back = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::create_dir(&path).unwrap();
    });
    m.start().unwrap();
    back.join().unwrap();
    assert_eq!(m.attach_info(&id).unwrap().method, AttachMethod::Cgroup);
    cgroup.run(child::create_socket);
    assert_eq!(read_slot(&m, "hits", cgroup_slot::SOCK_CREATE), 1);
    let prog_ids = program_ids(&m, std::slice::from_ref(&id));
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&prog_ids);
}
