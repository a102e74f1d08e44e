//! `cargo xtask public-api [--bless]`: the library's public API, listed from rustdoc JSON
//! (nightly toolchain) by the `public-api` crate, compared with the committed
//! `crates/ebpf-manager/public-api.txt`. A change of the public surface is then a change of
//! that file, visible in review; `--bless` rewrites it.

use std::process::Command;

use crate::{root, Result};

/// The features users enable; the test-only ones (`fault-injection`, `fuzzing`) are left out.
const FEATURES: &str = "tokio,serde,metrics";

pub fn run(args: &[String]) -> Result<()> {
    let bless = match args {
        [] => false,
        [a] if a == "--bless" => true,
        _ => return Err("usage: cargo xtask public-api [--bless]".into()),
    };
    let listed = list()?;
    let file = root().join("crates/ebpf-manager/public-api.txt");
    if bless {
        std::fs::write(&file, &listed).map_err(|e| format!("{}: {e}", file.display()))?;
        println!(
            "public-api: wrote {} items to {}",
            listed.lines().count(),
            file.display()
        );
        return Ok(());
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    if committed == listed {
        println!("public-api: {} items, as committed", listed.lines().count());
        return Ok(());
    }
    let old: std::collections::BTreeSet<&str> = committed.lines().collect();
    let new: std::collections::BTreeSet<&str> = listed.lines().collect();
    let mut diff = String::new();
    for gone in old.difference(&new) {
        diff.push_str(&format!("\n  - {gone}"));
    }
    for added in new.difference(&old) {
        diff.push_str(&format!("\n  + {added}"));
    }
    Err(format!(
        "the public API differs from {} (review it, then `cargo xtask public-api --bless`):{diff}",
        file.display()
    ))
}

/// One line per public item, sorted.
fn list() -> Result<String> {
    let target = root().join("target/public-api");
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "doc",
            "--no-deps",
            "--quiet",
            "-p",
            "ebpf-manager",
        ])
        .args(["--features", FEATURES, "--target-dir"])
        .arg(&target)
        .current_dir(root())
        .env("RUSTDOCFLAGS", "-Z unstable-options --output-format json")
        // The outer cargo's settings are not the nightly build's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTDOC")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("running cargo +nightly doc: {e}"))?;
    if !status.success() {
        return Err(format!(
            "rustdoc JSON of ebpf-manager failed ({status}); it needs the nightly toolchain \
             (`rustup toolchain list` must show one)"
        ));
    }
    let json = target.join("doc/ebpf_manager.json");
    // Blanket impls (`impl<T> From<T> for T`) are noise; auto traits (Send, Sync) are kept:
    // losing one breaks users.
    let api = public_api::Builder::from_rustdoc_json(&json)
        .omit_blanket_impls(true)
        .build()
        .map_err(|e| format!("{}: {e}", json.display()))?;
    let mut lines: Vec<String> = api.items().map(|i| i.to_string()).collect();
    lines.sort();
    lines.dedup();
    Ok(lines.join("\n") + "\n")
}
