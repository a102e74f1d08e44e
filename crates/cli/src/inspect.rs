//! `inspect OBJECT [--config FILE] [--load]`.

use std::{io::Write, path::Path};

use ebpf_manager::{CleanupType, ObjectInfo, ObjectProgram, Probe};

use crate::{declaration, json, line, read, Failed};

pub(crate) fn inspect(
    object: &Path,
    config: Option<&Path>,
    load: bool,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), Failed> {
    let bytes = read(object)?;
    let info =
        ObjectInfo::parse(&bytes).map_err(|e| format!("{}: {}", object.display(), e.report()))?;
    let declared = config.map(declaration).transpose()?;
    let probes: Vec<serde_json::Value> = declared
        .iter()
        .flat_map(|d| &d.probes)
        .map(|p| {
            let program = program_of(&info, p);
            serde_json::json!({
                "id": p.id(),
                "function": program.map(|p| p.function.clone()),
                "section": program.map(|p| p.section.clone()),
                "program_type": program.and_then(|p| p.program_type.clone()),
            })
        })
        .collect();
    let loaded = match declared.filter(|_| load) {
        Some(d) => Some(load_declared(&bytes, d)?),
        None => None,
    };
    if as_json {
        return json(
            out,
            &serde_json::json!({
                "object": object,
                "programs": info.programs,
                "maps": info.maps,
                "probes": probes,
                "loaded": loaded,
            }),
        );
    }
    line(
        out,
        format_args!(
            "{}: {} programs, {} maps",
            object.display(),
            info.programs.len(),
            info.maps.len()
        ),
    )?;
    for p in &info.programs {
        let kind = match (&p.program_type, &p.unloadable) {
            (Some(t), _) => t.clone(),
            (None, Some(why)) => format!("cannot load: {why}"),
            (None, None) => "?".into(),
        };
        line(
            out,
            format_args!("  program {}  section {}  {kind}", p.function, p.section),
        )?;
    }
    for m in &info.maps {
        line(
            out,
            format_args!(
                "  map {}  type {}  key {} value {} entries {}{}",
                m.name,
                m.map_type,
                m.key_size,
                m.value_size,
                m.max_entries,
                if m.pinned_by_name {
                    "  pinned by name"
                } else {
                    ""
                }
            ),
        )?;
    }
    for p in &probes {
        line(
            out,
            format_args!(
                "  probe {}/{} runs {}",
                p["id"]["uid"].as_str().unwrap_or_default(),
                p["id"]["ebpf_func_name"].as_str().unwrap_or_default(),
                p["section"]
                    .as_str()
                    .map_or("no program of this object".into(), |s| format!(
                        "the program in {s}"
                    ))
            ),
        )?;
    }
    match loaded {
        Some(status) => line(
            out,
            format_args!("loaded on this kernel (nothing attached):\n{status}"),
        ),
        None if !probes.is_empty() => line(
            out,
            format_args!(
                "(--load resolves each probe's hook on this kernel and runs the verifier)"
            ),
        ),
        None => Ok(()),
    }
}

/// The program a probe names: by function, else by section.
fn program_of<'a>(info: &'a ObjectInfo, p: &Probe) -> Option<&'a ObjectProgram> {
    info.programs.iter().find(|prog| {
        if p.ebpf_func_name.is_empty() {
            p.section.as_deref() == Some(prog.section.as_str())
        } else {
            prog.function == p.ebpf_func_name
        }
    })
}

/// Initializes the declared manager (the verifier runs, hooks resolve), reads its status and
/// stops it: nothing stays loaded.
fn load_declared(
    bytes: &[u8],
    declared: ebpf_manager::Declaration,
) -> Result<ebpf_manager::Status, Failed> {
    ebpf_manager::kernel::tracefs::mount_if_needed()
        .map_err(|e| format!("mounting tracefs: {e}"))?;
    let (mut manager, options) = declared.into_manager();
    manager
        .init_with_options(bytes, options)
        .map_err(|e| format!("init failed: {}", e.report()))?;
    let status = manager.status();
    manager
        .stop(CleanupType::CleanAll)
        .map_err(|e| format!("stop failed: {}", e.report()))?;
    Ok(status)
}
