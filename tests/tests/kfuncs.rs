//! `__ksym` externs, written as libbpf users write them (kfuncs.bpf.c: vmlinux.h, CO-RE):
//! kfunc calls, a weak kfunc tested with bpf_ksym_exists(), a typed per-CPU variable and an
//! untyped one, resolved against the running kernel.
//!
//! `bpf_rcu_read_lock` and `bpf_task_from_pid` came in Linux 6.2: on the 6.18 host and the 6.12
//! guest they run; on the 5.10 and 6.1 guests the weak one reads as absent and the program
//! needing the other fails with the precise error a user gets there. Variables need their
//! address in kallsyms, which lists variables only with CONFIG_KALLSYMS_ALL, and typed ones in
//! the kernel's BTF: the 6.1 and 6.12 guests have both and run it; the host lacks the first,
//! Debian's 5.10 the second, and there the error is asserted.

use std::os::fd::AsFd;

use aya::util::KernelVersion;
use ebpf_manager::{
    CleanupType, ConstantEditor, Error, Manager, Options, Probe, ProbeIdentificationPair,
};
use integration_tests::*;

const KFUNCS: &[u8] = include_bytes!("../../ebpf-fixtures/kfuncs.bpf.o");
const KFUNCS_MODULE: &[u8] = include_bytes!("../../ebpf-fixtures/kfuncs_module.bpf.o");

mod slot {
    pub const RCU_LOCKED: u32 = 0;
    pub const NO_SUCH_KFUNC: u32 = 1;
    pub const PROG_ACTIVE: u32 = 2;
    pub const INIT_TASK: u32 = 3;
    pub const TASK_PID: u32 = 4;
}

fn kernel_has_task_kfuncs() -> bool {
    KernelVersion::current().expect("kernel version") >= KernelVersion::new(6, 2, 0)
}

