//! Map router across managers: manager `b` owns a counter map; manager `a` routes it into its
//! map of maps (`outer[0]`), so that a's program (a tracepoint on mkdir) counts into b's map.
//! The Go library's map_router example does the same with `MapRoute.Map`.
//!
//! Run: `cargo run --example map_router` (as root).

use std::{process::ExitCode, sync::Arc};

use ebpf_manager::{
    aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, MapRoute, Options, Probe,
};

/// ebpf-fixtures/src/router.bpf.c
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/router.bpf.o");

fn count(m: &Manager, name: &str) -> u64 {
    Array::<_, u64>::try_from(m.get_map(name).expect("map"))
        .expect("array")
        .get(&0, 0)
        .unwrap_or(0)
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    // b: no probes, only the maps of the object.
    let mut b = Manager::default();
    b.init(OBJECT)?;
    let shared = Arc::new(b.map_fd("inner_a")?);

    let mut a = Manager {
        probes: vec![Probe {
            ebpf_func_name: "router_entry".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    a.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            map_router: vec![MapRoute {
                routing_map_name: "outer".into(),
                key: 0,
                map_name: "inner_a (of manager b)".into(),
                map: Some(shared),
            }],
            ..Default::default()
        },
    )?;
    a.start()?;
    let dir = std::env::temp_dir().join(format!("ebpf-manager-map-router-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .and_then(|()| std::fs::remove_dir(&dir))
        .map_err(|source| Error::Io { path: dir, source })?;
    let (in_b, in_a) = (count(&b, "inner_a"), count(&a, "inner_a"));
    println!("after one mkdir: b's inner_a={in_b}, a's own inner_a={in_a}");
    a.stop(CleanupType::CleanAll)?;
    b.stop(CleanupType::CleanAll)?;
    if (in_b, in_a) == (1, 0) {
        println!("map_router: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
