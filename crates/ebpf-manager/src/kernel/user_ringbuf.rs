//! The producer side of a `BPF_MAP_TYPE_USER_RINGBUF` (Linux 6.1): user space writes records,
//! programs drain them with `bpf_user_ringbuf_drain()`. aya 0.14 has no producer.
//!
//! The layout is the ring buffer's: a page with the kernel's `consumer_pos` (mapped read-only:
//! the kernel refuses a writable mapping of it), a page with `producer_pos`, then the data
//! mapped twice in a row, writable, so a record that wraps around the end is contiguous. A
//! record is `{ u32 len; u32 pg_off; }` then its bytes, 8-byte aligned; the producer publishes
//! the header busy with `producer_pos`, and clears the busy bit once the bytes are written.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;
const USER_RINGBUF: u32 = 31;

/// A record the kernel cannot take: the ring's space, then what the record needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoRoom {
    pub(crate) free: usize,
    pub(crate) capacity: usize,
}

/// A mapped user ring buffer; unmapped on drop.
pub(crate) struct RingProducer {
    fd: OwnedFd,
    /// The page holding the kernel's `consumer_pos`, read-only.
    consumer: NonNull<u8>,
    /// The page holding `producer_pos`, then the data twice, writable.
    producer: NonNull<u8>,
    page_size: usize,
    /// The data size, a power of two.
    size: usize,
}

// SAFETY: the mappings belong to this value alone; `&mut self` serializes the writes, and the
// kernel synchronizes with them through the positions and record headers.
unsafe impl Send for RingProducer {}

/// A reserved record: its header's offset in the data.
#[derive(Debug)]
pub(crate) struct Reserved {
    header: usize,
    len: usize,
}

impl RingProducer {
    /// Maps the user ring buffer `map`; refuses a map of another type.
    pub(crate) fn new(map: BorrowedFd<'_>) -> io::Result<Self> {
        let refuse = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
        let info = super::bpf_map::map_fd_info(map)?
            .ok_or_else(|| refuse("the fd is not a BPF map".into()))?;
        if info.map_type != USER_RINGBUF {
            return Err(refuse(format!(
                "the kernel's map is of type {}, not a user ring buffer ({USER_RINGBUF})",
                info.map_type
            )));
        }
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let size = info.max_entries as usize;
        let fd = map.try_clone_to_owned()?;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let (consumer, producer) =
            super::ringbuf::map_ring(&fd, page_size, size, libc::PROT_READ, rw)?;
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

    fn data(&self) -> *mut u8 {
        // SAFETY: the data starts one page into the producer mapping.
        unsafe { self.producer.as_ptr().add(self.page_size) }
    }

    /// The data size.
    pub(crate) fn capacity(&self) -> usize {
        self.size
    }

    /// Bytes not yet written or not yet drained.
    pub(crate) fn free(&self) -> usize {
        let consumer = self.position(self.consumer).load(Ordering::Acquire);
        let producer = self.position(self.producer).load(Ordering::Acquire);
        self.size - producer.wrapping_sub(consumer).min(self.size)
    }

    /// Reserves a record of `len` bytes: its header goes in busy and `producer_pos` past it,
    /// so the kernel stops there until [`commit`](Self::commit).
    pub(crate) fn reserve(&mut self, len: usize) -> Result<Reserved, NoRoom> {
        let total = (len + HEADER).next_multiple_of(8);
        let free = self.free();
        if total > free || len >= DISCARD as usize {
            return Err(NoRoom {
                free,
                capacity: self.size,
            });
        }
        let producer = self.position(self.producer).load(Ordering::Acquire);
        let header = producer & (self.size - 1);
        // SAFETY: `header` is inside the data and 8-aligned; the header's two words are the
        // producer's alone until the release store below publishes them.
        unsafe {
            let h = self.data().add(header);
            (*h.cast::<AtomicU32>()).store(len as u32 | BUSY, Ordering::Relaxed);
            (*h.add(4).cast::<AtomicU32>()).store(0, Ordering::Relaxed);
        }
        self.position(self.producer)
            .store(producer + total, Ordering::Release);
        Ok(Reserved { header, len })
    }

    /// The bytes of a reserved record.
    pub(crate) fn body(&mut self, r: &Reserved) -> &mut [u8] {
        // SAFETY: the record lies inside the doubled data mapping (the header is inside the
        // first copy, the body at most `size` bytes long); the kernel does not read it while
        // the header is busy, and `&mut self` keeps it ours.
        unsafe { std::slice::from_raw_parts_mut(self.data().add(r.header + HEADER), r.len) }
    }

    /// The bytes of a reserved record, to read.
    pub(crate) fn body_ref(&self, r: &Reserved) -> &[u8] {
        // SAFETY: as in `body`; shared, for as long as self is borrowed.
        unsafe { std::slice::from_raw_parts(self.data().add(r.header + HEADER), r.len) }
    }

    /// Hands a reserved record to the kernel, or tells it to skip it.
    pub(crate) fn commit(&mut self, r: Reserved, discard: bool) {
        let len = r.len as u32 | if discard { DISCARD } else { 0 };
        // SAFETY: the header of a reserved record, inside the data, 4-aligned; the kernel
        // reads it with acquire ordering.
        let header = unsafe { &*self.data().add(r.header).cast::<AtomicU32>() };
        header.swap(len, Ordering::AcqRel);
    }
}

impl AsFd for RingProducer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for RingProducer {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `new`, of these lengths; nothing borrows them past self.
        unsafe {
            super::ringbuf::unmap_ring(self.consumer, self.producer, self.page_size, self.size)
        }
    }
}
