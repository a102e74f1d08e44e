//! Test-only failure points (the `fault-injection` feature): each step the manager takes that
//! can fail in the kernel (a program load, an object load, an attach, a pin, a route, a reader
//! start, a bypass write) asks here first, so that a test can make the n-th such step fail and
//! check that the call undoes everything it did. Without the feature every check is `Ok`.

use crate::Result;

/// The steps a test can make fail.
pub const POINTS: &[&str] = &[
    "load", "object", "attach", "pin", "route", "reader", "bypass",
];

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::Mutex;

    pub(super) struct Plan {
        pub(super) point: &'static str,
        /// Fail when the hit count of `point` reaches this (1-based).
        pub(super) nth: usize,
    }

    pub(super) static PLAN: Mutex<Option<Plan>> = Mutex::new(None);
    pub(super) static HITS: Mutex<Vec<(&'static str, usize)>> = Mutex::new(Vec::new());
}

/// Makes the `nth` (from 1) step `point` from now fail with an [`Error::Io`](crate::Error::Io)
/// whose path names it; counts restart from zero. `point` is one of [`POINTS`].
#[cfg(feature = "fault-injection")]
pub fn arm(point: &str, nth: usize) {
    let point = POINTS
        .iter()
        .copied()
        .find(|p| *p == point)
        .unwrap_or_else(|| panic!("no failure point `{point}` (known: {POINTS:?})"));
    reset();
    *armed::PLAN.lock().unwrap_or_else(|e| e.into_inner()) = Some(armed::Plan { point, nth });
}

/// Stops failing steps and restarts the counts.
#[cfg(feature = "fault-injection")]
pub fn reset() {
    *armed::PLAN.lock().unwrap_or_else(|e| e.into_inner()) = None;
    armed::HITS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

/// How many times each step ran since the last [`arm`] or [`reset`].
#[cfg(feature = "fault-injection")]
pub fn hits() -> Vec<(&'static str, usize)> {
    armed::HITS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Whether the armed failure has fired.
#[cfg(feature = "fault-injection")]
pub fn fired() -> bool {
    let plan = armed::PLAN.lock().unwrap_or_else(|e| e.into_inner());
    let hits = armed::HITS.lock().unwrap_or_else(|e| e.into_inner());
    plan.as_ref().is_some_and(|p| {
        hits.iter()
            .any(|(point, n)| *point == p.point && *n >= p.nth)
    })
}

/// Counts the step `point` and fails it if a test armed it.
#[cfg(feature = "fault-injection")]
pub(crate) fn check(point: &'static str) -> Result<()> {
    let n = {
        let mut hits = armed::HITS.lock().unwrap_or_else(|e| e.into_inner());
        match hits.iter_mut().find(|(p, _)| *p == point) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                hits.push((point, 1));
                1
            }
        }
    };
    let plan = armed::PLAN.lock().unwrap_or_else(|e| e.into_inner());
    match plan.as_ref() {
        Some(p) if p.point == point && p.nth == n => Err(crate::Error::Io {
            path: format!("injected fault: {point} #{n}").into(),
            source: std::io::Error::other("failed by ebpf_manager::fault"),
        }),
        _ => Ok(()),
    }
}

/// Without the `fault-injection` feature, no step fails here.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn check(_point: &'static str) -> Result<()> {
    Ok(())
}
