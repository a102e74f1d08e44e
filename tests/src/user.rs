//! Helpers of the uprobe, perf_event and BTF-typed program tests: the fixtures, the C program
//! they probe, a small ELF symbol reader, and what the running kernel is expected to support.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use ebpf_manager::{ConstantEditor, Manager, Options, Probe};

/// Uprobes, uretprobes and the perf_event program: see ebpf-fixtures/src/user.bpf.c.
pub const USER: &[u8] = include_bytes!("../../ebpf-fixtures/user.bpf.o");
/// fentry, fexit, tp_btf, LSM, iter/task and a tracepoint twin: see ebpf-fixtures/src/btf.bpf.c.
pub const BTF: &[u8] = include_bytes!("../../ebpf-fixtures/btf.bpf.o");
/// ebpf-fixtures/user/uprobe_target.c, a static executable (built by build.rs).
pub const UPROBE_TARGET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/uprobe_target"));
/// The functions of uprobe_target.c as a shared library without libc (built by build.rs).
pub const UPROBE_TARGET_LIBRARY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/libuprobe_target.so"));

/// The slots of `user_hits` and `user_values` in user.bpf.c.
pub mod user_slot {
    /// `uprobe/uprobe_target_add` (value: its first argument).
    pub const UPROBE: u32 = 0;
    /// `uretprobe/uprobe_target_add` (value: its return value).
    pub const URETPROBE: u32 = 1;
    /// `uprobe`, hooked by the probe's declaration (value: the first argument).
    pub const UPROBE_GENERIC: u32 = 2;
    /// `uretprobe`, hooked by the probe's declaration (value: the return value).
    pub const URETPROBE_GENERIC: u32 = 3;
    /// `uprobe.multi//proc/self/exe:uprobe_section_target_*`.
    pub const UPROBE_MULTI_SECTION: u32 = 4;
    /// `uprobe//proc/self/exe:uprobe_section_single`.
    pub const UPROBE_PATH_SECTION: u32 = 5;
    /// `uretprobe.multi//proc/self/exe:uprobe_section_target_*`.
    pub const URETPROBE_MULTI_SECTION: u32 = 6;
}

/// The slots of `btf_hits` in btf.bpf.c.
pub mod btf_slot {
    /// fentry/vfs_mkdir
    pub const FENTRY: u32 = 0;
    /// fexit/vfs_mkdir
    pub const FEXIT: u32 = 1;
    /// tp_btf/sys_enter, mkdir(2) only
    pub const TP_BTF: u32 = 2;
    /// lsm/path_mkdir
    pub const LSM: u32 = 3;
    /// tracepoint/syscalls/sys_enter_mkdir
    pub const TRACEPOINT: u32 = 4;
    /// iter/task: tasks listed, all threads
    pub const ITER: u32 = 5;
}

/// Options setting the `volatile const` filters of user.bpf.c: count only process `tgid`
/// and thread `tid` (0: every one).
pub fn user_filters(tgid: u32, tid: u32) -> Options {
    Options {
        constant_editors: vec![
            ConstantEditor::new("filter_tgid", tgid),
            ConstantEditor::new("filter_tid", tid),
        ],
        ..Default::default()
    }
}

/// A manager over `probes` of user.bpf.c, initialized with `options`.
pub fn user_manager(probes: Vec<Probe>, options: Options) -> ebpf_manager::Result<Manager> {
    crate::setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init_with_options(USER, options)?;
    Ok(m)
}

/// A manager over `probes` of btf.bpf.c counting the calling thread only, with `options`
/// (their constant editors are replaced).
pub fn btf_manager(probes: Vec<Probe>, options: Options) -> ebpf_manager::Result<Manager> {
    crate::setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init_with_options(
        BTF,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", crate::gettid())],
            ..options
        },
    )?;
    Ok(m)
}

/// The u64 at `slot` of the array map `map`.
pub fn slot_of(m: &Manager, map: &str, slot: u32) -> u64 {
    crate::read_slot(m, map, slot)
}

