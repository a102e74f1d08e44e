//! Real Debian kernels under QEMU (TCG): download them once, then boot static binaries in them.
//!
//! Kernels come from Debian's archive through a private apt state kept in the cache directory
//! (`$EBPF_MANAGER_CACHE`, else `$XDG_CACHE_HOME/ebpf-manager`, else `~/.cache/ebpf-manager`):
//! the machine's apt configuration and lists are never touched. A run builds an uncompressed
//! initramfs from busybox and the payload binaries, whose `/init` runs the payloads one after
//! the other and prints markers on the serial console that [`run`] reads back.

use std::{
    env, fs,
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::{symlink, FileExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{install, Result};

/// The kernel series the project is tested on, oldest first.
pub const KERNELS: &[&str] = &["5.10", "6.1", "6.12"];

/// A Debian kernel unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The series, as in [`KERNELS`]: `"6.1"`.
    pub series: String,
    /// The Debian package it came from: `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// What `uname -r` says in the guest: `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The kernel image to boot.
    pub vmlinuz: PathBuf,
}

/// A static binary to run in the guest, as a child of `/init`, with `/tmp` as working directory.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Its name: the binary is `/payload/<name>` in the guest, and the console markers use it.
    /// Letters, digits and `._+-` only.
    pub name: String,
    /// The binary on the host; it must be statically linked (no ELF interpreter).
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables set for it, on top of `PATH=/bin`.
    pub env: Vec<(String, String)>,
}

/// What happened in one boot of a guest.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Everything the serial console printed, markers included, lines ending in `\n`.
    pub console: String,
    /// Every payload in order with its exit status; `None` when it never finished.
    pub results: Vec<(String, Option<i32>)>,
    /// Whether the timeout passed and QEMU was killed.
    pub timed_out: bool,
    /// Whether the console showed a kernel panic.
    pub panicked: bool,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
}

/// Every marker line starts with this.
const MARKER: &str = "@@EBPF-MANAGER ";

/// The archive's signing keys; the private apt sources name it with `signed-by`.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The kernel package of each series: a fixed package name, or the newest of a pattern.
fn wanted(series: &str) -> Result<Wanted> {
    match series {
        // Bullseye's last point release: frozen, so every machine gets the same kernel.
        "5.10" => Ok(Wanted::Exact("linux-image-5.10.0-32-cloud-amd64")),
        "6.1" | "6.12" => Ok(Wanted::Newest(series.to_string())),
        other => Err(format!(
            "unknown kernel series `{other}`: choose one of {}",
            KERNELS.join(", ")
        )),
    }
}

