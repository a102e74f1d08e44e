//! Objects laid out the way aya-ebpf 0.2 writes Rust eBPF programs
//! (ebpf-fixtures/src/aya_style.bpf.c): bare `kprobe` and `tracepoint` sections whose target
//! the probe gives, and `maps` in aya's 7-field layout named like Rust statics.

use ebpf_manager::{CleanupType, ConstantEditor, Error, Manager, Options, Probe};
use integration_tests::*;

const AYA_STYLE: &[u8] = include_bytes!("../../ebpf-fixtures/aya_style.bpf.o");

fn aya_manager(probes: Vec<Probe>) -> ebpf_manager::Result<Manager> {
    setup();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init_with_options(
        AYA_STYLE,
        Options {
            constant_editors: vec![ConstantEditor::new("FILTER_TID", gettid())],
            ..Default::default()
        },
    )?;
    Ok(m)
}

#[test]
fn aya_style_bare_tracepoint_takes_its_target_from_the_probe() {
    let p = Probe {
        tracepoint_category: Some("syscalls".into()),
        tracepoint_name: Some("sys_enter_mkdir".into()),
        ..probe("tp", "aya_tracepoint")
    };
    let mut m = aya_manager(vec![p]).unwrap();
    m.start().unwrap();
    mkdir_rmdir("aya-style-tp");
    assert_eq!(read_slot(&m, "HITS", 1), 1);
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn aya_style_bare_kprobe_takes_its_target_from_hook_func_name() {
    let p = Probe {
        hook_func_name: Some("vfs_mkdir".into()),
        ..probe("kp", "aya_kprobe")
    };
    let id = p.id();
    let mut m = aya_manager(vec![p]).unwrap();
    if kernel_has_kprobes() {
        m.start().unwrap();
        mkdir_rmdir("aya-style-kp");
        assert_eq!(read_slot(&m, "HITS", 0), 1);
        m.stop(CleanupType::CleanAll).unwrap();
    } else {
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::KprobesUnsupported { id: got, hook } if *got == id && hook == "vfs_mkdir"),
            "{err:?}"
        );
    }
}

#[test]
fn aya_style_bare_sections_without_a_target_say_what_to_set() {
    let err = aya_manager(vec![probe("kp", "aya_kprobe")]).unwrap_err();
    println!("bare kprobe without a target: {}", err.report());
    assert!(
        matches!(&err, Error::InvalidProbe { .. }) && err.to_string().contains("hook_func_name"),
        "{err:?}"
    );
    let err = aya_manager(vec![probe("tp", "aya_tracepoint")]).unwrap_err();
    println!("bare tracepoint without a target: {}", err.report());
    assert!(
        matches!(&err, Error::InvalidProbe { .. }) && err.to_string().contains("tracepoint_name"),
        "{err:?}"
    );
}
