//! Counters of the expensive reads the manager promises to do once, for benchmarks and for
//! users who check that promise in their own tests: the kernel's BTF, the kernel's function
//! list, and a binary's symbols.
//!
//! ```no_run
//! let before = ebpf_manager::diagnostics::kernel_btf_parses();
//! // ... init a manager with fentry probes ...
//! println!("BTF parsed {} times", ebpf_manager::diagnostics::kernel_btf_parses() - before);
//! ```

use std::path::Path;

pub use crate::kernel::symbols::function_list_reads;
pub use crate::phases::InitPhases;

/// How many times this process parsed the kernel's BTF (`/sys/kernel/btf/vmlinux`) through
/// managers: their own parses (for BTF-typed hooks) and aya's (one per loader; a manager keeps
/// one loader for all its loads until [`Manager::start`](crate::Manager::start) releases it).
pub fn kernel_btf_parses() -> usize {
    crate::loader::kernel_btf_parses()
}

/// How many times this process read the executable or library `binary` for its function
/// symbols (uprobe resolution and attach): once while the file is unchanged, however many
/// probes go to it.
pub fn binary_symbol_reads(binary: &Path) -> usize {
    crate::probe::binary_symbols::reads(binary)
}

/// Where the last [`Manager::init`](crate::Manager::init) on this thread spent its time, by
/// phase (pipeline, kernel BTF, instantiation and patchers, aya's load, program loads, and
/// the rest as [`InitPhases::bookkeeping`]); `None` before any. For benchmarks:
/// `cargo xtask bench bigobject` prints them.
pub fn last_init_phases() -> Option<InitPhases> {
    crate::phases::last()
}
