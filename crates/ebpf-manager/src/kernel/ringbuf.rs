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
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let (consumer, producer) = map_ring(&fd, page_size, size, rw, libc::PROT_READ)?;
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

    /// Bytes the producer has written that the consumer has not read yet (record headers
    /// and discarded records included).
    pub(crate) fn pending(&self) -> u64 {
        let consumer = self.position(self.consumer).load(Ordering::Acquire);
        let producer = self.position(self.producer).load(Ordering::Acquire);
        producer.wrapping_sub(consumer) as u64
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

/// The two mappings of a ring buffer map `fd` of `size` data bytes: the consumer position's
/// page, and the producer position's page followed by the data twice (the kernel maps it so),
/// with the protections given. Both or neither.
pub(super) fn map_ring(
    fd: &OwnedFd,
    page_size: usize,
    size: usize,
    consumer_prot: libc::c_int,
    producer_prot: libc::c_int,
) -> io::Result<(NonNull<u8>, NonNull<u8>)> {
    let consumer = map_pages(fd, page_size, consumer_prot, 0)?;
    match map_pages(fd, page_size + 2 * size, producer_prot, page_size) {
        Ok(producer) => Ok((consumer, producer)),
        Err(e) => {
            // SAFETY: the mapping just made, of this length.
            unsafe { libc::munmap(consumer.as_ptr().cast(), page_size) };
            Err(e)
        }
    }
}

/// Undoes [`map_ring`].
///
/// # Safety
/// The mappings of one `map_ring` call with these sizes, not used afterwards.
pub(super) unsafe fn unmap_ring(
    consumer: NonNull<u8>,
    producer: NonNull<u8>,
    page_size: usize,
    size: usize,
) {
    // SAFETY: the caller's promise.
    unsafe {
        libc::munmap(consumer.as_ptr().cast(), page_size);
        libc::munmap(producer.as_ptr().cast(), page_size + 2 * size);
    }
}

/// A shared mapping of `len` bytes of map `fd` at `offset`.
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
        return Err(super::sys::last_error("mmap"));
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
        unsafe { unmap_ring(self.consumer, self.producer, self.page_size, self.size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring in anonymous memory laid out as the kernel maps one: a consumer page; a producer
    /// page, then the data twice in a row.
    fn synthetic(size: usize) -> RingConsumer {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let anon = |len: usize| {
            // SAFETY: a fresh private anonymous mapping.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            NonNull::new(ptr.cast::<u8>()).unwrap()
        };
        RingConsumer {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            consumer: anon(page_size),
            producer: anon(page_size + 2 * size),
            page_size,
            size,
        }
    }

    /// Writes a record header (`len` with its flags) and `body` at ring position `pos`, in
    /// both copies of the data, as the doubled mapping shows them.
    fn write(ring: &RingConsumer, pos: usize, len: u32, body: &[u8]) {
        let mut bytes = len.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(body);
        for (i, b) in bytes.iter().enumerate() {
            let at = (pos + i) & (ring.size - 1);
            // SAFETY: inside the synthetic data mapping (2 * size bytes after one page).
            unsafe {
                let data = ring.producer.as_ptr().add(ring.page_size);
                *data.add(at) = *b;
                *data.add(at + ring.size) = *b;
            }
        }
    }

    fn set_producer(ring: &RingConsumer, pos: usize) {
        ring.position(ring.producer).store(pos, Ordering::Release);
    }

    fn consumer(ring: &RingConsumer) -> usize {
        ring.position(ring.consumer).load(Ordering::Acquire)
    }

    fn collect(ring: &mut RingConsumer, max: usize) -> (Vec<Vec<u8>>, Stopped) {
        let mut seen = Vec::new();
        let (n, stopped) = ring.read(max, |r| {
            seen.push(r.to_vec());
            ControlFlow::Continue(())
        });
        assert_eq!(n, seen.len());
        (seen, stopped)
    }

    #[test]
    fn discarded_records_are_skipped_and_a_busy_one_stops_the_read() {
        let mut ring = synthetic(4096);
        write(&ring, 0, 5, b"hello");
        write(&ring, 16, 3 | DISCARD, b"bad");
        write(&ring, 32, 8, b"12345678");
        write(&ring, 48, 4 | BUSY, b"wait");
        set_producer(&ring, 64);
        let (seen, stopped) = collect(&mut ring, usize::MAX);
        assert_eq!(seen, [b"hello".to_vec(), b"12345678".to_vec()]);
        assert_eq!(stopped, Stopped::Busy);
        assert_eq!(
            consumer(&ring),
            48,
            "the discarded record's space is given back too"
        );
        // Committed: the next read hands it over.
        write(&ring, 48, 4, b"done");
        let (seen, stopped) = collect(&mut ring, usize::MAX);
        assert_eq!(seen, [b"done".to_vec()]);
        assert_eq!(stopped, Stopped::Empty);
        assert_eq!(consumer(&ring), 64);
    }

    #[test]
    fn the_byte_limit_stops_between_records() {
        let mut ring = synthetic(4096);
        for i in 0..4 {
            write(&ring, 16 * i, 8, &[i as u8; 8]);
        }
        set_producer(&ring, 64);
        let (seen, stopped) = collect(&mut ring, 20);
        assert_eq!(seen.len(), 2, "records starting below the limit");
        assert_eq!(stopped, Stopped::Limit);
        assert_eq!(consumer(&ring), 32);
        let (seen, stopped) = collect(&mut ring, usize::MAX);
        assert_eq!(seen, [vec![2u8; 8], vec![3u8; 8]]);
        assert_eq!(stopped, Stopped::Empty);
    }

    #[test]
    fn a_record_wrapping_the_end_is_whole_and_a_break_keeps_the_rest() {
        let mut ring = synthetic(4096);
        let start = 4096 - 8;
        ring.position(ring.consumer).store(start, Ordering::Release);
        let body: Vec<u8> = (0..24).collect();
        write(&ring, start, 24, &body);
        write(&ring, start + 32, 2, b"ok");
        set_producer(&ring, start + 48);
        let (n, stopped) = ring.read(usize::MAX, |r| {
            assert_eq!(r, &body[..], "the doubled mapping holds it whole");
            ControlFlow::Break(())
        });
        assert_eq!((n, stopped), (1, Stopped::Broke));
        assert_eq!(
            consumer(&ring),
            start + 32,
            "the broken record is consumed, not the next"
        );
        let (seen, _) = collect(&mut ring, usize::MAX);
        assert_eq!(seen, [b"ok".to_vec()]);
    }

    #[test]
    fn a_record_longer_than_the_ring_is_never_read() {
        let mut ring = synthetic(4096);
        write(&ring, 0, 4096, b"");
        set_producer(&ring, 8);
        let (seen, stopped) = collect(&mut ring, usize::MAX);
        assert!(seen.is_empty());
        assert_eq!(stopped, Stopped::Broke);
        assert_eq!(consumer(&ring), 0);
    }
}
