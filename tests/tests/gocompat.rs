//! Objects written for the Go ebpf-manager load unchanged (ebpf-fixtures/src/gocompat.bpf.c):
//! cilium section names, asm constants, iovisor map definitions, map spec editors, excluded
//! maps, instruction patchers, sections aya cannot load, ksyscall and kprobe.multi hooks.

use std::os::fd::AsFd;

use ebpf_manager::{
    ConstantEditor, Error, Instruction, InstructionPatcher, Manager, MapSpecEditor, Options, Probe,
    ProbeIdentificationPair, ProbesSelector,
};
use integration_tests::*;

/// Slots of `results` in gocompat.bpf.c.
mod r {
    pub const XDP_INGRESS: u32 = 0;
    pub const XDP_EGRESS: u32 = 1;
    pub const CLASSIFIER: u32 = 2;
    pub const TC: u32 = 3;
    pub const KSYSCALL: u32 = 4;
    pub const PATCHED: u32 = 5;
    pub const MULTI: u32 = 6;
    pub const PLAIN: u32 = 7;
}

/// A probe of a network program that is only test-run: init needs an interface.
fn net_probe(uid: &str, function: &str) -> Probe {
    Probe {
        if_name: Some("lo".into()),
        ..probe(uid, function)
    }
}

fn run(m: &Manager, id: &ProbeIdentificationPair) -> u32 {
    let prog = m.get_program(id).expect("program");
    test_run(prog.fd().expect("loaded").as_fd())
}

fn constants() -> Vec<ConstantEditor> {
    vec![
        ConstantEditor::new("ingress_marker", 0x1122_3344_5566_7788u64),
        ConstantEditor::new("egress_marker", 41u64),
        ConstantEditor::new("tc_marker", 7u32),
        ConstantEditor::new("filter_tid", gettid()),
    ]
}

/// The network programs: two `xdp/` sections (merged for aya), `classifier/`, `tc/`.
fn net_manager(options: Options) -> ebpf_manager::Result<Manager> {
    setup();
    let mut m = Manager {
        probes: vec![
            net_probe("in", "xdp_ingress"),
            net_probe("out", "xdp_egress"),
            net_probe("plain", "xdp_plain"),
            net_probe("cls", "classifier_egress"),
            net_probe("tc", "tc_ingress"),
        ],
        ..Default::default()
    };
    m.init_with_options(GOCOMPAT, options)?;
    Ok(m)
}

#[test]
fn cilium_sections_load_and_see_their_asm_constants() {
    let m = net_manager(Options {
        constant_editors: constants(),
        ..Default::default()
    })
    .expect("init of the Go object");
    let id = |uid: &str, f: &str| ProbeIdentificationPair::new(uid, f);
    assert_eq!(run(&m, &id("in", "xdp_ingress")), 2, "XDP_PASS");
    assert_eq!(
        read_slot(&m, "results", r::XDP_INGRESS),
        0x1122_3344_5566_7788
    );
    run(&m, &id("out", "xdp_egress"));
    // A BPF-to-BPF call in the merged section read its own asm constant.
    assert_eq!(read_slot(&m, "results", r::XDP_EGRESS), 42);
    run(&m, &id("plain", "xdp_plain"));
    assert_eq!(
        read_slot(&m, "results", r::PLAIN),
        141,
        "xdp, into which the xdp/ ones merged"
    );
    run(&m, &id("tc", "tc_ingress"));
    assert_eq!(read_slot(&m, "results", r::TC), 7);
    run(&m, &id("cls", "classifier_egress"));
    assert_eq!(read_slot(&m, "results", r::CLASSIFIER), 64, "skb->len");
}

/// A telemetry-style patcher: no sentinel value, no constant editor; it finds the asm
/// constant's `ld_imm64` by reference (Go's `ReferenceOffsets`) and writes a value per program.
#[test]
fn a_patcher_sets_an_asm_constant_found_by_reference() {
    let by_reference = InstructionPatcher::new(|prog| {
        let offsets = prog.reference_offsets();
        for &at in offsets.get("ingress_marker").into_iter().flatten() {
            prog.instructions[at].imm = 0x600d;
            prog.instructions[at + 1].imm = 0;
        }
        if prog.function == "xdp_ingress" && !offsets.contains_key("results") {
            return Err(format!("no reference to the results map: {offsets:?}"));
        }
        Ok(())
    });
    let m = net_manager(Options {
        constant_editors: constants()
            .into_iter()
            .filter(|c| c.name != "ingress_marker")
            .collect(),
        instruction_patchers: vec![by_reference],
        ..Default::default()
    })
    .expect("init with the patcher");
    run(&m, &ProbeIdentificationPair::new("in", "xdp_ingress"));
    assert_eq!(read_slot(&m, "results", r::XDP_INGRESS), 0x600d);
}

