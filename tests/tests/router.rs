//! Tail-call and map routers, at start and at runtime.

use ebpf_manager::{
    CleanupType, ConstantEditor, Error, Manager, MapRoute, Options, Probe,
    ProbeIdentificationPair as Id, TailCallRoute,
};
use integration_tests::*;

const ROUTER: &[u8] = include_bytes!("../../ebpf-fixtures/router.bpf.o");

fn count(m: &Manager, map: &str) -> u64 {
    let map = m.get_map(map).expect("map");
    aya::maps::Array::<_, u64>::try_from(map)
        .expect("array")
        .get(&0, 0)
        .expect("slot 0")
}

fn routed(tail: Vec<TailCallRoute>, maps: Vec<MapRoute>) -> ebpf_manager::Result<Manager> {
    setup();
    let mut m = Manager {
        probes: vec![probe("entry", "router_entry")],
        ..Default::default()
    };
    m.init_with_options(
        ROUTER,
        Options {
            constant_editors: vec![ConstantEditor::new("filter_tid", gettid())],
            tail_call_router: tail,
            map_router: maps,
            ..Default::default()
        },
    )?;
    Ok(m)
}

fn tail_route() -> TailCallRoute {
    TailCallRoute {
        prog_array_name: "jump_table".into(),
        key: 1,
        probe_identification_pair: Id::new("", "tail_target"),
        ..Default::default()
    }
}

fn map_route(inner: &str) -> MapRoute {
    MapRoute {
        routing_map_name: "outer".into(),
        key: 0,
        map_name: inner.into(),
        ..Default::default()
    }
}

#[test]
fn router_routes_apply_at_start_and_update_at_runtime() {
    let mut m = routed(vec![tail_route()], vec![map_route("inner_b")]).unwrap();
    m.start().unwrap();
    mkdir_rmdir("router-1");
    assert_eq!(count(&m, "inner_b"), 1, "outer[0] routes to inner_b");
    assert_eq!(count(&m, "inner_a"), 0);
    assert_eq!(
        count(&m, "tail_hits"),
        1,
        "the tail call reached tail_target"
    );

    m.update_map_routes(&[map_route("inner_a")]).unwrap();
    mkdir_rmdir("router-2");
    assert_eq!(count(&m, "inner_a"), 1, "outer[0] now routes to inner_a");
    assert_eq!(count(&m, "inner_b"), 1);
    assert_eq!(count(&m, "tail_hits"), 2);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn router_without_routes_reaches_nothing() {
    let mut m = routed(vec![], vec![]).unwrap();
    m.start().unwrap();
    mkdir_rmdir("router-none");
    assert_eq!(
        count(&m, "tail_hits"),
        0,
        "an empty program array slot: no tail call"
    );
    assert_eq!(count(&m, "inner_a") + count(&m, "inner_b"), 0);
    m.update_tail_call_routes(&[tail_route()]).unwrap();
    mkdir_rmdir("router-late");
    assert_eq!(count(&m, "tail_hits"), 1);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn router_bad_routes_are_errors_at_start() {
    let cases = [
        (
            vec![TailCallRoute {
                prog_array_name: "no_such_map".into(),
                ..tail_route()
            }],
            vec![],
            "no map `no_such_map`",
        ),
        (
            vec![TailCallRoute {
                probe_identification_pair: Id::new("", "no_such_program"),
                ..tail_route()
            }],
            vec![],
            "no program `no_such_program`",
        ),
        (
            vec![TailCallRoute {
                prog_array_name: "outer".into(),
                ..tail_route()
            }],
            vec![],
            "not a program array",
        ),
        (
            vec![],
            vec![map_route("no_such_inner")],
            "no map `no_such_inner`",
        ),
        (
            vec![],
            vec![MapRoute {
                routing_map_name: "inner_a".into(),
                ..map_route("inner_b")
            }],
            "not a map of maps",
        ),
    ];
    for (tail, maps, expected) in cases {
        let mut m = routed(tail, maps).unwrap();
        let ids = program_ids(&m, &[Id::new("entry", "router_entry")]);
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { .. }) && err.to_string().contains(expected),
            "{expected}: {err:?}"
        );
        assert_eq!(m.state(), ebpf_manager::ManagerState::Initialized);
        drop(m);
        assert_unloaded(&ids);
    }
}

#[test]
fn router_probe_is_a_plain_probe() {
    // The tail-call target is not a probe: declaring the entry alone is enough.
    let m = routed(vec![tail_route()], vec![]).unwrap();
    assert!(m.get_probe(&Id::new("entry", "router_entry")).is_some());
    assert!(m.get_probe(&Id::new("", "tail_target")).is_none());
    let _ = Probe::default();
}

