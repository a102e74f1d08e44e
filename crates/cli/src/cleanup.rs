//! `cleanup [--dry-run]`: what dead managers of this library left behind (tracefs probe events
//! and private bpffs directories whose owner's lock is free), removed or only listed.

use std::io::Write;

use crate::{json, line, Failed};

pub(crate) fn cleanup(dry_run: bool, as_json: bool, out: &mut dyn Write) -> Result<(), Failed> {
    ebpf_manager::mount_tracefs().map_err(|e| format!("mounting tracefs: {e}"))?;
    let found = if dry_run {
        ebpf_manager::find_leftovers()
    } else {
        ebpf_manager::remove_leftovers()
    };
    let dirs: Vec<String> = found
        .bpffs_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    if as_json {
        return json(
            out,
            &serde_json::json!({
                "dry_run": dry_run,
                "tracefs_events": found.tracefs_events,
                "bpffs_dirs": dirs,
            }),
        );
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    if found.is_empty() {
        return line(out, format_args!("nothing left by dead managers"));
    }
    for event in &found.tracefs_events {
        line(out, format_args!("{verb} tracefs event {event}"))?;
    }
    for dir in &dirs {
        line(out, format_args!("{verb} bpffs directory {dir}"))?;
    }
    Ok(())
}
