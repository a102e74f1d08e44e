//! `cargo xtask fixtures [--check]`: build the eBPF objects of `ebpf-fixtures/` with clang.
//!
//! The objects are committed so that the examples and tests need no clang. The build is
//! reproducible: fixed flags, relative paths, DWARF stripped (BTF kept), so `--check` can
//! compare byte for byte. It needs the clang of Debian bookworm (14): another version
//! produces other bytes, and `--check` says so.

use std::{fs, path::Path, process::Command};

use crate::{install, root, Result};

/// Flags every object is built with; changing them changes every object.
const CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    "-Iinclude",
    "-I/usr/include/x86_64-linux-gnu",
    "-Wall",
    "-Werror",
];

/// Entry point of `cargo xtask fixtures`.
pub fn run(args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [a] if a == "--check" => true,
        _ => return Err("usage: cargo xtask fixtures [--check]".into()),
    };
    // libbpf's two helper headers are vendored in ebpf-fixtures/include/bpf, so clang,
    // llvm-strip and the kernel's UAPI headers (linux-libc-dev) are all a build needs.
    install::ensure(&[("clang", "clang"), ("llvm-strip", "llvm")])?;
    if !Path::new("/usr/include/linux/bpf.h").exists() {
        return Err("the kernel's UAPI headers are missing: apt-get install linux-libc-dev".into());
    }
    let dir = root().join("ebpf-fixtures");
    let out = std::env::temp_dir().join(format!("ebpf-fixtures-{}", std::process::id()));
    fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let result = build_all(&dir, &out, check);
    let _ = fs::remove_dir_all(&out);
    result
}

fn sources(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir.join("src"))
        .map_err(|e| format!("reading {}/src: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".bpf.c").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn build_all(dir: &Path, out: &Path, check: bool) -> Result<()> {
    let mut stale = Vec::new();
    let names = sources(dir)?;
    for name in &names {
        let tmp = out.join(format!("{name}.o"));
        build_one(dir, name, &tmp)?;
        let committed = dir.join(format!("{name}.bpf.o"));
        let fresh = fs::read(&tmp).map_err(|e| format!("reading {}: {e}", tmp.display()))?;
        if check {
            if fs::read(&committed).ok().as_deref() != Some(fresh.as_slice()) {
                stale.push(committed.display().to_string());
            }
        } else {
            fs::write(&committed, &fresh)
                .map_err(|e| format!("writing {}: {e}", committed.display()))?;
            println!("built {}", committed.display());
        }
    }
    if !stale.is_empty() {
        return Err(format!(
            "these objects differ from what their sources build to (with {}); run `cargo xtask fixtures` and commit them:\n  {}",
            clang_version(),
            stale.join("\n  ")
        ));
    }
    if check {
        println!("fixtures: {} objects match their sources", names.len());
    }
    Ok(())
}

fn build_one(dir: &Path, name: &str, out: &Path) -> Result<()> {
    let status = Command::new("clang")
        .current_dir(dir)
        .args(CFLAGS)
        // BTF line info carries the source's absolute path: map the checkout away.
        .arg(format!("-fdebug-prefix-map={}=.", dir.display()))
        .arg("-c")
        .arg(format!("src/{name}.bpf.c"))
        .arg("-o")
        .arg(out)
        .status()
        .map_err(|e| format!("running clang: {e}"))?;
    if !status.success() {
        return Err(format!("clang failed on src/{name}.bpf.c ({status})"));
    }
    // DWARF carries the build directory; BTF (.BTF, .BTF.ext) is kept for aya.
    let status = Command::new("llvm-strip")
        .arg("-g")
        .arg(out)
        .status()
        .map_err(|e| format!("running llvm-strip: {e}"))?;
    if !status.success() {
        return Err(format!("llvm-strip failed on {}", out.display()));
    }
    Ok(())
}

fn clang_version() -> String {
    Command::new("clang")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "clang".into())
}
