//! The declarations of a large Go ebpf-manager user, translated field by field, for
//! ebpf-fixtures/gomodel.bpf.o (tests/tests/gomodel.rs and the startup benchmark).

use ebpf_manager::{
    ConstantEditor, KprobeAttachMethod, Options, Probe, ProbeIdentificationPair as Id,
    ProbesSelector, TailCallRoute,
};

use crate::{kernel_has_kprobes, probe};

/// The object: 63 programs, built as the Go examples' Makefile builds (no BTF).
pub const GOMODEL: &[u8] = include_bytes!("../../ebpf-fixtures/gomodel.bpf.o");

const TRACEPOINTS: [&str; 10] = [
    "tp_mkdir",
    "tp_rmdir",
    "tp_getpid",
    "tp_getppid",
    "tp_gettid",
    "tp_openat",
    "tp_close",
    "tp_read",
    "tp_write",
    "tp_unlinkat",
];
const VFS: [&str; 10] = [
    "mkdir", "rmdir", "unlink", "open", "read", "write", "getattr", "rename", "symlink", "link",
];
const SYSCALLS: [&str; 5] = ["mkdir", "rmdir", "getpid", "openat", "close"];
const RAW: [&str; 5] = [
    "raw_sys_enter_0",
    "raw_sys_enter_1",
    "raw_sys_exit_0",
    "raw_sys_exit_1",
    "raw_sched_process_exec",
];
/// Programs the declarations name that this object lacks (built for other kernels).
pub const MISSING: [&str; 3] = [
    "kprobe_tcp_v6_connect",
    "kretprobe_tcp_v6_connect",
    "tp_sys_enter_io_uring_setup",
];

/// Every probe, as the Go declarations list them (uids empty where Go leaves them empty).
pub fn declarations() -> Vec<Probe> {
    let mut probes: Vec<Probe> = TRACEPOINTS.iter().map(|f| probe("", f)).collect();
    probes.extend(["tp_chdir", "tp_fchdir"].map(|f| probe("", f)));
    for f in VFS {
        probes.push(probe("", &format!("kprobe_vfs_{f}")));
        probes.push(probe("", &format!("kretprobe_vfs_{f}")));
    }
    for s in SYSCALLS {
        for kind in ["kprobe", "kretprobe"] {
            probes.push(Probe {
                syscall_func_name: Some(s.into()),
                ..probe("", &format!("{kind}_sys_{s}"))
            });
        }
    }
    probes.extend(RAW.map(|f| probe("", f)));
    probes
        .extend(["perf_cpu_clock_0", "perf_cpu_clock_1", "perf_cpu_clock_2"].map(|f| probe("", f)));
    // Socket-filter tail-call targets and a template: no socket, never attached as declared.
    probes.extend(
        [
            "socket_dispatch",
            "socket_tail_0",
            "socket_tail_1",
            "socket_tail_2",
            "socket_tail_3",
        ]
        .map(|f| probe("", f)),
    );
    probes.push(probe("template", "socket_template"));
    // TC and XDP templates without an interface.
    probes.push(probe("", "tc_ingress"));
    probes.push(probe("", "xdp_ingress"));
    probes.extend(MISSING.map(|f| probe("", f)));
    probes
}

fn kprobe_functions() -> Vec<String> {
    let mut all = Vec::new();
    for f in VFS {
        all.push(format!("kprobe_vfs_{f}"));
        all.push(format!("kretprobe_vfs_{f}"));
    }
    for s in SYSCALLS {
        all.push(format!("kprobe_sys_{s}"));
        all.push(format!("kretprobe_sys_{s}"));
    }
    all
}

/// The Go options of the production user, for this kernel.
pub fn options() -> Options {
    let ids = |names: &mut dyn Iterator<Item = String>| -> Vec<ProbesSelector> {
        names
            .map(|f| ProbesSelector::Probe(Id::new("", f)))
            .collect()
    };
    let mut excluded: Vec<String> = MISSING.iter().map(|s| s.to_string()).collect();
    excluded.extend(["tp_chdir".into(), "tp_fchdir".into()]);
    let mut selectors = vec![
        ProbesSelector::AllOf(ids(&mut TRACEPOINTS.iter().map(|s| s.to_string()))),
        ProbesSelector::BestEffort(ids(&mut RAW.iter().map(|s| s.to_string()))),
        // Go users select probes the object lacks on some kernels and exclude them there.
        ProbesSelector::BestEffort(ids(&mut MISSING.iter().map(|s| s.to_string()))),
    ];
    if kernel_has_kprobes() {
        let vfs = VFS
            .iter()
            .flat_map(|f| [format!("kprobe_vfs_{f}"), format!("kretprobe_vfs_{f}")]);
        selectors.push(ProbesSelector::AllOf(ids(&mut vfs.into_iter())));
        // The syscall kprobes: excluded on this kernel too (the user's choice).
        excluded.extend(
            kprobe_functions()
                .into_iter()
                .filter(|f| f.contains("_sys_")),
        );
    } else {
        excluded.extend(kprobe_functions());
    }
    Options {
        activated_probes: selectors,
        excluded_functions: excluded,
        default_kprobe_attach_method: KprobeAttachMethod::PerfEventOpen,
        default_kprobe_max_active: 512,
        tail_call_router: vec![TailCallRoute {
            prog_array_name: "socket_jumps".into(),
            key: 0,
            probe_identification_pair: Id::new("", "socket_tail_0"),
            program: None,
        }],
        // Per-probe editors naming only excluded probes go with them (else they would apply
        // to every probe): `marker` stays 0.
        constant_editors: vec![ConstantEditor {
            probes: vec![Id::new("", "kprobe_tcp_v6_connect")],
            ..ConstantEditor::new("marker", 7u64)
        }],
        ..Default::default()
    }
}
