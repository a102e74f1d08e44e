//! init + start + stop through the manager, and through raw aya doing the same work, in one
//! run, interleaved so that both see the same machine. Prints medians and the ratio.
//!
//! Run with `cargo xtask bench startup` (or `cargo bench -p integration-tests --bench startup`).
//! On a kernel without kprobes, the helloworld case uses its tracepoint twin and says so.

use std::time::{Duration, Instant};

use aya::{
    programs::{uprobe::UProbeScope, KProbe, TracePoint, UProbe},
    Ebpf,
};
use ebpf_manager::{CleanupType, Manager, Probe};
use integration_tests::{kernel_has_kprobes, setup, user::USER, HELLOWORLD};

#[path = "startup/scale.rs"]
mod scale;

const MANY: &[u8] = include_bytes!("../../ebpf-fixtures/many_tracepoints.bpf.o");

#[derive(Clone, Copy)]
enum Kind {
    Kprobe,
    Tracepoint,
    /// The hook is `<binary>:<symbol>`.
    Uprobe,
}

struct Case {
    name: String,
    object: &'static [u8],
    /// The object as raw aya loads it: aya-obj 0.3 refuses sections it does not know
    /// (`uprobe.multi/...`), which the manager's pipeline renames.
    aya_object: &'static [u8],
    /// (function, kind, hook) of each program.
    programs: Vec<(String, Kind, String)>,
    iterations: usize,
}

/// (init + start + stop, stop alone)
fn through_manager(case: &Case) -> (Duration, Duration) {
    let probes = case
        .programs
        .iter()
        .enumerate()
        .map(|(i, (f, kind, hook))| match kind {
            Kind::Uprobe => {
                let (binary, symbol) = hook.split_once(':').expect("binary:symbol");
                Probe {
                    uid: format!("u{i}"),
                    ebpf_func_name: f.clone(),
                    binary_path: Some(binary.into()),
                    hook_func_name: Some(symbol.into()),
                    ..Default::default()
                }
            }
            _ => Probe {
                ebpf_func_name: f.clone(),
                ..Default::default()
            },
        })
        .collect();
    let t = Instant::now();
    let mut m = Manager {
        probes,
        ..Default::default()
    };
    m.init(case.object).expect("manager init");
    m.start().expect("manager start");
    let stop = Instant::now();
    m.stop(CleanupType::CleanAll).expect("manager stop");
    (t.elapsed(), stop.elapsed())
}

/// (load + attach + drop, drop alone)
fn through_aya(case: &Case) -> (Duration, Duration) {
    let t = Instant::now();
    let mut ebpf = Ebpf::load(case.aya_object).expect("aya load");
    for (function, kind, hook) in &case.programs {
        let prog = ebpf.program_mut(function).expect("program");
        match kind {
            Kind::Uprobe => {
                let p: &mut UProbe = prog.try_into().expect("uprobe");
                if p.fd().is_err() {
                    p.load().expect("load");
                }
                let (binary, symbol) = hook.split_once(':').expect("binary:symbol");
                p.attach(symbol, binary, UProbeScope::AllProcesses)
                    .expect("attach");
            }
            Kind::Kprobe => {
                let p: &mut KProbe = prog.try_into().expect("kprobe");
                p.load().expect("load");
                p.attach(hook, 0).expect("attach");
            }
            Kind::Tracepoint => {
                let p: &mut TracePoint = prog.try_into().expect("tracepoint");
                p.load().expect("load");
                let (category, name) = hook.split_once('/').expect("category/name");
                p.attach(category, name).expect("attach");
            }
        }
    }
    // Dropping Ebpf detaches the links and unloads everything, as stop does.
    let stop = Instant::now();
    drop(ebpf);
    (t.elapsed(), stop.elapsed())
}

