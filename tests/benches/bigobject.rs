//! A production-shaped object (ebpf-fixtures/src/bigobject.bpf.c: 60 programs, 30 maps, 140
//! telemetry placeholders, 30 asm constants at 120 sites, CO-RE, tail calls; 35 programs
//! attached) loaded, started and stopped, interleaved round by round:
//!
//! - through the manager, on the Go-style object (asm constants) and on the libbpf-style one
//!   (`volatile const` globals), with an `InstructionPatcher` replacing every `call -1`;
//! - through libbpf in C (ebpf-fixtures/bench/bigobject_libbpf.c: `bpf_object__open_mem` +
//!   `bpf_object__load`, the placeholders patched in the bytes the same way), on the
//!   libbpf-style object;
//! - through raw aya, on the variant without placeholders (aya cannot patch instructions).
//!
//! Prints medians and ratios to libbpf, and the manager's init split by phase
//! (`diagnostics::last_init_phases`). Run with `cargo xtask bench bigobject`, which builds the
//! libbpf baseline and names it in `EBPF_MANAGER_BENCH_LIBBPF`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aya::{maps::ProgramArray, programs::TracePoint, EbpfLoader};
use ebpf_manager::{
    diagnostics::InitPhases, CleanupType, ConstantEditor, Instruction, InstructionPatcher, Manager,
    Options, Probe, ProbeIdentificationPair, ProbesSelector, TailCallRoute,
};
use integration_tests::setup;

const GO_STYLE: &[u8] = include_bytes!("../../ebpf-fixtures/bigobject.bpf.o");
const LIBBPF_STYLE: &[u8] = include_bytes!("../../ebpf-fixtures/bigobject_libbpf.bpf.o");
const AYA_STYLE: &[u8] = include_bytes!("../../ebpf-fixtures/bigobject_aya.bpf.o");
const LIBBPF_OBJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../ebpf-fixtures/bigobject_libbpf.bpf.o"
);
const LIBBPF_ENV: &str = "EBPF_MANAGER_BENCH_LIBBPF";
const ROUNDS: usize = 5;

/// The syscalls of the 40 tracepoint programs (`tp_<name>`), in the object's order.
const TRACEPOINTS: [&str; 40] = [
    "read",
    "write",
    "openat",
    "close",
    "mkdir",
    "rmdir",
    "unlinkat",
    "getpid",
    "getppid",
    "dup",
    "pipe2",
    "socket",
    "connect",
    "accept4",
    "bind",
    "listen",
    "sendto",
    "recvfrom",
    "mmap",
    "munmap",
    "mprotect",
    "brk",
    "lseek",
    "ioctl",
    "fcntl",
    "chdir",
    "fchdir",
    "nanosleep",
    "getuid",
    "kill",
    "getgid",
    "geteuid",
    "getegid",
    "gettid",
    "sched_yield",
    "umask",
    "sync",
    "newuname",
    "getcwd",
    "fsync",
];
/// The functions of the 10 kprobe programs (`kp_<name>`): loaded, not attached.
const KPROBES: [&str; 10] = [
    "vfs_read",
    "vfs_write",
    "vfs_open",
    "vfs_mkdir",
    "vfs_rmdir",
    "vfs_unlink",
    "security_file_open",
    "tcp_v4_connect",
    "tcp_close",
    "udp_sendmsg",
];
const ATTACHED: usize = 35;

#[derive(Default, Clone, Copy)]
struct Times {
    init: Duration,
    start: Duration,
    stop: Duration,
    phases: Option<InitPhases>,
}

fn id(function: String) -> ProbeIdentificationPair {
    ProbeIdentificationPair::new("", function)
}

/// The Go agent's telemetry patcher, disabled: every `call -1` becomes `r0 = 0`.
fn telemetry_off() -> InstructionPatcher {
    InstructionPatcher::new(|prog| {
        for ins in prog.instructions.iter_mut() {
            if ins.is_helper_call() && ins.imm == -1 {
                *ins = Instruction {
                    code: 0xb7,
                    dst: 0,
                    src: 0,
                    off: 0,
                    imm: 0,
                };
            }
        }
        Ok(())
    })
}

