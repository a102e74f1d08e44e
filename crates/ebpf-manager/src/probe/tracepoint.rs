//! Tracepoints (`tracepoint/<category>/<name>`, Linux 4.7) and raw tracepoints
//! (`raw_tracepoint/<name>`, Linux 4.17).

use aya::programs::{trace_point::TracePointError, ProgramError, RawTracePoint, TracePoint};

use super::{AttachInfo, AttachMethod, Link};
use crate::{kernel::tracefs, Error, ProbeIdentificationPair, Result};

/// Attaches a tracepoint program to `category/name`.
pub(crate) fn attach(
    prog: &mut TracePoint,
    id: &ProbeIdentificationPair,
    category: &str,
    name: &str,
) -> Result<(Link, AttachInfo)> {
    // aya looks tracefs up once per process; check it first for a clear error.
    let root = tracefs::root()?;
    let link = prog
        .attach(category, name)
        .and_then(|link_id| prog.take_link(link_id))
        .map_err(|e| match e {
            ProgramError::TracePointError(TracePointError::FileError { io_error, .. })
                if io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                Error::TracepointNotFound {
                    id: id.clone(),
                    category: category.to_owned(),
                    name: name.to_owned(),
                    tracefs: root.to_owned(),
                }
            }
            other => {
                // The kernel runs a program once per tracepoint: a second probe of the same
                // loaded program there is refused.
                let hint = (super::syscall_errno(&other) == Some(libc::EEXIST)).then(|| {
                    "this program is attached to this tracepoint already, by another probe of \
                     the same function: give one of them its own program with \
                     Probe::copy_program"
                        .to_owned()
                });
                Error::Attach {
                    id: id.clone(),
                    hook: format!("{category}/{name}"),
                    method: AttachMethod::Tracepoint,
                    source: super::with_hint(other, hint),
                }
            }
        })?;
    Ok((
        Link::Tracepoint(link),
        AttachInfo {
            hook: format!("{category}/{name}"),
            method: AttachMethod::Tracepoint,
        },
    ))
}

/// Attaches a raw tracepoint program to `name`.
pub(crate) fn attach_raw(
    prog: &mut RawTracePoint,
    id: &ProbeIdentificationPair,
    name: &str,
) -> Result<(Link, AttachInfo)> {
    let link = prog
        .attach(name)
        .and_then(|link_id| prog.take_link(link_id))
        .map_err(|e| Error::Attach {
            id: id.clone(),
            hook: name.to_owned(),
            method: AttachMethod::RawTracepoint,
            source: Box::new(e),
        })?;
    Ok((
        Link::RawTracepoint(link),
        AttachInfo {
            hook: name.to_owned(),
            method: AttachMethod::RawTracepoint,
        },
    ))
}
