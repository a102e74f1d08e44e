//! What the running kernel offers, probed once per process: for choosing declarations per
//! kernel (an attach method, a fallback probe), as cilium/ebpf's `features` package is used.
//!
//! ```no_run
//! use ebpf_manager::{features, KprobeAttachMethod, Options};
//!
//! let options = Options {
//!     default_kprobe_attach_method: if features::kprobe_multi_supported() {
//!         KprobeAttachMethod::KprobeMulti
//!     } else {
//!         KprobeAttachMethod::Default
//!     },
//!     ..Default::default()
//! };
//! ```

pub use crate::kernel::{
    has_bpf_capabilities, has_kprobe_pmu, kprobe_multi_supported, parallel_detach,
    uprobe_multi_supported,
};
