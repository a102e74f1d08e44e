//! `clone_program` makes a new kernel program from the same function with its own constants;
//! `add_hook` runs the same kernel program at a second hook point. The program counts mkdir
//! calls in slot `clone_tag` of the `tagged` map, which the clone shares with the original.
//!
//! Run: `cargo run --example clone_vs_add_hook` (as root).

use std::process::ExitCode;

use ebpf_manager::{aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, Options, Probe};

/// ebpf-fixtures/src/probes.bpf.c: `tagged_sys_enter_mkdir` does `tagged[clone_tag]++` for the
/// thread `filter_tid`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");

fn tagged(m: &Manager) -> Vec<u64> {
    let map = Array::<_, u64>::try_from(m.get_map("tagged").expect("tagged")).expect("array");
    (0..3).map(|i| map.get(&i, 0).unwrap_or(0)).collect()
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let original = Probe {
        uid: "original".into(),
        ebpf_func_name: "tagged_sys_enter_mkdir".into(),
        ..Default::default()
    };
    let mut m = Manager {
        probes: vec![original],
        ..Default::default()
    };
    let options = Options {
        constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
        ..Default::default()
    };
    m.init_with_options(OBJECT, options)?;
    m.start()?;
    // A clone: its own program, clone_tag = 1, same maps.
    let clone = Probe {
        uid: "clone".into(),
        ebpf_func_name: "tagged_sys_enter_mkdir".into(),
        ..Default::default()
    };
    m.clone_program(
        "original",
        clone.clone(),
        vec![ConstantEditor::new("clone_tag", 1u32)],
        vec![],
    )?;
    // A hook: the original program (clone_tag = 0) also on rmdir.
    let hook = Probe {
        uid: "rmdir".into(),
        ebpf_func_name: "tagged_sys_enter_mkdir".into(),
        tracepoint_category: Some("syscalls".into()),
        tracepoint_name: Some("sys_enter_rmdir".into()),
        ..Default::default()
    };
    m.add_hook("original", hook.clone())?;
    let ids: Vec<u32> = [&clone.id(), &hook.id()]
        .iter()
        .map(|id| {
            m.get_program(id)
                .and_then(|p| p.info().ok())
                .map_or(0, |i| i.id())
        })
        .collect();
    let original_id = m
        .get_program(&ebpf_manager::ProbeIdentificationPair::new(
            "original",
            "tagged_sys_enter_mkdir",
        ))
        .and_then(|p| p.info().ok())
        .map_or(0, |i| i.id());
    println!(
        "kernel program ids: original {original_id}, clone {}, hook {}",
        ids[0], ids[1]
    );

    let before = tagged(&m);
    let dir = std::env::temp_dir().join(format!("ebpf-manager-clone-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .and_then(|()| std::fs::remove_dir(&dir))
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    let after = tagged(&m);
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    println!("one mkdir and one rmdir later: tagged[0] +{} (original on mkdir, hook on rmdir), tagged[1] +{} (clone on mkdir)", delta[0], delta[1]);
    m.stop(CleanupType::CleanAll)?;
    if delta[0] == 2 && delta[1] == 1 && ids[1] == original_id && ids[0] != original_id {
        println!("clone_vs_add_hook: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
