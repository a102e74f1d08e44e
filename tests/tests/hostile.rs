//! Hostile input (issue 13): malformed objects and bad declarations. Each gets a typed error,
//! never a panic or an abort, and leaves no BPF object (map, program, link, BTF, perf event)
//! behind: the fds this process holds are counted before and after.
//!
//! The objects are the fixtures with bytes changed the way a corrupt file or a hostile one
//! would have them (`integration_tests::elf_edit`).

use std::sync::Mutex;

use ebpf_manager::{
    ConstantEditor, Error, Manager, MapSpecEditor, Options, PerfMap, Probe, ProbesSelector,
    TcAttachMethod,
};
use integration_tests::{
    elf_edit::{bpf_fds, field, ElfEdit},
    net::{CGROUP, NET},
    readers::READERS,
    user::USER,
    *,
};

/// The fd counts are of the whole process: one case at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const TP: &str = "tracepoint_sys_enter_mkdir";
const TP_SECTION: &str = "tracepoint/syscalls/sys_enter_mkdir";

/// Runs `init` (and `start` when init passes) of `probes` over `object`; returns the error,
/// after checking that it is one and that no BPF fd is left.
fn refused(case: &str, object: &[u8], probes: Vec<Probe>, options: Options) -> Error {
    let before = bpf_fds();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    let err = match m.init_with_options(object, options) {
        Err(e) => e,
        Ok(()) => m
            .start()
            .err()
            .unwrap_or_else(|| panic!("{case}: init and start accepted it")),
    };
    drop(m);
    assert_eq!(bpf_fds(), before, "{case}: BPF fds left after: {err}");
    err
}

fn tp() -> Vec<Probe> {
    vec![probe("", TP)]
}

/// Objects made from probes.bpf.o: what each case changes, and the error it must give.
fn object_cases() -> Vec<(String, Vec<u8>, Vec<Probe>, Options)> {
    let base = ElfEdit::of(PROBES);
    let len = PROBES.len();
    let mut cases: Vec<(String, ElfEdit)> = Vec::new();
    for cut in [
        0,
        1,
        4,
        16,
        52,
        63,
        64,
        200,
        len / 3,
        len / 2,
        len - 100,
        len - 1,
    ] {
        cases.push((
            format!("truncated at {cut} bytes"),
            base.clone().truncate(cut),
        ));
    }
    let header = [
        ("for x86-64", field::E_MACHINE, 2, 62),
        ("section headers past the end", field::E_SHOFF, 8, 1 << 40),
        ("65535 section headers", field::E_SHNUM, 2, 0xFFFF),
        ("section names in section 500", field::E_SHSTRNDX, 2, 500),
    ];
    for (what, at, width, value) in header {
        cases.push((what.into(), base.clone().put(at, width, value)));
    }
    cases.push(("ELF32 class".into(), base.clone().put(4, 1, 1)));
    cases.push(("big-endian".into(), base.clone().put(5, 1, 2)));
    let symbol = [
        ("program symbol past its section", field::ST_VALUE, 8, 0x160),
        (
            "program symbol of u64::MAX bytes",
            field::ST_SIZE,
            8,
            u64::MAX,
        ),
        ("program symbol one byte too long", field::ST_SIZE, 8, 0x161),
        ("program symbol in section 500", field::ST_SHNDX, 2, 500),
        (
            "program symbol named past the string table",
            field::ST_NAME,
            4,
            0xFF_FFFF,
        ),
    ];
    for (what, at, width, value) in symbol {
        cases.push((what.into(), base.clone().symbol(TP, at, width, value)));
    }
    let section = [
        (
            "program section of 7 bytes",
            TP_SECTION,
            field::SH_SIZE,
            8,
            7,
        ),
        (
            "program section past the end of the file",
            TP_SECTION,
            field::SH_OFFSET,
            8,
            1 << 32,
        ),
        // A zero-filled .rodata of 2^48 bytes: aya-obj would abort allocating it.
        (
            ".rodata of 2^48 zeroed bytes",
            ".rodata",
            field::SH_TYPE,
            4,
            8,
        ),
        (
            "a symbol table past the end of the file",
            ".symtab",
            field::SH_SIZE,
            8,
            1 << 40,
        ),
        (
            "strings past the end of the file",
            ".strtab",
            field::SH_OFFSET,
            8,
            1 << 36,
        ),
        (
            "BTF past the end of the file",
            ".BTF",
            field::SH_SIZE,
            8,
            1 << 30,
        ),
        (
            "relocations of section 99",
            ".reltracepoint/syscalls/sys_enter_mkdir",
            field::SH_INFO,
            4,
            99,
        ),
        ("no program sections", TP_SECTION, field::SH_FLAGS, 8, 0),
    ];
    for (what, name, at, width, value) in section {
        let mut edited = base.clone().section(name, at, width, value);
        if what.starts_with(".rodata") {
            edited = edited.section(name, field::SH_SIZE, 8, 1 << 48);
        }
        cases.push((what.into(), edited));
    }
    let reloc = base.first_relocation(".reltracepoint/syscalls/sys_enter_mkdir");
    cases.push((
        "a relocation of symbol 9999".into(),
        base.clone().put(reloc + 8, 8, (9999 << 32) | 1),
    ));
    cases.push((
        "a relocation past its section".into(),
        base.clone().put(reloc, 8, 0xFFFF_FFF0),
    ));
    // A hook point that would write a second line into kprobe_events.
    cases.push((
        "a section name with a newline".into(),
        base.clone()
            .replace(b"kprobe/vfs_mkdir\0", b"kprobe/vfs\nmkdir\0"),
    ));
    let mut all: Vec<(String, Vec<u8>, Vec<Probe>, Options)> = cases
        .into_iter()
        .map(|(what, edit)| {
            let probes = if what.contains("newline") {
                vec![probe("", "kprobe_vfs_mkdir")]
            } else {
                tp()
            };
            (what, edit.0, probes, this_thread_only())
        })
        .collect();
    // A legacy map definition shorter than any layout (gocompat.bpf.o's `maps/results`).
    let legacy = ElfEdit::of(GOCOMPAT).section("maps/results", field::SH_SIZE, 8, 7);
    all.push((
        "a legacy map section of 7 bytes".into(),
        legacy.0,
        vec![probe("", "xdp_plain")],
        Options::default(),
    ));
    all
}