#[test]
fn unset_asm_constants_load_as_zero_or_fail_when_strict() {
    let mut m = net_manager(Options::default()).expect("init without editors");
    // A sentinel, so that 0 can only come from the program.
    {
        let map = m.get_map_mut("results").unwrap();
        let mut results = aya::maps::Array::<_, u64>::try_from(map).unwrap();
        results.set(r::XDP_INGRESS, 0xdead, 0).unwrap();
    }
    run(&m, &ProbeIdentificationPair::new("in", "xdp_ingress"));
    assert_eq!(read_slot(&m, "results", r::XDP_INGRESS), 0);
    drop(m);
    let err = net_manager(Options {
        strict_constants: true,
        constant_editors: vec![ConstantEditor::new("tc_marker", 1u32)],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::UnsetConstant { name, .. } if name == "ingress_marker" || name == "egress_marker" || name == "filter_tid"),
        "{err:?}"
    );
    let err = net_manager(Options {
        constant_editors: vec![ConstantEditor::new("no_such_constant", 1u32)],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { option, .. } if option == "constant editor `no_such_constant`"),
        "{err:?}"
    );
}

#[test]
fn per_probe_asm_constants_get_their_own_program_copy() {
    setup();
    let a = ProbeIdentificationPair::new("a", "xdp_ingress");
    let b = ProbeIdentificationPair::new("b", "xdp_ingress");
    let mut m = Manager {
        probes: vec![net_probe("a", "xdp_ingress"), net_probe("b", "xdp_ingress")],
        ..Default::default()
    };
    let own = |id: &ProbeIdentificationPair, v: u64| ConstantEditor {
        probes: vec![id.clone()],
        ..ConstantEditor::new("ingress_marker", v)
    };
    m.init_with_options(
        GOCOMPAT,
        Options {
            constant_editors: vec![own(&a, 1), own(&b, 2)],
            ..Default::default()
        },
    )
    .unwrap();
    run(&m, &a);
    assert_eq!(read_slot(&m, "results", r::XDP_INGRESS), 1);
    run(&m, &b);
    assert_eq!(
        read_slot(&m, "results", r::XDP_INGRESS),
        2,
        "b writes the shared map"
    );
    let ins = m.program_instructions(&b).unwrap().expect("instructions");
    assert!(
        ins.iter().any(|i| i.is_ld_imm64() && i.imm == 2),
        "b's copy has its value"
    );
    let phases = ebpf_manager::diagnostics::last_init_phases().expect("phases");
    assert_eq!(
        phases.object_loads, 3,
        "one program for two values: the object and a copy for each probe"
    );
}

