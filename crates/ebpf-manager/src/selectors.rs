//! [`ProbesSelector`]: which probes to enable, and what must be running for a start to count.
//!
//! The semantics are the Go library's: with no selector every declared probe is mandatory; with
//! selectors, a probe is enabled when any selector names it, every enabled probe is attached,
//! and then each selector validates what runs.

use std::fmt;

use crate::ProbeIdentificationPair;

/// A tree of probes and of the rule they must satisfy after `start`.
///
/// ```
/// use ebpf_manager::{ProbeIdentificationPair as Id, ProbesSelector::*};
///
/// // The kprobe where the kernel has kprobes, else its tracepoint twin; and maybe a raw tracepoint.
/// let selectors = vec![
///     OneOf(vec![
///         Probe(Id::new("", "kprobe_vfs_mkdir")),
///         Probe(Id::new("", "tracepoint_sys_enter_mkdir")),
///     ]),
///     BestEffort(vec![Probe(Id::new("", "raw_tracepoint_sys_enter"))]),
/// ];
/// # let _ = selectors;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum ProbesSelector {
    /// One probe; valid when it is running.
    Probe(ProbeIdentificationPair),
    /// Valid when every member is valid.
    AllOf(Vec<ProbesSelector>),
    /// Valid when at least one member is valid; an empty `OneOf` is never valid.
    OneOf(Vec<ProbesSelector>),
    /// Always valid: its probes are attached when they can be.
    BestEffort(Vec<ProbesSelector>),
}

impl ProbesSelector {
    /// Every probe this selector names, in order, duplicates included.
    pub fn probes(&self) -> Vec<&ProbeIdentificationPair> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a ProbeIdentificationPair>) {
        match self {
            Self::Probe(id) => out.push(id),
            Self::AllOf(v) | Self::OneOf(v) | Self::BestEffort(v) => {
                v.iter().for_each(|s| s.collect(out))
            }
        }
    }

    /// Checks the selector against the probes that run. `Err` holds every probe that made it
    /// fail, with that probe's own cause (from `cause`).
    pub(crate) fn validate(
        &self,
        running: &dyn Fn(&ProbeIdentificationPair) -> bool,
        cause: &dyn Fn(&ProbeIdentificationPair) -> String,
    ) -> Result<(), Vec<(ProbeIdentificationPair, String)>> {
        match self {
            Self::Probe(id) if running(id) => Ok(()),
            Self::Probe(id) => Err(vec![(id.clone(), cause(id))]),
            Self::AllOf(members) => {
                let failures: Vec<_> = members
                    .iter()
                    .filter_map(|m| m.validate(running, cause).err())
                    .flatten()
                    .collect();
                if failures.is_empty() {
                    Ok(())
                } else {
                    Err(failures)
                }
            }
            Self::OneOf(members) => {
                let mut failures = Vec::new();
                for m in members {
                    match m.validate(running, cause) {
                        Ok(()) => return Ok(()),
                        Err(f) => failures.extend(f),
                    }
                }
                Err(failures)
            }
            Self::BestEffort(_) => Ok(()),
        }
    }
}

impl fmt::Display for ProbesSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, members) = match self {
            Self::Probe(id) => return write!(f, "{id}"),
            Self::AllOf(v) => ("AllOf", v),
            Self::OneOf(v) => ("OneOf", v),
            Self::BestEffort(v) => ("BestEffort", v),
        };
        write!(f, "{name}[")?;
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::{ProbesSelector::*, *};

    fn id(n: &str) -> ProbeIdentificationPair {
        ProbeIdentificationPair::new("", n)
    }

    fn check(s: &ProbesSelector) -> Result<(), Vec<String>> {
        // "up*" probes run; the others failed with "<name> failed".
        s.validate(&|i| i.ebpf_func_name.starts_with("up"), &|i| {
            format!("{} failed", i.ebpf_func_name)
        })
        .map_err(|v| v.into_iter().map(|(_, c)| c).collect())
    }

    #[test]
    fn probe() {
        assert_eq!(check(&Probe(id("up"))), Ok(()));
        assert_eq!(check(&Probe(id("down"))), Err(vec!["down failed".into()]));
    }

    #[test]
    fn all_of_lists_every_failure() {
        assert_eq!(
            check(&AllOf(vec![Probe(id("up1")), Probe(id("up2"))])),
            Ok(())
        );
        assert_eq!(
            check(&AllOf(vec![
                Probe(id("down1")),
                Probe(id("up")),
                Probe(id("down2"))
            ])),
            Err(vec!["down1 failed".into(), "down2 failed".into()])
        );
        assert_eq!(check(&AllOf(vec![])), Ok(()));
    }

    #[test]
    fn one_of_needs_one() {
        assert_eq!(
            check(&OneOf(vec![Probe(id("down")), Probe(id("up"))])),
            Ok(())
        );
        assert_eq!(
            check(&OneOf(vec![Probe(id("down1")), Probe(id("down2"))])),
            Err(vec!["down1 failed".into(), "down2 failed".into()])
        );
        assert_eq!(check(&OneOf(vec![])), Err(vec![]));
    }

    #[test]
    fn best_effort_never_fails() {
        assert_eq!(check(&BestEffort(vec![Probe(id("down"))])), Ok(()));
        assert_eq!(check(&BestEffort(vec![])), Ok(()));
    }

    #[test]
    fn nesting() {
        let s = AllOf(vec![
            OneOf(vec![Probe(id("down1")), Probe(id("up1"))]),
            BestEffort(vec![Probe(id("down2"))]),
            Probe(id("down3")),
        ]);
        assert_eq!(check(&s), Err(vec!["down3 failed".into()]));
        assert_eq!(
            s.probes()
                .iter()
                .map(|i| i.ebpf_func_name.as_str())
                .collect::<Vec<_>>(),
            ["down1", "up1", "down2", "down3"]
        );
        assert_eq!(
            s.to_string(),
            r#"AllOf[OneOf[{uid: "", ebpf_func_name: "down1"}, {uid: "", ebpf_func_name: "up1"}], BestEffort[{uid: "", ebpf_func_name: "down2"}], {uid: "", ebpf_func_name: "down3"}]"#
        );
    }
}