fn through_manager(object: &[u8]) -> Times {
    let tracepoints = TRACEPOINTS.iter().map(|s| format!("tp_{s}"));
    let kprobes = KPROBES.iter().map(|f| format!("kp_{f}"));
    let functions: Vec<String> = tracepoints.chain(kprobes).collect();
    let mut m = Manager {
        probes: functions
            .iter()
            .map(|f| Probe {
                ebpf_func_name: f.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let options = Options {
        activated_probes: functions[..ATTACHED]
            .iter()
            .map(|f| ProbesSelector::Probe(id(f.clone())))
            .collect(),
        constant_editors: (0..30)
            .map(|i| ConstantEditor::new(format!("const_{i}"), 0u64))
            .collect(),
        instruction_patchers: vec![telemetry_off()],
        tail_call_router: (0..10)
            .map(|k| TailCallRoute {
                prog_array_name: "tail_calls".into(),
                key: k,
                probe_identification_pair: id(format!("tail_{k}")),
                program: None,
            })
            .collect(),
        ..Default::default()
    };
    let t = Instant::now();
    m.init_with_options(object, options).expect("manager init");
    let init = t.elapsed();
    let phases = ebpf_manager::diagnostics::last_init_phases();
    let t = Instant::now();
    m.start().expect("manager start");
    let start = t.elapsed();
    let t = Instant::now();
    m.stop(CleanupType::CleanAll).expect("manager stop");
    Times {
        init,
        start,
        stop: t.elapsed(),
        phases,
    }
}

fn through_libbpf(binary: &str) -> Times {
    let out = Command::new(binary)
        .args([LIBBPF_OBJECT, "1"])
        .output()
        .expect("running the libbpf baseline");
    assert!(
        out.status.success(),
        "the libbpf baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let us: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("microseconds"))
        .collect();
    assert_eq!(us.len(), 3, "{text}");
    Times {
        init: Duration::from_micros(us[0]),
        start: Duration::from_micros(us[1]),
        stop: Duration::from_micros(us[2]),
        phases: None,
    }
}

fn through_aya() -> Times {
    let t = Instant::now();
    let zero = 0u64;
    let mut loader = EbpfLoader::new();
    let names: Vec<String> = (0..30).map(|i| format!("const_{i}")).collect();
    for name in &names {
        loader.override_global(name.as_str(), &zero, true);
    }
    let mut ebpf = loader.load(AYA_STYLE).expect("aya load");
    let functions: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    for f in &functions {
        let prog = ebpf.program_mut(f).expect("program");
        match prog {
            aya::programs::Program::TracePoint(p) => p.load().expect("load"),
            aya::programs::Program::KProbe(p) => p.load().expect("load"),
            other => panic!("{f}: unexpected {:?}", other.prog_type()),
        }
    }
    let init = t.elapsed();
    let t = Instant::now();
    let mut tails = Vec::new();
    for k in 0..10u32 {
        let prog = ebpf.program(&format!("tail_{k}")).expect("tail");
        tails.push((k, prog.fd().expect("fd").try_clone().expect("dup")));
    }
    let mut array = ProgramArray::try_from(ebpf.map_mut("tail_calls").expect("tail_calls"))
        .expect("program array");
    for (k, fd) in &tails {
        array.set(*k, fd, 0).expect("route");
    }
    let mut links = Vec::new();
    for name in &TRACEPOINTS[..ATTACHED] {
        let p: &mut TracePoint = ebpf
            .program_mut(&format!("tp_{name}"))
            .expect("tracepoint")
            .try_into()
            .expect("a tracepoint");
        links.push(
            p.attach("syscalls", &format!("sys_enter_{name}"))
                .expect("attach"),
        );
    }
    let start = t.elapsed();
    let t = Instant::now();
    drop(links);
    drop(tails);
    drop(ebpf);
    Times {
        init,
        start,
        stop: t.elapsed(),
        phases: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    setup();
    let libbpf = std::env::var(LIBBPF_ENV).ok();
    if libbpf.is_none() {
        println!("{LIBBPF_ENV} is not set: no libbpf baseline (run `cargo xtask bench bigobject`)");
    }
    let mut rows: Vec<(&str, Vec<Times>)> = vec![
        ("manager, Go-style object", Vec::new()),
        ("manager, libbpf-style object", Vec::new()),
        ("raw aya (no placeholders)", Vec::new()),
    ];
    if libbpf.is_some() {
        rows.push(("libbpf (C)", Vec::new()));
    }
    // One warm-up round of each, not counted (page cache, first BTF parse).
    through_manager(GO_STYLE);
    for round in 0..=ROUNDS {
        let go = through_manager(GO_STYLE);
        let lb = through_manager(LIBBPF_STYLE);
        let aya = through_aya();
        let c = libbpf.as_deref().map(through_libbpf);
        if round == 0 {
            continue;
        }
        rows[0].1.push(go);
        rows[1].1.push(lb);
        rows[2].1.push(aya);
        if let Some(c) = c {
            rows[3].1.push(c);
        }
    }
    let medians: Vec<(&str, [Duration; 3])> = rows
        .iter()
        .map(|(name, runs)| {
            (
                *name,
                [
                    median(runs.iter().map(|t| t.init).collect()),
                    median(runs.iter().map(|t| t.start).collect()),
                    median(runs.iter().map(|t| t.stop).collect()),
                ],
            )
        })
        .collect();
    let base = medians
        .iter()
        .find(|(n, _)| *n == "libbpf (C)")
        .map(|(_, m)| *m);
    println!(
        "bigobject: 60 programs (35 attached), 30 maps, 140 placeholders, 30 constants; median of {ROUNDS} interleaved rounds"
    );
    println!("| loader | init ms | x libbpf | start ms | x libbpf | stop ms | x libbpf |");
    println!("|---|---|---|---|---|---|---|");
    for (name, m) in &medians {
        let ratio = |i: usize| match base {
            Some(b) => format!("{:.2}", m[i].as_secs_f64() / b[i].as_secs_f64()),
            None => "-".into(),
        };
        println!(
            "| {name} | {:.1} | {} | {:.1} | {} | {:.1} | {} |",
            ms(m[0]),
            ratio(0),
            ms(m[1]),
            ratio(1),
            ms(m[2]),
            ratio(2)
        );
    }
    for (name, runs) in rows.iter().take(2) {
        let phases: Vec<InitPhases> = runs.iter().filter_map(|t| t.phases).collect();
        let med = |f: fn(&InitPhases) -> Duration| median(phases.iter().map(f).collect());
        let total = med(|p| p.total);
        let parts = [
            ("pipeline (rewrite, analysis)", med(|p| p.prepare)),
            ("kernel BTF parse", med(|p| p.kernel_btf)),
            ("instantiate (constants, patchers)", med(|p| p.instantiate)),
            ("aya load (parse, relocations, maps)", med(|p| p.aya_load)),
            (
                "program loads (BPF_PROG_LOAD, verifier)",
                med(|p| p.program_loads),
            ),
            ("bookkeeping (the rest)", med(|p| p.bookkeeping())),
        ];
        println!("init phases, {name} (medians; total {:.1} ms):", ms(total));
        for (what, d) in parts {
            println!(
                "  {what:<42} {:>7.2} ms  {:>5.1} %",
                ms(d),
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
}
