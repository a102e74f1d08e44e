//! One kernel function list per process: managers resolving patterns share it while one holds
//! it, and `start` lets go of it. Alone in its binary: the count is per process.

use ebpf_manager::{diagnostics::function_list_reads, Manager, Probe};
use integration_tests::*;

fn pattern_manager(uid: &str) -> Manager {
    let mut m = Manager {
        probes: vec![Probe {
            attach_to_func_name: Some("vfs_mkd*".into()),
            ..probe(uid, "kprobe_generic")
        }],
        ..Default::default()
    };
    m.init(PROBES).expect("init resolves the pattern");
    m
}

#[test]
fn managers_share_one_function_list_and_release_it() {
    setup();
    let before = function_list_reads();
    let a = pattern_manager("a");
    let b = pattern_manager("b");
    assert_eq!(function_list_reads() - before, 1, "read once for both");
    drop((a, b));
    let _c = pattern_manager("c");
    assert_eq!(
        function_list_reads() - before,
        2,
        "read again once every holder let go"
    );
}
