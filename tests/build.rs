//! Builds the C program the uprobe tests probe (ebpf-fixtures/user/uprobe_target.c) with gcc:
//! a static executable, so it runs in the QEMU guests too, and a shared library without libc.
//! The tests embed both with `include_bytes!` and write them to unique temporary files.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let source = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../ebpf-fixtures/user/uprobe_target.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", source.display());
    gcc(
        &["-static", "-O1", "-fno-inline", "-Wall", "-Werror"],
        &source,
        &out.join("uprobe_target"),
    );
    gcc(
        &[
            "-shared",
            "-fPIC",
            "-nostdlib",
            "-O1",
            "-fno-inline",
            "-Wall",
            "-Werror",
            "-DUPROBE_TARGET_LIBRARY",
        ],
        &source,
        &out.join("libuprobe_target.so"),
    );
}

fn gcc(flags: &[&str], source: &std::path::Path, output: &std::path::Path) {
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(output)
        .arg(source)
        .status()
        .unwrap_or_else(|e| {
            panic!("running gcc (apt-get install gcc libc6-dev): {e}");
        });
    assert!(
        status.success(),
        "gcc {flags:?} {} failed ({status})",
        source.display()
    );
}
