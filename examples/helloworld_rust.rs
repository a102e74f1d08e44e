//! The helloworld with its eBPF side written in Rust with aya-ebpf (ebpf-fixtures/rust): the
//! same as `cargo run --example helloworld -- --rust`.
//!
//! Run: `cargo run --example helloworld_rust` (as root).

#[path = "helloworld.rs"]
mod helloworld;

fn main() -> std::process::ExitCode {
    helloworld::main()
}
