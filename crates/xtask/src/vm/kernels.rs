//! Finding and downloading Debian kernels: a private apt state in the cache picks the package
//! of a series, `apt-get download` fetches it and its `vmlinuz` is unpacked into the cache.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{cache_dir, Kernel, RemoveOnDrop, KERNELS};
use crate::{install, Result};

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
/// The kernel of `series` (one of [`KERNELS`]), downloaded from Debian into the cache the
/// first time; later calls find it there and download nothing.
pub fn kernel(series: &str) -> Result<Kernel> {
    let wanted = wanted(series)?;
    let dir = cache_dir()?.join("kernels").join(series);
    if let Some(kernel) = cached(series, &dir)? {
        return Ok(kernel);
    }
    // Unpacked by an earlier xtask that kept no modules: unpack it again.
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
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
    keep_modules(&unpacked, &keep.join("modules"))?;
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

/// The modules the guests load at boot, with the modules they depend on: nf_conntrack, whose
/// kfuncs a test calls from XDP (Linux 5.18; Debian builds it as a module).
const MODULES: &[&str] = &["nf_conntrack"];

/// Copies [`MODULES`] and their dependencies out of the unpacked package into `to`,
/// uncompressed (busybox's insmod reads plain `.ko`), named `NN-name.ko` in load order. A
/// module the package lacks is built in or absent: skipped.
fn keep_modules(unpacked: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut files = std::collections::HashMap::new();
    for root in ["lib/modules", "usr/lib/modules"] {
        find_modules(&unpacked.join(root), &mut files)?;
    }
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for module in MODULES {
        visit(module, &files, &mut seen, &mut order)?;
    }
    for (i, (name, bytes)) in order.iter().enumerate() {
        let path = to.join(format!("{i:02}-{name}.ko"));
        fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Adds `name`'s dependencies, then `name`, to `order`.
fn visit(
    name: &str,
    files: &std::collections::HashMap<String, PathBuf>,
    seen: &mut std::collections::HashSet<String>,
    order: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(path) = files.get(name) else {
        return Ok(());
    };
    let bytes = uncompressed(path)?;
    for dependency in depends(&bytes) {
        visit(&dependency, files, seen, order)?;
    }
    order.push((name.to_string(), bytes));
    Ok(())
}

/// The `depends=` of a module's `.modinfo`, names with `_` for `-`.
fn depends(module: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = module.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &module[at + key.len()..];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(value.len())];
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// The module file at `path`, decompressed when it is `.ko.xz` or `.ko.zst`.
fn uncompressed(path: &Path) -> Result<Vec<u8>> {
    let name = file_name(path);
    let tool = if name.ends_with(".xz") {
        Some(("xz", "xz-utils"))
    } else if name.ends_with(".zst") {
        Some(("zstd", "zstd"))
    } else {
        None
    };
    let Some((program, package)) = tool else {
        return fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    };
    install::ensure(&[(program, package)])?;
    let out = Command::new(program)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} -dc {} failed", path.display()));
    }
    Ok(out.stdout)
}

/// Every `*.ko[.xz|.zst]` under `dir`, by module name (`-` read as `_`).
fn find_modules(dir: &Path, files: &mut std::collections::HashMap<String, PathBuf>) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_modules(&path, files)?;
            continue;
        }
        let name = file_name(&path);
        for suffix in [".ko", ".ko.xz", ".ko.zst"] {
            if let Some(module) = name.strip_suffix(suffix) {
                files.insert(module.replace('-', "_"), path.clone());
            }
        }
    }
    Ok(())
}

/// The kernel in `dir`, when a previous call left one there.
fn cached(series: &str, dir: &Path) -> Result<Option<Kernel>> {
    let Ok(package) = fs::read_to_string(dir.join("package")) else {
        return Ok(None);
    };
    let Some(vmlinuz) = only_file(dir, |n| n.starts_with("vmlinuz-"))? else {
        return Ok(None);
    };
    if !dir.join("modules").is_dir() {
        return Ok(None);
    }
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

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))
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
}