/// As Go's `editConstant` edits one program's instructions: an asm constant that only the
/// named probes' programs load is written in place, without a copy of the object; a site in a
/// subprogram that other programs call still takes a copy.
#[test]
fn gocompat_per_probe_asm_constants_are_written_in_place_without_a_copy() {
    setup();
    let id = |uid: &str, f: &str| ProbeIdentificationPair::new(uid, f);
    let (a, t, out, plain) = (
        id("a", "xdp_ingress"),
        id("t", "tc_ingress"),
        id("out", "xdp_egress"),
        id("plain", "xdp_plain"),
    );
    let own = |id: &ProbeIdentificationPair, name: &str, v: u64| ConstantEditor {
        probes: vec![id.clone()],
        ..ConstantEditor::new(name, v)
    };
    let manager = |editors: Vec<ConstantEditor>| {
        let mut m = Manager {
            probes: [&a, &t, &out, &plain]
                .iter()
                .map(|id| net_probe(&id.uid, &id.ebpf_func_name))
                .collect(),
            ..Default::default()
        };
        m.init_with_options(
            GOCOMPAT,
            Options {
                constant_editors: editors,
                ..Default::default()
            },
        )
        .map(|()| m)
    };
    // For every probe first, then per probe: the probe's value wins in its program.
    let m = manager(vec![
        ConstantEditor::new("ingress_marker", 1u64),
        own(&a, "ingress_marker", 5),
        own(&t, "tc_marker", 9),
        ConstantEditor::new("egress_marker", 40u64),
    ])
    .unwrap();
    let phases = ebpf_manager::diagnostics::last_init_phases().expect("phases");
    assert_eq!(phases.object_loads, 1, "no copy of the object");
    run(&m, &a);
    assert_eq!(read_slot(&m, "results", r::XDP_INGRESS), 5);
    run(&m, &t);
    assert_eq!(read_slot(&m, "results", r::TC), 9);
    run(&m, &out);
    assert_eq!(read_slot(&m, "results", r::XDP_EGRESS), 41);
    // A clone's own editors win over the value written in place (Go's CloneProgram).
    let mut m = m;
    let c = id("c", "xdp_ingress");
    m.clone_program(
        "a",
        net_probe("c", "xdp_ingress"),
        vec![ConstantEditor::new("ingress_marker", 7u64)],
        Vec::new(),
    )
    .unwrap();
    run(&m, &c);
    assert_eq!(
        read_slot(&m, "results", r::XDP_INGRESS),
        7,
        "the clone's value"
    );
    run(&m, &a);
    assert_eq!(
        read_slot(&m, "results", r::XDP_INGRESS),
        5,
        "a keeps its own"
    );
    drop(m);
    // Two per-probe editors of one constant for probe a, the first needing a copy (b shares
    // the program), the later one for both: not in place either, and the later wins for a.
    let b = id("b", "xdp_ingress");
    let mut m = Manager {
        probes: vec![net_probe("a", "xdp_ingress"), net_probe("b", "xdp_ingress")],
        ..Default::default()
    };
    let both = ConstantEditor {
        probes: vec![a.clone(), b.clone()],
        ..ConstantEditor::new("ingress_marker", 2u64)
    };
    let editors = vec![own(&a, "ingress_marker", 1), both];
    m.init_with_options(
        GOCOMPAT,
        Options {
            constant_editors: editors,
            ..Default::default()
        },
    )
    .unwrap();
    run(&m, &a);
    assert_eq!(
        read_slot(&m, "results", r::XDP_INGRESS),
        2,
        "the later editor"
    );
    run(&m, &b);
    assert_eq!(read_slot(&m, "results", r::XDP_INGRESS), 2);
    drop(m);
    // `egress_marker` is loaded in `egress_value`, which xdp_egress and xdp_plain both call:
    // out's value needs a program of its own.
    let m = manager(vec![
        ConstantEditor::new("egress_marker", 40u64),
        own(&out, "egress_marker", 60),
    ])
    .unwrap();
    let phases = ebpf_manager::diagnostics::last_init_phases().expect("phases");
    assert_eq!(phases.object_loads, 2, "the object and out's copy");
    run(&m, &out);
    assert_eq!(read_slot(&m, "results", r::XDP_EGRESS), 61);
    run(&m, &plain);
    assert_eq!(
        read_slot(&m, "results", r::PLAIN),
        140,
        "plain keeps the value for every probe"
    );
}

#[test]
fn legacy_maps_are_created_as_the_go_library_creates_them() {
    let m = net_manager(Options::default()).unwrap();
    let results = map_fdinfo(&m, "results");
    assert_eq!(
        (
            results["map_type"],
            results["key_size"],
            results["value_size"],
            results["max_entries"]
        ),
        (2, 4, 8, 8)
    );
    // The iovisor `pinning` field made no pin.
    assert!(!std::path::Path::new("/sys/fs/bpf/results").exists());
    let events = map_fdinfo(&m, "events");
    assert_eq!(
        (events["map_type"], events["key_size"], events["value_size"]),
        (4, 4, 4)
    );
}

