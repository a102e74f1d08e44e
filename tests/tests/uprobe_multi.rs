//! A uprobe on every function of a pattern (`Probe::match_all_functions`): one uprobe.multi link
//! where the kernel has them (Linux 6.6), else one uprobe per function.

use ebpf_manager::{AttachMethod, CleanupType, Probe, ProbeIdentificationPair};
use integration_tests::{user::*, *};

/// Targets of the pattern `uprobe_multi_target_*`, in this test binary.
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_multi_target_a(a: i64) -> i64 {
    std::hint::black_box(a)
}

/// See [`uprobe_multi_target_a`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_multi_target_b(a: i64) -> i64 {
    std::hint::black_box(a) * 2
}

/// Targets of the regular expression test, apart from the pattern test's: two probes never
/// share a function here, and the tests run one at a time (`SERIAL`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_regex_target_x(a: i64) -> i64 {
    std::hint::black_box(a) + 1
}

/// See [`uprobe_regex_target_x`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_regex_target_y(a: i64) -> i64 {
    std::hint::black_box(a) + 2
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn match_all_functions_takes_one_uprobe_multi_link_or_one_uprobe_per_function() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = std::env::current_exe().expect("the test binary's path");
    let id = ProbeIdentificationPair::new("all", "uprobe_generic");
    let probe = Probe {
        binary_path: Some(exe.clone()),
        attach_to_func_name: Some("uprobe_multi_target_*".into()),
        match_all_functions: true,
        ..probe("all", "uprobe_generic")
    };
    let mut m = user_manager(vec![probe], user_filters(std::process::id(), gettid())).unwrap();
    m.start().expect("start");
    let info = m.attach_info(&id).unwrap().clone();
    assert!(
        info.hook.ends_with("uprobe_multi_target_* (2 functions)"),
        "{}",
        info.hook
    );
    let expected = if ebpf_manager::features::uprobe_multi_supported() {
        AttachMethod::UprobeMulti
    } else {
        AttachMethod::Uprobe
    };
    assert_eq!(info.method, expected);
    assert_eq!(uprobe_multi_target_a(7) + uprobe_multi_target_b(11), 29);
    let hits = slot_of(&m, "user_hits", user_slot::UPROBE_GENERIC);
    assert_eq!(hits, 2, "each function fired once");
    let programs = program_ids(&m, std::slice::from_ref(&id));
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&programs);
}

/// `match_func_name` over a binary's symbols: the first match of the expression.
#[test]
fn a_regular_expression_selects_the_binary_function() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = std::env::current_exe().expect("the test binary's path");
    let id = ProbeIdentificationPair::new("re", "uprobe_generic");
    let probe = Probe {
        binary_path: Some(exe),
        match_func_name: Some("regex_target_y$".into()),
        ..probe("re", "uprobe_generic")
    };
    let mut m = user_manager(vec![probe], user_filters(std::process::id(), gettid())).unwrap();
    m.start().expect("start");
    assert!(m
        .attach_info(&id)
        .unwrap()
        .hook
        .ends_with(":uprobe_regex_target_y"));
    assert_eq!(uprobe_regex_target_x(7) + uprobe_regex_target_y(11), 21);
    assert_eq!(slot_of(&m, "user_hits", user_slot::UPROBE_GENERIC), 1);
    assert_eq!(slot_of(&m, "user_values", user_slot::UPROBE_GENERIC), 11);
}

/// Targets of `uprobe.multi//proc/self/exe:uprobe_section_target_*` in user.bpf.c.
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_section_target_a(a: i64) -> i64 {
    std::hint::black_box(a) + 3
}

/// See [`uprobe_section_target_a`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_section_target_b(a: i64) -> i64 {
    std::hint::black_box(a) + 4
}

/// See [`uprobe_section_target_a`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_section_target_c(a: i64) -> i64 {
    std::hint::black_box(a) + 5
}

/// Target of `uprobe//proc/self/exe:uprobe_section_single` in user.bpf.c.
#[no_mangle]
#[inline(never)]
pub extern "C" fn uprobe_section_single(a: i64) -> i64 {
    std::hint::black_box(a) + 6
}

/// libbpf's `uprobe.multi/<binary>:<glob>` (and `uretprobe.multi/...`) means every function of
/// the glob in that binary, with no declaration beyond the program's name (was: refused for
/// lack of binary_path); a `uprobe/<binary>:<function>` section, that one function.
#[test]
fn a_uprobe_multi_section_attaches_every_function_of_its_glob() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let multi = ProbeIdentificationPair::new("section", "uprobe_multi_section");
    let ret = ProbeIdentificationPair::new("section", "uretprobe_multi_section");
    let single = ProbeIdentificationPair::new("section", "uprobe_path_section");
    let probes = vec![
        probe("section", "uprobe_multi_section"),
        probe("section", "uretprobe_multi_section"),
        probe("section", "uprobe_path_section"),
    ];
    let mut m = user_manager(probes, user_filters(std::process::id(), gettid())).unwrap();
    m.start().expect("start");
    let info = m.attach_info(&multi).unwrap().clone();
    assert!(
        info.hook
            .ends_with("/proc/self/exe:uprobe_section_target_* (3 functions)"),
        "{}",
        info.hook
    );
    let expected = if ebpf_manager::features::uprobe_multi_supported() {
        AttachMethod::UprobeMulti
    } else {
        AttachMethod::Uprobe
    };
    assert_eq!(info.method, expected);
    let ret_info = m.attach_info(&ret).unwrap().clone();
    assert!(
        ret_info
            .hook
            .ends_with("/proc/self/exe:uprobe_section_target_* (3 functions)"),
        "{}",
        ret_info.hook
    );
    assert_eq!(ret_info.method, expected);
    let sum = uprobe_section_target_a(1) + uprobe_section_target_b(2) + uprobe_section_target_c(3);
    assert_eq!(sum, 18);
    // uretprobe.multi: each return seen once; the last value is c's (3 + 5).
    assert_eq!(
        slot_of(&m, "user_hits", user_slot::URETPROBE_MULTI_SECTION),
        3
    );
    assert_eq!(
        slot_of(&m, "user_values", user_slot::URETPROBE_MULTI_SECTION),
        8
    );
    assert_eq!(uprobe_section_single(9), 15);
    let hits = slot_of(&m, "user_hits", user_slot::UPROBE_MULTI_SECTION);
    assert_eq!(hits, 3, "each function of the glob fired once");
    assert!(m
        .attach_info(&single)
        .unwrap()
        .hook
        .ends_with(":uprobe_section_single"));
    assert_eq!(slot_of(&m, "user_hits", user_slot::UPROBE_PATH_SECTION), 1);
    assert_eq!(
        slot_of(&m, "user_values", user_slot::UPROBE_PATH_SECTION),
        9
    );
    let programs = program_ids(&m, &[multi, ret, single]);
    m.stop(CleanupType::CleanAll).unwrap();
    assert_unloaded(&programs);
}
