//! # ebpf-manager
//!
//! Manages the whole life of a set of eBPF programs, with the Manager/Probe model of DataDog's
//! Go `ebpf-manager`, on top of [aya]: declare [`Probe`]s in code, then
//! [`Manager::init`] (load and verify), [`Manager::start`] (attach), [`Manager::pause`] /
//! [`Manager::resume`], and [`Manager::stop`] (detach and unload). A failed call undoes what it
//! did; dropping a manager detaches and unloads everything it made.
//!
//! ```no_run
//! use ebpf_manager::{CleanupType, Manager, Probe};
//!
//! // SEC("kprobe/vfs_mkdir") int kprobe_vfs_mkdir(void *ctx) { bpf_printk(...); return 0; }
//! let object = std::fs::read("ebpf-fixtures/helloworld.bpf.o")?;
//! let mut manager = Manager {
//!     probes: vec![Probe {
//!         uid: "MyVFSMkdir".into(),
//!         ebpf_func_name: "kprobe_vfs_mkdir".into(),
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! manager.init(&object)?;
//! manager.start()?;
//! std::fs::create_dir("/tmp/hello")?; // "mkdir (vfs hook point)" in trace_pipe
//! manager.stop(CleanupType::CleanAll)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Program families: kprobes and kretprobes (kprobe PMU, Linux 4.17; or tracefs
//! `kprobe_events`, with maxactive), uprobes, tracepoints and raw tracepoints, fentry/fexit,
//! tp_btf, LSM and iterators, perf_event programs, socket filters, the cgroup family, XDP and
//! TC (TCX or netlink). Maps: constant and map spec editors, map editors and pinning, tail-call
//! and map routers, and the [`PerfMap`] and [`RingBuffer`] readers (threads, or async code
//! with the cargo feature `tokio`). The minimum kernel the project tests is 5.10; each item
//! states the kernel that introduced what it needs.

#![deny(missing_docs)]

#[cfg(feature = "serde")]
mod declare;
mod elf;
mod error;
mod inspect;
// Test-only failure points: public (and hidden from the docs) only with the feature.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
#[allow(dead_code)]
mod fault;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
mod loader;
mod manager;
pub mod maps;
mod options;
mod pipeline;
mod probe;
mod selectors;

#[cfg(feature = "serde")]
pub use declare::Declaration;
pub use error::{Error, PatternField, Report, Result};
pub use inspect::{HookPreview, ObjectInfo, ObjectMap, ObjectProgram};
pub use kernel::FunctionIndex;
pub use manager::{
    CleanupType, Manager, ManagerState, MapEntry, ProbeStatus, ReaderStatus, Status,
};
pub use maps::{
    PerfDataHandler, PerfLostHandler, PerfMap, ReaderError, ReaderErrorHandler, RingBuffer,
    RingDataHandler,
};
pub use options::{
    ConstantEditor, InnerOuterMapSpec, KernelTypes, Map, MapEditor, MapRoute, MapSpecEditor,
    Options, TailCallRoute, TestRunInput, TestRunOutput,
};
pub use pipeline::{Instruction, InstructionPatcher, ProgramInstructions};
pub use probe::{
    AttachInfo, AttachMethod, KprobeAttachMethod, Probe, ProbeIdentificationPair, ProbeState,
    UprobeAttachMethod,
};
pub use probe::{Netns, NetworkDirection, SharedFd, TcAttachMethod, XdpAttachMode};
pub use selectors::ProbesSelector;

/// aya, re-exported so that users name the same version the manager was built with.
pub use aya;