/// One row: the case, its runs, the two medians and their ratio.
fn print_row(name: &str, runs: usize, m: Duration, a: Duration) {
    println!(
        "{:<48} {:>5} {:>9.3} ms {:>9.3} ms {:>7.3}",
        name,
        runs,
        m.as_secs_f64() * 1e3,
        a.as_secs_f64() * 1e3,
        m.as_secs_f64() / a.as_secs_f64()
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--rss") {
        scale::rss_child(&args[pos + 1], &args[pos + 2]);
        return;
    }
    setup();
    if std::env::var("EBPFM_BENCH_ONLY").as_deref() == Ok("patterns") {
        scale::patterns_only();
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let hello = if kernel_has_kprobes() {
        Case {
            name: "helloworld (kprobe vfs_mkdir)".into(),
            object: HELLOWORLD,
            aya_object: HELLOWORLD,
            programs: vec![("kprobe_vfs_mkdir".into(), Kind::Kprobe, "vfs_mkdir".into())],
            iterations: 41,
        }
    } else {
        Case {
            name: "helloworld (tracepoint twin: no kprobes here)".into(),
            object: HELLOWORLD,
            aya_object: HELLOWORLD,
            programs: vec![(
                "tracepoint_sys_enter_mkdir".into(),
                Kind::Tracepoint,
                "syscalls/sys_enter_mkdir".into(),
            )],
            iterations: 41,
        }
    };
    let many = Case {
        name: "100 tracepoint probes".into(),
        object: MANY,
        aya_object: MANY,
        programs: (0..100)
            .map(|i| {
                let hook = if i < 50 {
                    "sys_enter_getppid"
                } else {
                    "sys_exit_getppid"
                };
                (
                    format!("tp_{i:02}"),
                    Kind::Tracepoint,
                    format!("syscalls/{hook}"),
                )
            })
            .collect(),
        iterations: 11,
    };
    // Uprobes on functions of this benchmark's own executable: aya reads the file at each
    // attach by symbol; the manager reads it once while it is unchanged.
    let exe = std::env::current_exe().expect("this executable");
    let symbols: Vec<String> = integration_tests::user::elf_functions(&exe)
        .into_iter()
        .map(|f| f.name)
        .filter(|s| s.starts_with("_ZN4core3fmt"))
        .take(20)
        .collect();
    let size_mb = std::fs::metadata(&exe).map_or(0, |m| m.len()) / (1 << 20);
    let uprobes = Case {
        name: format!("{} uprobes on one {size_mb} MB binary", symbols.len()),
        object: USER,
        aya_object: Box::leak(
            integration_tests::elf_edit::ElfEdit::of(USER)
                .replace(b"uprobe.multi/", b"uprobe/multi/")
                .replace(b"uretprobe.multi/", b"uretprobe/multi/")
                .0
                .into_boxed_slice(),
        ),
        programs: symbols
            .iter()
            .map(|s| {
                (
                    "uprobe_add".to_owned(),
                    Kind::Uprobe,
                    format!("{}:{s}", exe.display()),
                )
            })
            .collect(),
        iterations: 11,
    };
    println!(
        "startup: init + start + stop, median of interleaved runs, Linux {} (kprobe PMU: {})",
        release.trim(),
        ebpf_manager::features::has_kprobe_pmu()
    );
    println!(
        "{:<48} {:>5} {:>12} {:>12} {:>7}",
        "case", "runs", "manager", "raw aya", "ratio"
    );
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    for case in [hello, many, uprobes] {
        // One warm-up of each, not counted.
        through_manager(&case);
        through_aya(&case);
        let (mut m, mut a) = (Vec::new(), Vec::new());
        for i in 0..case.iterations {
            // Alternate which goes first, so neither always runs on a warmer cache.
            if i % 2 == 0 {
                m.push(through_manager(&case));
                a.push(through_aya(&case));
            } else {
                a.push(through_aya(&case));
                m.push(through_manager(&case));
            }
        }
        let (ms, as_) = (
            median(m.iter().map(|t| t.1).collect()),
            median(a.iter().map(|t| t.1).collect()),
        );
        stops.push((case.name.clone(), case.iterations, ms, as_));
        starts.push((
            case.name.clone(),
            case.iterations,
            median(m.iter().map(|t| t.0 - t.1).collect()),
            median(a.iter().map(|t| t.0 - t.1).collect()),
        ));
        let (m, a) = (
            median(m.into_iter().map(|t| t.0).collect()),
            median(a.into_iter().map(|t| t.0).collect()),
        );
        print_row(&case.name, case.iterations, m, a);
    }
    println!(
        "(the manager read the uprobes' binary {} time(s) in all those runs)",
        ebpf_manager::diagnostics::binary_symbol_reads(&exe)
    );
    println!("\ninit + start alone (manager init + start vs aya load + attach)");
    println!(
        "{:<48} {:>5} {:>12} {:>12} {:>7}",
        "case", "runs", "manager", "raw aya", "ratio"
    );
    for (name, runs, m, a) in starts {
        print_row(&name, runs, m, a);
    }
    println!(
        "\nstop alone (manager stop vs dropping aya's Ebpf; parallel closes: {})",
        ebpf_manager::features::parallel_detach()
    );
    println!(
        "{:<48} {:>5} {:>12} {:>12} {:>7} {:>9}",
        "case", "runs", "manager", "raw aya", "ratio", "speed-up"
    );
    for (name, runs, m, a) in stops {
        println!(
            "{:<48} {:>5} {:>9.3} ms {:>9.3} ms {:>7.3} {:>8.1}x",
            name,
            runs,
            m.as_secs_f64() * 1e3,
            a.as_secs_f64() * 1e3,
            m.as_secs_f64() / a.as_secs_f64(),
            a.as_secs_f64() / m.as_secs_f64()
        );
    }
    collection();
    scale::run();
}

/// Go's collection model on gomodel.bpf.o (63 programs): the manager's `init` with a large Go
/// user's declarations loads the selected programs only; Go's `Init` loads every program that
/// is not excluded. Raw aya cannot read this object (aya-obj refuses its Go-world sections), so
/// the baseline is the manager made eager as Go is: `load_unselected_probes` and every other
/// program loaded by name (those the kernel refuses counted out).
fn collection() {
    use ebpf_manager::{ObjectInfo, Options, ProbeIdentificationPair};
    use integration_tests::gomodel::{declarations, options, GOMODEL};
    let functions: Vec<String> = ObjectInfo::parse(GOMODEL)
        .expect("gomodel.bpf.o parses")
        .programs
        .into_iter()
        .map(|p| p.function)
        .collect();
    let init = |eager: bool| {
        let mut m = Manager {
            probes: declarations(),
            ..Default::default()
        };
        let options = Options {
            load_unselected_probes: eager,
            ..options()
        };
        let excluded = options.excluded_functions.clone();
        let t = Instant::now();
        m.init_with_options(GOMODEL, options).expect("manager init");
        let mut loaded = m.get_programs().len();
        if eager {
            for f in functions.iter().filter(|f| !excluded.contains(f)) {
                let id = ProbeIdentificationPair::new("", f.clone());
                if m.get_probe(&id).is_none() && m.load_program(&id).is_ok() {
                    loaded += 1;
                }
            }
        }
        (t.elapsed(), loaded)
    };
    init(false);
    init(true);
    let (mut lazy, mut eager) = (Vec::new(), Vec::new());
    let (mut lazy_n, mut eager_n) = (0, 0);
    for i in 0..11 {
        let mut run_lazy = || {
            let (t, n) = init(false);
            lazy.push(t);
            lazy_n = n;
        };
        let mut run_eager = || {
            let (t, n) = init(true);
            eager.push(t);
            eager_n = n;
        };
        if i % 2 == 0 {
            run_lazy();
            run_eager();
        } else {
            run_eager();
            run_lazy();
        }
    }
    println!(
        "\nGo's collection model: gomodel.bpf.o, {} programs, {} probes declared, {lazy_n} selected here",
        functions.len(),
        declarations().len(),
    );
    println!(
        "{:<48} {:>5} {:>12} {:>12} {:>7}",
        "case", "runs", "selected", "Go's eager", "ratio"
    );
    print_row(
        &format!("init: loads {lazy_n} programs, eager {eager_n}"),
        11,
        median(lazy),
        median(eager),
    );
}
