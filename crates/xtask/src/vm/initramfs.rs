//! The guest's initramfs: busybox, the payload binaries and an `/init` that runs them in
//! order between console markers, packed by `cpio` into an uncompressed archive.

use std::{
    env, fs,
    io::Write,
    os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{Payload, MARKER};
use crate::{install, Result};

/// Fails unless `path` is a static x86_64 ELF executable (no `PT_INTERP` program header).
pub(super) fn check_static(path: &Path) -> Result<()> {
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

pub(super) fn valid_name(name: &str) -> bool {
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
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         mount -t tmpfs tmpfs /tmp\n\
         ip link set lo up\n\
         for m in /modules/*.ko; do [ -e \"$m\" ] && { insmod \"$m\" || echo \"insmod $m failed\"; }; done\n",
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
/// `/payload`, the kernel's `config` in `/boot` (as distributions install it), the modules of
/// `modules` in `/modules` (loaded by `/init` in name order), and `/init`. Returns its path.
pub(super) fn initramfs(
    run: &Path,
    payloads: &[Payload],
    config: Option<&Path>,
    modules: &Path,
) -> Result<PathBuf> {
    install::ensure(&[("busybox", "busybox-static"), ("cpio", "cpio")])?;
    let busybox = env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .ok_or("busybox is not on PATH")?;
    check_static(&busybox).map_err(|e| format!("{e} (install busybox-static)"))?;

    // The archive copies every payload, and so does the tree when a payload cannot be
    // hard-linked into it (another file system): check for room first, so that a full disk is
    // told as such rather than as copy or cpio write errors half way through.
    fs::create_dir_all(run).map_err(|e| format!("cannot create {}: {e}", run.display()))?;
    let run_dev = fs::metadata(run).map(|m| m.dev()).ok();
    let needed = payloads
        .iter()
        .map(|p| p.binary.as_path())
        .chain([busybox.as_path()])
        .filter_map(|path| fs::metadata(path).ok())
        .map(|m| {
            if Some(m.dev()) == run_dev {
                m.len()
            } else {
                2 * m.len()
            }
        })
        .sum::<u64>();
    check_room(run, needed)?;

    let root = run.join("root");
    let mkdir =
        |d: &Path| fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()));
    for d in [
        "bin", "proc", "sys", "dev", "tmp", "payload", "boot", "modules",
    ] {
        mkdir(&root.join(d))?;
    }
    if let Ok(entries) = fs::read_dir(modules) {
        for entry in entries.flatten() {
            copy(&entry.path(), &root.join("modules").join(entry.file_name()))?;
        }
    }
    if let Some(config) = config {
        let name = config.file_name().ok_or("a kernel config without a name")?;
        copy(config, &root.join("boot").join(name))?;
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

/// Fails, saying how much is missing, unless the file system of `dir` has `needed` bytes
/// free and 256 MiB to spare (another guest may be writing its archive beside this one).
fn check_room(dir: &Path, needed: u64) -> Result<()> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run df: {e}"))?;
    // Without a reading, let cpio tell.
    let Some(free) = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok())
    else {
        return Ok(());
    };
    let spare = 256 << 20;
    if free < needed + spare {
        return Err(format!(
            "not enough disk for the initramfs in {}: it needs {} MiB (and {} MiB to spare), \
             {} MiB are free; free some space, or set EBPF_MANAGER_CACHE to a larger file system",
            dir.display(),
            needed >> 20,
            spare >> 20,
            free >> 20
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_arguments_for_the_shell() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
