//! `inspect OBJECT [--config FILE] [--load]`.

use std::{io::Write, path::Path};

use ebpf_manager::{CleanupType, HookPreview, ObjectInfo};

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
    // Before any --load: a declaration whose init fails still gets each probe's verdict.
    let previews: Vec<HookPreview> = declared
        .as_ref()
        .map(|d| info.resolve_hooks(&d.probes, &d.options))
        .unwrap_or_default();
    let probes: Vec<serde_json::Value> = declared
        .iter()
        .flat_map(|d| &d.probes)
        .zip(&previews)
        .map(|(p, preview)| {
            let program = info.program_of(p).ok();
            serde_json::json!({
                "id": p.id(),
                "function": program.map(|p| p.function.clone()),
                "section": program.map(|p| p.section.clone()),
                "program_type": program.and_then(|p| p.program_type.clone()),
                "hook": preview.hook,
                "method": preview.method,
                "why": preview.why,
                "error": preview.error,
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
                m.map_type_name
                    .clone()
                    .unwrap_or_else(|| m.map_type.to_string()),
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
    for (p, preview) in probes.iter().zip(&previews) {
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
        if let Some(error) = &preview.error {
            line(out, format_args!("    would fail: {error}"))?;
            continue;
        }
        let hook = preview.hook.as_deref().unwrap_or("(its target, at start)");
        let method = match (&preview.method, &preview.why) {
            (Some(m), Some(why)) => format!(" through {m} ({why})"),
            (Some(m), None) => format!(" through {m}"),
            (None, _) => String::new(),
        };
        line(out, format_args!("    hook on this kernel: {hook}{method}"))?;
    }
    match loaded {
        Some(status) => line(
            out,
            format_args!("loaded on this kernel (nothing attached):\n{status}"),
        ),
        None if !probes.is_empty() => line(
            out,
            format_args!("(--load also runs the verifier on each probe's program)"),
        ),
        None => Ok(()),
    }
}

/// Initializes the declared manager (the verifier runs, hooks resolve), reads its status and
/// stops it: nothing stays loaded.
fn load_declared(
    bytes: &[u8],
    declared: ebpf_manager::Declaration,
) -> Result<ebpf_manager::Status, Failed> {
    ebpf_manager::mount_tracefs().map_err(|e| format!("mounting tracefs: {e}"))?;
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
