//! The pipeline on fixture objects, checked with aya-obj's own parser (no kernel needed).

use super::*;

const GOCOMPAT: &[u8] = include_bytes!("../../../../ebpf-fixtures/gocompat.bpf.o");
const PROBES: &[u8] = include_bytes!("../../../../ebpf-fixtures/probes.bpf.o");

fn aligned(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

fn prepared(bytes: &[u8], settings: Settings<'_>) -> Result<Prepared> {
    let bytes = aligned(bytes);
    let elf = ElfIndex::parse(&bytes).unwrap();
    prepare(&bytes, &elf, settings)
}

#[test]
fn aya_refuses_the_go_object_as_compiled() {
    let err = aya_obj::Object::parse(&aligned(GOCOMPAT)).unwrap_err();
    assert!(
        err.to_string().contains("xdp/ingress") || err.to_string().contains("section"),
        "{err}"
    );
}

#[test]
fn the_go_object_parses_after_the_pipeline() {
    let p = prepared(GOCOMPAT, Settings::default()).unwrap();
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    let mut programs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
    programs.sort_unstable();
    assert_eq!(
        programs,
        [
            "classifier_egress",
            "fmod_ret_mkdir",
            "kprobe_multi_cookie",
            "kprobe_multi_vfs_mkdir",
            "ksyscall_mkdir",
            "tc_ingress",
            "xdp_egress",
            "xdp_ingress",
            "xdp_patched",
            "xdp_plain",
            "xdp_unused"
        ]
    );
    assert_eq!(
        p.hidden("fmod_ret_mkdir").map(|(s, _)| s.as_str()),
        Some("fmod_ret/security_inode_mkdir")
    );
    assert!(p.hidden("xdp_ingress").is_none());
    let mut asm: Vec<&str> = p.asm_constants().collect();
    asm.sort_unstable();
    asm.dedup();
    assert_eq!(
        asm,
        ["egress_marker", "filter_tid", "ingress_marker", "tc_marker"]
    );
    // The patchers see the original section names.
    let patched = p
        .programs
        .iter()
        .find(|r| r.function == "xdp_egress")
        .unwrap();
    assert_eq!(patched.section, "xdp/egress");
}

#[test]
fn iovisor_map_definitions_read_as_the_go_library_reads_them() {
    let p = prepared(GOCOMPAT, Settings::default()).unwrap();
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    let results = &obj.maps["results"];
    assert_eq!(
        (
            results.map_type(),
            results.key_size(),
            results.value_size(),
            results.max_entries()
        ),
        (2, 4, 8, 8)
    );
    // iovisor's `pinning` (2) and namespace are ignored, as cilium/ebpf ignores them.
    assert_eq!(results.pinning(), aya_obj::maps::PinningType::None);
    let events = &obj.maps["events"];
    assert_eq!(
        (events.map_type(), events.key_size(), events.value_size()),
        (4, 4, 4)
    );
}

#[test]
fn map_spec_editors_and_exclusions_apply_to_legacy_maps() {
    let editors = [MapSpecEditor {
        name: "edited".into(),
        map_type: Some(9), // LRU_HASH
        value_size: Some(16),
        max_entries: Some(32),
        flags: Some(2), // BPF_F_NO_COMMON_LRU
        ..Default::default()
    }];
    let excluded = ["unused".to_owned()];
    let p = prepared(
        GOCOMPAT,
        Settings {
            spec_editors: &editors,
            excluded_maps: &excluded,
            ..Default::default()
        },
    )
    .unwrap();
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    let edited = &obj.maps["edited"];
    assert_eq!(
        (
            edited.map_type(),
            edited.key_size(),
            edited.value_size(),
            edited.max_entries(),
            edited.map_flags()
        ),
        (9, 4, 16, 32, 2)
    );
    assert!(!obj.maps.contains_key("unused"));
    // A missing map is an error naming it.
    let excluded = ["nope".to_owned()];
    let err = prepared(
        GOCOMPAT,
        Settings {
            excluded_maps: &excluded,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[test]
fn btf_maps_take_every_edit_and_exclusion() {
    let editors = [MapSpecEditor {
        name: "hits".into(),
        map_type: Some(1), // HASH
        key_size: Some(8),
        value_size: Some(16),
        flags: Some(1), // BPF_F_NO_PREALLOC, a member the object does not declare
        max_entries: Some(64),
    }];
    let excluded = ["tagged".to_owned()];
    let p = prepared(
        PROBES,
        Settings {
            spec_editors: &editors,
            excluded_maps: &excluded,
            ..Default::default()
        },
    )
    .unwrap();
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    let hits = &obj.maps["hits"];
    assert_eq!(
        (
            hits.map_type(),
            hits.key_size(),
            hits.value_size(),
            hits.map_flags()
        ),
        (1, 8, 16, 1)
    );
    assert!(!obj.maps.contains_key("tagged"));
    // aya-obj sizes and checks the edited BTF as it does before loading it into the kernel.
    let mut obj = obj;
    let features = aya_obj::btf::BtfFeatures::default();
    obj.fixup_and_sanitize_btf(&features).unwrap();
}

#[test]
fn objects_aya_reads_as_they_are_are_not_rewritten() {
    let p = prepared(PROBES, Settings::default()).unwrap();
    assert_eq!(p.bytes, PROBES);
}

#[test]
fn asm_constants_are_written_into_both_halves_and_unset_ones_fail_when_strict() {
    let p = prepared(GOCOMPAT, Settings::default()).unwrap();
    let editors = [
        ConstantEditor::new("ingress_marker", 0x1122_3344_5566_7788u64),
        ConstantEditor::new("filter_tid", 7u32),
    ];
    let refs: Vec<&ConstantEditor> = editors.iter().collect();
    let ins = p
        .instructions("xdp_ingress", Constants::every(&refs))
        .unwrap()
        .unwrap();
    let at = ins
        .iter()
        .position(|i| i.is_ld_imm64() && i.imm == 0x5566_7788)
        .unwrap();
    assert_eq!(ins[at + 1].imm, 0x1122_3344);
    let (_, for_aya) = p.instantiate(Constants::every(&refs)).unwrap();
    assert!(for_aya.is_empty(), "asm constants are not aya's globals");

    let strict = prepared(
        GOCOMPAT,
        Settings {
            strict_constants: true,
            ..Default::default()
        },
    )
    .unwrap();
    match strict.instantiate(Constants::every(&refs)).unwrap_err() {
        Error::UnsetConstant { name, .. } => {
            assert!(name == "egress_marker" || name == "tc_marker")
        }
        other => panic!("{other}"),
    }
    let wide = ConstantEditor {
        value: vec![0; 9],
        ..ConstantEditor::new("tc_marker", 0u8)
    };
    let err = p.instantiate(Constants::every(&[&wide])).unwrap_err();
    assert!(err.to_string().contains("8 bytes at most"), "{err}");
    let missing = ConstantEditor::new("no_such_constant", 1u32);
    let err = p.instantiate(Constants::every(&[&missing])).unwrap_err();
    assert!(
        err.to_string()
            .contains("constant editor `no_such_constant`"),
        "{err}"
    );
}

#[test]
fn ring_sizes_round_up_to_a_power_of_two_of_pages_as_libbpf_does() {
    use validate::ring_size;
    assert_eq!(ring_size(0, 4096), 0, "left for the kernel to refuse");
    assert_eq!(ring_size(1, 4096), 4096);
    assert_eq!(ring_size(4096, 4096), 4096);
    assert_eq!(ring_size(5000, 4096), 8192);
    assert_eq!(ring_size(3 * 4096, 4096), 4 * 4096);
    assert_eq!(ring_size(1 << 31, 4096), 1 << 31);
    assert_eq!(ring_size(u32::MAX, 4096), u32::MAX, "no overflow");
}

#[test]
fn per_probe_asm_constants_are_scoped_to_programs_that_alone_load_them() {
    let mut p = prepared(GOCOMPAT, Settings::default()).unwrap();
    let own = |name: &str, v: u64| ConstantEditor {
        probes: vec![crate::ProbeIdentificationPair::new("a", "xdp_ingress")],
        ..ConstantEditor::new(name, v)
    };
    let functions = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Its only site is in xdp_ingress.
    assert!(p.scope(&own("ingress_marker", 5), &functions(&["xdp_ingress"])));
    // A second value for the same program is left to copies.
    assert!(!p.scope(&own("ingress_marker", 6), &functions(&["xdp_ingress"])));
    // Loaded in egress_value, a subprogram, not in the programs named.
    assert!(!p.scope(&own("egress_marker", 1), &functions(&["xdp_egress"])));
    // In programs beside the ones named (ksyscall_mkdir and the kprobe.multi programs).
    assert!(!p.scope(&own("filter_tid", 1), &functions(&["ksyscall_mkdir"])));
    assert!(!p.scope(&own("no_such_constant", 1), &functions(&["xdp_ingress"])));
    let every = ConstantEditor::new("ingress_marker", 1u64);
    let ins = p
        .instructions("xdp_ingress", Constants::every(&[&every]))
        .unwrap()
        .unwrap();
    assert!(
        ins.iter().any(|i| i.is_ld_imm64() && i.imm == 5),
        "the probe's value wins over the value for every probe"
    );
    // A copy's own editor wins over both.
    let copy = own("ingress_marker", 7);
    let ins = p
        .instructions(
            "xdp_ingress",
            Constants {
                every: &[&every],
                own: &[&copy],
            },
        )
        .unwrap()
        .unwrap();
    assert!(ins.iter().any(|i| i.is_ld_imm64() && i.imm == 7));
}

#[test]
fn patchers_see_each_program_and_replace_placeholders() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let patcher = InstructionPatcher::new(move |prog| {
        log.lock().unwrap().push(prog.section.to_owned());
        for ins in prog.instructions.iter_mut() {
            if ins.is_helper_call() && ins.imm == -1 {
                *ins = Instruction::call_helper(5);
            }
        }
        Ok(())
    });
    let p = prepared(
        GOCOMPAT,
        Settings {
            patchers: vec![patcher],
            ..Default::default()
        },
    )
    .unwrap();
    let ins = p
        .instructions("xdp_patched", Constants::default())
        .unwrap()
        .unwrap();
    assert_eq!(ins[0], Instruction::call_helper(5));
    assert!(seen.lock().unwrap().contains(&"xdp/patched".to_owned()));
    let failing = prepared(
        GOCOMPAT,
        Settings {
            patchers: vec![InstructionPatcher::new(|_| Err("no".into()))],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        failing.instantiate(Constants::default()).unwrap_err(),
        Error::InstructionPatcher { .. }
    ));
}

const BYPASS: &[u8] = include_bytes!("../../../../ebpf-fixtures/bypass.bpf.o");
const BYPASS_LATE: &[u8] = include_bytes!("../../../../ebpf-fixtures/bypass_late.bpf.o");

#[test]
fn bypass_injects_a_prologue_with_one_index_per_program() {
    let p = prepared(
        BYPASS,
        Settings {
            bypass_enabled: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p.bypass_index("bypassable_mkdir"), Some(1));
    assert_eq!(p.bypass_index("bypassable_rmdir"), Some(2));
    assert_eq!(p.bypass_map(), Some(("program_bypassed", 3)));
    let ins = p
        .instructions("bypassable_rmdir", Constants::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        (ins[0].code, ins[0].dst, ins[0].src),
        (0xbf, 6, 1),
        "r6 = r1"
    );
    assert_eq!((ins[1].code, ins[1].imm), (0x62, 2), "stores its index");
    assert!(ins[4].is_ld_imm64());
    // aya-obj parses it, with the map relocation where the prologue loads it.
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    assert!(obj.maps.contains_key("program_bypassed"));
    let file = object::File::parse(p.bytes.as_slice()).unwrap();
    let section = file
        .section_by_name("tracepoint/syscalls/sys_enter_rmdir")
        .unwrap();
    let to_map: Vec<u64> = section
        .relocations()
        .filter(|(_, r)| match r.target() {
            object::RelocationTarget::Symbol(i) => {
                file.symbol_by_index(i).unwrap().name() == Ok("program_bypassed")
            }
            _ => false,
        })
        .map(|(o, _)| o)
        .collect();
    assert_eq!(to_map, [32]);
}

#[test]
fn without_bypass_the_placeholder_is_zero_and_the_map_is_not_created() {
    let p = prepared(BYPASS, Settings::default()).unwrap();
    assert_eq!(p.bypass_map(), None);
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    assert!(!obj.maps.contains_key("program_bypassed"));
    assert!(obj.maps.contains_key("counts"));
    // Not an unset constant either, even with strict constants: users do not set it.
    let strict = prepared(
        BYPASS,
        Settings {
            strict_constants: true,
            ..Default::default()
        },
    )
    .unwrap();
    let tid = ConstantEditor::new("filter_tid", 1u32);
    assert!(strict.instantiate(Constants::every(&[&tid])).is_ok());
    assert!(
        strict.instantiate(Constants::default()).is_err(),
        "filter_tid is one"
    );
}

#[test]
fn a_late_placeholder_is_refused_naming_its_program() {
    let err = prepared(
        BYPASS_LATE,
        Settings {
            bypass_enabled: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Bypass { function, .. } if function == "late_bypass"),
        "{err:?}"
    );
}

#[test]
fn a_malformed_legacy_map_definition_is_a_typed_error() {
    // `results` cut to 12 bytes: fewer than the five standard fields.
    let readable = rewrite::without_llvm_sections(GOCOMPAT).unwrap();
    let mut b = object::build::elf::Builder::read(readable.as_slice()).unwrap();
    for s in b.symbols.iter_mut() {
        if s.name.as_slice() == b"results" {
            s.st_size = 12;
        }
    }
    if !b
        .sections
        .iter()
        .any(|s| matches!(s.data, object::build::elf::SectionData::SectionString))
    {
        let s = b.sections.add();
        s.name = b".shstrtab"[..].into();
        s.sh_type = object::elf::SHT_STRTAB;
        s.data = object::build::elf::SectionData::SectionString;
    }
    let mut bytes = Vec::new();
    b.write(&mut bytes).unwrap();
    match prepared(&bytes, Settings::default()).unwrap_err() {
        Error::InvalidMapDefinition { map, reason } => {
            assert_eq!(map, "results");
            assert!(reason.contains("12 bytes"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn merged_xdp_sections_keep_one_btf_ext_block_per_region() {
    let p = prepared(GOCOMPAT, Settings::default()).unwrap();
    let file = object::File::parse(p.bytes.as_slice()).unwrap();
    let section = |name: &str| {
        use object::ObjectSection as _;
        file.section_by_name(name).unwrap().data().unwrap().to_vec()
    };
    let (btf_data, ext) = (
        section(".BTF"),
        btf::Ext::parse(&section(".BTF.ext")).unwrap(),
    );
    let xdp = ext
        .names()
        .filter(|&o| btf::string_at(&btf_data, o).unwrap() == "xdp")
        .count();
    // Func info and line info: one block each for the merged `xdp` section.
    assert_eq!(xdp, 2);
    assert!(ext
        .names()
        .all(|o| !btf::string_at(&btf_data, o).unwrap().starts_with("xdp/")));
}

const ROUTER: &[u8] = include_bytes!("../../../../ebpf-fixtures/router.bpf.o");

#[test]
fn an_editor_changes_only_its_map_when_maps_share_a_struct() {
    // inner_a, inner_b and tail_hits are declared with one `struct inner_map`.
    let editors = [MapSpecEditor {
        name: "inner_a".into(),
        value_size: Some(16),
        ..Default::default()
    }];
    let p = prepared(
        ROUTER,
        Settings {
            spec_editors: &editors,
            ..Default::default()
        },
    )
    .unwrap();
    let obj = aya_obj::Object::parse(&p.bytes).unwrap();
    assert_eq!(obj.maps["inner_a"].value_size(), 16);
    assert_eq!(obj.maps["inner_b"].value_size(), 8);
    assert_eq!(obj.maps["tail_hits"].value_size(), 8);
}

/// A `.BTF` type name offset past the string table (the fuzz finding
/// regression-btf-string-offset) is refused by the manager's own walk of `.BTF`, before aya-obj
/// slices its string table with it; a pin by name is listed.
#[test]
fn btf_name_offsets_are_checked_before_aya() {
    let finding = include_bytes!("../../../../fuzz/corpus/object/regression-btf-string-offset");
    let err = validate::check(&aligned(finding), &[]).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::InvalidObject { .. }) && text.contains("not a string of the"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    let pinned = include_bytes!("../../../../ebpf-fixtures/pinned.bpf.o");
    assert_eq!(
        validate::check(&aligned(pinned), &[])
            .unwrap()
            .pinned_by_name,
        ["shared_counts"]
    );
    assert!(validate::check(&aligned(PROBES), &[])
        .unwrap()
        .pinned_by_name
        .is_empty());
}

#[test]
fn patchers_find_constants_maps_and_calls_by_reference() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    // Telemetry-style: no sentinel, the constant's ld_imm64 found by its name.
    let patcher = InstructionPatcher::new(move |prog| {
        let offsets = prog.reference_offsets();
        log.lock()
            .unwrap()
            .push((prog.function.to_owned(), offsets.clone()));
        for &at in offsets.get("ingress_marker").into_iter().flatten() {
            assert!(prog.instructions[at].is_ld_imm64());
            assert_eq!(prog.reference(at), Some("ingress_marker"));
            prog.instructions[at].imm = 0x0bad_cafe;
            prog.instructions[at + 1].imm = 0;
        }
        Ok(())
    });
    let p = prepared(
        GOCOMPAT,
        Settings {
            patchers: vec![patcher],
            ..Default::default()
        },
    )
    .unwrap();
    let ins = p
        .instructions("xdp_ingress", Constants::default())
        .unwrap()
        .unwrap();
    assert!(ins.iter().any(|i| i.is_ld_imm64() && i.imm == 0x0bad_cafe));
    let seen = seen.lock().unwrap();
    let refs = |f: &str| {
        seen.iter()
            .find(|(function, _)| function == f)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("the patcher saw no {f}"))
    };
    let ingress = refs("xdp_ingress");
    assert_eq!(ingress["ingress_marker"].len(), 1, "{ingress:?}");
    assert!(ingress.contains_key("results"), "the map load: {ingress:?}");
    // The `call -1` placeholder is no relocation: it has no reference.
    // A call of a static function, relocated against `.text`, names the function.
    let egress = refs("xdp_egress");
    assert!(egress.contains_key("egress_value"), "{egress:?}");
    let patched = refs("xdp_patched");
    assert!(patched.values().flatten().all(|&i| i != 0), "{patched:?}");
}

#[test]
fn a_map_of_maps_without_btf_gets_btf_of_its_own() {
    const MAPOFMAPS_GO: &[u8] = include_bytes!("../../../../ebpf-fixtures/mapofmaps_go.bpf.o");
    let empty = super::btf_types::empty();
    let types = super::btf_types::Types::parse(&empty).expect("the empty BTF parses");
    assert_eq!(types.to_bytes(), empty);
    let specs = [crate::InnerOuterMapSpec {
        outer_map_name: "outer".into(),
        inner_map_name: "inner_template".into(),
    }];
    let p = prepared(
        MAPOFMAPS_GO,
        Settings {
            inner_outer: &specs,
            ..Default::default()
        },
    )
    .unwrap();
    let (bytes, _) = p.instantiate(Constants::default()).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let btf = file.section_by_name(".BTF").expect("a .BTF section");
    let types = super::btf_types::Types::parse(btf.data().unwrap()).unwrap();
    assert_eq!(types.vars(".maps"), ["outer"]);
}
