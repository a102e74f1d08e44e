use ebpf_manager::{Manager, Probe};
use integration_tests::*;
#[test]
fn scratch_patterns() {
    setup();
    let index =
        ebpf_manager::FunctionIndex::load(ebpf_manager::testing::tracefs_root().ok()).unwrap();
    let all = index.find_all(&glob::Pattern::new("*").unwrap());
    let mut seen = std::collections::HashSet::new();
    let patterns: Vec<String> = all
        .iter()
        .filter(|n| n.len() > 6 && n.chars().take(4).all(|c| c.is_ascii_alphabetic()))
        .map(|n| format!("{}*", &n[..4]))
        .filter(|p| seen.insert(p.clone()))
        .take(100)
        .collect();
    for _ in 0..20 {
        let probes = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| Probe {
                uid: format!("p{i}"),
                ebpf_func_name: "kprobe_generic".into(),
                attach_to_func_name: Some(p.clone()),
                ..Default::default()
            })
            .collect();
        let mut m = Manager {
            probes,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        m.init(PROBES).unwrap();
        println!("init {:?}", t.elapsed());
    }
}
