//! Routers: `router_entry` (a tracepoint on mkdir) counts in the inner map that `outer[0]`
//! routes to, then tail-calls `jump_table[1]`. The manager fills both at start
//! (`tail_call_router`, `map_router`) and changes the map route at runtime.
//!
//! Run: `cargo run --example program_router` (as root). `map_router` routes another manager's
//! map.

use std::process::ExitCode;

use ebpf_manager::{
    aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, MapRoute, Options, Probe,
    ProbeIdentificationPair, TailCallRoute,
};

/// ebpf-fixtures/src/router.bpf.c
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/router.bpf.o");

fn count(m: &Manager, name: &str) -> u64 {
    Array::<_, u64>::try_from(m.get_map(name).expect("map"))
        .expect("array")
        .get(&0, 0)
        .unwrap_or(0)
}

fn mkdir() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("ebpf-manager-router-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .and_then(|()| std::fs::remove_dir(&dir))
        .map_err(|source| Error::Io { path: dir, source })
}

fn route(inner: &str) -> MapRoute {
    MapRoute {
        routing_map_name: "outer".into(),
        key: 0,
        map_name: inner.into(),
        ..Default::default()
    }
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    let mut m = Manager {
        probes: vec![Probe {
            ebpf_func_name: "router_entry".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    m.init_with_options(
        OBJECT,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", tid)],
            tail_call_router: vec![TailCallRoute {
                prog_array_name: "jump_table".into(),
                key: 1,
                probe_identification_pair: ProbeIdentificationPair::new("", "tail_target"),
                ..Default::default()
            }],
            map_router: vec![route("inner_a")],
            ..Default::default()
        },
    )?;
    m.start()?;
    mkdir()?;
    println!(
        "routed to inner_a: inner_a={} inner_b={} tail_hits={}",
        count(&m, "inner_a"),
        count(&m, "inner_b"),
        count(&m, "tail_hits")
    );
    m.update_map_routes(&[route("inner_b")])?;
    mkdir()?;
    let (a, b, tail) = (
        count(&m, "inner_a"),
        count(&m, "inner_b"),
        count(&m, "tail_hits"),
    );
    println!("routed to inner_b: inner_a={a} inner_b={b} tail_hits={tail}");
    m.stop(CleanupType::CleanAll)?;
    if (a, b, tail) == (1, 1, 2) {
        println!("program_router: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