#[test]
fn hostile_objects_get_typed_errors_and_leave_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let cases = object_cases();
    let mut counted = 0;
    for (what, object, probes, options) in cases {
        let err = refused(&what, &object, probes, options);
        // A typed error that says something, never a panic turned into text.
        let text = err.to_string();
        assert!(!text.is_empty(), "{what}");
        assert!(!text.contains("panicked"), "{what}: {text}");
        println!("hostile object: {what}: {text}");
        counted += 1;
    }
    println!("hostile objects refused: {counted}");
    assert!(counted >= 30, "only {counted} hostile objects");
}

/// `__ksym` hostility: a kfunc call of an id that names no kfunc (an object "resolved" by
/// someone else), and a `.ksyms` entry that is neither a function nor a variable.
#[test]
fn hostile_kfunc_calls_and_ksyms_get_typed_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    // Every `call bpf_get_current_pid_tgid` made a kfunc call of BTF id 0x7fffffff.
    let bad_id = ElfEdit::of(PROBES).replace(
        &[0x85, 0x00, 0, 0, 0x0e, 0, 0, 0],
        &[0x85, 0x20, 0, 0, 0xff, 0xff, 0xff, 0x7f],
    );
    let err = refused(
        "a kfunc call of a bad BTF id",
        &bad_id.0,
        tp(),
        this_thread_only(),
    );
    assert!(
        matches!(&err, Error::Verifier { function, .. } if function == TP),
        "{err:?}"
    );
    println!("hostile object: a kfunc call of a bad BTF id: {err}");
    let garbage = include_bytes!("../../fuzz/corpus/object/hostile-ksyms-entry-not-func-or-var");
    let probes = vec![probe("", "kfunc_weak")];
    let err = refused("a garbage .ksyms", garbage, probes, Options::default());
    assert!(
        matches!(&err, Error::InvalidObject { reason } if reason.contains("only kfuncs (FUNC) and variables (VAR)")),
        "{err:?}"
    );
    println!("hostile object: a garbage .ksyms: {err}");
}

/// A legacy map whose type is no map type of any kernel.
#[test]
fn hostile_map_of_an_unknown_type_is_a_typed_error() {
    use object::{Object as _, ObjectSection as _};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let file = object::File::parse(GOCOMPAT).unwrap();
    let (at, _) = file
        .section_by_name("maps/unused")
        .and_then(|s| s.file_range())
        .unwrap();
    let unknown = ElfEdit::of(GOCOMPAT).put(at as usize, 4, 99);
    let err = refused(
        "a map of type 99",
        &unknown.0,
        vec![probe("", "xdp_plain")],
        Options::default(),
    );
    assert!(
        matches!(&err, Error::InvalidObject { reason } if reason.contains("`unused`") && reason.contains("99")),
        "{err:?}"
    );
    println!("hostile object: a map of type 99: {err}");
}

