//! One CPU's ring of a `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: its BPF output event, mapped into
//! memory, and the records in it.
//!
//! aya 0.14 opens these rings with a wakeup for every record and no way to change it; the
//! manager opens its own so that [`PerfMap`](crate::PerfMap) can batch wakeups
//! (`wakeup_events`, `watermark`).

use std::{
    io,
    ops::ControlFlow,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use super::perf::{open_bpf_output, Wakeup};

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// Offsets of `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// A record of a perf ring.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// What a program wrote, padded by the kernel so that the record is a multiple of 8 bytes.
    Sample(&'a [u8]),
    /// The kernel dropped this many records because the ring was full.
    Lost(u64),
}

/// The ring of one CPU; unmapped and closed on drop.
pub(crate) struct PerfRing {
    fd: OwnedFd,
    /// The metadata page, followed by `size` bytes of data.
    base: NonNull<u8>,
    page_size: usize,
    size: usize,
}

// SAFETY: the mapping belongs to this value alone; `&mut self` serializes the reads and the
// tail updates, and the kernel synchronizes with them through data_head and data_tail.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Opens the BPF output event of `cpu` with a ring of `pages` pages (a power of two).
    pub(crate) fn open(cpu: u32, pages: usize, wakeup: Wakeup) -> io::Result<Self> {
        let fd = open_bpf_output(cpu, wakeup)?;
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let size = pages
            .checked_mul(page_size)
            .filter(|s| s.checked_add(page_size).is_some())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
        // SAFETY: a shared mapping of a perf fd; the kernel checks the length.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size + size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(super::sys::last_error("mmap"));
        }
        Ok(Self {
            fd,
            base: NonNull::new(base.cast()).expect("mmap does not return null"),
            page_size,
            size,
        })
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the metadata page is mapped for the life of self; both counters are
        // 8-byte aligned u64s that the kernel also accesses atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Hands the records written so far (up to the `data_head` read on entry) to `handle`, in
    /// order, and gives their space back to the kernel. Records that wrap around the ring's end
    /// are copied into `scratch` first. Stops after the record for which `handle` breaks.
    ///
    /// One snapshot of the head per call: a busy CPU cannot keep the reader from the others;
    /// records written meanwhile come with a wakeup of their own.
    pub(crate) fn read(
        &mut self,
        scratch: &mut Vec<u8>,
        mut handle: impl FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // Acquire: the records before head are fully written.
        let head = self.counter(DATA_HEAD).load(Ordering::Acquire);
        let mut tail = self.counter(DATA_TAIL).load(Ordering::Relaxed);
        let mut flow = ControlFlow::Continue(());
        while tail < head && flow.is_continue() {
            let (len, f) = self.record_at(tail, head, scratch, &mut handle);
            tail += len;
            flow = f;
        }
        // Release: the kernel may reuse the space once it sees the new tail.
        self.counter(DATA_TAIL).store(tail, Ordering::Release);
        flow
    }

    /// Hands the record at `tail` to `handle`; returns its length.
    fn record_at(
        &self,
        tail: u64,
        head: u64,
        scratch: &mut Vec<u8>,
        handle: &mut impl FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> (u64, ControlFlow<()>) {
        let start = (tail % self.size as u64) as usize;
        // SAFETY: the data area starts one page into the mapping and spans `size` bytes.
        let data = unsafe { self.base.as_ptr().add(self.page_size) };
        // Records are 8-byte aligned and sized, so the 8-byte header never wraps.
        let mut header = [0u8; 8];
        // SAFETY: 8 bytes at an 8-aligned offset below `size`, between tail and head: written.
        unsafe { std::ptr::copy_nonoverlapping(data.add(start), header.as_mut_ptr(), 8) };
        let kind = u32::from_ne_bytes(header[..4].try_into().expect("4 bytes"));
        let len = u16::from_ne_bytes(header[6..8].try_into().expect("2 bytes")) as usize;
        if len < 8 || !len.is_multiple_of(8) || len as u64 > head - tail || len > self.size {
            // Cannot happen with a sane kernel; give up on what is left rather than misread.
            log::error!("perf ring: a record of {len} bytes at {tail}; skipping to the head");
            return (head - tail, ControlFlow::Continue(()));
        }
        let record: &[u8] = if start + len <= self.size {
            // SAFETY: the record lies between tail and head, written and not reused until the
            // tail passes it.
            unsafe { std::slice::from_raw_parts(data.add(start), len) }
        } else {
            let first = self.size - start;
            scratch.clear();
            // SAFETY: as above, in two pieces: to the ring's end, then from its start.
            unsafe {
                scratch.extend_from_slice(std::slice::from_raw_parts(data.add(start), first));
                scratch.extend_from_slice(std::slice::from_raw_parts(data, len - first));
            }
            scratch
        };
        (
            len as u64,
            parse(kind, &record[8..]).map_or(ControlFlow::Continue(()), handle),
        )
    }
}

/// The record of type `kind` whose body (after the header) is `body`; `None` for other types.
fn parse(kind: u32, body: &[u8]) -> Option<Record<'_>> {
    match kind {
        PERF_RECORD_SAMPLE => {
            let size = u32::from_ne_bytes(body.get(..4)?.try_into().ok()?) as usize;
            body.get(4..4 + size).map(Record::Sample)
        }
        // struct { u64 id; u64 lost; }
        PERF_RECORD_LOST => Some(Record::Lost(u64::from_ne_bytes(
            body.get(8..16)?.try_into().ok()?,
        ))),
        _ => None,
    }
}

impl AsFd for PerfRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of this length; nothing borrows it past self.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.page_size + self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_body_is_its_raw_size_then_its_bytes() {
        let mut body = 4u32.to_ne_bytes().to_vec();
        body.extend_from_slice(b"abcdXXXX");
        assert_eq!(
            parse(PERF_RECORD_SAMPLE, &body),
            Some(Record::Sample(b"abcd"))
        );
    }

    #[test]
    fn a_lost_body_is_an_id_then_a_count() {
        let mut body = 7u64.to_ne_bytes().to_vec();
        body.extend_from_slice(&42u64.to_ne_bytes());
        assert_eq!(parse(PERF_RECORD_LOST, &body), Some(Record::Lost(42)));
    }

    #[test]
    fn truncated_and_unknown_records_are_skipped() {
        assert_eq!(parse(PERF_RECORD_SAMPLE, &100u32.to_ne_bytes()), None);
        assert_eq!(parse(PERF_RECORD_LOST, &[0; 12]), None);
        assert_eq!(parse(3, &[0; 16]), None);
    }
}
