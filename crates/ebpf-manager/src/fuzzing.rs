//! Entry points of the fuzz targets (fuzz/, feature `fuzzing`): the stages of `init` and of
//! hook resolution that run without a kernel, fed arbitrary bytes. Each must return or fail
//! with a typed error, never panic, abort or loop; the few properties a caller relies on
//! are asserted.

use crate::{
    elf::{self, ElfIndex},
    kernel::{instance, tracefs, FunctionIndex},
    pipeline, probe, ProbeIdentificationPair,
};

/// Makes the panic hook (libFuzzer's aborts) ignore a panic inside aya-obj's parse, which the
/// library catches and turns into [`Error::InvalidObject`](crate::Error::InvalidObject): the
/// target then finds the manager's own panics and every abort. The aya-obj panics the
/// validation knows of are refused before aya-obj runs.
fn let_aya_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !pipeline::validate::at_aya_boundary() {
                previous(info);
            }
        }));
    });
}

/// An object as `init` reads it: the section index, its `__ksym` externs (every other one
/// found in the kernel, with made-up ids and addresses), validation, rewriting (legacy maps,
/// Go-world section names, bypass, `.ksyms`) and analysis, then one instantiation.
pub fn object(bytes: &[u8]) {
    use pipeline::ksyms::Resolved;
    let_aya_panics_unwind();
    // The same bytes as a module's split BTF (it comes from the kernel, but must not panic).
    if let Some(base) = pipeline::split_btf::base(bytes) {
        let _ = pipeline::split_btf::func_id(bytes, base, "bpf_xdp_ct_lookup");
    }
    let base = pipeline::split_btf::Base {
        types: 100,
        strings: b"\0bpf_xdp_ct_lookup\0",
    };
    let _ = pipeline::split_btf::func_id(bytes, base, "bpf_xdp_ct_lookup");
    let _ = pipeline::split_btf::merged(bytes, bytes, &["int"].into_iter().collect());
    let _ = pipeline::diagnose::core_type_names(bytes);
    // struct_ops variables, laid out against the bytes as a kernel's BTF (trusted in use, but
    // read by offsets that must not panic).
    let _ = pipeline::struct_ops::names(bytes);
    if let Ok(specs) = pipeline::struct_ops::specs(bytes) {
        if let Ok(kernel) = pipeline::btf_read::BtfView::parse(bytes) {
            for spec in &specs {
                let _ = pipeline::struct_ops::plan(spec, &kernel, &[]);
            }
        }
    }
    let Ok(elf) = ElfIndex::parse(bytes) else {
        return;
    };
    let externs = pipeline::ksyms::list(bytes).unwrap_or_default();
    let ksyms: Vec<_> = externs
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let r = match (i % 3, e.kind) {
                (1, _) => Resolved::Missing("fuzz"),
                (_, pipeline::ksyms::Kind::UntypedVar) => Resolved::Address(0xffff_0000 + i as u64),
                (2, _) => Resolved::ModuleFunc {
                    id: i as u32 + 1,
                    slot: 1,
                    fd: -1,
                },
                _ => Resolved::BtfId(i as u32 + 1),
            };
            (e, r)
        })
        .collect();
    let settings = pipeline::Settings {
        spec_editors: &[],
        excluded_maps: &[],
        inner_outer: &[],
        patchers: Vec::new(),
        strict_constants: false,
        bypass_enabled: true,
        ksyms: &ksyms,
    };
    if let Ok(prepared) = pipeline::prepare(bytes, &elf, settings) {
        let _ = prepared.instantiate(pipeline::Constants::default());
    }
    for p in &elf.programs {
        let _ = elf::section_target(&p.section);
    }
}

/// A pattern against a function list: `data` is the pattern, a NUL, then the list in the
/// format of tracefs `available_filter_functions`.
pub fn patterns(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, list) = text.split_once('\0').unwrap_or((&text, ""));
    let index = FunctionIndex::from_available_filter_functions("fuzz".into(), list);
    let id = ProbeIdentificationPair::new("fuzz", "fuzz");
    for (glob, regex) in [(Some(pattern), None), (None, Some(pattern))] {
        if let Ok(Some(p)) = probe::pattern::Pattern::compile(&id, glob, regex) {
            let first = p.find(&index);
            let all = p.find_all(&index);
            assert_eq!(
                first.is_some(),
                !all.is_empty(),
                "find and find_all disagree"
            );
            assert!(all.iter().all(|n| index.contains(n)));
        }
    }
    let _ = index.syscall(pattern);
}

/// Declaration strings: a kprobe hook as written to `kprobe_events`, section names, tracefs
/// listings and names of this library's objects, and an executable's symbol table (the bytes
/// as an ELF file).
pub fn declaration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let id = ProbeIdentificationPair::new("fuzz", "fuzz");
    if probe::resolve::check_kprobe_symbol(&id, &text).is_ok() {
        // What reaches kprobe_events must be one token with no control characters.
        assert!(
            !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || c.is_control()),
            "{text:?} accepted as a kprobe symbol"
        );
    }
    let event = tracefs::event_name(text.len().is_multiple_of(2), &text);
    assert!(event.len() < 64, "event name {event:?} too long");
    assert!(event.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let _ = elf::section_target(&text);
    let _ = pipeline::sections::fate(&text);
    let _ = instance::owner_token(&text);
    for line in text.lines() {
        let _ = tracefs::parse_event_line(line);
    }
    let _ = tracefs::events_of_this_library(&text);
    let _ = probe::binary_symbols::parse(data);
}
