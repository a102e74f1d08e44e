//! Map spec editors: change a map's `max_entries` before the map is created.
//!
//! Run: `cargo run --example mapspec_editor` (as root).

use std::process::ExitCode;

use ebpf_manager::{aya::maps::Array, Error, Manager, MapSpecEditor, Options, Probe};

const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");

fn len(m: &Manager, name: &str) -> u32 {
    Array::<_, u64>::try_from(m.get_map(name).expect("map"))
        .expect("array")
        .len()
}

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let declare = || Manager {
        probes: vec![Probe {
            ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut plain = declare();
    plain.init(OBJECT)?;
    let mut edited = declare();
    edited.init_with_options(
        OBJECT,
        Options {
            map_spec_editors: vec![MapSpecEditor {
                name: "hits".into(),
                max_entries: Some(1024),
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let (before, after) = (len(&plain, "hits"), len(&edited, "hits"));
    println!("hits: {before} entries as compiled, {after} with the editor");
    if before == 8 && after == 1024 {
        println!("mapspec_editor: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
