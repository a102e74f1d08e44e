//! struct_ops maps, written as libbpf users write them (struct_ops.bpf.c: vmlinux.h, CO-RE, a
//! `struct tcp_congestion_ops` in `SEC(".struct_ops")` whose members point to `struct_ops/`
//! programs): `init` makes the map, `start` registers the congestion control, `stop`
//! unregisters it. A socket then picks it by name, and its programs run.
//!
//! `.struct_ops` came in Linux 5.6: every kernel here has it. `.struct_ops.link` (the same
//! object built with its map there, struct_ops_link.bpf.o) came in 6.4: it registers on the
//! 6.12 guest and the host, and on the 5.10 and 6.1 guests init fails with the error a user
//! gets there.

use std::{
    io::{Read as _, Write as _},
    os::fd::{AsFd as _, AsRawFd},
};

use aya::util::KernelVersion;
use ebpf_manager::{CleanupType, Error, Manager, Options};
use integration_tests::*;

const CC: &[u8] = include_bytes!("../../ebpf-fixtures/struct_ops.bpf.o");
const CC_LINK: &[u8] = include_bytes!("../../ebpf-fixtures/struct_ops_link.bpf.o");

mod slot {
    pub const INITS: u32 = 0;
}

fn available() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .expect("reading tcp_available_congestion_control")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Sets the congestion control of `fd` (`TCP_CONGESTION`).
fn set_cc(fd: i32, name: &str) -> std::io::Result<()> {
    // SAFETY: a valid socket and a buffer of the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_cc(fd: i32) -> String {
    let mut buf = [0u8; 16];
    let mut len = buf.len() as u32;
    // SAFETY: a valid socket, a buffer and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let end = buf.iter().position(|&b| b == 0).unwrap_or(len as usize);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A loopback connection whose client uses congestion control `cc`, with some traffic.
fn talk_with(cc: &str) -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    set_cc(client.as_raw_fd(), cc)?;
    let chunk = vec![7u8; 64 * 1024];
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < 16 * chunk_len() {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    });
    for _ in 0..16 {
        client.write_all(&chunk)?;
    }
    let used = get_cc(client.as_raw_fd());
    drop(client);
    assert_eq!(reader.join().unwrap(), 16 * chunk_len());
    Ok(used)
}

fn chunk_len() -> usize {
    64 * 1024
}

/// The tests register the same names: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn init(object: &[u8], options: Options) -> Result<Manager, Error> {
    setup();
    let mut m = Manager::default();
    m.init_with_options(object, options)?;
    Ok(m)
}

fn registers_runs_and_goes(object: &[u8], name: &str) {
    let _one = serial();
    assert!(
        !available().contains(&name.to_owned()),
        "{name} left by another run"
    );
    let mut m = init(object, Options::default()).unwrap();
    assert!(
        !available().contains(&name.to_owned()),
        "init must not register {name}: start does"
    );
    // The map is reachable as any other; its value type is the kernel's.
    let fd = m.map_fd("ebpfm_cc").unwrap();
    let info = aya::maps::MapData::from_fd(fd.as_fd().try_clone_to_owned().unwrap())
        .and_then(|d| d.info())
        .unwrap();
    assert_eq!(info.name_as_str(), Some("ebpfm_cc"));
    assert_eq!((info.key_size(), info.max_entries()), (4, 1));
    m.start().unwrap();
    assert!(available().contains(&name.to_owned()), "{:?}", available());
    assert_eq!(talk_with(name).unwrap(), name);
    assert!(
        read_slot(&m, "cc_calls", slot::INITS) >= 1,
        "the congestion control's init program must have run"
    );
    m.stop(CleanupType::CleanAll).unwrap();
    assert!(!available().contains(&name.to_owned()), "{:?}", available());
    let gone = talk_with(name).unwrap_err();
    assert_eq!(gone.raw_os_error(), Some(libc::ENOENT), "{gone}");
}

#[test]
fn struct_ops_a_congestion_control_registers_at_start_runs_and_goes_at_stop() {
    registers_runs_and_goes(CC, "ebpfm_cc");
}

