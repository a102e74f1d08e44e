//! The one error type of the crate.

use std::{io, path::PathBuf};

mod causes;
mod pattern;

use crate::types::{AttachMethod, ManagerState, ProbeIdentificationPair};
pub(crate) use causes::chain;
pub use causes::{BpfError, Report, SysError};
pub use pattern::PatternField;

/// Everything that can go wrong in a [`Manager`](crate::Manager).
///
/// Each variant names what it concerns (the probe, the hook point, the kernel facility) and the
/// message says what to do about it. When a call fails, the manager has already undone what that
/// call did: no program, link or tracefs event is left behind.
///
/// As in aya, `Display` says what failed and [`source`](std::error::Error::source) gives why
/// (the kernel's errno with the call that returned it, aya's error, the file): each cause is
/// printed once. [`Error::report`] prints the whole chain on one line (as anyhow's `{:#}` does),
/// and [`Error::errno`] finds the kernel's errno in it.
///
/// ```no_run
/// # fn main() {
/// let mut manager = ebpf_manager::Manager::default();
/// if let Err(e) = manager.init(b"not an object") {
///     eprintln!("init failed: {}", e.report());
///     if e.errno() == Some(libc::EPERM) {
///         eprintln!("run as root");
///     }
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A method was called in a state that does not allow it (`start` before `init`, ...).
    #[error("cannot {operation} a manager that is {state}: {hint}")]
    InvalidState {
        /// The method that was called.
        operation: &'static str,
        /// The state the manager was in.
        state: ManagerState,
        /// What to call first.
        hint: &'static str,
    },

    /// The bytes given to `init` are not an eBPF ELF object.
    #[error("the object is not a valid eBPF ELF object: {reason}")]
    InvalidObject {
        /// Why the object was refused.
        reason: String,
    },

    /// aya refused the object, or could not create one of its maps.
    #[error("aya could not load the object")]
    Object {
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },

    /// A legacy map definition (`struct bpf_map_def` in `SEC("maps")`) that cannot be read.
    #[error("map `{map}` has a malformed legacy definition: {reason}")]
    InvalidMapDefinition {
        /// The map's name in the object.
        map: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An asm constant (an `ld_imm64` of an undefined symbol) that no
    /// [`ConstantEditor`](crate::ConstantEditor) sets, with
    /// [`Options::strict_constants`](crate::Options::strict_constants).
    #[error("asm constant `{name}` (read by {functions}) is set by no constant editor: add a ConstantEditor for it, or unset Options::strict_constants to load it as 0")]
    UnsetConstant {
        /// The constant's symbol name.
        name: String,
        /// The functions that read it.
        functions: String,
    },

    /// With [`Options::bypass_enabled`](crate::Options::bypass_enabled), a program whose
    /// `bypass_program` placeholder cannot be replaced by the bypass prologue.
    #[error("cannot inject the bypass prologue into `{function}`: {reason}; move CHECK_BPF_PROGRAM_BYPASSED() to the start of the program, or unset Options::bypass_enabled")]
    Bypass {
        /// The program's function.
        function: String,
        /// Why.
        reason: String,
    },

    /// The kernel refused a kprobe.multi program or link
    /// ([`KprobeAttachMethod::KprobeMulti`](crate::KprobeAttachMethod::KprobeMulti)).
    #[error("probe {id}: kprobe.multi on {hook} is not available on this kernel: it needs Linux 5.18 built with CONFIG_FPROBE; attach with KprobeAttachMethod::PerfEventOpen or Tracefs")]
    KprobeMultiUnsupported {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The kernel function.
        hook: String,
        /// The kernel's refusal, with the bpf command.
        #[source]
        source: Box<BpfError>,
    },

    /// `BPF_PROG_TEST_RUN` of a probe's program failed ([`Manager::test_run`](crate::Manager::test_run)).
    #[error("probe {id}: running its program with BPF_PROG_TEST_RUN failed; the kernel test-runs XDP, TC, socket filter, cgroup_skb, flow dissector, raw tracepoint, tracing and syscall programs only, and wants a packet of at least 14 bytes for the network ones")]
    TestRun {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The kernel's refusal.
        #[source]
        source: Box<BpfError>,
    },

    /// An [`InstructionPatcher`](crate::InstructionPatcher) refused a program.
    #[error("an instruction patcher failed on `{function}`: {reason}")]
    InstructionPatcher {
        /// The program's function.
        function: String,
        /// What the patcher returned.
        reason: String,
    },

    /// An enabled probe's program is in a section aya 0.14 cannot load (see
    /// docs/porting-from-go.md for the section names that load).
    #[error("probe {id}: `{function}` is in section `{section}`, which cannot be loaded: {reason}; exclude the probe (activated_probes or excluded_functions)")]
    UnsupportedSection {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// Its section, as in the object.
        section: String,
        /// Why it cannot load.
        reason: &'static str,
    },

    /// A clone or copy of the object was asked for after `start` freed its bytes
    /// ([`Options::release_object_after_start`](crate::Options::release_object_after_start)).
    #[error("the object's bytes were freed at start (Options::release_object_after_start): clone_program and new program copies need them; leave the option unset")]
    ObjectReleased,

    /// A map pinned at a declared path (`Map::pin_path`, a `MapEditor`) is not the map the
    /// object declares.
    #[error("map `{map}`: what is pinned at {path} does not match the object's definition ({mismatch}); remove the stale pin, or give the map another pin_path")]
    PinnedMapMismatch {
        /// The map's name in the object.
        map: String,
        /// The pin.
        path: PathBuf,
        /// What differs.
        mismatch: String,
    },

    /// Two probes share the same identification pair.
    #[error("probe {id} is declared twice: give each probe a distinct uid")]
    DuplicateProbe {
        /// The identification pair declared twice.
        id: ProbeIdentificationPair,
    },

    /// The probe names neither an `ebpf_func_name` nor a `section`.
    #[error("probe {id} names no program: set ebpf_func_name (or section)")]
    NoProgramName {
        /// The probe.
        id: ProbeIdentificationPair,
    },

    /// No program of the object has the probe's `ebpf_func_name`.
    #[error("probe {id}: the object has no program named `{name}` (it has: {available})")]
    ProgramNotFound {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The function name looked for.
        name: String,
        /// The program functions the object does have.
        available: String,
    },

    /// No program of the object lives in the probe's `section`.
    #[error("probe {id}: the object has no program in section `{section}` (it has: {available})")]
    SectionNotFound {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The section looked for.
        section: String,
        /// The program sections the object does have.
        available: String,
    },

    /// The probe's `section` holds several programs and no `ebpf_func_name` picks one.
    #[error("probe {id}: section `{section}` holds several programs ({functions}): set ebpf_func_name to pick one")]
    AmbiguousSection {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The section.
        section: String,
        /// The functions in it.
        functions: String,
    },

    /// The program's type is not one this version of the manager attaches.
    #[error("probe {id}: `{function}` is a {program_type} program, which this version of ebpf-manager cannot attach")]
    UnsupportedProgramType {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// aya's name of the program type.
        program_type: &'static str,
    },

    /// A field of the probe is missing or does not apply to its program type.
    #[error("probe {id}: {reason}")]
    InvalidProbe {
        /// The probe.
        id: ProbeIdentificationPair,
        /// What is wrong and what to set.
        reason: String,
    },

    /// An option or editor is invalid.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option.
        option: String,
        /// What is wrong.
        reason: String,
    },

    /// The verifier rejected the program.
    #[error("probe {id}: the verifier rejected `{function}`; verifier log:\n{log}")]
    Verifier {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// The error `BPF_PROG_LOAD` returned.
        #[source]
        source: io::Error,
        /// The verifier's log.
        log: String,
    },

    /// A map of the object is of a type the running kernel predates.
    #[error("map `{map}` is a {map_type}, which came in Linux {since}; the running kernel ({running}) does not have it: exclude the map (Options::excluded_maps) and the programs that use it, or run Linux {since} or later")]
    MapTypeUnsupported {
        /// The map.
        map: String,
        /// The map's type, as the kernel names it.
        map_type: &'static str,
        /// The kernel version that added the type.
        since: String,
        /// The running kernel's version.
        running: String,
        /// What `BPF_MAP_CREATE` returned.
        #[source]
        source: io::Error,
    },

    /// The kernel refused to create a map of the object, although it has the map's type.
    #[error("map `{map}` ({map_type}, Linux {since}): the running kernel refused to create it; check its definition (sizes, flags, max_entries) against the type's rules, and the process's privileges")]
    MapCreate {
        /// The map.
        map: String,
        /// The map's type, as the kernel names it.
        map_type: &'static str,
        /// The kernel version that added the type.
        since: String,
        /// What `BPF_MAP_CREATE` returned.
        #[source]
        source: io::Error,
    },

    /// A struct_ops map of the object (`SEC(".struct_ops")`, Linux 5.6;
    /// `SEC(".struct_ops.link")`, Linux 6.4) could not be made for the running kernel, or
    /// registered with it.
    #[error("struct_ops map `{map}` (struct {type_name}): {reason}")]
    StructOps {
        /// The map (the struct_ops variable).
        map: String,
        /// The kernel struct it implements.
        type_name: String,
        /// What failed and what to do.
        reason: String,
        /// The kernel's error, where a command failed.
        #[source]
        source: Option<io::Error>,
    },

    /// A CO-RE relocation of the program asks for a field or type that the kernel types it
    /// was relocated against lack (aya-obj poisons it; the verifier then reports
    /// `invalid func unknown#195896080`).
    #[error("probe {id}: `{function}` needs {relocation}, which the kernel's types (/sys/kernel/btf/vmlinux, or Options::kernel_btf) do not have; guard the access with bpf_core_field_exists() or bpf_core_type_exists(), or relocate against BTF that has it")]
    CoreRelocation {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// What the relocation asks: the kind, the type and the field, its instruction.
        relocation: String,
    },

    /// The program uses a `__ksym` extern (a kfunc or a kernel variable) that the running
    /// kernel cannot give and that is not declared `__weak`.
    #[error("probe {id}: `{function}` uses the `__ksym` extern `{symbol}`, which the running kernel cannot give: {reason}; to run without it, declare it `__weak` and test it with bpf_ksym_exists()")]
    MissingKsym {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// The extern's name.
        symbol: String,
        /// Where it was looked for, and what that means (it names a kfunc or a variable).
        reason: &'static str,
    },

    /// The kernel refuses the program's type outright: `BPF_PROG_LOAD` failed with EPERM and
    /// no verifier log although the process has CAP_BPF or CAP_SYS_ADMIN (the development
    /// host's 6.18 refuses fentry, fexit and LSM programs so).
    #[error("probe {id}: the running kernel refuses {program_type} programs such as `{function}` (BPF_PROG_LOAD returned EPERM without a verifier log, although this process has CAP_BPF or CAP_SYS_ADMIN); they need {needs}, and kernel lockdown or a security policy can also forbid them")]
    ProgramTypeRefused {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// The refused program type.
        program_type: &'static str,
        /// What that program type needs.
        needs: &'static str,
        /// The syscall's error (EPERM).
        #[source]
        source: io::Error,
    },

    /// Loading the program failed for a reason other than the verifier.
    #[error("probe {id}: loading `{function}` failed")]
    Load {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The program's function.
        function: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    /// The process lacks the privileges an operation needs.
    #[error("{operation}: permission denied; run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (kernels before 5.8: CAP_SYS_ADMIN)")]
    PermissionDenied {
        /// What was being done.
        operation: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// `attach_to_func_name` is not a valid glob, or `match_func_name` not a valid regular
    /// expression.
    #[error("probe {id}: {field} `{pattern}` is not a valid {syntax}: {reason}", syntax = field.syntax())]
    InvalidPattern {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The field the pattern was written in.
        field: PatternField,
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },

    /// No function matches `attach_to_func_name` (kernel functions for kprobes, the binary's
    /// symbols for uprobes).
    #[error("probe {id}: no function of {source_file} matches {field} `{pattern}` ({searched} functions searched); check the pattern against that file")]
    NoMatchingFunction {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The field the pattern was written in.
        field: PatternField,
        /// The pattern.
        pattern: String,
        /// How many functions were searched.
        searched: usize,
        /// The file they came from.
        source_file: PathBuf,
    },

    /// The hook symbol does not exist in the running kernel.
    #[error("probe {id}: the running kernel has no function `{symbol}` (looked in {source_file}); check the name, or match it with attach_to_func_name")]
    SymbolNotFound {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The symbol.
        symbol: String,
        /// The file it was looked for in.
        source_file: PathBuf,
    },

    /// `syscall_func_name` names no syscall of the running kernel.
    #[error("probe {id}: the running kernel has no syscall `{syscall}` (tried {tried})")]
    SyscallNotFound {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The syscall name as declared.
        syscall: String,
        /// The symbols tried.
        tried: String,
    },

    /// The kernel cannot attach kprobes at all.
    #[error("probe {id}: cannot attach a kprobe to `{hook}`: this kernel has no kprobes (neither the kprobe PMU /sys/bus/event_source/devices/kprobe nor tracefs kprobe_events exists: it was built without CONFIG_KPROBES); use a tracepoint instead, or a kernel with CONFIG_KPROBES=y")]
    KprobesUnsupported {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The hook point.
        hook: String,
    },

    /// The tracepoint does not exist in the running kernel.
    #[error("probe {id}: the running kernel has no tracepoint `{category}/{name}` (see {tracefs}/events)")]
    TracepointNotFound {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The tracepoint's category.
        category: String,
        /// The tracepoint's name.
        name: String,
        /// Where tracefs was looked for.
        tracefs: PathBuf,
    },

    /// Attaching failed.
    #[error("probe {id}: attaching to `{hook}` through {method} failed")]
    Attach {
        /// The probe.
        id: ProbeIdentificationPair,
        /// The hook point.
        hook: String,
        /// The kernel facility used.
        method: AttachMethod,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// tracefs is not mounted.
    #[error("tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing: mount it with `mount -t tracefs nodev /sys/kernel/tracing`")]
    TracefsNotMounted,

    /// Neither available_filter_functions nor /proc/kallsyms could be read.
    #[error("cannot list the kernel's functions: {available_filter_functions}: {aff_error}; /proc/kallsyms could not be read either")]
    FunctionList {
        /// The available_filter_functions path tried.
        available_filter_functions: PathBuf,
        /// Why it could not be read.
        aff_error: io::Error,
        /// Why /proc/kallsyms could not be read.
        #[source]
        source: io::Error,
    },

    /// A pin path that is not on a bpffs, or no bpffs for the manager's own pins.
    #[error("{path}: {reason}; {fix}")]
    Bpffs {
        /// The pin path, or the directory the manager looked at.
        path: PathBuf,
        /// What is there instead.
        reason: String,
        /// What to do.
        fix: &'static str,
    },

    /// Reading or writing a kernel file failed.
    #[error("{path}: I/O failed")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// A declaration file (`Declaration`, feature `serde`) that cannot be
    /// read: an unknown key, a bad value, a syntax error.
    #[error("the {format} declaration is invalid at line {line}, column {column}: {message}")]
    InvalidDeclaration {
        /// "TOML" or "JSON".
        format: &'static str,
        /// Where (1-based; 0 when the error has no position).
        line: usize,
        /// Where (1-based; 0 when the error has no position).
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },

    /// A selector of `activated_probes` failed after attaching; everything attached by the call
    /// was detached again.
    #[error("selector {selector} failed: {}", failures.iter().map(|(id, cause)| format!("{id}: {cause}")).collect::<Vec<_>>().join("; "))]
    SelectorValidation {
        /// The selector that failed.
        selector: String,
        /// Each probe that made it fail, with that probe's own cause.
        failures: Vec<(ProbeIdentificationPair, String)>,
    },

    /// No probe has this identification pair.
    #[error("no probe {id} in this manager")]
    ProbeNotFound {
        /// The identification pair looked for.
        id: ProbeIdentificationPair,
    },

    /// A perf map or ring buffer names a map the object does not have.
    #[error(
        "{kind} `{map}`: the object has no map named `{map}` (it has: {available}); check map_name"
    )]
    MapNotFound {
        /// The map name looked for.
        map: String,
        /// What looked for it: "perf map", "ring buffer", or "map" (`Manager::map_fd`).
        kind: &'static str,
        /// The maps the object does have.
        available: String,
    },

    /// A perf map or ring buffer names a map of another type.
    #[error("{kind} `{map}`: the map is a {found}, not a {expected}; declare it as the right reader, or fix map_name")]
    WrongMapType {
        /// The map.
        map: String,
        /// What declared it: "perf map" or "ring buffer".
        kind: &'static str,
        /// The map type the reader needs.
        expected: &'static str,
        /// The map's type.
        found: String,
    },

    /// A record does not fit in a user ring buffer now (the program has not drained it yet),
    /// or ever (it is larger than the ring).
    #[error("user ring buffer `{map}`: a record of {record} bytes (plus an 8-byte header, rounded up to 8) does not fit in the {free} bytes free of {capacity}; the program frees space when it calls bpf_user_ringbuf_drain()")]
    UserRingBufferFull {
        /// The map.
        map: String,
        /// The record's length.
        record: usize,
        /// Bytes free.
        free: usize,
        /// The ring's data size.
        capacity: usize,
    },

    /// A perf map or ring buffer declaration is incomplete or invalid.
    #[error("{kind} `{map}`: {reason}")]
    InvalidReader {
        /// The map.
        map: String,
        /// What declared it: "perf map" or "ring buffer".
        kind: &'static str,
        /// What is wrong and what to set.
        reason: String,
    },

    /// Starting the reader of a perf map or ring buffer failed (opening, mapping or polling its
    /// buffers, or starting its thread).
    #[error("{kind} `{map}`: starting its reader failed")]
    ReaderStart {
        /// The map.
        map: String,
        /// What declared it: "perf map" or "ring buffer".
        kind: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A reader did not finish within its stop timeout
    /// ([`Options::reader_stop_timeout`](crate::Options::reader_stop_timeout)): its handler is
    /// still running, blocked perhaps on something the caller holds. The thread ends on its
    /// own once the handler returns; everything else was stopped.
    #[error(
        "{kind} `{map}`: its reader did not finish within {waited:?}: its handler is still \
         running (a handler must not block on the thread that stops the manager)"
    )]
    ReaderStuck {
        /// The map.
        map: String,
        /// What declared it: "perf map" or "ring buffer".
        kind: &'static str,
        /// How long stopping waited.
        waited: std::time::Duration,
    },

    /// `start_reader` / `stop_reader` named no declared perf map or ring buffer.
    #[error(
        "no perf map or ring buffer `{map}` is declared in this manager (declared: {declared})"
    )]
    ReaderNotFound {
        /// The name looked for.
        map: String,
        /// The declared readers' map names.
        declared: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error and its causes on one line, `what failed: why: why that`, each cause printed
    /// once (a cause whose text its parent already shows is skipped).
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// The errno of the kernel call that caused this error, when one did: the first OS error
    /// in the chain of [`source`](std::error::Error::source)s.
    pub fn errno(&self) -> Option<i32> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(errno) = e
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
            {
                return Some(errno);
            }
            cause = e.source();
        }
        None
    }
}

#[cfg(test)]
mod tests;