#[test]
fn router_map_of_another_manager_is_routed() {
    setup();
    // B only holds maps; A's program counts into B's `inner_a` through A's `outer[0]`.
    let mut b = Manager::default();
    b.init(ROUTER).unwrap();
    let shared = std::sync::Arc::new(b.map_fd("inner_a").unwrap());
    let route = MapRoute {
        map: Some(std::sync::Arc::clone(&shared)),
        ..map_route("inner_a of manager b")
    };
    let mut a = routed(vec![tail_route()], vec![route]).unwrap();
    a.start().unwrap();
    mkdir_rmdir("router-shared");
    assert_eq!(count(&b, "inner_a"), 1, "A counted into B's map");
    assert_eq!(count(&a, "inner_a"), 0, "not into its own");
    assert_eq!(count(&a, "tail_hits"), 1);
    a.stop(CleanupType::CleanAll).unwrap();
    assert_eq!(count(&b, "inner_a"), 1, "B's map outlives A");
    match b.map_fd("no_such_map").unwrap_err() {
        Error::MapNotFound {
            map,
            kind,
            available,
        } => {
            assert_eq!((map.as_str(), kind), ("no_such_map", "map"));
            assert!(available.contains("inner_a"), "{available}");
        }
        other => panic!("expected MapNotFound, got {other:?}"),
    }
    b.stop(CleanupType::CleanAll).unwrap();
}

/// A tail call into another manager's program (the Go `TailCallRoute.Program`).
#[test]
fn router_routes_a_program_of_another_manager() {
    setup();
    // The other manager declares tail_target; it counts in *its* tail_hits.
    let mut other = Manager {
        probes: vec![probe("other", "tail_target")],
        ..Default::default()
    };
    other.init(ROUTER).unwrap();
    let fd = other
        .program_fd(&Id::new("other", "tail_target"))
        .expect("a loaded program");
    let mut m = routed(
        vec![TailCallRoute {
            program: Some(std::sync::Arc::new(fd)),
            ..tail_route()
        }],
        vec![map_route("inner_a")],
    )
    .unwrap();
    m.start().unwrap();
    mkdir_rmdir("router-other");
    assert_eq!(
        count(&other, "tail_hits"),
        1,
        "the other manager's program ran"
    );
    assert_eq!(count(&m, "tail_hits"), 0, "not this one's");
}

/// The id in slot `key` of the program array or map of maps `map`, `None` when empty.
fn slot_id(m: &Manager, map: &str, key: u32) -> Option<u32> {
    use std::os::fd::AsFd;
    let fd = m.map_fd(map).expect("map_fd");
    lookup_raw(fd.as_fd(), key, 4).map(|v| u32::from_ne_bytes(v[..4].try_into().unwrap()))
}

/// A failed start puts back every route slot it wrote: an empty slot is emptied again, an
/// occupied one gets its previous program back (the routes stayed written before).
#[test]
fn router_failed_start_puts_route_slots_back() {
    let second = TailCallRoute {
        key: 2,
        probe_identification_pair: Id::new("entry", "router_entry"),
        ..tail_route()
    };
    let mut m = routed(
        vec![tail_route(), second],
        vec![map_route("inner_a"), map_route("no_such_inner")],
    )
    .unwrap();
    // Slot 2 already holds tail_target, written on the initialized manager.
    m.update_tail_call_routes(&[TailCallRoute {
        key: 2,
        ..tail_route()
    }])
    .unwrap();
    let tail_target = m
        .program_id(&Id::new("", "tail_target"))
        .or_else(|| slot_id(&m, "jump_table", 2))
        .expect("tail_target is loaded");
    assert_eq!(slot_id(&m, "jump_table", 2), Some(tail_target));
    let err = m.start().unwrap_err();
    assert!(err.to_string().contains("no map `no_such_inner`"), "{err}");
    assert_eq!(slot_id(&m, "jump_table", 1), None, "slot 1 was empty");
    assert_eq!(
        slot_id(&m, "jump_table", 2),
        Some(tail_target),
        "slot 2 holds tail_target again, not router_entry"
    );
    assert_eq!(slot_id(&m, "outer", 0), None, "outer[0] was empty");
    assert_eq!(m.state(), ebpf_manager::ManagerState::Initialized);
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A stopped manager's program array leaves the kernel while maps are being listed, which the
/// other tests do all the time (`assert_maps_unloaded`). Regression: the listing opened every
/// map by id, and opening a program array between its last close and the kernel's deferred
/// clear leaks it until reboot (see `map_ids`); this failed within 20 rounds before.
#[test]
fn router_program_array_is_freed_while_maps_are_listed() {
    for _ in 0..20 {
        let mut m = routed(vec![tail_route()], vec![]).unwrap();
        m.start().unwrap();
        let id = map_fdinfo(&m, "jump_table")["map_id"] as u32;
        m.stop(CleanupType::CleanAll).unwrap();
        assert_maps_unloaded(&[id]);
    }
}
