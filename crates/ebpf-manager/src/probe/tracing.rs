//! Programs typed against the kernel's BTF: fentry and fexit (Linux 5.5), tp_btf (5.5),
//! LSM (5.7, with `bpf` in the `lsm=` boot parameter) and iterators (5.8). Their target is
//! resolved when the program loads, against the kernel BTF that the manager parses once.

use aya::programs::Program;

use super::{AttachInfo, AttachMethod, Link};
use crate::{Error, ProbeIdentificationPair, Result};

/// The BTF-typed program kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    FEntry,
    FExit,
    BtfTracepoint,
    Lsm,
    Iter,
}

impl Kind {
    /// Its name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::FEntry => "fentry",
            Self::FExit => "fexit",
            Self::BtfTracepoint => "tp_btf",
            Self::Lsm => "LSM",
            Self::Iter => "iterator",
        }
    }

    /// The kind of a program, when it is BTF-typed.
    pub(crate) fn of(prog: &Program) -> Option<Self> {
        match prog {
            Program::FEntry(_) => Some(Self::FEntry),
            Program::FExit(_) => Some(Self::FExit),
            Program::BtfTracePoint(_) => Some(Self::BtfTracepoint),
            Program::Lsm(_) => Some(Self::Lsm),
            Program::Iter(_) => Some(Self::Iter),
            _ => None,
        }
    }
}

/// Attaches a loaded BTF-typed program.
pub(crate) fn attach(
    prog: &mut Program,
    id: &ProbeIdentificationPair,
    target: &str,
) -> Result<(Link, AttachInfo)> {
    let link = match prog {
        Program::FEntry(p) => p.attach().and_then(|l| p.take_link(l)).map(Link::FEntry),
        Program::FExit(p) => p.attach().and_then(|l| p.take_link(l)).map(Link::FExit),
        Program::BtfTracePoint(p) => p
            .attach()
            .and_then(|l| p.take_link(l))
            .map(Link::BtfTracepoint),
        Program::Lsm(p) => p.attach().and_then(|l| p.take_link(l)).map(Link::Lsm),
        Program::Iter(p) => p.attach().and_then(|l| p.take_link(l)).map(Link::Iter),
        _ => unreachable!("resolved as a BTF-typed program"),
    }
    .map_err(|e| Error::Attach {
        id: id.clone(),
        hook: target.to_owned(),
        method: AttachMethod::BtfLink,
        source: super::with_hint(e, None),
    })?;
    Ok((
        link,
        AttachInfo {
            hook: target.to_owned(),
            method: AttachMethod::BtfLink,
        },
    ))
}