#[test]
fn struct_ops_a_link_map_registers_from_linux_6_4_and_names_the_kernel_before() {
    if KernelVersion::current().unwrap() >= KernelVersion::new(6, 4, 0) {
        registers_runs_and_goes(CC_LINK, "ebpfm_cc_link");
        return;
    }
    let _one = serial();
    let e = init(CC_LINK, Options::default()).unwrap_err();
    match &e {
        Error::StructOps {
            map,
            type_name,
            reason,
            ..
        } => {
            assert_eq!(
                (map.as_str(), type_name.as_str()),
                ("ebpfm_cc", "tcp_congestion_ops")
            );
            assert!(reason.contains("Linux 6.4"), "{reason}");
        }
        other => panic!("expected Error::StructOps, got {}", other.report()),
    }
    assert_eq!(e.errno(), Some(libc::EINVAL), "{}", e.report());
}

#[test]
fn struct_ops_an_excluded_map_is_not_made() {
    let _one = serial();
    let options = Options {
        excluded_maps: vec!["ebpfm_cc".into()],
        ..Default::default()
    };
    let mut m = init(CC, options).unwrap();
    m.start().unwrap();
    assert!(!available().contains(&"ebpfm_cc".to_owned()));
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn struct_ops_dropping_a_running_manager_unregisters() {
    let _one = serial();
    let mut m = init(CC, Options::default()).unwrap();
    m.start().unwrap();
    assert!(available().contains(&"ebpfm_cc".to_owned()));
    drop(m);
    assert!(
        !available().contains(&"ebpfm_cc".to_owned()),
        "{:?}",
        available()
    );
}

/// A `start` the kernel refuses (the name is taken by another manager's registration) leaves
/// the manager initialized, and a later `start` registers: a map the kernel took a value for
/// (a `.struct_ops.link` map, readied before its link is refused) is made again, since the
/// kernel takes a struct_ops value once.
#[test]
fn struct_ops_a_start_refused_for_a_taken_name_can_be_tried_again() {
    let _one = serial();
    let links = KernelVersion::current().unwrap() >= KernelVersion::new(6, 4, 0);
    let (object, name) = if links {
        (CC_LINK, "ebpfm_cc_link")
    } else {
        (CC, "ebpfm_cc")
    };
    let mut first = init(object, Options::default()).unwrap();
    first.start().unwrap();
    let mut second = init(object, Options::default()).unwrap();
    let e = second.start().unwrap_err();
    match &e {
        Error::StructOps { reason, .. } => assert!(reason.contains("already has"), "{reason}"),
        other => panic!("expected Error::StructOps, got {}", other.report()),
    }
    assert_eq!(e.errno(), Some(libc::EEXIST), "{}", e.report());
    assert_eq!(second.state(), ebpf_manager::ManagerState::Initialized);
    first.stop(CleanupType::CleanAll).unwrap();
    assert!(!available().contains(&name.to_owned()));
    second.start().unwrap();
    assert!(available().contains(&name.to_owned()), "{:?}", available());
    assert_eq!(talk_with(name).unwrap(), name);
    second.stop(CleanupType::CleanAll).unwrap();
    assert!(!available().contains(&name.to_owned()));
}

/// A `start` that fails after registering the map (here a probe's attach, made to fail)
/// unregisters it, and a later `start` registers it again: the kernel takes a struct_ops value
/// once (a `.struct_ops` map it was deleted from refuses another with EBUSY), so the manager
/// makes the map again.
#[test]
fn struct_ops_a_start_failing_after_the_registration_can_be_tried_again() {
    let _one = serial();
    setup();
    let mut m = Manager {
        probes: vec![ebpf_manager::Probe {
            uid: "mkdir".into(),
            ebpf_func_name: "ebpfm_cc_mkdir".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    m.init(CC).unwrap();
    ebpf_manager::fault::arm("attach", 1);
    let e = m.start().unwrap_err();
    ebpf_manager::fault::reset();
    assert!(
        e.report().to_string().contains("injected fault"),
        "{}",
        e.report()
    );
    assert!(
        !available().contains(&"ebpfm_cc".to_owned()),
        "{:?}",
        available()
    );
    m.start().unwrap();
    assert!(
        available().contains(&"ebpfm_cc".to_owned()),
        "{:?}",
        available()
    );
    assert_eq!(talk_with("ebpfm_cc").unwrap(), "ebpfm_cc");
    m.stop(CleanupType::CleanAll).unwrap();
    assert!(!available().contains(&"ebpfm_cc".to_owned()));
}