/// A file of this test process, removed on drop.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Writes `bytes` to a new file whose name contains `tag`, unique to this process and
    /// call, with mode `mode`.
    pub fn new(tag: &str, bytes: &[u8], mode: u32) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ebpf-manager-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { path }
    }

    /// A fresh copy of the C program uprobe_target (its own inode: uprobes on it are this
    /// test's only).
    pub fn uprobe_target() -> Self {
        Self::new("uprobe-target", UPROBE_TARGET, 0o755)
    }

    /// A fresh copy of libuprobe_target.so.
    pub fn uprobe_target_library() -> Self {
        Self::new("libuprobe-target.so", UPROBE_TARGET_LIBRARY, 0o755)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Spawns `program` with `args`, retrying while another thread of this test process holds a
/// write descriptor on it (ETXTBSY: a fork of another test inherited it for a moment).
fn spawn(program: &Path, args: &[&str], piped: bool) -> Child {
    let mut tries = 0;
    loop {
        let mut cmd = Command::new(program);
        cmd.args(args);
        if piped {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        }
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("running {}: {e}", program.display()),
        }
    }
}

/// Runs uprobe_target `n`: `uprobe_target_add(i, 100)` then `uprobe_target_twice(1000 * i)`
/// for i = 1..n. Returns the sum it printed.
pub fn run_uprobe_target(program: &Path, n: u32) -> i64 {
    let out = spawn(program, &[&n.to_string()], false)
        .wait_with_output()
        .expect("waiting for uprobe_target");
    parse_sum(&out)
}

fn parse_sum(out: &Output) -> i64 {
    assert!(out.status.success(), "uprobe_target: {:?}", out);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("uprobe_target printed {text:?}"))
}

/// The sum uprobe_target `n` prints.
pub fn uprobe_target_sum(n: i64) -> i64 {
    (1..=n).map(|i| i + 100 + 2000 * i).sum()
}

/// An uprobe_target started with `wait N`: it exists (so its pid can be named) and waits for
/// [`release`](Self::release) before calling its functions.
#[derive(Debug)]
pub struct WaitingTarget {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl WaitingTarget {
    /// Starts `program wait n` and waits until it says it is ready.
    pub fn start(program: &Path, n: u32) -> Self {
        let mut child = spawn(program, &["wait", &n.to_string()], true);
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading uprobe_target");
        assert_eq!(line.trim(), "ready", "uprobe_target wait");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it call its functions and exit; returns the sum it printed.
    pub fn release(mut self) -> i64 {
        writeln!(self.stdin, "go").expect("writing to uprobe_target");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).expect("reading");
        let status = self.child.wait().expect("waiting for uprobe_target");
        parse_sum(&Output {
            status,
            stdout: rest.into_bytes(),
            stderr: Vec::new(),
        })
    }
}

/// A function symbol defined in an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFunction {
    /// The symbol's name.
    pub name: String,
    /// Where its code is in the file (what the kernel's uprobes take).
    pub file_offset: u64,
}

