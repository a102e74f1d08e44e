//! The scale rows of the startup benchmark: a pattern over hundreds of functions (kprobe.multi
//! against one kprobe per function, through the manager and raw aya), 100 patterns resolved at
//! init, kernel BTF parses of per-probe copies, and resident memory after start (each measured
//! in a child process of its own).

use std::time::{Duration, Instant};

use aya::{programs::KProbe, Ebpf};
use ebpf_manager::{
    CleanupType, ConstantEditor, KprobeAttachMethod, Manager, Options, Probe,
    ProbeIdentificationPair,
};
use integration_tests::{kernel_has_kprobes, HELLOWORLD, PROBES};

const MANY: &[u8] = include_bytes!("../../../ebpf-fixtures/many_tracepoints.bpf.o");
/// The pattern of the wide rows: `[a-X]*_show` with the first X that matches 500 functions.
fn wide_pattern(index: &ebpf_manager::FunctionIndex) -> String {
    ('a'..='z')
        .map(|last| format!("[a-{last}]*_show"))
        .find(|p| {
            index
                .find_all(&glob::Pattern::new(p).expect("pattern"))
                .len()
                >= 500
        })
        .unwrap_or_else(|| "*_show".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn functions() -> ebpf_manager::FunctionIndex {
    ebpf_manager::FunctionIndex::load(ebpf_manager::testing::tracefs_root().ok())
        .expect("function list")
}

fn wide_probe(method: KprobeAttachMethod, pattern: &str) -> Manager {
    Manager {
        probes: vec![Probe {
            uid: "wide".into(),
            ebpf_func_name: "kprobe_generic".into(),
            attach_to_func_name: Some(pattern.into()),
            match_all_functions: true,
            kprobe_attach_method: method,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// start + stop of a manager on every function of `pattern`.
fn manager_wide(method: KprobeAttachMethod, pattern: &str) -> Duration {
    let mut m = wide_probe(method, pattern);
    m.init(PROBES).expect("init");
    let t = Instant::now();
    m.start().expect("start");
    m.stop(CleanupType::CleanAll).expect("stop");
    t.elapsed()
}

/// attach + drop of raw aya, one kprobe per function.
fn aya_wide(symbols: &[String]) -> Duration {
    let mut ebpf = Ebpf::load(PROBES).expect("aya load");
    let p: &mut KProbe = ebpf
        .program_mut("kprobe_generic")
        .expect("program")
        .try_into()
        .expect("kprobe");
    p.load().expect("load");
    let t = Instant::now();
    for s in symbols {
        // Some matches cannot be probed (notrace): skipped, as the manager's list leaves out
        // only the blacklist.
        let _ = p.attach(s, 0);
    }
    drop(ebpf);
    t.elapsed()
}

fn pattern_rows() {
    let index = functions();
    let wide = wide_pattern(&index);
    let symbols: Vec<String> = index
        .find_all(&glob::Pattern::new(&wide).expect("pattern"))
        .into_iter()
        .map(str::to_owned)
        .collect();
    let n = symbols.len();
    if !kernel_has_kprobes() {
        println!(
            "{:<48} n/a: this kernel has no kprobes",
            format!("{n} kprobes from `{wide}`")
        );
        return;
    }
    if !ebpf_manager::features::kprobe_multi_supported() {
        println!(
            "{:<48} n/a: no kprobe.multi here (CONFIG_FPROBE); per-function only",
            format!("{n} kprobes from `{wide}`")
        );
        return;
    }
    // One run each: the per-function runs take tens of seconds under TCG.
    manager_wide(KprobeAttachMethod::KprobeMulti, &wide);
    let multi = manager_wide(KprobeAttachMethod::KprobeMulti, &wide);
    let single = manager_wide(KprobeAttachMethod::PerfEventOpen, &wide);
    let aya = aya_wide(&symbols);
    println!(
        "{:<48} {:>10.1} ms (kprobe.multi) {:>10.1} ms (per function) {:>8.1}x",
        format!("{n} kprobes from `{wide}`, start+stop: manager"),
        ms(multi),
        ms(single),
        single.as_secs_f64() / multi.as_secs_f64()
    );
    println!(
        "{:<48} {:>10.1} ms (kprobe.multi) {:>10.1} ms (raw aya)      {:>8.1}x",
        format!("{n} kprobes from `{wide}`, against raw aya"),
        ms(multi),
        ms(aya),
        aya.as_secs_f64() / multi.as_secs_f64()
    );
}

/// 100 distinct `abcd*` patterns from the function list.
fn hundred_patterns(index: &ebpf_manager::FunctionIndex) -> Vec<String> {
    let all = index.find_all(&glob::Pattern::new("*").expect("pattern"));
    let mut seen = std::collections::HashSet::new();
    all.iter()
        .filter(|n| n.len() > 6 && n.chars().take(4).all(|c| c.is_ascii_alphabetic()))
        .map(|n| format!("{}*", &n[..4]))
        .filter(|p| seen.insert(p.clone()))
        .take(100)
        .collect()
}

/// `EBPFM_BENCH_ONLY=patterns`: the pattern rows alone.
pub fn patterns_only() {
    println!(
        "patterns: Linux {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    init_rows();
    // What the function list costs, piece by piece.
    let source = functions().source().to_owned();
    let kallsyms = source.ends_with("kallsyms");
    let mut read = Vec::new();
    let mut index = Vec::new();
    let mut finds = Vec::new();
    let patterns = hundred_patterns(&functions());
    for _ in 0..5 {
        let t = Instant::now();
        let text = std::fs::read_to_string(&source).expect("the function list");
        read.push(t.elapsed());
        let t = Instant::now();
        let built = if kallsyms {
            ebpf_manager::FunctionIndex::from_kallsyms(source.clone(), &text)
        } else {
            ebpf_manager::FunctionIndex::from_available_filter_functions(source.clone(), &text)
        };
        index.push(t.elapsed());
        let t = Instant::now();
        for p in &patterns {
            let _ = built.find(&glob::Pattern::new(p).expect("pattern"));
        }
        finds.push(t.elapsed());
    }
    read.sort();
    index.sort();
    finds.sort();
    println!(
        "{:<48} list pieces (medians): read {:.1} ms, index {:.1} ms, 100 finds {:.1} ms",
        "",
        ms(read[2]),
        ms(index[2]),
        ms(finds[2])
    );
}

fn init_rows() {
    let patterns = hundred_patterns(&functions());
    let phases = std::cell::RefCell::new(Vec::new());
    let manager = || {
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
        let t = Instant::now();
        m.init(PROBES).expect("init");
        let took = t.elapsed();
        phases
            .borrow_mut()
            .push(ebpf_manager::diagnostics::last_init_phases().expect("phases of the init"));
        took
    };
    let scans = || {
        let t = Instant::now();
        let ebpf = Ebpf::load(PROBES).expect("aya load");
        let index = functions();
        let all = index.find_all(&glob::Pattern::new("*").expect("pattern"));
        for p in &patterns {
            let p = glob::Pattern::new(p).expect("pattern");
            let _ = all.iter().find(|n| p.matches(n));
        }
        drop(ebpf);
        t.elapsed()
    };
    let read = || {
        let t = Instant::now();
        drop(functions());
        t.elapsed()
    };
    // aya 0.14 parses the kernel's BTF in every EbpfLoader::new, needed or not.
    let loader = || {
        let t = Instant::now();
        drop(aya::EbpfLoader::new());
        t.elapsed()
    };
    manager();
    let (mut m, mut s, mut r, mut l) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        m.push(manager());
        s.push(scans());
        r.push(read());
        l.push(loader());
    }
    m.sort();
    s.sort();
    r.sort();
    l.sort();
    println!(
        "{:<48} {:>10.1} ms (manager) {:>10.1} ms (aya + scans) {:>6.3}",
        format!("{} probes with patterns, init", patterns.len()),
        ms(m[2]),
        ms(s[2]),
        m[2].as_secs_f64() / s[2].as_secs_f64()
    );
    println!(
        "{:<48} {:>10.1} ms of each: reading the kernel's function list (init / this: {:.2})",
        "",
        ms(r[2]),
        m[2].as_secs_f64() / r[2].as_secs_f64()
    );
    println!(
        "{:<48} {:>10.1} ms of each: aya's EbpfLoader::new (its kernel BTF parse)",
        "",
        ms(l[2])
    );
    // The phases of the median init.
    let phases = phases.into_inner();
    let mut by_total: Vec<&ebpf_manager::diagnostics::InitPhases> = phases.iter().collect();
    by_total.sort_by_key(|p| p.total);
    let p = by_total[by_total.len() / 2];
    println!(
        "{:<48} init phases: prepare {:.1}, kernel BTF {:.1}, instantiate {:.1}, aya load {:.1}, \
         program loads {:.1}, the rest (resolution, records) {:.1} ms",
        "",
        ms(p.prepare),
        ms(p.kernel_btf),
        ms(p.instantiate),
        ms(p.aya_load),
        ms(p.program_loads),
        ms(p.bookkeeping())
    );
}

fn btf_row() {
    let ids: Vec<ProbeIdentificationPair> = (0..10)
        .map(|i| ProbeIdentificationPair::new(format!("c{i}"), "tracepoint_sys_enter_mkdir"))
        .collect();
    let mut m = Manager {
        probes: ids
            .iter()
            .map(|id| Probe {
                uid: id.uid.clone(),
                ebpf_func_name: id.ebpf_func_name.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let editors = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ConstantEditor {
            probes: vec![id.clone()],
            ..ConstantEditor::new("clone_tag", i as u32)
        })
        .collect();
    let before = ebpf_manager::diagnostics::kernel_btf_parses();
    let t = Instant::now();
    m.init_with_options(
        PROBES,
        Options {
            constant_editors: editors,
            ..Default::default()
        },
    )
    .expect("init");
    println!(
        "{:<48} {:>10.1} ms, kernel BTF parsed {} time(s) (aya alone: 11, one per loader)",
        "10 per-probe constant copies, init",
        ms(t.elapsed()),
        ebpf_manager::diagnostics::kernel_btf_parses() - before
    );
}

/// Runs one RSS scenario in this (child) process and prints `rss_kib=<n>` after start.
pub fn rss_child(scenario: &str, who: &str) {
    integration_tests::setup();
    let kprobes = kernel_has_kprobes();
    let mut keep_manager = None;
    let mut keep_aya = None;
    match (scenario, who) {
        ("helloworld", "manager") => {
            let f = if kprobes {
                "kprobe_vfs_mkdir"
            } else {
                "tracepoint_sys_enter_mkdir"
            };
            let mut m = Manager {
                probes: vec![Probe {
                    ebpf_func_name: f.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            m.init(HELLOWORLD).expect("init");
            m.start().expect("start");
            keep_manager = Some(m);
        }
        ("helloworld", "aya") => {
            let mut ebpf = Ebpf::load(HELLOWORLD).expect("load");
            if kprobes {
                let p: &mut KProbe = ebpf
                    .program_mut("kprobe_vfs_mkdir")
                    .unwrap()
                    .try_into()
                    .unwrap();
                p.load().unwrap();
                p.attach("vfs_mkdir", 0).unwrap();
            } else {
                let p: &mut aya::programs::TracePoint = ebpf
                    .program_mut("tracepoint_sys_enter_mkdir")
                    .unwrap()
                    .try_into()
                    .unwrap();
                p.load().unwrap();
                p.attach("syscalls", "sys_enter_mkdir").unwrap();
            }
            keep_aya = Some(ebpf);
        }
        ("100 tracepoints", "manager") => {
            let mut m = Manager {
                probes: (0..100)
                    .map(|i| Probe {
                        ebpf_func_name: format!("tp_{i:02}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            m.init(MANY).expect("init");
            m.start().expect("start");
            keep_manager = Some(m);
        }
        ("100 tracepoints", "aya") => {
            let mut ebpf = Ebpf::load(MANY).expect("load");
            for i in 0..100 {
                let p: &mut aya::programs::TracePoint = ebpf
                    .program_mut(&format!("tp_{i:02}"))
                    .unwrap()
                    .try_into()
                    .unwrap();
                p.load().unwrap();
                let name = if i < 50 {
                    "sys_enter_getppid"
                } else {
                    "sys_exit_getppid"
                };
                p.attach("syscalls", name).unwrap();
            }
            keep_aya = Some(ebpf);
        }
        ("one pattern", "manager") => {
            // The pattern's probe, with the tracepoint twin where kprobes are missing (OneOf),
            // so that start succeeds everywhere and releases what init held.
            let pattern = Probe {
                uid: "pattern".into(),
                ebpf_func_name: "kprobe_generic".into(),
                attach_to_func_name: Some("vfs_mkd*".into()),
                ..Default::default()
            };
            let twin = Probe {
                uid: "twin".into(),
                ebpf_func_name: "tracepoint_sys_enter_mkdir".into(),
                ..Default::default()
            };
            let selector = ebpf_manager::ProbesSelector::OneOf(vec![
                ebpf_manager::ProbesSelector::Probe(pattern.id()),
                ebpf_manager::ProbesSelector::Probe(twin.id()),
            ]);
            let mut m = Manager {
                probes: vec![pattern, twin],
                ..Default::default()
            };
            m.init_with_options(
                PROBES,
                Options {
                    activated_probes: vec![selector],
                    ..Default::default()
                },
            )
            .expect("init");
            m.start().expect("start");
            keep_manager = Some(m);
        }
        ("one pattern", "aya") => {
            let mut ebpf = Ebpf::load(PROBES).expect("load");
            // What a user of raw aya does to honour a pattern: read the list, match, attach;
            // the tracepoint twin where kprobes are missing.
            let index = functions();
            let hook = index
                .find(&glob::Pattern::new("vfs_mkd*").unwrap())
                .expect("a match")
                .to_owned();
            drop(index);
            if kprobes {
                let p: &mut KProbe = ebpf
                    .program_mut("kprobe_generic")
                    .unwrap()
                    .try_into()
                    .unwrap();
                p.load().unwrap();
                p.attach(&hook, 0).unwrap();
            } else {
                let p: &mut aya::programs::TracePoint = ebpf
                    .program_mut("tracepoint_sys_enter_mkdir")
                    .unwrap()
                    .try_into()
                    .unwrap();
                p.load().unwrap();
                p.attach("syscalls", "sys_enter_mkdir").unwrap();
            }
            keep_aya = Some(ebpf);
        }
        other => panic!("unknown RSS scenario {other:?}"),
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    println!("rss_kib={rss}");
    drop((keep_manager, keep_aya));
}

fn rss_of(scenario: &str, who: &str) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--rss", scenario, who])
        .output()
        .expect("running the RSS child");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("rss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rss from the {scenario}/{who} child: {out:?}"))
}

fn rss_rows() {
    for scenario in ["helloworld", "100 tracepoints", "one pattern"] {
        let (mut m, mut a) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            m.push(rss_of(scenario, "manager"));
            a.push(rss_of(scenario, "aya"));
        }
        m.sort_unstable();
        a.sort_unstable();
        let (m, a) = (m[1], a[1]);
        println!(
            "{:<48} {:>8} KiB (manager) {:>8} KiB (raw aya) {:>+8} KiB",
            format!("RSS after start: {scenario}"),
            m,
            a,
            m as i64 - a as i64
        );
    }
}

/// Prints every scale row.
pub fn run() {
    println!("\nscale (one run each where a run takes seconds; medians otherwise)");
    pattern_rows();
    init_rows();
    btf_row();
    rss_rows();
}
