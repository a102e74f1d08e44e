//! Fuzz target: `ebpf_manager::fuzzing::patterns` (see crates/ebpf-manager/src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ebpf_manager::fuzzing::patterns(data);
});
