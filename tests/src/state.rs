//! The kernel's state as a test sees it (programs, maps, this process's fds by kind, its
//! tracefs events, bpffs entries and threads), to check that failed or finished calls leave
//! it as it was (tests/tests/faults.rs, tests/tests/soak.rs).

use std::{collections::BTreeMap, time::Duration};

use crate::{map_ids, own_tracefs_events};

/// What the kernel holds for this process, and what it holds at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub programs: Vec<(u32, String)>,
    pub maps: Vec<u32>,
    pub fds: BTreeMap<String, usize>,
    pub tracefs: Vec<String>,
    pub bpffs: Vec<String>,
    pub threads: usize,
}

pub fn snapshot() -> Snapshot {
    let mut programs: Vec<(u32, String)> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect();
    programs.sort_unstable();
    // Ids only: opening maps by id while the manager frees a program array can leak the array
    // (see `map_ids`); names are read once a comparison has failed.
    let maps = map_ids();
    let mut fds = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            // The kind, not the instance: `anon_inode:bpf-map`, `socket:[…]` -> `socket`.
            let kind = t.split('[').next().unwrap_or(&t).trim_end_matches(':');
            let kind = if kind.starts_with('/') { "file" } else { kind };
            *fds.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }
    let mut tracefs = own_tracefs_events("kprobe_events");
    tracefs.extend(own_tracefs_events("uprobe_events"));
    let mut bpffs: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    bpffs.sort();
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    Snapshot {
        programs,
        maps,
        fds,
        tracefs,
        bpffs,
        threads,
    }
}

/// The kernel's state once it stopped changing (aya's feature probes and the objects of the
/// previous run are freed a moment after their last fd goes).
pub fn settled() -> Snapshot {
    let mut last = snapshot();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let now = snapshot();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Whether `now` holds nothing `before` did not: the same fds, events, entries and threads of
/// this process, and no program or map that was not there (one that was there may have gone
/// since: a previous test process's, which the kernel frees a moment after it exits).
fn nothing_more(before: &Snapshot, now: &Snapshot) -> bool {
    now.programs.iter().all(|p| before.programs.contains(p))
        && now.maps.iter().all(|m| before.maps.contains(m))
        && now.fds == before.fds
        && now.tracefs == before.tracefs
        && now.bpffs == before.bpffs
        && now.threads == before.threads
}

/// Waits up to 5 s for the kernel to match `before` exactly (it frees programs, maps and
/// reader threads a moment after their last reference goes): `Err` says what differs.
pub fn wait_same(before: &Snapshot) -> Result<(), String> {
    wait_for(before, |now| now == before)
}

/// Waits up to 5 s for the kernel to hold nothing more than `before` ([`nothing_more`]), for
/// a `before` taken when none of the objects in it were the caller's.
pub fn wait_nothing_more(before: &Snapshot) -> Result<(), String> {
    wait_for(before, |now| nothing_more(before, now))
}

fn wait_for(before: &Snapshot, done: impl Fn(&Snapshot) -> bool) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = snapshot();
        if done(&now) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let names: Vec<(u32, String)> = now
                .maps
                .iter()
                .filter(|id| !before.maps.contains(id))
                .map(|&id| {
                    let name = aya::maps::MapInfo::from_id(id)
                        .map(|m| m.name_as_str().unwrap_or("?").to_owned())
                        .unwrap_or_else(|e| e.to_string());
                    (id, name)
                })
                .collect();
            return Err(format!(
                "the kernel is not as before\nbefore: {before:#?}\nafter:  {now:#?}\n\
                 new maps: {names:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_same`], panicking with `what` when the kernel differs.
pub fn assert_same(before: &Snapshot, what: &str) {
    if let Err(e) = wait_same(before) {
        panic!("{what}: {e}");
    }
}