#[test]
fn map_spec_editor_changes_type_sizes_and_flags_of_a_legacy_map() {
    let m = net_manager(Options {
        map_spec_editors: vec![MapSpecEditor {
            name: "edited".into(),
            map_type: Some(aya::maps::MapType::LruHash as u32),
            value_size: Some(16),
            max_entries: Some(32),
            flags: Some(2), // BPF_F_NO_COMMON_LRU
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    let edited = map_fdinfo(&m, "edited");
    assert_eq!(
        (
            edited["map_type"],
            edited["key_size"],
            edited["value_size"],
            edited["max_entries"],
            edited["map_flags"]
        ),
        (9, 4, 16, 32, 2)
    );
    drop(m);
    // A definition the kernel refuses fails init, naming the map.
    let err = net_manager(Options {
        map_spec_editors: vec![MapSpecEditor {
            name: "edited".into(),
            value_size: Some(0),
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::MapCreate { map, map_type: "BPF_MAP_TYPE_HASH", source, .. } if map == "edited" && source.raw_os_error() == Some(libc::EINVAL)),
        "{err:?}"
    );
    assert!(err.report().to_string().contains("edited"), "{err}");
}

#[test]
fn excluded_maps_are_not_created() {
    let with = net_manager(Options::default()).unwrap();
    assert!(with.get_map("unused").is_some());
    drop(with);
    let without = net_manager(Options {
        excluded_maps: vec!["unused".into()],
        excluded_functions: vec!["xdp_unused".into()],
        ..Default::default()
    })
    .unwrap();
    assert!(without.get_map("unused").is_none());
    assert!(without.get_map("results").is_some());
}

fn patched_manager(patchers: Vec<InstructionPatcher>) -> ebpf_manager::Result<Manager> {
    setup();
    let mut m = Manager {
        probes: vec![net_probe("p", "xdp_patched")],
        ..Default::default()
    };
    m.init_with_options(
        GOCOMPAT,
        Options {
            instruction_patchers: patchers,
            ..Default::default()
        },
    )?;
    Ok(m)
}

#[test]
fn a_patcher_fills_the_call_placeholder() {
    // As compiled, `call -1` is refused by the verifier.
    let err = patched_manager(Vec::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Verifier { log, .. } if log.contains("func")),
        "{err:?}"
    );
    let ktime = InstructionPatcher::new(|prog| {
        for ins in prog.instructions.iter_mut() {
            if ins.is_helper_call() && ins.imm == -1 {
                *ins = Instruction::call_helper(5); // bpf_ktime_get_ns
            }
        }
        Ok(())
    });
    let m = patched_manager(vec![ktime]).expect("init with the patcher");
    let id = ProbeIdentificationPair::new("p", "xdp_patched");
    assert_eq!(
        m.program_instructions(&id).unwrap().unwrap()[0],
        Instruction::call_helper(5)
    );
    run(&m, &id);
    assert!(
        read_slot(&m, "results", r::PATCHED) > 0,
        "bpf_ktime_get_ns ran"
    );
}

#[test]
fn a_section_aya_cannot_load_fails_only_the_probe_that_needs_it() {
    setup();
    let fmod = probe("f", "fmod_ret_mkdir");
    let mut m = Manager {
        probes: vec![net_probe("in", "xdp_ingress"), fmod.clone()],
        ..Default::default()
    };
    let err = m.init(GOCOMPAT).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedSection { section, function, .. }
            if section == "fmod_ret/security_inode_mkdir" && function == "fmod_ret_mkdir"),
        "{err:?}"
    );
    let mut m = Manager {
        probes: vec![net_probe("in", "xdp_ingress"), fmod.clone()],
        ..Default::default()
    };
    m.init_with_options(
        GOCOMPAT,
        Options {
            activated_probes: vec![ProbesSelector::Probe(ProbeIdentificationPair::new(
                "in",
                "xdp_ingress",
            ))],
            ..Default::default()
        },
    )
    .expect("the object loads when the fmod_ret probe is not enabled");
    assert!(is_loaded(
        &m,
        &ProbeIdentificationPair::new("in", "xdp_ingress")
    ));
}

/// `ksyscall/mkdir` resolves to the arch's syscall symbol, `kprobe.multi/vfs_mkdi?` to every
/// match of its pattern (one here).
#[test]
fn ksyscall_and_kprobe_multi_sections_resolve_their_hooks() {
    setup();
    let ks = ProbeIdentificationPair::new("ks", "ksyscall_mkdir");
    let multi = ProbeIdentificationPair::new("multi", "kprobe_multi_vfs_mkdir");
    let mut m = Manager {
        probes: vec![
            probe("ks", "ksyscall_mkdir"),
            probe("multi", "kprobe_multi_vfs_mkdir"),
        ],
        ..Default::default()
    };
    m.init_with_options(
        GOCOMPAT,
        Options {
            constant_editors: constants(),
            ..Default::default()
        },
    )
    .unwrap();
    if kernel_has_kprobes() {
        m.start().expect("start");
        assert!(m.attach_info(&ks).unwrap().hook.ends_with("sys_mkdir"));
        assert_eq!(
            m.attach_info(&multi).unwrap().hook,
            "vfs_mkdi? (1 functions)"
        );
        mkdir_rmdir("gocompat");
        assert_eq!(read_slot(&m, "results", r::KSYSCALL), 1);
        assert_eq!(read_slot(&m, "results", r::MULTI), 1);
    } else {
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::KprobesUnsupported { id, hook } if *id == ks && hook.ends_with("sys_mkdir")),
            "{err:?}"
        );
    }
}

fn core_offset(options: Options) -> ebpf_manager::Result<u32> {
    setup();
    let mut m = Manager {
        probes: vec![net_probe("core", "core_pid_offset")],
        ..Default::default()
    };
    m.init_with_options(CORE, options)?;
    Ok(run(
        &m,
        &ProbeIdentificationPair::new("core", "core_pid_offset"),
    ))
}

#[test]
fn co_re_relocates_against_the_btf_the_user_gives() {
    let file = small_kernel_btf();
    let from_file = core_offset(Options {
        kernel_btf: Some(ebpf_manager::KernelTypes::File(file.clone())),
        ..Default::default()
    });
    let parsed = aya::Btf::parse_file(&file, aya::Endianness::default()).expect("parsing");
    let from_parsed = core_offset(Options {
        kernel_btf: Some(ebpf_manager::KernelTypes::Parsed(std::sync::Arc::new(
            parsed,
        ))),
        ..Default::default()
    });
    std::fs::remove_file(&file).unwrap();
    assert_eq!(from_file.expect("init against the file"), 24);
    assert_eq!(from_parsed.expect("init against parsed BTF"), 24);
    // Against the running kernel, pid lies far into task_struct.
    assert!(core_offset(Options::default()).unwrap() > 100);
    let err = core_offset(Options {
        kernel_btf: Some(ebpf_manager::KernelTypes::File("/nonexistent.btf".into())),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidOption { option, .. } if option == "kernel_btf"),
        "{err:?}"
    );
}

#[test]
fn the_verifier_log_level_shapes_the_log_of_a_rejected_program() {
    let log = |level: Option<aya::VerifierLogLevel>| {
        setup();
        let mut m = Manager {
            probes: vec![probe("r", "tracepoint_rejected")],
            ..Default::default()
        };
        match m.init_with_options(
            REJECTED,
            Options {
                verifier_log_level: level,
                ..Default::default()
            },
        ) {
            Err(Error::Verifier { log, .. }) => log,
            other => panic!("{other:?}"),
        }
    };
    let default = log(None);
    let verbose = log(Some(aya::VerifierLogLevel::VERBOSE));
    let stats = log(Some(aya::VerifierLogLevel::STATS));
    // VERBOSE prints every instruction it walks (`(07)` is the opcode of the rejected
    // program's first one); STATS alone only sums the walk up; aya's default (DEBUG | STATS)
    // has the stats and the error.
    assert!(
        default.contains("processed") && default.contains("disallowed"),
        "{default}"
    );
    assert!(verbose.contains("(07)"), "{verbose}");
    assert!(
        stats.contains("processed") && !stats.contains("(07)"),
        "{stats}"
    );
}

/// BTF-defined maps (`SEC(".maps")`, probes.bpf.o): every editor field and exclusions apply
/// before the kernel creates them.
#[test]
fn btf_maps_are_edited_and_excluded_before_creation() {
    let tp = || probe("tp", "tracepoint_sys_enter_mkdir");
    let m = counting_manager_with(
        vec![tp()],
        Options {
            map_spec_editors: vec![MapSpecEditor {
                name: "tagged".into(),
                map_type: Some(aya::maps::MapType::Hash as u32),
                key_size: Some(8),
                value_size: Some(16),
                max_entries: Some(64),
                flags: Some(1), // BPF_F_NO_PREALLOC
            }],
            ..this_thread_only()
        },
    );
    let tagged = map_fdinfo(&m, "tagged");
    assert_eq!(
        (
            tagged["map_type"],
            tagged["key_size"],
            tagged["value_size"],
            tagged["max_entries"],
            tagged["map_flags"]
        ),
        (1, 8, 16, 64, 1)
    );
    drop(m);

    let excluded = || Options {
        excluded_maps: vec!["tagged".into()],
        ..this_thread_only()
    };
    let mut m = Manager {
        probes: vec![tp()],
        ..Default::default()
    };
    m.init_with_options(PROBES, excluded()).unwrap();
    assert!(m.get_map("tagged").is_none());
    m.start().unwrap();
    mkdir_rmdir("excluded");
    assert_eq!(hits(&m, slot::TRACEPOINT), 1, "the other programs run");
    drop(m);
    // A program that uses an excluded map is refused by the kernel (its map load was left
    // unrelocated), never pointed at another map.
    let mut m = Manager {
        probes: vec![probe("tagged", "tagged_sys_enter_mkdir")],
        ..Default::default()
    };
    let err = m.init_with_options(PROBES, excluded()).unwrap_err();
    assert!(matches!(err, Error::Verifier { .. }), "{err:?}");
}

/// The map of maps of ebpf-fixtures/src/mapofmaps.bpf.c: a manager of `mom_entry`.
fn map_of_maps_manager() -> Manager {
    Manager {
        probes: vec![probe("mom", "mom_entry")],
        ..Default::default()
    }
}

/// Inits `object` with `outer`'s inner map named by `inner_outer_map_specs` and `inner_counts`
/// routed at `outer[0]`, then checks the outer map and that a mkdir counts through it.
fn routes_and_counts_through_the_map_of_maps(object: &[u8], tag: &str) {
    let mut m = map_of_maps_manager();
    m.init_with_options(
        object,
        Options {
            inner_outer_map_specs: vec![ebpf_manager::InnerOuterMapSpec {
                outer_map_name: "outer".into(),
                inner_map_name: "inner_template".into(),
            }],
            map_router: vec![ebpf_manager::MapRoute {
                routing_map_name: "outer".into(),
                key: 0,
                map_name: "inner_counts".into(),
                ..Default::default()
            }],
            ..this_thread_only()
        },
    )
    .unwrap_or_else(|e| panic!("init of {tag}: {e:?}"));
    let outer = map_fdinfo(&m, "outer");
    assert_eq!((outer["map_type"], outer["max_entries"]), (12, 2));
    m.start().unwrap();
    mkdir_rmdir(tag);
    assert_eq!(
        read_slot(&m, "inner_counts", 0),
        1,
        "counted through outer[0]"
    );
}

/// A legacy map of maps with its inner map named by `inner_outer_map_specs`, routed and used
/// by a program (ebpf-fixtures/src/mapofmaps.bpf.c).
#[test]
fn legacy_maps_of_maps_take_their_inner_map_from_inner_outer_map_specs() {
    const MAPOFMAPS: &[u8] = include_bytes!("../../ebpf-fixtures/mapofmaps.bpf.o");
    setup();
    let err = map_of_maps_manager().init(MAPOFMAPS).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMapDefinition { map, reason } if map == "outer" && reason.contains("inner_outer_map_specs")),
        "{err:?}"
    );
    routes_and_counts_through_the_map_of_maps(MAPOFMAPS, "mapofmaps");
}

