//! Helpers of the privileged integration tests: fixtures, triggers, and checks that a test
//! left nothing in the kernel.

use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use ebpf_manager::{ConstantEditor, Manager, Options, Probe, ProbeIdentificationPair};

/// The helloworld object: `kprobe/vfs_mkdir` and its tracepoint twin, both printing
/// "mkdir (vfs hook point)".
pub const HELLOWORLD: &[u8] = include_bytes!("../../ebpf-fixtures/helloworld.bpf.o");
/// Counting probes: see ebpf-fixtures/src/probes.bpf.c.
pub const PROBES: &[u8] = include_bytes!("../../ebpf-fixtures/probes.bpf.o");
/// A program the verifier rejects.
pub const REJECTED: &[u8] = include_bytes!("../../ebpf-fixtures/rejected.bpf.o");

/// The hit counter slots of probes.bpf.c.
pub mod slot {
    /// kprobe/vfs_mkdir
    pub const KPROBE: u32 = 0;
    /// kretprobe/vfs_mkdir
    pub const KRETPROBE: u32 = 1;
    /// tracepoint/syscalls/sys_enter_mkdir
    pub const TRACEPOINT: u32 = 2;
    /// raw_tracepoint/sys_enter
    pub const RAW_TRACEPOINT: u32 = 3;
    /// kprobe/generic
    pub const KPROBE_GENERIC: u32 = 4;
}

/// Mounts tracefs when needed; once per process. Not bpffs: machines as they come often lack
/// it, and the manager's own pins need none (tests/tests/no_bpffs.rs); the tests that pin call
/// [`setup_bpffs`].
pub fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        ebpf_manager::mount_tracefs().expect("mounting tracefs (run the tests as root)");
    });
}

/// [`setup`], and bpffs mounted at `/sys/fs/bpf` when it is not, as a user who pins there must
/// (the manager refuses a pin off bpffs): for the tests that pin.
pub fn setup_bpffs() {
    setup();
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(mount_bpffs_if_needed);
}

fn mount_bpffs_if_needed() {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"));
    if !mounted {
        // SAFETY: valid NUL-terminated strings, no data.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "mounting bpffs: {}", std::io::Error::last_os_error());
    }
}

/// Whether the running kernel can attach kprobes at all (PMU or tracefs).
pub fn kernel_has_kprobes() -> bool {
    ebpf_manager::features::has_kprobe_pmu() || tracefs_has("kprobe_events")
}

/// Whether tracefs has this control file.
pub fn tracefs_has(file: &str) -> bool {
    ebpf_manager::testing::tracefs_root().is_ok_and(|r| r.join(file).exists())
}

/// The calling thread's id, which the counting probes filter on.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Options that make probes.bpf.o count the calling thread only.
pub fn this_thread_only() -> Options {
    Options {
        constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
        ..Default::default()
    }
}

/// A probe of `function`, with `uid`.
pub fn probe(uid: &str, function: &str) -> Probe {
    Probe {
        uid: uid.into(),
        ebpf_func_name: function.into(),
        ..Default::default()
    }
}

/// A manager over `probes`, initialized from probes.bpf.o counting this thread only.
pub fn counting_manager(probes: Vec<Probe>) -> Manager {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init_with_options(PROBES, this_thread_only())
        .expect("init of probes.bpf.o");
    m
}

/// Makes and removes a uniquely named directory (mkdir(2) then rmdir(2)).
pub fn mkdir_rmdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ebpf-manager-test-{tag}-{}-{}",
        std::process::id(),
        gettid()
    ));
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::remove_dir(&dir).expect("rmdir");
    dir
}

/// The hit count of `slot` in the `hits` map.
pub fn hits(m: &Manager, slot: u32) -> u64 {
    read_slot(m, "hits", slot)
}

/// The value of `slot` in the array of u64 `map`.
pub fn read_slot(m: &Manager, map: &str, slot: u32) -> u64 {
    let map = m.get_map(map).expect("probes.bpf.o has this map");
    let array = aya::maps::Array::<_, u64>::try_from(map).expect("an array of u64");
    array.get(&slot, 0).expect("reading the array")
}

/// Whether the program of this probe is loaded in the kernel.
pub fn is_loaded(m: &Manager, id: &ProbeIdentificationPair) -> bool {
    m.get_program(id).is_some_and(|p| p.fd().is_ok())
}

