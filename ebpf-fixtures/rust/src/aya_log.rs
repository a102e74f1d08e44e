//! aya-log records from a Rust program: on every mkdir, `aya_log_mkdir` (a tracepoint on
//! syscalls/sys_enter_mkdir) logs one `info!` and one `warn!` record naming the calling
//! process and thread into aya-log-ebpf's `AYA_LOGS` ring buffer, which the manager forwards
//! to `log`.
//! `AYA_LOG_LEVEL` (a global set before load) drops records below its level in the kernel.

#![no_std]
#![no_main]

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::{info, warn};

#[tracepoint]
pub fn aya_log_mkdir(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // In this order: a reader that sees the warning has seen the info record before it, or
    // the kernel dropped it.
    info!(&ctx, "mkdir by pid {} tid {}", tgid, tid);
    warn!(&ctx, "mkdir seen, pid {} tid {}", tgid, tid);
    0
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