enum Wanted {
    /// This package name.
    Exact(&'static str),
    /// The newest `linux-image-<series>.*-cloud-amd64` built for this series.
    Newest(String),
}

/// The cache directory of the project (created when missing).
fn cache_dir() -> Result<PathBuf> {
    let dir = if let Some(dir) = env::var_os("EBPF_MANAGER_CACHE").filter(|d| !d.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(dir).join("ebpf-manager")
    } else if let Some(home) = env::var_os("HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(home).join(".cache/ebpf-manager")
    } else {
        return Err("no cache directory: set EBPF_MANAGER_CACHE (or HOME)".into());
    };
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The kernel of `series` (one of [`KERNELS`]), downloaded from Debian into the cache the
/// first time; later calls find it there and download nothing.
pub fn kernel(series: &str) -> Result<Kernel> {
    let wanted = wanted(series)?;
    let dir = cache_dir()?.join("kernels").join(series);
    if let Some(kernel) = cached(series, &dir)? {
        return Ok(kernel);
    }
    install::ensure(&[
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
    ])?;
    let apt = Apt::new()?;
    let updated = apt.update(false)?;
    match download(&apt, series, &wanted, &dir) {
        Err(e) if !updated => {
            // The lists were reused and may be out of date: refresh them and try again.
            eprintln!("xtask: {e}; trying again with fresh apt lists");
            apt.update(true)?;
            download(&apt, series, &wanted, &dir)
        }
        result => result,
    }
}

/// Chooses the package of `series`, downloads it and unpacks its kernel into `dir`.
fn download(apt: &Apt, series: &str, wanted: &Wanted, dir: &Path) -> Result<Kernel> {
    let package = match wanted {
        Wanted::Exact(name) => {
            if !apt.pkgnames("linux-image-")?.iter().any(|n| n == name) {
                return Err(format!("the Debian archive has no {name} (any more?)"));
            }
            name.to_string()
        }
        Wanted::Newest(series) => apt
            .pkgnames("linux-image-")?
            .into_iter()
            .filter_map(|n| rank(&n, series).map(|r| (r, n)))
            .max()
            .map(|(_, n)| n)
            .ok_or_else(|| {
                format!("the Debian archive has no linux-image-{series}.*-cloud-amd64 package")
            })?,
    };

    // Download and unpack in a staging directory, then rename it into place.
    let parent = dir.parent().expect("kernels/<series>");
    let staging = parent.join(format!(".staging-{series}-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(staging.clone());
    let _ = fs::remove_dir_all(&staging);
    let unpacked = staging.join("unpacked");
    let keep = staging.join("kernel");
    for d in [&unpacked, &keep] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    eprintln!(
        "xtask: downloading {package} (kernel {series}) into {}",
        dir.display()
    );
    let started = Instant::now();
    apt.download(&package, &staging)?;
    let deb = only_file(&staging, |n| n.ends_with(".deb"))?
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    run_quiet(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
        "dpkg-deb -x",
    )?;
    let boot = unpacked.join("boot");
    let vmlinuz = only_file(&boot, |n| n.starts_with("vmlinuz-"))?
        .ok_or_else(|| format!("{package} has no boot/vmlinuz-*"))?;
    rename(&vmlinuz, &keep.join(file_name(&vmlinuz)))?;
    // The configuration is small and tells which CONFIG_ options a test can expect.
    if let Some(config) = only_file(&boot, |n| n.starts_with("config-"))? {
        rename(&config, &keep.join(file_name(&config)))?;
    }
    let deb_name = file_name(&deb);
    fs::write(keep.join("package"), format!("{package}\n{deb_name}\n"))
        .map_err(|e| format!("cannot write in {}: {e}", keep.display()))?;
    if let Err(e) = fs::rename(&keep, dir) {
        // Another process may have been faster; its kernel is as good as ours.
        if cached(series, dir)?.is_none() {
            return Err(format!(
                "cannot rename {} to {}: {e}",
                keep.display(),
                dir.display()
            ));
        }
    }
    eprintln!(
        "xtask: kernel {series}: {deb_name} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    cached(series, dir)?.ok_or_else(|| format!("{} is incomplete", dir.display()))
}

/// The kernel in `dir`, when a previous call left one there.
fn cached(series: &str, dir: &Path) -> Result<Option<Kernel>> {
    let Ok(package) = fs::read_to_string(dir.join("package")) else {
        return Ok(None);
    };
    let Some(vmlinuz) = only_file(dir, |n| n.starts_with("vmlinuz-"))? else {
        return Ok(None);
    };
    let release = file_name(&vmlinuz)["vmlinuz-".len()..].to_string();
    Ok(Some(Kernel {
        series: series.to_string(),
        package: package.lines().next().unwrap_or_default().to_string(),
        release,
        vmlinuz,
    }))
}

/// How new a `linux-image-<series>.<rest>-cloud-amd64` package is (`None` if it is not one):
/// the numbers of `<rest>`, so `6.1.0-56` ranks `[0, 56]` and `6.12.117+deb12` `[117, 12]`.
/// Backports (`6.1.0-0.deb11.52`), `-unsigned` and `-dbg` packages and meta-packages don't match.
fn rank(package: &str, series: &str) -> Option<Vec<u64>> {
    let rest = package
        .strip_prefix("linux-image-")?
        .strip_suffix("-cloud-amd64")?
        .strip_prefix(series)?
        .strip_prefix('.')?;
    let plain = rest.replacen("+deb", ".", 1);
    if !plain.starts_with(|c: char| c.is_ascii_digit())
        || !plain
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        || rest.contains(".deb")
    {
        return None;
    }
    plain.split(['.', '-']).map(|n| n.parse().ok()).collect()
}

/// A private apt state under `<cache>/apt`: its own sources, lists, package cache and (empty)
/// dpkg status, so the machine's apt configuration is never modified.
struct Apt {
    dir: PathBuf,
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

impl Apt {
    fn new() -> Result<Apt> {
        let dir = cache_dir()?.join("apt");
        for d in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(d);
            fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        if !Path::new(KEYRING).exists() {
            return Err(format!(
                "{KEYRING} is missing: install it with `apt-get install debian-archive-keyring`"
            ));
        }
        let (debian, security) = mirrors();
        let mut sources = String::from("# Written by cargo xtask: the private apt sources.\n");
        for (uri, suite) in [
            (&debian, "bookworm"),
            (&debian, "bookworm-updates"),
            (&security, "bookworm-security"),
            (&debian, "bullseye"),
            (&security, "bullseye-security"),
        ] {
            sources.push_str(&format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"));
        }
        let list = dir.join("sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            // Other sources: the lists must be downloaded again.
            let _ = fs::remove_file(dir.join("updated"));
            fs::write(&list, sources)
                .map_err(|e| format!("cannot write {}: {e}", list.display()))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")
                .map_err(|e| format!("cannot write {}: {e}", status.display()))?;
        }
        Ok(Apt { dir })
    }

    /// The `-o` options that make apt use only this state.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        let mut options = vec![
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            "Debug::NoLocking=1".into(),
            // As root, apt would download as `_apt`, who cannot write in a private cache.
            "APT::Sandbox::User=root".into(),
            "Acquire::Languages=none".into(),
        ];
        for target in [
            "DEP-11",
            "DEP-11-icons",
            "DEP-11-icons-small",
            "DEP-11-icons-large",
            "DEP-11-icons-hidpi",
        ] {
            options.push(format!(
                "Acquire::IndexTargets::deb::{target}::DefaultEnabled=false"
            ));
        }
        options
            .into_iter()
            .flat_map(|o| ["-o".to_string(), o])
            .collect()
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .args(self.options())
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        command
    }

    /// `apt-get update`, unless it ran in this process or, with the same sources, less than
    /// a day ago (`force` runs it anyway). Returns whether it ran now.
    fn update(&self, force: bool) -> Result<bool> {
        let stamp = self.dir.join("updated");
        let fresh = || {
            let age = fs::metadata(&stamp)
                .and_then(|m| m.modified())
                .ok()?
                .elapsed()
                .ok()?;
            (age < Duration::from_secs(24 * 3600)).then_some(())
        };
        if !force && (APT_UPDATED.load(Ordering::SeqCst) || fresh().is_some()) {
            return Ok(false);
        }
        eprintln!(
            "xtask: updating the private apt lists in {}",
            self.dir.display()
        );
        let _ = fs::remove_file(&stamp);
        run_quiet(
            self.command("apt-get").args(["-q", "update"]),
            "apt-get update",
        )?;
        fs::write(&stamp, "").map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
        APT_UPDATED.store(true, Ordering::SeqCst);
        Ok(true)
    }

    /// The package names that start with `prefix`.
    fn pkgnames(&self, prefix: &str) -> Result<Vec<String>> {
        let output = self
            .command("apt-cache")
            .args(["pkgnames", prefix])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run apt-cache: {e}"))?;
        if !output.status.success() {
            return Err(format!("apt-cache pkgnames failed ({})", output.status));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// `apt-get download package` into `dir`.
    fn download(&self, package: &str, dir: &Path) -> Result<()> {
        run_quiet(
            self.command("apt-get")
                .args(["-q", "download", package])
                .current_dir(dir),
            "apt-get download",
        )
    }
}

/// The Debian and Debian security mirrors of the machine's apt sources, else deb.debian.org.
fn mirrors() -> (String, String) {
    let mut debian = None;
    let mut security = None;
    let mut note = |uri: &str, suite: &str| {
        let uri = uri.trim_end_matches('/').to_string();
        if suite.ends_with("-security") {
            security.get_or_insert(uri);
        } else if !uri.contains("security") {
            debian.get_or_insert(uri);
        }
    };
    // deb822 stanzas.
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list.d/debian.sources") {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
            };
            let types = field("Types").unwrap_or_default();
            if !types.split_whitespace().any(|t| t == "deb") {
                continue;
            }
            if let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) {
                for uri in uris.split_whitespace() {
                    for suite in suites.split_whitespace() {
                        note(uri, suite);
                    }
                }
            }
        }
    }
    // One-line sources: `deb [options] uri suite components`.
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let Some(rest) = line.trim().strip_prefix("deb ") else {
                continue;
            };
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(options) => options.split_once(']').map_or("", |(_, r)| r),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                note(uri, suite);
            }
        }
    }
    (
        debian.unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        security.unwrap_or_else(|| "http://deb.debian.org/debian-security".into()),
    )
}

