//! [`Options`]: everything that shapes `init`.

use crate::KprobeAttachMethod;

/// Options of [`Manager::init_with_options`](crate::Manager::init_with_options).
///
/// ```
/// use ebpf_manager::{ConstantEditor, KprobeAttachMethod, Options};
///
/// let options = Options {
///     constant_editors: vec![ConstantEditor::new("filter_tid", std::process::id())],
///     default_kprobe_attach_method: KprobeAttachMethod::Tracefs,
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Values written into `volatile const` globals (`.rodata`) before the programs load.
    pub constant_editors: Vec<ConstantEditor>,
    /// How kprobes whose own [`Probe::kprobe_attach_method`](crate::Probe::kprobe_attach_method)
    /// is `Default` attach.
    pub default_kprobe_attach_method: KprobeAttachMethod,
    /// Leave `RLIMIT_MEMLOCK` as it is. By default `init` lifts it, which kernels before 5.11
    /// need for anything but tiny maps (best effort: it needs `CAP_SYS_RESOURCE`).
    pub keep_memlock_rlimit: bool,
}

/// A value for a `volatile const` global of the object, set before load so the verifier sees it
/// (dead branches are pruned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstantEditor {
    /// The global's name in the object.
    pub name: String,
    /// Its new value, in the kernel's byte order, of the global's exact size.
    pub value: Vec<u8>,
    /// Do not fail when the object has no such global.
    pub allow_missing: bool,
}

impl ConstantEditor {
    /// An editor setting `name` to `value` (in native byte order).
    ///
    /// ```
    /// use ebpf_manager::ConstantEditor;
    ///
    /// let e = ConstantEditor::new("filter_tid", 42u32);
    /// assert_eq!(e.value, 42u32.to_ne_bytes());
    /// ```
    pub fn new<T: aya::Pod>(name: impl Into<String>, value: T) -> Self {
        // SAFETY: `Pod` types are plain bytes without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts((&value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        Self {
            name: name.into(),
            value: bytes.to_vec(),
            allow_missing: false,
        }
    }
}
