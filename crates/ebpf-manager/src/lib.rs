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
//! with the cargo feature `tokio`); with the feature `metrics`, `Manager::publish_metrics`
//! gives the counters of [`Manager::status`] to any exporter of the `metrics` facade. The
//! minimum kernel the project tests is 5.10; each item
//! states the kernel that introduced what it needs.

#![deny(missing_docs)]
// docs.rs (nightly) marks the items each cargo feature adds.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "serde")]
mod codec;
#[cfg(feature = "serde")]
mod declare;
pub mod diagnostics;
mod elf;
mod error;
pub mod features;
mod insns;
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
mod kernel;
mod loader;
mod manager;
mod maps;
mod options;
mod phases;
mod pipeline;
mod probe;
mod selectors;
// Internals the integration tests read (with the test-only feature).
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod testing;
mod types;

#[cfg(feature = "serde")]
pub use declare::Declaration;
pub use error::{BpfError, Error, PatternField, Report, Result, SysError};
pub use inspect::{HookPreview, ObjectInfo, ObjectMap, ObjectProgram};
// The raw kernel layer is private; these few items of it are public on purpose:
// - the function list that `attach_to_func_name` patterns match, to try a pattern beforehand;
// - trace_pipe and the tracefs mount, to read what programs print with bpf_printk;
// - the sweep of what crashed managers left, for supervisors and the CLI's `cleanup`.
pub use insns::{Instruction, InstructionPatcher, ProgramInstructions};
pub use kernel::leftovers::{find_leftovers, remove_leftovers, Leftovers};
pub use kernel::symbols::FunctionIndex;
pub use kernel::trace_pipe::TracePipe;
pub use kernel::tracefs::mount_if_needed as mount_tracefs;
pub use manager::{CleanupType, Manager, MapEntry, ProbeStatus, Status};
#[cfg(feature = "tokio")]
pub use maps::{AsyncPerfMap, AsyncRingBuffer};
pub use maps::{
    PerfDataHandler, PerfLostHandler, PerfMap, ReaderError, ReaderErrorHandler, ReaderStatus,
    RingBuffer, RingDataHandler, UserRingBuffer, UserRingBufferEntry, DEFAULT_PERF_RING_PAGES,
};
pub use options::{
    ConstantEditor, InnerOuterMapSpec, KernelTypes, Map, MapEditor, MapRoute, MapSpecEditor,
    Options, TailCallRoute, TestRunInput, TestRunOutput,
};
pub use probe::{AttachInfo, Probe};
pub use probe::{Netns, NetworkDirection, SharedFd, TcAttachMethod, XdpAttachMode};
pub use selectors::ProbesSelector;
pub use types::{
    AttachMethod, KprobeAttachMethod, ManagerState, ProbeIdentificationPair, ProbeState,
    UprobeAttachMethod,
};

/// aya, re-exported so that users name the same version the manager was built with.
pub use aya;