/// Runs a command with its stdout sent to our stderr (so a caller's stdout stays clean).
fn run_quiet(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// The single file of `dir` whose name satisfies `matches` (`None` when there is none or the
/// directory does not exist; an error when there are several).
fn only_file(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(format!(
            "{} has several candidates ({}): remove the directory and run again",
            dir.display(),
            found
                .iter()
                .map(|p| file_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Fails unless `path` is a static x86_64 ELF executable (no `PT_INTERP` program header).
fn check_static(path: &Path) -> Result<()> {
    let what = path.display();
    let file = fs::File::open(path).map_err(|e| format!("cannot open {what}: {e}"))?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| format!("{what} is not an ELF executable"))?;
    if &header[..4] != b"\x7fELF" {
        return Err(format!("{what} is not an ELF executable"));
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    if header[4] != 2 || header[5] != 1 || u16_at(&header, 18) != 62 {
        return Err(format!(
            "{what} is not an x86_64 (64-bit little-endian) ELF file"
        ));
    }
    let phoff = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
    let phentsize = usize::from(u16_at(&header, 54));
    let phnum = usize::from(u16_at(&header, 56));
    if phnum == 0 || phentsize < 4 {
        return Err(format!(
            "{what} has no program headers: it is not an executable"
        ));
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.read_exact_at(&mut table, phoff)
        .map_err(|_| format!("{what}: truncated ELF program headers"))?;
    const PT_INTERP: u32 = 3;
    let dynamic = table
        .chunks(phentsize)
        .any(|ph| u32::from_le_bytes(ph[..4].try_into().expect("4 bytes")) == PT_INTERP);
    if dynamic {
        return Err(format!(
            "{what} is dynamically linked, and the guest has no libc: build it static with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --target x86_64-unknown-linux-gnu"
        ));
    }
    Ok(())
}

/// Quotes a word for the guest's shell.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// The guest's `/init`.
fn init_script(payloads: &[Payload]) -> String {
    let mut script = String::from(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mkdir -p /sys/kernel/tracing /sys/kernel/debug /sys/fs/bpf /sys/fs/cgroup /tmp\n\
         mount -t tracefs tracefs /sys/kernel/tracing\n\
         mount -t debugfs debugfs /sys/kernel/debug\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         mount -t tmpfs tmpfs /tmp\n\
         ip link set lo up\n",
    );
    for payload in payloads {
        let name = &payload.name;
        script.push_str(&format!("echo '{MARKER}BEGIN {name}'\ncd /tmp\nenv"));
        for (key, value) in &payload.env {
            script.push(' ');
            script.push_str(&quote(&format!("{key}={value}")));
        }
        script.push_str(&format!(" /payload/{name}"));
        for arg in &payload.args {
            script.push(' ');
            script.push_str(&quote(arg));
        }
        script.push_str(&format!(
            " </dev/null\nrc=$?\necho \"{MARKER}END {name} rc=$rc\"\n"
        ));
    }
    script.push_str(&format!("cd /\necho '{MARKER}DONE'\npoweroff -f\n"));
    script
}

/// Builds `<run>/initrd.cpio`: busybox with a link per applet in `/bin`, the payloads in
/// `/payload`, and `/init`. Returns its path.
fn initramfs(run: &Path, payloads: &[Payload]) -> Result<PathBuf> {
    install::ensure(&[("busybox", "busybox-static"), ("cpio", "cpio")])?;
    let busybox = env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .ok_or("busybox is not on PATH")?;
    check_static(&busybox).map_err(|e| format!("{e} (install busybox-static)"))?;

    let root = run.join("root");
    let mkdir =
        |d: &Path| fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()));
    for d in ["bin", "proc", "sys", "dev", "tmp", "payload"] {
        mkdir(&root.join(d))?;
    }
    copy(&busybox, &root.join("bin/busybox"))?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", busybox.display()))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if valid_name(applet) && applet != "busybox" {
            let link = root.join("bin").join(applet);
            symlink("busybox", &link)
                .map_err(|e| format!("cannot create {}: {e}", link.display()))?;
        }
    }
    for payload in payloads {
        copy(&payload.binary, &root.join("payload").join(&payload.name))?;
    }
    let init = root.join("init");
    fs::write(&init, init_script(payloads))
        .and_then(|()| fs::set_permissions(&init, fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", init.display()))?;

    // The file list for cpio: every path relative to the root, directories first.
    let mut names = Vec::new();
    walk(&root, Path::new(""), &mut names)?;
    let initrd = run.join("initrd.cpio");
    let out = fs::File::create(&initrd)
        .map_err(|e| format!("cannot create {}: {e}", initrd.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .map_err(|e| format!("cannot run cpio: {e}"))?;
    let mut stdin = cpio.stdin.take().expect("piped");
    let written = stdin.write_all(names.join("\n").as_bytes());
    drop(stdin);
    let status = cpio.wait().map_err(|e| format!("cpio: {e}"))?;
    written.map_err(|e| format!("cannot write to cpio: {e}"))?;
    if !status.success() {
        return Err(format!("cpio failed ({status})"));
    }
    Ok(initrd)
}

/// Appends the paths under `dir` (relative, named from `rel`) to `names`, parents first.
fn walk(dir: &Path, rel: &Path, names: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = rel.join(entry.file_name());
        names.push(rel.to_string_lossy().into_owned());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), &rel, names)?;
        }
    }
    Ok(())
}

/// Hard-links `from` to `to` when they share a file system, else copies it.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// A running QEMU: killed and reaped when dropped, whatever happened.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `kernel` with an initramfs whose `/init` runs `payloads` in order, then powers off.
///
/// Reads the serial console until QEMU ends or `timeout` passes (then QEMU is killed);
/// `echo` prints the console live on stdout. A guest that panics before its first payload
/// starts is booted again (up to 3 boots in all; `timeout` applies to each boot): QEMU 7.2's
/// TCG occasionally breaks the kernel's boot-time code patching. Fails only when the guest
/// cannot be started; what happened inside is in the [`GuestRun`].
pub fn run(
    kernel: &Kernel,
    payloads: &[Payload],
    timeout: Duration,
    echo: bool,
) -> Result<GuestRun> {
    for (i, payload) in payloads.iter().enumerate() {
        if !valid_name(&payload.name) {
            return Err(format!(
                "payload name `{}`: use letters, digits and ._+- only",
                payload.name
            ));
        }
        if payloads[..i].iter().any(|p| p.name == payload.name) {
            return Err(format!("two payloads are named `{}`", payload.name));
        }
        if let Some((key, _)) = payload.env.iter().find(|(k, _)| {
            k.is_empty() || k.contains('=') || k.starts_with(|c: char| c.is_ascii_digit())
        }) {
            return Err(format!(
                "payload {}: bad variable name `{key}`",
                payload.name
            ));
        }
        check_static(&payload.binary)?;
    }
    install::ensure(&[("qemu-system-x86_64", "qemu-system-x86")])?;

    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = cache_dir()?.join("runs").join(format!(
        "{}-{}-{nanos}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _cleanup = RemoveOnDrop(dir.clone());
    let initrd = initramfs(&dir, payloads)?;

    // The initramfs is unpacked in RAM next to its own copy: leave room for both.
    let initrd_mib = fs::metadata(&initrd).map_or(0, |m| m.len() >> 20);
    let memory = (512 + 3 * initrd_mib).max(1024);
    let mut attempt = 1;
    loop {
        let guest = boot(kernel, &initrd, memory, payloads, timeout, echo)?;
        let booted = guest.console.contains(&format!("{MARKER}BEGIN "))
            || guest.console.contains(&format!("{MARKER}DONE"));
        if !guest.panicked || booted || attempt == BOOT_ATTEMPTS {
            return Ok(guest);
        }
        // QEMU 7.2's TCG sometimes runs stale code while the kernel patches its own text (an
        // `int3` oops at boot, more often on a busy host); no payload ran, so boot again.
        eprintln!(
            "xtask: kernel {} panicked while booting, before any payload ran \
             (attempt {attempt} of {BOOT_ATTEMPTS}); booting again",
            kernel.release
        );
        attempt += 1;
    }
}

/// How many times [`run`] boots a guest that panics before its first payload starts.
const BOOT_ATTEMPTS: u32 = 3;

/// One boot of QEMU with `initrd`; see [`run`].
fn boot(
    kernel: &Kernel,
    initrd: &Path,
    memory: u64,
    payloads: &[Payload],
    timeout: Duration,
    echo: bool,
) -> Result<GuestRun> {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
        .args(["-m", &memory.to_string()])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 lsm=lockdown,capability,bpf",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut qemu = Qemu(
        command
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?,
    );

    let (lines, received) = mpsc::channel::<String>();
    let stdout = qemu.0.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if lines.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = qemu.0.stderr.take().expect("piped");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut guest = GuestRun {
        console: String::new(),
        results: payloads.iter().map(|p| (p.name.clone(), None)).collect(),
        timed_out: false,
        panicked: false,
        elapsed: Duration::ZERO,
    };
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                if line.contains("Kernel panic") {
                    guest.panicked = true;
                }
                if let Some((name, rc)) = end_marker(&line) {
                    if let Some(result) = guest.results.iter_mut().find(|(n, _)| n == name) {
                        result.1 = Some(rc);
                    }
                }
                guest.console.push_str(&line);
                guest.console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                guest.timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(received);
    let _ = qemu.0.kill();
    let status = qemu.0.wait();
    guest.elapsed = started.elapsed();
    let _ = reader.join();
    let errors = errors.join().unwrap_or_default();
    let errors = errors.trim();
    if echo && !errors.is_empty() {
        eprintln!("qemu: {errors}");
    }
    if !guest.timed_out && guest.console.is_empty() {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        return Err(format!(
            "qemu-system-x86_64 printed nothing ({status}): {errors}"
        ));
    }
    Ok(guest)
}

/// Parses `@@EBPF-MANAGER END <name> rc=<status>`, wherever it is on the line.
fn end_marker(line: &str) -> Option<(&str, i32)> {
    let at = line.find(MARKER)?;
    let rest = line[at + MARKER.len()..].strip_prefix("END ")?;
    let (name, rc) = rest.trim_end().rsplit_once(" rc=")?;
    Some((name, rc.parse().ok()?))
}

/// `cargo xtask vm --kernel V [--timeout SECS] [--env K=V]... -- BINARY [ARGS]...`: runs a
/// static binary in a guest kernel, echoes the console and exits with the binary's status
/// (124 when it did not finish: timeout, kernel panic or no result).
pub fn cli(args: &[String]) -> Result<()> {
    let usage =
        "usage: cargo xtask vm --kernel V [--timeout SECS] [--env K=V]... -- BINARY [ARGS]...\n\
                 (V: one of the kernel series below; SECS defaults to 300)";
    let usage = || format!("{usage}\nkernels: {}", KERNELS.join(", "));
    let mut series = None;
    let mut timeout = Duration::from_secs(300);
    let mut env = Vec::new();
    let mut rest = args;
    let command = loop {
        let Some((arg, tail)) = rest.split_first() else {
            return Err(usage());
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let value = |tail: &[String]| -> Result<(String, usize)> {
            match inline.clone() {
                Some(v) => Ok((v, 0)),
                None => tail
                    .first()
                    .map(|v| (v.clone(), 1))
                    .ok_or_else(|| format!("{flag} needs a value\n{}", usage())),
            }
        };
        let used = match flag {
            "--" => break tail,
            "--kernel" => {
                let (v, n) = value(tail)?;
                series = Some(v);
                n
            }
            "--timeout" => {
                let (v, n) = value(tail)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--timeout {v}: not a number of seconds"))?;
                timeout = Duration::from_secs_f64(secs);
                n
            }
            "--env" => {
                let (v, n) = value(tail)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--env {v}: expected KEY=VALUE"))?;
                env.push((k.to_string(), val.to_string()));
                n
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            _ => return Err(format!("unexpected argument `{arg}`\n{}", usage())),
        };
        rest = &tail[used..];
    };
    let series = series.ok_or_else(|| format!("--kernel is required\n{}", usage()))?;
    if !KERNELS.contains(&series.as_str()) {
        return Err(format!(
            "unknown kernel `{series}`: choose one of {}",
            KERNELS.join(", ")
        ));
    }
    let (binary, binary_args) = command
        .split_first()
        .ok_or_else(|| format!("no binary after `--`\n{}", usage()))?;
    let binary = PathBuf::from(binary);
    check_static(&binary)?;
    let mut name: String = file_name(&binary)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !valid_name(&name) {
        name = "payload".into();
    }
    let kernel = kernel(&series)?;
    let payload = Payload {
        name: name.clone(),
        binary,
        args: binary_args.to_vec(),
        env,
    };
    eprintln!(
        "xtask: booting kernel {} ({}, {}) with {name}",
        kernel.series, kernel.release, kernel.package
    );
    let guest = run(&kernel, &[payload], timeout, true)?;
    let status = guest.results.first().and_then(|(_, rc)| *rc);
    let secs = guest.elapsed.as_secs_f64();
    let code = if guest.timed_out {
        eprintln!("xtask: timed out after {secs:.1}s (--timeout)");
        124
    } else if guest.panicked {
        eprintln!("xtask: the guest kernel panicked ({secs:.1}s)");
        124
    } else if let Some(rc) = status {
        eprintln!(
            "xtask: {name} exited with {rc} on {} ({secs:.1}s)",
            kernel.release
        );
        rc
    } else {
        eprintln!("xtask: {name} never finished ({secs:.1}s)");
        124
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_cloud_kernels_of_one_series() {
        assert_eq!(
            rank("linux-image-6.1.0-56-cloud-amd64", "6.1"),
            Some(vec![0, 56])
        );
        assert_eq!(
            rank("linux-image-6.12.117+deb12-cloud-amd64", "6.12"),
            Some(vec![117, 12])
        );
        for other in [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.1.0-0.deb11.52-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.1-cloud-amd64",
            "linux-image-6.1.0-56-amd64",
        ] {
            assert_eq!(rank(other, "6.1"), None, "{other}");
        }
    }

    #[test]
    fn parses_end_markers_anywhere_on_a_line() {
        assert_eq!(end_marker("@@EBPF-MANAGER END a-b rc=3"), Some(("a-b", 3)));
        assert_eq!(
            end_marker("noise@@EBPF-MANAGER END x rc=0 "),
            Some(("x", 0))
        );
        assert_eq!(end_marker("@@EBPF-MANAGER BEGIN x"), None);
    }

    #[test]
    fn quotes_arguments_for_the_shell() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    /// Boots Linux 6.1 (downloaded on first use): `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore]
    fn runs_payloads_in_order_in_a_guest() {
        // Busybox picks its applet from its name, /payload/<name>: name payloads after shells.
        let sh = |name: &str, script: &str| Payload {
            name: name.into(),
            binary: PathBuf::from("/bin/busybox"),
            args: vec!["-c".into(), script.into()],
            env: vec![("WHO".into(), "a 'quoted' value".into())],
        };
        let payloads = [sh("sh", "echo \"$WHO\"; exit 4"), sh("ash", "pwd")];
        let kernel = kernel("6.1").unwrap();
        let guest = run(&kernel, &payloads, Duration::from_secs(120), false).unwrap();
        assert_eq!(
            guest.results,
            [("sh".to_string(), Some(4)), ("ash".to_string(), Some(0))]
        );
        assert!(
            guest.console.contains("a 'quoted' value\n"),
            "{}",
            guest.console
        );
        assert!(guest.console.contains("/tmp\n"), "{}", guest.console);
        assert!(!guest.timed_out && !guest.panicked);
    }
}