/// The same map of maps in an object built as the Go examples' Makefile builds it (no `-g`, so
/// no BTF, ebpf-fixtures/src/mapofmaps_go.bpf.c): Go accepts it, and so does the manager, which
/// describes the converted map in BTF of its own.
#[test]
fn legacy_maps_of_maps_without_btf_work_as_in_go() {
    const MAPOFMAPS_GO: &[u8] = include_bytes!("../../ebpf-fixtures/mapofmaps_go.bpf.o");
    setup();
    routes_and_counts_through_the_map_of_maps(MAPOFMAPS_GO, "mapofmaps-go");
}

/// `kprobe.multi/` programs load with `BPF_TRACE_KPROBE_MULTI` (the manager's own load path;
/// aya 0.14 has none) and attach with a kprobe.multi link where the kernel has CONFIG_FPROBE.
#[test]
fn kprobe_multi_programs_load_with_their_attach_type() {
    setup();
    let id = ProbeIdentificationPair::new("multi", "kprobe_multi_vfs_mkdir");
    let mut m = Manager {
        probes: vec![Probe {
            kprobe_attach_method: ebpf_manager::KprobeAttachMethod::KprobeMulti,
            ..probe("multi", "kprobe_multi_vfs_mkdir")
        }],
        ..Default::default()
    };
    let options = Options {
        constant_editors: constants(),
        ..Default::default()
    };
    let unsupported = |err: &Error| matches!(err, Error::KprobeMultiUnsupported { id: got, hook, .. } if *got == id && hook == "vfs_mkdi? (1 functions)");
    let init = m.init_with_options(GOCOMPAT, options);
    if !(kernel_version() >= (5, 18) && kernel_has_fprobe()) {
        // Refused at load (an attach type the kernel does not know) or at the link.
        let err = init.and_then(|()| m.start()).unwrap_err();
        assert!(unsupported(&err), "{err:?}");
        assert!(err.to_string().contains("CONFIG_FPROBE"), "{err}");
        assert!(m.attach_info(&id).is_none());
        return;
    }
    init.expect("the kernel loads it with its attach type");
    m.start().expect("start");
    assert_eq!(
        m.attach_info(&id).unwrap().method,
        ebpf_manager::AttachMethod::KprobeMulti
    );
    mkdir_rmdir("kprobe-multi");
    assert_eq!(read_slot(&m, "results", r::MULTI), 1);
    let programs = program_ids(&m, std::slice::from_ref(&id));
    m.stop(ebpf_manager::CleanupType::CleanAll).unwrap();
    assert_unloaded(&programs);
}