/// The functions an ELF64 little-endian file defines, in symbol table order (`.symtab`, then
/// `.dynsym`), first occurrence of each name only: the order the manager matches
/// `attach_to_func_name` in. Read here independently of the library.
pub fn elf_functions(path: &Path) -> Vec<ElfFunction> {
    const SHT_SYMTAB: u32 = 2;
    const SHT_DYNSYM: u32 = 11;
    const STT_FUNC: u8 = 2;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &data[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes(data[o..o + 2].try_into().expect("2 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
    let shoff = u64_at(0x28) as usize;
    let shentsize = u16_at(0x3a) as usize;
    let shnum = u16_at(0x3c) as usize;
    let section = |i: usize| shoff + i * shentsize;
    let c_str = |o: usize| {
        let end = data[o..].iter().position(|&b| b == 0).expect("NUL") + o;
        String::from_utf8_lossy(&data[o..end]).into_owned()
    };
    let mut functions: Vec<ElfFunction> = Vec::new();
    for wanted in [SHT_SYMTAB, SHT_DYNSYM] {
        for i in 0..shnum {
            let sh = section(i);
            if u32_at(sh + 4) != wanted {
                continue;
            }
            let (offset, size) = (u64_at(sh + 24) as usize, u64_at(sh + 32) as usize);
            let strtab = u64_at(section(u32_at(sh + 40) as usize) + 24) as usize;
            for sym in (offset..offset + size).step_by(24) {
                let shndx = u16_at(sym + 6) as usize;
                let defined = shndx != 0 && shndx < 0xff00;
                if data[sym + 4] & 0xf != STT_FUNC || !defined {
                    continue;
                }
                let name = c_str(strtab + u32_at(sym) as usize);
                if name.is_empty() || functions.iter().any(|f| f.name == name) {
                    continue;
                }
                let in_section = section(shndx);
                let file_offset =
                    u64_at(sym + 8) - u64_at(in_section + 16) + u64_at(in_section + 24);
                functions.push(ElfFunction { name, file_offset });
            }
        }
    }
    functions
}

/// The file offset of function `name` in the ELF file at `path`.
pub fn function_offset(path: &Path, name: &str) -> u64 {
    elf_functions(path)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{} defines no {name}", path.display()))
        .file_offset
}

/// A shared library mapped executable the way the dynamic loader maps its code, so that a
/// static process (the QEMU guests have no dynamic loader) can call its functions.
#[derive(Debug)]
pub struct MappedLibrary {
    base: *mut libc::c_void,
    len: usize,
    file: TempFile,
}

impl MappedLibrary {
    /// Maps `file` read-only and executable, privately, from offset 0.
    pub fn map(file: TempFile) -> Self {
        let f = std::fs::File::open(file.path()).expect("opening the library");
        let len = f.metadata().expect("stat").len() as usize;
        // SAFETY: a new private mapping of an open file; nothing else is mapped there.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Self { base, len, file }
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Calls `name(a, b)`, a function of uprobe_target.c taking and returning `long`s.
    pub fn call(&self, name: &str, a: i64, b: i64) -> i64 {
        let offset = function_offset(self.path(), name) as usize;
        assert!(offset < self.len, "{name} is outside the mapping");
        // SAFETY: uprobe_target.c's functions are position-independent `long f(long, long)`
        // (or fewer arguments, which ignore the extra register), need no relocation, and
        // the mapping covers the whole file, executable.
        let f: extern "C" fn(i64, i64) -> i64 =
            unsafe { std::mem::transmute(self.base.cast::<u8>().add(offset)) };
        f(std::hint::black_box(a), std::hint::black_box(b))
    }
}

impl Drop for MappedLibrary {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`, which no one else uses.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The lines of tracefs `uprobe_events` on `binary` (by its path or its canonical path), in
/// this process's event group or not: after `stop` there must be none.
pub fn uprobe_events_of(binary: &Path) -> Vec<String> {
    let Ok(root) = ebpf_manager::testing::tracefs_root() else {
        return Vec::new();
    };
    let mut needles = vec![binary.to_string_lossy().into_owned()];
    if let Ok(canonical) = binary.canonicalize() {
        needles.push(canonical.to_string_lossy().into_owned());
    }
    std::fs::read_to_string(root.join("uprobe_events"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|target| target.rsplit_once(':'))
                .is_some_and(|(path, _)| needles.iter().any(|n| n == path))
        })
        .map(str::to_owned)
        .collect()
}

/// The perf event and BPF link descriptors this process holds: a perf_event probe holds one
/// per CPU (a BPF link over the perf event from Linux 5.15, the perf event itself before), and
/// stopping must close them all.
pub fn attachment_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| {
                        let t = t.to_string_lossy();
                        t == "anon_inode:[perf_event]" || t == "anon_inode:bpf_link"
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// The online CPUs, from /sys/devices/system/cpu/online (`0-3,5`).
pub fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// Runs the calling thread on `cpu` only, busy for `duration`, then lets it run anywhere again.
pub fn spin_on_cpu(cpu: u32, duration: Duration) {
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity read/write it for this thread.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut before), 0);
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut only);
        assert_eq!(
            libc::sched_setaffinity(0, size, &only),
            0,
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
        spin(duration);
        assert_eq!(libc::sched_setaffinity(0, size, &before), 0);
    }
}

/// Keeps the CPU busy for `duration`.
pub fn spin(duration: Duration) {
    let end = std::time::Instant::now() + duration;
    let mut x = 0u64;
    while std::time::Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Whether this kernel must run fentry, fexit and LSM programs: the project's QEMU guests boot
/// with the BPF LSM on the command line (`lsm=lockdown,capability,bpf`), and their Debian
/// kernels have BTF and BPF trampolines. Elsewhere (the development host refuses these
/// programs, see shared/facts/kernels.md) a test accepts either a real run or the precise
/// refusal.
pub fn kernel_must_run_btf_trampolines() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| {
        c.split_whitespace()
            .filter_map(|w| w.strip_prefix("lsm="))
            .any(|list| list.split(',').any(|l| l == "bpf"))
    })
}
