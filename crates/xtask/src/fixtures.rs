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
    install::ensure(&[("clang", "clang"), ("llvm-strip", "llvm"), ("llc", "llvm")])?;
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
    // The Rust programs (aya-ebpf), checked the same way.
    let built = rust::build(dir, out)?;
    for (object, fresh) in &built {
        let committed = dir.join(object);
        if check {
            if fs::read(&committed).ok().as_deref() != Some(fresh.as_slice()) {
                return Err(format!(
                    "{} differs from what ebpf-fixtures/rust builds to; run `cargo xtask fixtures` and commit it",
                    committed.display()
                ));
            }
        } else {
            fs::write(&committed, fresh)
                .map_err(|e| format!("writing {}: {e}", committed.display()))?;
            println!("built {}", committed.display());
        }
    }
    if check {
        println!(
            "fixtures: {} objects match their sources ({} C, {} Rust)",
            names.len() + built.len(),
            names.len(),
            built.len()
        );
    }
    Ok(())
}

/// The eBPF side written in Rust: ebpf-fixtures/rust, built with the nightly toolchain
/// (`-Z build-std=core` for `bpfel-unknown-none`) and bpf-linker, which are installed here
/// when missing (Debian's llvm-22-dev, then `cargo install bpf-linker`, about a minute).
mod rust {
    use std::{fs, path::Path, process::Command};

    use crate::{install, Result};

    /// Each binary of ebpf-fixtures/rust and its committed object, in ebpf-fixtures.
    const OBJECTS: [(&str, &str); 2] = [
        ("helloworld", "helloworld-rust.bpf.o"),
        ("aya_log", "aya-log-rust.bpf.o"),
    ];
    /// bpf-linker's release that links with LLVM 22 (rustc's own LLVM on this toolchain).
    const BPF_LINKER: &str = "0.13.0";

    /// Builds every binary and returns each committed object's name with its fresh bytes.
    pub(super) fn build(dir: &Path, out: &Path) -> Result<Vec<(&'static str, Vec<u8>)>> {
        tools()?;
        let crate_dir = dir.join("rust");
        let target_dir = out.join("rust-target");
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
        // Paths the object's BTF would carry, made the same on every machine like this one.
        let rustflags = [
            "-C debuginfo=2".to_owned(),
            "-C link-arg=--btf".to_owned(),
            format!("--remap-path-prefix={}=.", crate_dir.display()),
            format!("--remap-path-prefix={home}/.cargo=cargo"),
            format!("--remap-path-prefix={}=rust", sysroot.trim()),
        ]
        .join(" ");
        let status = Command::new("cargo")
            .args(["+nightly", "build", "--release", "--locked", "--quiet"])
            .current_dir(&crate_dir)
            .env("RUSTFLAGS", rustflags)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .status()
            .map_err(|e| format!("running cargo +nightly: {e}"))?;
        if !status.success() {
            return Err(format!("building ebpf-fixtures/rust failed ({status})"));
        }
        let mut objects = Vec::new();
        for (bin, object) in OBJECTS {
            let built = target_dir.join("bpfel-unknown-none/release").join(bin);
            let stripped = out.join(object);
            // DWARF carries build paths; BTF (.BTF, .BTF.ext) stays for aya.
            let status = Command::new("llvm-strip")
                .arg("-g")
                .arg(&built)
                .arg("-o")
                .arg(&stripped)
                .status()
                .map_err(|e| format!("running llvm-strip: {e}"))?;
            if !status.success() {
                return Err(format!("llvm-strip failed on {}", built.display()));
            }
            let bytes =
                fs::read(&stripped).map_err(|e| format!("reading {}: {e}", stripped.display()))?;
            objects.push((object, bytes));
        }
        Ok(objects)
    }

    /// The nightly toolchain's rust-src and bpf-linker, installed when missing.
    fn tools() -> Result<()> {
        let components = output("rustup", &["component", "list", "--installed", "--toolchain", "nightly"])
            .map_err(|e| format!("{e} (the Rust fixture needs a nightly toolchain: rustup toolchain install nightly)"))?;
        if !components.lines().any(|c| c.starts_with("rust-src")) {
            run(
                "rustup",
                &["component", "add", "rust-src", "--toolchain", "nightly"],
            )?;
        }
        if install::find("bpf-linker").is_none() {
            install::ensure_files(&[("/usr/lib/llvm-22/bin/llvm-config", "llvm-22-dev")])?;
            // bpf-linker's build looks for LLVM under these (Debian keeps it in /usr/lib/llvm-22).
            let path = format!(
                "/usr/lib/llvm-22/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            );
            run_with(
                &[
                    ("PATH", path.as_str()),
                    ("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
                    ("LLVM_PREFIX", "/usr/lib/llvm-22"),
                ],
                "cargo",
                &[
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER,
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ],
            )?;
        }
        Ok(())
    }

    fn run(command: &str, args: &[&str]) -> Result<()> {
        run_with(&[], command, args)
    }

    fn run_with(env: &[(&str, &str)], command: &str, args: &[&str]) -> Result<()> {
        println!("xtask: {command} {}", args.join(" "));
        let status = Command::new(command)
            .args(args)
            .envs(env.iter().copied())
            .status()
            .map_err(|e| format!("running {command}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{command} {} failed ({status})", args.join(" ")))
        }
    }

    fn output(command: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(command)
            .args(args)
            .output()
            .map_err(|e| format!("running {command}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{command} {} failed ({})",
                args.join(" "),
                out.status
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The marker of a source built as the Go ebpf-manager examples' Makefile builds: clang
/// emits LLVM IR for the host, llc turns it into BPF, no `-g` (so no BTF).
const GO_STYLE: &str = "// build: go-style";

fn build_one(dir: &Path, name: &str, out: &Path) -> Result<()> {
    let source = format!("src/{name}.bpf.c");
    let text =
        fs::read_to_string(dir.join(&source)).map_err(|e| format!("reading {source}: {e}"))?;
    if text.lines().nth(1).is_some_and(|l| l.starts_with(GO_STYLE)) {
        return build_go_style(dir, &source, out);
    }
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

fn build_go_style(dir: &Path, source: &str, out: &Path) -> Result<()> {
    let ir = Command::new("clang")
        .current_dir(dir)
        .args(["-O2", "-emit-llvm", "-D__TARGET_ARCH_x86", "-Iinclude"])
        .args([
            "-I/usr/include/x86_64-linux-gnu",
            "-Wall",
            "-Werror",
            "-c",
            source,
        ])
        .args(["-o", "-"])
        .output()
        .map_err(|e| format!("running clang: {e}"))?;
    if !ir.status.success() {
        return Err(format!(
            "clang failed on {source} ({}): {}",
            ir.status,
            String::from_utf8_lossy(&ir.stderr)
        ));
    }
    let mut llc = Command::new("llc")
        .args(["-march=bpf", "-filetype=obj", "-o"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running llc: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = llc.stdin.take().expect("piped");
        stdin
            .write_all(&ir.stdout)
            .map_err(|e| format!("writing to llc: {e}"))?;
    }
    let status = llc.wait().map_err(|e| format!("running llc: {e}"))?;
    if !status.success() {
        return Err(format!("llc failed on {source} ({status})"));
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
