//! `perf_event_open` of a tracefs event or of a BPF output event, and the ioctls that run a
//! BPF program on an event. aya keeps its own perf syscalls private, so the tracefs kprobe path
//! and the perf rings with wakeup settings need these.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `perf_event_attr.watermark`: wake at `wakeup_watermark` bytes instead of every
/// `wakeup_events` records.
const FLAG_WATERMARK: u64 = 1 << 14;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
// _IO('$', 0), _IO('$', 1), _IOW('$', 8, __u32)
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// `struct perf_event_attr` up to `sig_data` (PERF_ATTR_SIZE_VER8, 136 bytes); only the
/// fields the manager sets are named.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    /// `wakeup_events`, or `wakeup_watermark` when the watermark flag is set.
    wakeup_events: u32,
    rest: [u32; 21],
}

/// When the kernel wakes the reader of a perf ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wakeup {
    /// After this many records (at least 1).
    Events(u32),
    /// Once this many bytes are waiting.
    Watermark(u32),
}

/// Opens the `PERF_COUNT_SW_BPF_OUTPUT` event of `cpu`, whose ring receives what
/// `bpf_perf_event_output` writes once the event's fd is stored in a perf event array.
pub(crate) fn open_bpf_output(cpu: u32, wakeup: Wakeup) -> io::Result<OwnedFd> {
    let (flags, wakeup_events) = match wakeup {
        Wakeup::Events(n) => (0, n.max(1)),
        Wakeup::Watermark(bytes) => (FLAG_WATERMARK, bytes),
    };
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_BPF_OUTPUT,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        flags,
        wakeup_events,
        ..Default::default()
    };
    open(&attr, -1, cpu as libc::c_int)
}

/// Opens the tracepoint `id` (a tracefs event) on all CPUs, disabled.
pub(crate) fn open_tracepoint(id: u64) -> io::Result<OwnedFd> {
    open_tracepoint_of(id, None)
}

/// Opens the tracepoint `id` (a tracefs event), disabled: for every process (on all CPUs), or
/// for `pid` only (on any CPU), which filters a uprobe event to that process.
pub(crate) fn open_tracepoint_of(id: u64, pid: Option<u32>) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        flags: 1, // disabled: enabled once the program is set
        ..Default::default()
    };
    match pid {
        // A pid beyond i32 names no process: ESRCH, as the kernel would say.
        Some(pid) => open(
            &attr,
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?,
            -1,
        ),
        None => open(&attr, -1, 0),
    }
}

/// `perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)`.
fn open(attr: &PerfEventAttr, pid: libc::pid_t, cpu: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: attr is a valid perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(super::sys::last_error("perf_event_open"));
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs `prog` on every hit of the perf event, and enables the event.
pub(crate) fn attach_bpf(perf: &OwnedFd, prog: BorrowedFd<'_>) -> io::Result<()> {
    ioctl(
        perf,
        PERF_EVENT_IOC_SET_BPF,
        prog.as_raw_fd() as libc::c_ulong,
    )?;
    ioctl(perf, PERF_EVENT_IOC_ENABLE, 0)
}

/// Stops the perf event; the program stays set until the fd closes.
pub(crate) fn disable(perf: &OwnedFd) -> io::Result<()> {
    ioctl(perf, PERF_EVENT_IOC_DISABLE, 0)
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: fd is open; these requests take an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) } < 0 {
        Err(super::sys::last_error("ioctl"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn attr_has_the_kernel_layout() {
        // PERF_ATTR_SIZE_VER8 is 136; wakeup_events sits at offset 48.
        assert_eq!(std::mem::size_of::<super::PerfEventAttr>(), 136);
        assert_eq!(
            std::mem::offset_of!(super::PerfEventAttr, wakeup_events),
            48
        );
    }
}
