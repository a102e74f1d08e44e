//! Where `init` spends its time, by phase, measured on the calling thread (a manager's `init`
//! runs there) and read with [`diagnostics::last_init_phases`](crate::diagnostics::last_init_phases).

use std::{
    cell::{Cell, RefCell},
    time::{Duration, Instant},
};

/// A timed phase of `init`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    /// The object pipeline's init-time rewrite and analysis, `__ksym` resolution.
    Prepare,
    /// Parsing the kernel's BTF: the manager's own parse and aya's (`EbpfLoader::new`).
    KernelBtf,
    /// Each load's copy of the object: constants written, patchers run.
    Instantiate,
    /// aya's load of the object: ELF parse, relocations, maps created.
    AyaLoad,
    /// `BPF_PROG_LOAD` of each program (the verifier's time, mostly).
    ProgramLoads,
}

/// How long the last `init` on this thread took, by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitPhases {
    /// The object pipeline: the ELF rewritten and analyzed once, `__ksym` externs resolved.
    pub prepare: Duration,
    /// Parsing the kernel's BTF (the manager's parse for BTF-typed hooks and kfuncs, and aya's
    /// in `EbpfLoader::new`).
    pub kernel_btf: Duration,
    /// Instantiating the object for each load: asm constants and globals written, instruction
    /// patchers run.
    pub instantiate: Duration,
    /// aya's load of the object: parse, CO-RE and map relocations, maps created.
    pub aya_load: Duration,
    /// Loading the programs into the kernel (`BPF_PROG_LOAD`: the verifier, mostly).
    pub program_loads: Duration,
    /// The whole `init`.
    pub total: Duration,
    /// How many times aya loaded the object: once, plus one copy for each distinct set of
    /// per-probe constants that cannot be written in place and each `copy_program` probe.
    pub object_loads: u32,
}

impl InitPhases {
    /// What none of the phases covers: matching probes to programs, hooks, routes, pins,
    /// the manager's own records.
    pub fn bookkeeping(&self) -> Duration {
        self.total.saturating_sub(
            self.prepare + self.kernel_btf + self.instantiate + self.aya_load + self.program_loads,
        )
    }
}

thread_local! {
    static CURRENT: Cell<[Duration; 5]> = const { Cell::new([Duration::ZERO; 5]) };
    static LOADS: Cell<u32> = const { Cell::new(0) };
    static LAST: RefCell<Option<InitPhases>> = const { RefCell::new(None) };
}

/// Runs `f`, adding its time to `phase` of the current `init`.
pub(crate) fn time<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    let spent = start.elapsed();
    if let Phase::AyaLoad = phase {
        LOADS.with(|n| n.set(n.get() + 1));
    }
    CURRENT.with(|c| {
        let mut all = c.get();
        all[phase as usize] += spent;
        c.set(all);
    });
    result
}

/// Starts timing an `init`.
pub(crate) fn begin() {
    CURRENT.with(|c| c.set([Duration::ZERO; 5]));
    LOADS.with(|n| n.set(0));
}

/// Ends timing an `init` that took `total`.
pub(crate) fn end(total: Duration) {
    let all = CURRENT.with(Cell::get);
    let phases = InitPhases {
        prepare: all[Phase::Prepare as usize],
        kernel_btf: all[Phase::KernelBtf as usize],
        instantiate: all[Phase::Instantiate as usize],
        aya_load: all[Phase::AyaLoad as usize],
        program_loads: all[Phase::ProgramLoads as usize],
        total,
        object_loads: LOADS.with(Cell::get),
    };
    LAST.with(|l| *l.borrow_mut() = Some(phases));
}

/// The phases of the last `init` that ended on this thread.
pub(crate) fn last() -> Option<InitPhases> {
    LAST.with(|l| *l.borrow())
}