#[test]
fn hostile_symbols_and_sizes_are_refused_before_aya() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    // aya-obj slices program sections by these (a panic before the pipeline checked them).
    let past = ElfEdit::of(PROBES).symbol(TP, field::ST_SIZE, 8, u64::MAX);
    match refused("u64::MAX symbol", &past.0, tp(), Options::default()) {
        Error::InvalidObject { reason } => assert!(
            reason.contains(&format!("symbol `{TP}`")) && reason.contains("runs past the end"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    let bss = ElfEdit::of(PROBES)
        .section(".rodata", field::SH_TYPE, 4, 8)
        .section(".rodata", field::SH_SIZE, 8, 1 << 48);
    match refused(".bss of 2^48", &bss.0, tp(), Options::default()) {
        Error::InvalidObject { reason } => {
            assert!(
                reason.contains("281474976710656 bytes of zeroed data"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    let odd = ElfEdit::of(PROBES).section(TP_SECTION, field::SH_SIZE, 8, 7);
    match refused("7-byte section", &odd.0, tp(), Options::default()) {
        Error::InvalidObject { reason } => {
            assert!(
                reason.contains("not a whole number of 8-byte instructions"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// aya rounds a ring buffer to a power of two of pages in a `u32`: near u32::MAX that
/// overflowed (a panic in debug builds).
#[test]
fn hostile_ring_buffer_size_is_refused_before_aya() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let options = Options {
        map_spec_editors: vec![MapSpecEditor {
            name: "ring_events".into(),
            max_entries: Some(u32::MAX - 4095),
            ..Default::default()
        }],
        ..Default::default()
    };
    match refused(
        "ring of 4 GiB",
        READERS,
        vec![probe("", "ring_emit")],
        options,
    ) {
        Error::InvalidMapDefinition { map, reason } => {
            assert_eq!(map, "ring_events");
            assert!(reason.contains("the largest is 2147483648"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// Bad declarations over good objects: each a typed error naming what is wrong.
#[test]
fn hostile_declarations_get_typed_errors_and_leave_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let me = std::env::current_exe().unwrap();
    let on = |function: &str, edit: fn(&mut Probe)| {
        let mut p = probe("bad", function);
        edit(&mut p);
        vec![p]
    };
    let cases: Vec<(&str, &[u8], Vec<Probe>, Options)> = vec![
        (
            "no function",
            PROBES,
            vec![probe("", "")],
            Options::default(),
        ),
        (
            "unknown function",
            PROBES,
            vec![probe("", "nope")],
            Options::default(),
        ),
        (
            "duplicate id",
            PROBES,
            vec![probe("a", TP), probe("a", TP)],
            Options::default(),
        ),
        (
            "unknown section",
            PROBES,
            vec![Probe {
                section: Some("kprobe/nope".into()),
                ..Default::default()
            }],
            Options::default(),
        ),
        (
            "invalid regex",
            PROBES,
            on("kprobe_generic", |p| p.match_func_name = Some("([".into())),
            Options::default(),
        ),
        (
            "hook with a newline",
            PROBES,
            on("kprobe_generic", |p| {
                p.hook_func_name = Some("vfs_mkdir\n-:kprobes/x".into())
            }),
            Options::default(),
        ),
        (
            "hook with a space",
            PROBES,
            on("kprobe_generic", |p| {
                p.hook_func_name = Some("vfs_mkdir x".into())
            }),
            Options::default(),
        ),
        (
            "tracepoint that does not exist",
            PROBES,
            on(TP, |p| {
                p.tracepoint_name = Some("no_such_tracepoint".into())
            }),
            Options::default(),
        ),
        (
            "uprobe without binary",
            USER,
            on("uprobe_generic", |p| p.hook_func_name = Some("main".into())),
            Options::default(),
        ),
        (
            "uprobe binary missing",
            USER,
            on("uprobe_generic", |p| {
                p.binary_path = Some("/nonexistent/binary".into());
                p.hook_func_name = Some("main".into());
            }),
            Options::default(),
        ),
        (
            "uprobe match_all without pattern",
            USER,
            vec![Probe {
                binary_path: Some(me.clone()),
                match_all_functions: true,
                ..probe("bad", "uprobe_generic")
            }],
            Options::default(),
        ),
        (
            "perf_event without period",
            USER,
            on("perf_event_cpu_clock", |_| {}),
            Options::default(),
        ),
        (
            "perf_event with period and frequency",
            USER,
            on("perf_event_cpu_clock", |p| {
                p.sample_period = 1;
                p.sample_frequency = 1;
            }),
            Options::default(),
        ),
        (
            "xdp without interface",
            NET,
            on("xdp_count", |_| {}),
            Options::default(),
        ),
        (
            "tc prio on a TCX link",
            NET,
            on("tc_ingress", |p| {
                p.if_name = Some("lo".into());
                p.tc_attach_method = TcAttachMethod::Tcx;
                p.tc_filter_prio = 1;
            }),
            Options::default(),
        ),
        (
            "tc protocol on a TCX link",
            NET,
            on("tc_ingress", |p| {
                p.if_name = Some("lo".into());
                p.tc_attach_method = TcAttachMethod::Tcx;
                p.tc_filter_protocol = 0x0806;
            }),
            Options::default(),
        ),
        (
            "socket filter without socket",
            NET,
            on("socket_count", |_| {}),
            Options::default(),
        ),
        (
            "cgroup program without cgroup",
            CGROUP,
            on("sock_create", |_| {}),
            Options::default(),
        ),
        (
            "cgroup path that is a file",
            CGROUP,
            on("sock_create", |p| {
                p.cgroup_path = Some("/proc/self/status".into())
            }),
            Options::default(),
        ),
        (
            "constant editor naming nothing",
            PROBES,
            tp(),
            Options {
                constant_editors: vec![ConstantEditor::new("no_such_constant", 1u32)],
                strict_constants: true,
                ..Default::default()
            },
        ),
        (
            "constant of 9 bytes",
            PROBES,
            tp(),
            Options {
                constant_editors: vec![ConstantEditor {
                    value: vec![0; 9],
                    ..ConstantEditor::new("filter_tid", 0u32)
                }],
                ..Default::default()
            },
        ),
        (
            "map spec editor of a missing map",
            PROBES,
            tp(),
            Options {
                map_spec_editors: vec![MapSpecEditor {
                    name: "nope".into(),
                    max_entries: Some(1),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
        (
            "selector naming an undeclared probe",
            PROBES,
            tp(),
            Options {
                activated_probes: vec![ProbesSelector::Probe(
                    ebpf_manager::ProbeIdentificationPair::new("", "nope"),
                )],
                ..Default::default()
            },
        ),
        (
            "perf map of a missing map",
            READERS,
            vec![probe("", "perf_emit")],
            Options::default(),
        ),
    ];
    let mut counted = 0;
    for (what, object, probes, options) in cases {
        let mut probes = probes;
        let mut m_perf = Vec::new();
        if what == "perf map of a missing map" {
            m_perf.push(PerfMap {
                map_name: "nope".into(),
                data_handler: Some(std::sync::Arc::new(|_, _| {})),
                ..Default::default()
            });
        }
        let before = bpf_fds();
        let mut m = Manager {
            probes: std::mem::take(&mut probes),
            perf_maps: m_perf,
            ..Default::default()
        };
        let err = match m.init_with_options(object, options) {
            Err(e) => e,
            Ok(()) => m
                .start()
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted")),
        };
        drop(m);
        assert_eq!(bpf_fds(), before, "{what}: BPF fds left after: {err}");
        println!("bad declaration: {what}: {err}");
        counted += 1;
    }
    println!("bad declarations refused: {counted}");
    assert!(counted >= 20, "only {counted} bad declarations");
}

/// Objects the `object` fuzz target found (fuzz/corpus/object/regression-*): each panicked or
/// exhausted memory inside the manager or aya-obj before its check. Now each is a typed error
/// from the manager's own validation, none from the `catch_unwind` around aya-obj (the last, a
/// `.BTF` name offset aya-obj sliced the string table with, was until the manager walked
/// `.BTF` itself), and nothing is left.
#[test]
fn fuzz_findings_are_typed_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    // Built in: the QEMU tier has the test binaries, not the source tree.
    macro_rules! finding {
        ($file:literal, $expected:literal) => {
            (
                $file,
                &include_bytes!(concat!("../../fuzz/corpus/object/", $file))[..],
                $expected,
            )
        };
    }
    let cases: [(&str, &[u8], &str); 6] = [
        finding!("regression-btf-ext-records-past-end", ".BTF.ext: "),
        finding!(
            "regression-section-alignment-2-to-the-56",
            "asks for an alignment of"
        ),
        finding!(
            "regression-section-address",
            "in an object file sections have none"
        ),
        finding!("regression-relocation-offset-overflow", "a relocation at"),
        finding!("regression-relocation-past-section", "a relocation at"),
        finding!(
            "regression-btf-string-offset",
            "which is not a string of the"
        ),
    ];
    for (file, object, expected) in cases {
        let err = refused(file, object, vec![], Options::default());
        let text = err.to_string();
        println!("fuzz finding {file}: {text}");
        assert!(
            matches!(err, Error::InvalidObject { .. }),
            "{file}: {err:?}"
        );
        assert!(text.contains(expected), "{file}: {text}");
        assert!(!text.contains("panicked"), "{file}: {text}");
    }
}
