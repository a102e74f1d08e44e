//! Pinning: a first manager pins its `hits` map; a second manager declaring the same pin path
//! reuses that map (it sees the first one's counts); `stop(CleanupType)` decides which pins go.
//!
//! Run: `cargo run --example object_pinning` (as root). Pins live on bpffs: where nothing is
//! mounted at /sys/fs/bpf (minimal VMs, containers), `Options::mount_bpffs` mounts it.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use ebpf_manager::{
    aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, Map, Options, Probe,
};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");
/// The slot of `tracepoint_sys_enter_mkdir` in `hits`.
const SLOT: u32 = 2;

fn manager(uid: &str, pin: &Path) -> Result<Manager, Error> {
    let mut m = Manager {
        probes: vec![Probe {
            uid: uid.into(),
            ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
            ..Default::default()
        }],
        maps: vec![Map {
            name: "hits".into(),
            pin_path: Some(pin.to_path_buf()),
        }],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            // Without it, a machine with nothing at /sys/fs/bpf gets Error::Bpffs, naming the fix.
            mount_bpffs: true,
            ..Default::default()
        },
    )?;
    Ok(m)
}

fn hits(m: &Manager) -> u64 {
    Array::<_, u64>::try_from(m.get_map("hits").expect("hits"))
        .expect("array")
        .get(&SLOT, 0)
        .unwrap_or(0)
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    let pin = PathBuf::from(format!(
        "/sys/fs/bpf/ebpf_manager_example_{}_hits",
        std::process::id()
    ));
    let mut first = manager("first", &pin)?;
    first.start()?;
    let dir = std::env::temp_dir().join(format!("ebpf-manager-pinning-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .and_then(|()| std::fs::remove_dir(&dir))
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    println!(
        "first manager pinned {} and counted {}",
        pin.display(),
        hits(&first)
    );
    let mut second = manager("second", &pin)?;
    let seen = hits(&second);
    println!("second manager reused the pin and sees {seen}");
    second.stop(CleanupType::CleanInternal)?;
    let kept = pin.exists();
    println!("second stopped with CleanInternal: pin kept = {kept} (it did not create it)");
    first.stop(CleanupType::CleanAll)?;
    let removed = !pin.exists();
    println!("first stopped with CleanAll: pin removed = {removed}");
    if seen == 1 && kept && removed {
        println!("object_pinning: ok");
        Ok(())
    } else {
        let _ = std::fs::remove_file(&pin);
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
