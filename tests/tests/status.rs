//! `Manager::status`: each figure read back against a known workload.

use ebpf_manager::{
    AttachMethod, CleanupType, Error, KprobeAttachMethod, Manager, ManagerState, Options, Probe,
    ProbeState, ProbesSelector,
};
use integration_tests::{user::*, *};

/// Probes of every kind of figure, with run statistics on: a uprobe on a binary only this test
/// runs (so its run count is exact), a raw tracepoint (a BPF link on every kernel tested), and
/// a probe no selector enables. All in one test: run statistics are global to the kernel, and
/// another test of this binary holding them would change what the others see.
#[test]
fn status_reports_states_hooks_ids_and_run_counts() {
    setup();
    let target = TempFile::uprobe_target();
    let add = Probe {
        binary_path: Some(target.path().to_owned()),
        ..probe("add", "uprobe_add")
    };
    let raw = probe("raw", "raw_tracepoint_sys_enter");
    let off = Probe {
        binary_path: Some(target.path().to_owned()),
        ..probe("off", "uprobe_generic")
    };
    let (add_id, raw_id, off_id) = (add.id(), raw.id(), off.id());
    // The raw tracepoint lives in probes.bpf.o: a second manager.
    let mut m = Manager {
        probes: vec![add, off],
        ..Default::default()
    };
    m.init_with_options(
        USER,
        Options {
            enable_stats: true,
            activated_probes: vec![ProbesSelector::Probe(add_id.clone())],
            ..user_filters(0, 0)
        },
    )
    .unwrap();
    let mut raw_manager = counting_manager(vec![raw]);
    let before = m.status();
    assert_eq!(before.state, ManagerState::Initialized);
    assert!(before.run_stats, "enable_stats turns run statistics on");
    let p = &before.probes[0];
    assert_eq!(
        (p.state, p.attach_method, p.link_id),
        (ProbeState::Loaded, None, None)
    );
    assert_eq!(p.program_id, m.program_id(&add_id));
    assert_eq!(p.run_count, Some(0));
    m.start().unwrap();
    raw_manager.start().unwrap();
    run_uprobe_target(target.path(), 5);
    let status = m.status();
    println!("{status}");
    let p = &status.probes[0];
    assert_eq!(p.id, add_id);
    assert_eq!(p.state, ProbeState::Running);
    assert_eq!(p.attach_method, Some(AttachMethod::Uprobe));
    assert_eq!(
        p.hook.as_deref(),
        Some(format!("{}:uprobe_target_add", target.path().display()).as_str())
    );
    assert_eq!(
        p.run_count,
        Some(5),
        "uprobe_target 5 calls uprobe_target_add 5 times"
    );
    assert!(p.run_time_ns.is_some_and(|ns| ns > 0), "{p:?}");
    assert_eq!(p.missed, None, "not a tracefs kprobe");
    assert_eq!(p.error, None);
    let off = &status.probes[1];
    assert_eq!((&off.id, off.state), (&off_id, ProbeState::Disabled));
    assert_eq!(
        off.program_id, None,
        "a disabled probe's program is not loaded"
    );
    assert_eq!(
        off.error.as_deref(),
        Some("no selector of activated_probes names it")
    );
    let raw = &raw_manager.status().probes[0];
    assert_eq!(raw.id, raw_id);
    assert_eq!(raw.attach_method, Some(AttachMethod::RawTracepoint));
    let link = raw
        .link_id
        .expect("a raw tracepoint is attached through a BPF link");
    assert!(
        link_ids().contains(&link),
        "link {link} is not in the kernel"
    );
    // The table a person reads, and the JSON a program reads.
    let table = status.to_string();
    assert!(
        table.starts_with(
            "manager Running: 2 probes (1 running, 0 failed, 1 disabled), run statistics on"
        ),
        "{table}"
    );
    assert!(
        table.contains("add/uprobe_add") && table.contains("uprobe PMU"),
        "{table}"
    );
    assert!(
        table.contains("off/uprobe_generic: no selector of activated_probes names it"),
        "{table}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["state"], "Running");
    assert_eq!(json["probes"][0]["id"]["uid"], "add");
    assert_eq!(json["probes"][0]["attach_method"], "Uprobe");
    assert_eq!(json["probes"][0]["run_count"], 5);
    m.stop(CleanupType::CleanAll).unwrap();
    raw_manager.stop(CleanupType::CleanAll).unwrap();
    assert!(m
        .status()
        .probes
        .iter()
        .all(|p| p.state == ProbeState::Stopped));
}

/// The ids of every BPF link in the kernel (`BPF_LINK_GET_NEXT_ID`, Linux 5.8).
fn link_ids() -> Vec<u32> {
    #[repr(C)]
    struct Attr {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = Attr {
        start_id: 0,
        next_id: 0,
        open_flags: 0,
    };
    let mut ids = Vec::new();
    // SAFETY: a valid bpf_attr prefix of the size passed.
    while unsafe {
        libc::syscall(
            libc::SYS_bpf,
            31, // BPF_LINK_GET_NEXT_ID
            &mut attr as *mut Attr,
            std::mem::size_of::<Attr>() as u32,
        )
    } == 0
    {
        ids.push(attr.next_id);
        attr.start_id = attr.next_id;
    }
    ids
}

/// A tracefs kretprobe with one instance (`maxactive` 1) on `hrtimer_nanosleep`, entered by
/// two threads that sleep at once: the second finds no instance free and the kernel counts a
/// miss (`kprobe_profile`), which the status reports. Where the kernel has no kprobes, the
/// error a user gets.
#[test]
fn status_reports_kretprobe_misses() {
    setup();
    let p = Probe {
        hook_func_name: Some("hrtimer_nanosleep".into()),
        kprobe_attach_method: KprobeAttachMethod::Tracefs,
        kprobe_max_active: 1,
        ..probe("sleep", "kretprobe_vfs_mkdir")
    };
    let id = p.id();
    let mut m = counting_manager(vec![p]);
    if !kernel_has_kprobes() {
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::KprobesUnsupported { id: got, hook } if *got == id && hook == "hrtimer_nanosleep"),
            "{err:?}"
        );
        println!("no kprobes on this kernel: {}", err.report());
        return;
    }
    m.start().unwrap();
    let sleepers: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1))))
        .collect();
    for s in sleepers {
        s.join().unwrap();
    }
    let status = m.status();
    println!("{status}");
    let p = &status.probes[0];
    assert_eq!(p.attach_method, Some(AttachMethod::KprobeTracefs));
    assert!(p.missed.is_some_and(|n| n >= 1), "{p:?}");
    m.stop(CleanupType::CleanAll).unwrap();
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, "0-3" or "0").
fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Misses from link info (Linux 6.7): kretprobes on `hrtimer_nanosleep` through the kprobe PMU
/// (`maxactive` max(10, 2 × possible CPUs), the kernel's default) and through a kprobe.multi
/// link (its fprobe keeps 2 × possible CPUs return instances per function, before Linux 6.14),
/// entered by more threads sleeping at once than either has instances. Before 6.7 the kernel reports no
/// misses for these links: `None`. Where the kernel has no kprobes, the error a user gets.
#[test]
fn status_reports_kretprobe_misses_from_link_info() {
    setup();
    let cpus = possible_cpus();
    let pmu_instances = (2 * cpus).max(10);
    let multi_instances = 2 * cpus;
    let sleepers = pmu_instances + 4;
    let pmu = Probe {
        hook_func_name: Some("hrtimer_nanosleep".into()),
        kprobe_attach_method: KprobeAttachMethod::PerfEventOpen,
        ..probe("sleep-pmu", "kretprobe_vfs_mkdir")
    };
    let pmu_id = pmu.id();
    let multi_here = kernel_version() >= (5, 18) && kernel_has_fprobe();
    let mut probes = vec![pmu];
    if multi_here {
        probes.push(Probe {
            hook_func_name: Some("hrtimer_nanosleep".into()),
            kprobe_attach_method: KprobeAttachMethod::KprobeMulti,
            ..probe("sleep-multi", "kretprobe_vfs_mkdir")
        });
    } else {
        println!(
            "kprobe.multi: not on this kernel (CONFIG_FPROBE, Linux 5.18); its refusal is \
             asserted by gocompat's kprobe_multi_programs_load_with_their_attach_type"
        );
    }
    let mut m = counting_manager(probes);
    if !kernel_has_kprobes() {
        let err = m.start().unwrap_err();
        assert!(
            matches!(&err, Error::KprobesUnsupported { id: got, hook } if *got == pmu_id && hook == "hrtimer_nanosleep"),
            "{err:?}"
        );
        println!("no kprobes on this kernel: {}", err.report());
        return;
    }
    m.start().unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(sleepers as usize));
    let threads: Vec<_> = (0..sleepers)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                std::thread::sleep(std::time::Duration::from_secs(2));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let status = m.status();
    println!("{sleepers} sleepers, {cpus} possible CPUs\n{status}");
    let with_info = kernel_version() >= (6, 7);
    let p = &status.probes[0];
    assert_eq!(p.attach_method, Some(AttachMethod::KprobePmu));
    if with_info {
        assert!(p.link_id.is_some(), "{p:?}");
        assert!(
            p.missed.is_some_and(|n| n >= sleepers - pmu_instances),
            "{p:?}"
        );
    } else {
        assert_eq!(p.missed, None, "{p:?}");
    }
    if multi_here {
        let p = &status.probes[1];
        assert_eq!(p.attach_method, Some(AttachMethod::KprobeMulti));
        // Linux 6.14 rebuilt fprobe on the function graph tracer, without that pool: the
        // count is reported, and no workload here is known to make it miss.
        if kernel_version() >= (6, 14) {
            assert!(p.missed.is_some(), "{p:?}");
        } else if with_info {
            assert!(
                p.missed.is_some_and(|n| n >= sleepers - multi_instances),
                "{p:?}"
            );
        } else {
            assert_eq!(p.missed, None, "{p:?}");
        }
    }
    m.stop(CleanupType::CleanAll).unwrap();
}
