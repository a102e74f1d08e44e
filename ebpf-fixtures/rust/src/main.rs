//! The helloworld in Rust: `kprobe_vfs_mkdir` (a bare `kprobe` section, attached to
//! `vfs_mkdir` by the probe's `hook_func_name`) and its tracepoint twin print
//! "mkdir (vfs hook point)" to trace_pipe, as ../src/helloworld.bpf.c does in C.

#![no_std]
#![no_main]

use aya_ebpf::{
    bpf_printk,
    macros::{kprobe, tracepoint},
    programs::{ProbeContext, TracePointContext},
};

#[kprobe]
pub fn kprobe_vfs_mkdir(_ctx: ProbeContext) -> u32 {
    // SAFETY: a constant format string without arguments.
    unsafe { bpf_printk!(c"mkdir (vfs hook point)\n") };
    0
}

#[tracepoint]
pub fn tracepoint_sys_enter_mkdir(_ctx: TracePointContext) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_printk!(c"mkdir (vfs hook point)\n") };
    0
}

/// bpf_trace_printk is for GPL programs only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