/// The names under /sys/fs/bpf that this process's manager made (it must leave none).
pub fn own_bpffs_entries() -> Vec<String> {
    let prefix = ebpf_manager::testing::own_group();
    std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The kernel ids of the programs of these probes.
pub fn program_ids(m: &Manager, ids: &[ProbeIdentificationPair]) -> Vec<u32> {
    ids.iter()
        .map(|id| m.program_id(id).expect("a loaded program"))
        .collect()
}

/// Asserts that none of these program ids is loaded in the kernel any more.
///
/// The kernel may drop its last reference to a program a moment after the manager closed its
/// fds (perf events, links, socket and cls_bpf filters, cgroup and BTF programs are released
/// after an RCU grace period or from a workqueue), so this waits up to 5 s for the ids to go.
pub fn assert_unloaded(ids: &[u32]) {
    wait_until_gone("programs", ids, || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .collect()
    });
}

/// Asserts that these map ids leave the kernel, which frees a program's maps after an RCU
/// grace period once the program is unloaded: waits up to 5 s.
pub fn assert_maps_unloaded(ids: &[u32]) {
    wait_until_gone("maps", ids, map_ids);
}

/// The ids of every map in the kernel, listed with `BPF_MAP_GET_NEXT_ID` alone: no map is
/// opened.
///
/// Opening a map by id (as `aya::maps::loaded_maps` does) is not harmless while a program
/// array is being freed: the kernel (measured on 6.18) defers clearing a program array to a
/// work item when its last user reference goes, and takes a map reference for that work; a
/// reference opened by id and closed while the work is still pending queues it again, the
/// second queueing is a no-op, and its map reference is never dropped. The array then stays in
/// the kernel until reboot, with no fd, pin or program holding it.
pub fn map_ids() -> Vec<u32> {
    #[repr(C)]
    struct Attr {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut ids = Vec::new();
    let mut attr = Attr {
        start_id: 0,
        next_id: 0,
        open_flags: 0,
    };
    loop {
        // SAFETY: a valid bpf_attr prefix of the size passed, written by the kernel only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                12, // BPF_MAP_GET_NEXT_ID
                &mut attr as *mut Attr,
                std::mem::size_of::<Attr>() as u32,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOENT),
                "BPF_MAP_GET_NEXT_ID: {e}"
            );
            return ids;
        }
        ids.push(attr.next_id);
        attr.start_id = attr.next_id;
    }
}

fn wait_until_gone(what: &str, ids: &[u32], loaded: impl Fn() -> Vec<u32>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = loaded().into_iter().filter(|id| ids.contains(id)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} {left:?} are still loaded 5 s after their manager released them"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The tracefs probe events of this process's group, as listed in `control`
/// (e.g. `kprobe_events`).
pub fn own_tracefs_events(control: &str) -> Vec<String> {
    let Ok(root) = ebpf_manager::testing::tracefs_root() else {
        return Vec::new();
    };
    let group = ebpf_manager::testing::own_group();
    std::fs::read_to_string(root.join(control))
        .unwrap_or_default()
        .lines()
        .filter(|l| ebpf_manager::testing::parse_event_line(l).is_some_and(|(g, _)| g == group))
        .map(str::to_owned)
        .collect()
}

/// Serializes the tests that read trace_pipe: readers split its lines between them.
/// Serializes the tests of one binary that make entries under /sys/fs/bpf with this process's
/// prefix (clone pins, per-probe copies, pins) with those that check none is left.
pub fn bpffs_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serializes the tests that read trace_pipe.
pub fn trace_pipe_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a directory from this thread and waits for `message` printed by this thread
/// (trace_pipe lines start with `<comm>-<tid>`). Returns the line.
pub fn mkdir_and_read_trace_pipe(message: &str) -> Option<String> {
    let mut pipe = ebpf_manager::TracePipe::open().expect("opening trace_pipe");
    let tag = format!("-{} ", gettid());
    mkdir_rmdir("trace");
    pipe.read_until(Duration::from_secs(10), |line| {
        line.contains(message) && line.contains(&tag)
    })
    .expect("reading trace_pipe")
    .pop()
}

pub mod elf_edit;
pub mod gomodel;
pub mod net;
pub mod readers;
pub mod state;
pub mod user;

/// The Go-world object: see ebpf-fixtures/src/gocompat.bpf.c.
pub const GOCOMPAT: &[u8] = include_bytes!("../../ebpf-fixtures/gocompat.bpf.o");

/// Runs `prog` once with BPF_PROG_TEST_RUN (Linux 4.12) on a zeroed 64-byte packet; returns
/// its return value.
pub fn test_run(prog: std::os::fd::BorrowedFd<'_>) -> u32 {
    use std::os::fd::AsRawFd;
    test_run_repeat(prog.as_raw_fd(), &[0u8; 64], 1).0
}

/// Runs `prog` `repeat` times with BPF_PROG_TEST_RUN on `packet`; returns the last return value
/// and the mean run time in ns as the kernel measured it. aya 0.14 has no test-run call.
pub fn test_run_repeat(prog: std::os::fd::RawFd, packet: &[u8], repeat: u32) -> (u32, u32) {
    /// The `test` member of `union bpf_attr`, up to `ctx_out`.
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
    }
    let mut attr = TestRun {
        prog_fd: prog as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: `attr` is a live bpf_attr prefix of the size passed; `data_in` points to
    // `data_size_in` readable bytes; no output buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            10, // BPF_PROG_TEST_RUN
            &mut attr as *mut TestRun,
            std::mem::size_of::<TestRun>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    (attr.retval, attr.duration)
}

/// The value at `key` of the map behind `fd`, read with a raw `BPF_MAP_LOOKUP_ELEM` (a map of
/// any type, also one whose manager has stopped: the fd keeps it; a program array or map of
/// maps gives its occupant's id); `None` for an empty slot (ENOENT), a panic for any other
/// error.
pub fn lookup_raw(fd: std::os::fd::BorrowedFd<'_>, key: u32, value_size: usize) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut value = vec![0u8; value_size];
    let mut attr = Attr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: a valid bpf_attr prefix of the size passed; key and value outlive the call, and
    // value holds value_size bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            1, // BPF_MAP_LOOKUP_ELEM
            &mut attr as *mut Attr,
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if rc == 0 {
        return Some(value);
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOENT),
        "lookup of key {key}: {e}"
    );
    None
}