/// `Probe::section` names the section as the object has it, not as aya sees it.
#[test]
fn probes_select_programs_by_their_go_section_name() {
    setup();
    let mut m = Manager {
        probes: vec![Probe {
            uid: "by-section".into(),
            section: Some("tc/ingress".into()),
            if_name: Some("lo".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    m.init_with_options(
        GOCOMPAT,
        Options {
            constant_editors: constants(),
            ..Default::default()
        },
    )
    .expect("init by section");
    let id = ProbeIdentificationPair::new("by-section", "");
    let prog = m.get_program(&id).expect("the tc/ingress program");
    test_run(prog.fd().expect("loaded").as_fd());
    assert_eq!(read_slot(&m, "results", r::TC), 7);
}

/// A probe on every function of a pattern: one kprobe.multi link with a cookie per function
/// where the kernel has them, else one kprobe per function (no cookies).
#[test]
fn match_all_functions_takes_one_multi_link_or_one_kprobe_per_function() {
    setup();
    let id = ProbeIdentificationPair::new("all", "kprobe_multi_cookie");
    let mut m = Manager {
        probes: vec![Probe {
            match_all_functions: true,
            function_cookies: vec![("vfs_mkdir".into(), 1), ("vfs_rmdir".into(), 2)],
            ..probe("all", "kprobe_multi_cookie")
        }],
        ..Default::default()
    };
    let init = m.init_with_options(
        GOCOMPAT,
        Options {
            constant_editors: constants(),
            ..Default::default()
        },
    );
    if kernel_version() < (5, 15) {
        // bpf_get_attach_cookie (5.15) is unknown to the verifier there.
        let err = init.unwrap_err();
        assert!(
            matches!(&err, Error::Verifier { log, .. } if log.contains("unknown#174")),
            "{err:?}"
        );
        return;
    }
    init.expect("init");
    if !kernel_has_kprobes() {
        let err = m.start().unwrap_err();
        assert!(matches!(&err, Error::KprobesUnsupported { .. }), "{err:?}");
        return;
    }
    m.start().expect("start");
    let info = m.attach_info(&id).unwrap().clone();
    assert_eq!(info.hook, "vfs_[mr][km]dir (2 functions)");
    mkdir_rmdir("match-all");
    let hits = |cookie| read_slot(&m, "cookie_hits", cookie);
    if kernel_has_fprobe() {
        assert_eq!(info.method, ebpf_manager::AttachMethod::KprobeMulti);
        assert_eq!((hits(1), hits(2)), (1, 1), "mkdir then rmdir, told apart");
    } else {
        assert_eq!(info.method, ebpf_manager::AttachMethod::KprobePmu);
        assert_eq!(hits(0), 2, "both functions, without cookies");
    }
    m.stop(ebpf_manager::CleanupType::CleanAll).unwrap();
}

/// A `kprobe.multi/<glob>` section with a probe that names no hook attaches every function the
/// glob matches, as libbpf reads the section: one multi link where the kernel has kprobe.multi,
/// one kprobe per function elsewhere. Before, it took the first match only.
#[test]
fn kprobe_multi_sections_attach_every_match_of_their_glob() {
    setup();
    let id = ProbeIdentificationPair::new("glob", "kprobe_multi_cookie");
    let mut m = Manager {
        probes: vec![probe("glob", "kprobe_multi_cookie")],
        ..Default::default()
    };
    let init = m.init_with_options(
        GOCOMPAT,
        Options {
            constant_editors: constants(),
            ..Default::default()
        },
    );
    if kernel_version() < (5, 15) {
        // bpf_get_attach_cookie (5.15) is unknown to the verifier there.
        let err = init.unwrap_err();
        assert!(matches!(&err, Error::Verifier { .. }), "{err:?}");
        return;
    }
    init.expect("init");
    if !kernel_has_kprobes() {
        let err = m.start().unwrap_err();
        assert!(matches!(&err, Error::KprobesUnsupported { .. }), "{err:?}");
        return;
    }
    m.start().expect("start");
    let info = m.attach_info(&id).unwrap().clone();
    assert_eq!(info.hook, "vfs_[mr][km]dir (2 functions)");
    let expected = if kernel_has_fprobe() {
        ebpf_manager::AttachMethod::KprobeMulti
    } else {
        ebpf_manager::AttachMethod::KprobePmu
    };
    assert_eq!(info.method, expected);
    mkdir_rmdir("glob-section");
    // No cookies declared: both functions count in slot 0, mkdir's path and rmdir's.
    assert_eq!(read_slot(&m, "cookie_hits", 0), 2);
    m.stop(ebpf_manager::CleanupType::CleanAll).unwrap();
}

/// `Manager::test_run` (the Go `Probe.Test` and `Probe.Benchmark`).
#[test]
fn test_run_gives_the_verdict_the_packet_and_the_time() {
    let mut m = net_manager(Options {
        constant_editors: constants(),
        ..Default::default()
    })
    .unwrap();
    let id = ProbeIdentificationPair::new("in", "xdp_ingress");
    let packet: Vec<u8> = (0..64).collect();
    let out = m
        .test_run(
            &id,
            &ebpf_manager::TestRunInput {
                data: packet.clone(),
                repeat: 100,
                ..Default::default()
            },
        )
        .expect("test run");
    assert_eq!(out.retval, 2, "XDP_PASS");
    assert_eq!(out.data, packet, "the packet, untouched");
    assert_eq!(
        read_slot(&m, "results", r::XDP_INGRESS),
        0x1122_3344_5566_7788
    );
    // A program type the kernel does not test-run.
    let mut tp = Manager {
        probes: vec![probe("tp", "tracepoint_sys_enter_mkdir")],
        ..Default::default()
    };
    tp.init_with_options(PROBES, this_thread_only()).unwrap();
    let err = tp
        .test_run(
            &ProbeIdentificationPair::new("tp", "tracepoint_sys_enter_mkdir"),
            &ebpf_manager::TestRunInput::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::TestRun { .. }), "{err:?}");
}

/// A field the kernel types lack: the error names the program, the type and the field (was
/// the verifier's bare `invalid func unknown#195896080`).
#[test]
fn co_re_a_field_the_kernel_lacks_is_named() {
    let file = kernel_btf_with_task_member("tid");
    let err = core_offset(Options {
        kernel_btf: Some(ebpf_manager::KernelTypes::File(file.clone())),
        ..Default::default()
    })
    .unwrap_err();
    std::fs::remove_file(&file).unwrap();
    let Error::CoreRelocation {
        function,
        relocation,
        ..
    } = &err
    else {
        panic!("expected Error::CoreRelocation, got {err:?}");
    };
    assert_eq!(function, "core_pid_offset");
    assert!(
        relocation.starts_with("the byte offset of struct task_struct.pid"),
        "{relocation}"
    );
    assert!(err.to_string().contains("bpf_core_field_exists"), "{err}");
}
