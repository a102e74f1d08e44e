//! The consumer side of a `BPF_MAP_TYPE_RINGBUF` (Linux 5.8), mapped into memory.
//!
//! aya 0.14's `RingBuf` hands out one record per call and stores the consumer position when
//! each record drops; a tight loop over the mapped ring halves the cost per record, which
//! matters at millions of records a second (`cargo xtask bench readers`).

use std::{
    io,
    ops::ControlFlow,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

/// The record is being written; stop here.
const BUSY: u32 = 1 << 31;
/// The program discarded the record; skip it.
const DISCARD: u32 = 1 << 30;
/// Each record starts with `{ u32 len; u32 pg_off; }`.
const HEADER: usize = 8;

/// Where a [`RingConsumer::read`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// At the producer position: the ring is empty; the kernel notifies the next record.
    Empty,
    /// At a record still being written; the kernel notifies when it is committed.
    Busy,
    /// At the byte limit: records may remain, with no notification to come for them.
    Limit,
    /// The handler broke.
    Broke,
}

/// A mapped ring buffer; unmapped on drop.
pub(crate) struct RingConsumer {
    /// A descriptor of the map of its own: for epoll and for tokio.
    fd: OwnedFd,
    /// The page holding `consumer_pos`, writable.
    consumer: NonNull<u8>,
    /// The page holding `producer_pos`, then the data mapped twice in a row, read-only: a
    /// record that wraps around the end is contiguous.
    producer: NonNull<u8>,
    page_size: usize,
    /// The data size, a power of two.
    size: usize,
}

// SAFETY: the mappings belong to this value alone; `&mut self` serializes the reads and the
// consumer position updates, and the kernel synchronizes with them through the positions.
unsafe impl Send for RingConsumer {}

impl RingConsumer {
    /// Maps the ring buffer `map`, whose `max_entries` (its data size) the object says is
    /// `size`. The kernel's view of the map decides: a map that is not a ring buffer (a pin or
    /// an editor of another map), or of another size, is refused before anything is mapped.
    pub(crate) fn new(map: BorrowedFd<'_>, size: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        check_ring(map, size, page_size)?;
        let fd = map.try_clone_to_owned()?;
        let consumer = map_pages(&fd, page_size, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map_pages(&fd, page_size + 2 * size, libc::PROT_READ, page_size) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the mapping just made, of this length.
                unsafe { libc::munmap(consumer.as_ptr().cast(), page_size) };
                return Err(e);
            }
        };
        Ok(Self {
            fd,
            consumer,
            producer,
            page_size,
            size,
        })
    }

    fn position(&self, page: NonNull<u8>) -> &AtomicUsize {
        // SAFETY: the first `unsigned long` of a mapped, page-aligned position page of self,
        // which the kernel also accesses atomically; the borrow of self keeps it mapped.
        unsafe { &*page.as_ptr().cast::<AtomicUsize>() }
    }

    /// Hands the records written so far to `handle`, in order, giving each one's space back to
    /// the kernel after it, until `max_bytes` of the ring are consumed or `handle` breaks.
    /// Returns how many records it handed over, and where it stopped.
    pub(crate) fn read(
        &mut self,
        max_bytes: usize,
        mut handle: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> (usize, Stopped) {
        let consumer = self.position(self.consumer);
        let producer = self.position(self.producer);
        let mask = self.size - 1;
        // SAFETY: the data starts one page into the producer mapping and spans 2 * size bytes.
        let data = unsafe { self.producer.as_ptr().add(self.page_size) };
        let mut cons = consumer.load(Ordering::Acquire);
        let limit = cons.saturating_add(max_bytes);
        let mut handled = 0;
        loop {
            // Acquire: the headers up to `prod` are published.
            let prod = producer.load(Ordering::Acquire);
            if cons >= prod {
                return (handled, Stopped::Empty);
            }
            while cons < prod {
                if cons >= limit {
                    return (handled, Stopped::Limit);
                }
                let at = cons & mask;
                // SAFETY: an aligned u32 header inside the data; the kernel sets it atomically.
                let len = unsafe { &*data.add(at).cast::<AtomicU32>() }.load(Ordering::Acquire);
                if len & BUSY != 0 {
                    return (handled, Stopped::Busy);
                }
                let body = (len & !DISCARD) as usize;
                // The kernel commits records shorter than the ring; anything else is not a
                // ring the kernel wrote: stop reading it for good, rather than read past the
                // mapping (or spin: the ring stays readable).
                if body > self.size - HEADER {
                    log::error!(
                        "ring buffer: a record of {body} bytes in a ring of {}",
                        self.size
                    );
                    return (handled, Stopped::Broke);
                }
                let mut flow = ControlFlow::Continue(());
                if len & DISCARD == 0 {
                    // SAFETY: the kernel commits records shorter than the ring, and the doubled
                    // mapping holds any of them whole from its header on; the kernel does not
                    // touch it until the consumer position passes it.
                    let record = unsafe { std::slice::from_raw_parts(data.add(at + HEADER), body) };
                    handled += 1;
                    flow = handle(record);
                }
                cons += (body + HEADER + 7) & !7;
                // Release: the kernel may reuse the space once it sees the new position.
                consumer.store(cons, Ordering::Release);
                if flow.is_break() {
                    return (handled, Stopped::Broke);
                }
            }
        }
    }
}

/// Refuses a map the kernel does not know as a ring buffer of `size` bytes (a power of two, a
/// multiple of the page size, as the kernel enforces for its own).
fn check_ring(map: BorrowedFd<'_>, size: usize, page_size: usize) -> io::Result<()> {
    let refuse = |reason: String| Err(io::Error::new(io::ErrorKind::InvalidInput, reason));
    let Some(info) = crate::kernel::bpf_map::map_fd_info(map)? else {
        return refuse("the fd is not a BPF map".into());
    };
    if info.map_type != RINGBUF {
        return refuse(format!(
            "the kernel's map is of type {}, not a ring buffer ({RINGBUF})",
            info.map_type
        ));
    }
    let kernel_size = info.max_entries as usize;
    if kernel_size != size || !size.is_power_of_two() || !size.is_multiple_of(page_size) {
        return refuse(format!(
            "the kernel's ring buffer holds {kernel_size} bytes, the object declares {size}"
        ));
    }
    Ok(())
}

const RINGBUF: u32 = 27;

fn map_pages(
    fd: &OwnedFd,
    len: usize,
    prot: libc::c_int,
    offset: usize,
) -> io::Result<NonNull<u8>> {
    // SAFETY: a shared mapping of a ring buffer map fd; the kernel checks length and offset.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(ptr.cast()).expect("mmap does not return null"))
}

impl AsFd for RingConsumer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RingConsumer {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for RingConsumer {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `new`, of these lengths; nothing borrows them past self.
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), self.page_size);
            libc::munmap(
                self.producer.as_ptr().cast(),
                self.page_size + 2 * self.size,
            );
        }
    }
}