/// A manager over `probes`, initialized from probes.bpf.o with `options` (counting this
/// thread only unless they set `filter_tid` themselves).
pub fn counting_manager_with(probes: Vec<Probe>, options: Options) -> Manager {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init_with_options(PROBES, options)
        .expect("init of probes.bpf.o");
    m
}

/// The kernel's view of map `name` of `m` (`/proc/self/fdinfo` of a fresh fd): `map_type`,
/// `key_size`, `value_size`, `max_entries`, `map_flags`, ...
pub fn map_fdinfo(m: &Manager, name: &str) -> std::collections::HashMap<String, u64> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = m.map_fd(name).expect("map_fd");
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
        .expect("fdinfo");
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())?;
            Some((k.trim().to_owned(), v))
        })
        .collect()
}

/// The CO-RE object: see ebpf-fixtures/src/core.bpf.c.
pub const CORE: &[u8] = include_bytes!("../../ebpf-fixtures/core.bpf.o");

/// A raw BTF file (as a BTFHub file is) with `int` and
/// `struct task_struct { int pad[6]; int pid; }` (pid at byte 24), written under the temp
/// directory with a name unique to this process; the caller removes it.
pub fn small_kernel_btf() -> PathBuf {
    kernel_btf_with_task_member("pid")
}

/// [`small_kernel_btf`] with its second member of `task_struct` named `member` (3 letters).
pub fn kernel_btf_with_task_member(member: &str) -> PathBuf {
    assert_eq!(member.len(), 3);
    let strings = format!("\0int\0task_struct\0pad\0{member}\0");
    let strings = strings.as_bytes();
    let mut types: Vec<u32> = vec![
        // [1] INT "int": 4 bytes, signed, 32 bits.
        1,
        1 << 24,
        4,
        (1 << 24) | 32,
        // [2] STRUCT "task_struct", 32 bytes, 2 members: pad at bit 0, pid at bit 192.
        5,
        (4 << 24) | 2,
        32,
        17,
        1,
        0,
        21,
        1,
        192,
    ];
    let type_len = (types.len() * 4) as u32;
    let mut header: Vec<u32> = vec![0, 24, 0, type_len, type_len, strings.len() as u32];
    header[0] = 0xeb9f | (1 << 16); // magic, version 1, flags 0
    let mut bytes: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.extend(types.drain(..).flat_map(|w| w.to_le_bytes()));
    bytes.extend_from_slice(strings);
    let path = std::env::temp_dir().join(format!(
        "ebpf-manager-test-{}-{member}.btf",
        std::process::id()
    ));
    std::fs::write(&path, bytes).expect("writing the BTF file");
    path
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-', '+']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// Whether the kernel was built with CONFIG_FPROBE (what kprobe.multi links need): its
/// `fprobe_register` is in /proc/kallsyms.
pub fn kernel_has_fprobe() -> bool {
    std::fs::read_to_string("/proc/kallsyms").is_ok_and(|k| {
        k.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("fprobe_register"))
    })
}