fn manager(function: &str) -> Result<Manager, Error> {
    setup();
    let mut m = Manager {
        probes: vec![Probe {
            uid: "kfuncs".into(),
            ebpf_func_name: function.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let options = Options {
        constant_editors: vec![ConstantEditor::new("filter_tgid", std::process::id())],
        ..Default::default()
    };
    m.init_with_options(KFUNCS, options)?;
    Ok(m)
}

fn kallsyms(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("{name} not in /proc/kallsyms"));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

#[test]
fn kfuncs_weak_ones_follow_the_kernel() {
    let mut m = manager("kfunc_weak").unwrap();
    m.start().unwrap();
    mkdir_rmdir("kfunc_weak");
    let rcu = read_slot(&m, "kfunc_seen", slot::RCU_LOCKED);
    assert_eq!(
        rcu,
        u64::from(kernel_has_task_kfuncs()),
        "bpf_ksym_exists(bpf_rcu_read_lock) must be true exactly from Linux 6.2"
    );
    assert_eq!(read_slot(&m, "kfunc_seen", slot::NO_SUCH_KFUNC), 0);
    m.stop(CleanupType::CleanAll).unwrap();
}

fn kallsyms_lists_variables() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("init_task"))
}

#[test]
fn kfuncs_variables_resolve_or_name_what_the_kernel_lacks() {
    let result = manager("ksym_vars");
    // Debian's 5.10 BTF describes no variables (pahole before 1.18 wrote none).
    let btf = aya::Btf::from_sys_fs().unwrap();
    let in_btf = btf
        .id_by_type_name_kind("bpf_prog_active", aya_obj::btf::BtfKind::Var)
        .is_ok();
    if !in_btf || !kallsyms_lists_variables() {
        let err = result.expect_err("the kernel cannot give bpf_prog_active");
        assert_missing(&err, "ksym_vars", "bpf_prog_active", "");
        let why = if in_btf {
            "CONFIG_KALLSYMS_ALL"
        } else {
            "/sys/kernel/btf/vmlinux has no such variable"
        };
        assert!(err.to_string().contains(why), "{err}");
        return;
    }
    let mut m = result.unwrap();
    m.start().unwrap();
    mkdir_rmdir("ksym_vars");
    assert!(
        read_slot(&m, "kfunc_seen", slot::PROG_ACTIVE) >= 100,
        "the typed per-CPU variable was not read"
    );
    assert_eq!(
        read_slot(&m, "kfunc_seen", slot::INIT_TASK),
        kallsyms("init_task"),
        "the untyped variable's address is kallsyms'"
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

#[test]
fn kfuncs_strong_one_runs_or_names_what_the_kernel_lacks() {
    let result = manager("kfunc_strong");
    if kernel_has_task_kfuncs() {
        let mut m = result.unwrap();
        m.start().unwrap();
        mkdir_rmdir("kfunc_strong");
        assert_eq!(
            read_slot(&m, "kfunc_seen", slot::TASK_PID),
            u64::from(std::process::id()),
            "bpf_task_from_pid(own pid)->pid, through CO-RE"
        );
        m.stop(CleanupType::CleanAll).unwrap();
        return;
    }
    let err = result.expect_err("Linux < 6.2 has no bpf_task_from_pid");
    assert_missing(&err, "kfunc_strong", "bpf_task_from_pid", "kfunc");
    assert!(err.to_string().contains("later kernel"), "{err}");
}

fn assert_missing(err: &Error, function: &str, symbol: &str, kind: &str) {
    let Error::MissingKsym {
        function: f,
        symbol: s,
        reason,
        ..
    } = err
    else {
        panic!("expected Error::MissingKsym, got {err:?}");
    };
    assert_eq!((f.as_str(), s.as_str()), (function, symbol));
    assert!(reason.contains(kind), "{reason}");
    let message = err.to_string();
    assert!(message.contains("__weak"), "{message}");
}

/// Where this kernel describes nf_conntrack's kfuncs (Linux 5.18): vmlinux's BTF (built in, as
/// on the host), the nf_conntrack module's (Debian's kernels: the guests load the module), or
/// nowhere (5.10).
fn conntrack_kfuncs() -> &'static str {
    let has = |path: &str| {
        std::fs::read(path).is_ok_and(|b| b.windows(17).any(|w| w == b"bpf_xdp_ct_lookup"))
    };
    if has("/sys/kernel/btf/vmlinux") {
        "vmlinux"
    } else if has("/sys/kernel/btf/nf_conntrack") {
        "the nf_conntrack module"
    } else {
        "nowhere"
    }
}

/// A manager of one XDP probe of kfuncs_module.bpf.o on `lo`, and what its init returned.
fn xdp_on_lo(id: &ProbeIdentificationPair) -> (Manager, Result<(), Error>) {
    setup();
    let mut m = Manager {
        probes: vec![Probe {
            uid: id.uid.clone(),
            ebpf_func_name: id.ebpf_func_name.clone(),
            if_name: Some("lo".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let result = m.init(KFUNCS_MODULE);
    (m, result)
}

/// A kfunc of a module: its call names the module's BTF by an index into the fd array of
/// `BPF_PROG_LOAD`, which aya 0.14 does not pass; the manager loads the program itself.
#[test]
fn kfuncs_of_a_module_load_with_its_btf() {
    let id = ProbeIdentificationPair::new("ct", "ct_lookup");
    let (mut m, result) = xdp_on_lo(&id);
    let found_in = conntrack_kfuncs();
    let kernel = KernelVersion::current().expect("kernel version");
    // The guests load nf_conntrack at boot (xtask's initramfs); the host has it built in.
    assert!(
        found_in != "nowhere" || kernel < KernelVersion::new(5, 18, 0),
        "Linux {kernel:?} has nf_conntrack's kfuncs: is the module loaded (modprobe nf_conntrack)?"
    );
    if found_in == "nowhere" {
        let err = result.expect_err("no kernel BTF has bpf_xdp_ct_lookup");
        assert_missing(&err, "ct_lookup", "bpf_xdp_ct_lookup", "kfunc");
        assert!(err.to_string().contains("module"), "{err}");
        println!("Linux {kernel:?}: {err}");
        return;
    }
    result.unwrap_or_else(|e| panic!("nf_conntrack's kfuncs are in {found_in}: {e:?}"));
    let prog = m.get_program(&id).expect("ct_lookup");
    assert_eq!(test_run(prog.fd().expect("loaded").as_fd()), 2, "XDP_PASS");
    let seen = |slot| read_slot(&m, "ct_seen", slot) as i64;
    assert_eq!(seen(0), 1, "the program ran past the lookup");
    assert_eq!(seen(1), 0, "no such connection");
    println!(
        "nf_conntrack's kfuncs in {found_in}: bpf_xdp_ct_lookup ran (opts.error {})",
        seen(2)
    );
    m.stop(CleanupType::CleanAll).unwrap();
}

/// A module's type read by CO-RE in a program without kfuncs: aya relocates against vmlinux
/// only, so where the type is a module's (nf_conntrack's `struct bpf_ct_opts`, Linux 5.18, a
/// module in Debian's kernels) the manager loads the program itself against vmlinux's BTF
/// with the module's. Before 5.18 no BTF has the type, and the error names the relocation.
#[test]
fn kfuncs_module_types_resolve_by_co_re() {
    let id = ProbeIdentificationPair::new("ct", "ct_opts_layout");
    let (mut m, result) = xdp_on_lo(&id);
    let found_in = conntrack_kfuncs();
    if found_in == "nowhere" {
        match result.expect_err("no kernel BTF has struct bpf_ct_opts") {
            Error::CoreRelocation { relocation, .. } => assert!(
                relocation.contains("struct bpf_ct_opts___local.error"),
                "{relocation}"
            ),
            other => panic!("expected Error::CoreRelocation, got {}", other.report()),
        }
        return;
    }
    result.unwrap_or_else(|e| panic!("struct bpf_ct_opts is in {found_in}: {}", e.report()));
    let prog = m.get_program(&id).expect("ct_opts_layout");
    assert_eq!(test_run(prog.fd().expect("loaded").as_fd()), 2, "XDP_PASS");
    assert_eq!(
        read_slot(&m, "ct_seen", 3),
        4,
        "the kernel's offset of bpf_ct_opts.error"
    );
    m.stop(CleanupType::CleanAll).unwrap();
}
