//! Constant editors: `volatile const` globals set before load. One editor for every probe
//! (`filter_tid`: count this thread only) and one for a single probe (`clone_tag`), which then
//! runs its own copy of the program. Both count mkdir calls in the shared `tagged` map, each in
//! the slot its `clone_tag` names.
//!
//! Run: `cargo run --example constant_editor` (as root).

use std::process::ExitCode;

use ebpf_manager::{aya::maps::Array, CleanupType, ConstantEditor, Error, Manager, Options, Probe};

/// ebpf-fixtures/src/probes.bpf.c: `tagged_sys_enter_mkdir` does `tagged[clone_tag]++` for
/// the thread `filter_tid`.
const OBJECT: &[u8] = include_bytes!("../ebpf-fixtures/probes.bpf.o");

fn run() -> Result<(), Error> {
    examples::check_privileges();
    let _ = ebpf_manager::mount_tracefs();
    let probe = |uid: &str| Probe {
        uid: uid.into(),
        ebpf_func_name: "tagged_sys_enter_mkdir".into(),
        ..Default::default()
    };
    let (plain, tagged) = (probe("plain"), probe("tagged"));
    let mut m = Manager {
        probes: vec![plain, tagged.clone()],
        ..Default::default()
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let options = Options {
        constant_editors: vec![
            ConstantEditor::new("filter_tid", tid),
            ConstantEditor {
                probes: vec![tagged.id()],
                ..ConstantEditor::new("clone_tag", 3u32)
            },
        ],
        ..Default::default()
    };
    m.init_with_options(OBJECT, options)?;
    m.start()?;
    let dir = std::env::temp_dir().join(format!("ebpf-manager-constants-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .and_then(|()| std::fs::remove_dir(&dir))
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    let map = Array::<_, u64>::try_from(m.get_map("tagged").expect("tagged")).expect("array");
    let counts: Vec<u64> = (0..4).map(|i| map.get(&i, 0).unwrap_or(0)).collect();
    println!("after one mkdir: tagged = {counts:?} (slot 0: clone_tag left at 0; slot 3: the probe given clone_tag = 3)");
    m.stop(CleanupType::CleanAll)?;
    if counts == [1, 0, 0, 1] {
        println!("constant_editor: ok");
        Ok(())
    } else {
        Err(examples::not_seen())
    }
}

fn main() -> ExitCode {
    examples::exit(run())
}
