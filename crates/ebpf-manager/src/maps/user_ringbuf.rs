//! [`UserRingBuffer`]: records from user space to the programs, through a
//! `BPF_MAP_TYPE_USER_RINGBUF` (Linux 6.1) they drain with `bpf_user_ringbuf_drain()`.

use std::{
    collections::HashSet,
    ops::{Deref, DerefMut},
    sync::Mutex,
};

use crate::{
    kernel::user_ringbuf::{Reserved, RingProducer},
    Error, Result,
};

/// Map ids with a producer in this process: the ring has one producer position, so two
/// producers would overwrite each other's records.
static PRODUCERS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// The producer of a user ring buffer (`BPF_MAP_TYPE_USER_RINGBUF`, Linux 6.1): records
/// written here are handed, in order, to the program that calls `bpf_user_ringbuf_drain()`
/// on the map, each as a `bpf_dynptr`. Get it with
/// [`Manager::user_ring_buffer`](crate::Manager::user_ring_buffer); one producer per map in a
/// process at a time (a second is refused until the first drops). Writing never blocks: a
/// record that does not fit is [`Error::UserRingBufferFull`].
///
/// ```no_run
/// # fn main() -> Result<(), ebpf_manager::Error> {
/// # let m = ebpf_manager::Manager::default();
/// let mut requests = m.user_ring_buffer("requests")?;
/// requests.submit(&42u64.to_ne_bytes())?;
/// // Or write in place:
/// let mut entry = requests.reserve(8)?;
/// entry.copy_from_slice(&7u64.to_ne_bytes());
/// entry.submit();
/// # Ok(()) }
/// ```
pub struct UserRingBuffer {
    map: String,
    id: u32,
    ring: RingProducer,
}

impl std::fmt::Debug for UserRingBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRingBuffer")
            .field("map", &self.map)
            .field("capacity", &self.ring.capacity())
            .finish_non_exhaustive()
    }
}

impl UserRingBuffer {
    /// Maps `map` (the map `name`, of id `id`) as its producer.
    pub(crate) fn new(name: &str, id: u32, map: std::os::fd::BorrowedFd<'_>) -> Result<Self> {
        let refused = |reason: String| Error::InvalidReader {
            map: name.to_owned(),
            kind: "user ring buffer",
            reason,
        };
        {
            let mut producers = PRODUCERS.lock().unwrap_or_else(|e| e.into_inner());
            if !producers.get_or_insert_with(HashSet::new).insert(id) {
                return Err(refused(
                    "this process already has a producer of it: drop that one first".into(),
                ));
            }
        }
        match RingProducer::new(map) {
            Ok(ring) => Ok(Self {
                map: name.to_owned(),
                id,
                ring,
            }),
            Err(e) => {
                release(id);
                Err(refused(format!("mapping it: {e}")))
            }
        }
    }

    /// The map's name.
    pub fn map_name(&self) -> &str {
        &self.map
    }

    /// The ring's data size in bytes (its `max_entries`).
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Bytes free now: a record takes its length plus an 8-byte header, rounded up to 8.
    pub fn free_bytes(&self) -> usize {
        self.ring.free()
    }

    /// Copies `record` into the ring and hands it to the kernel.
    pub fn submit(&mut self, record: &[u8]) -> Result<()> {
        let mut entry = self.reserve(record.len())?;
        entry.copy_from_slice(record);
        entry.submit();
        Ok(())
    }

    /// Reserves a record of `len` bytes to write in place; the kernel sees it once it is
    /// [submitted](UserRingBufferEntry::submit) (dropped unsubmitted, it is discarded).
    pub fn reserve(&mut self, len: usize) -> Result<UserRingBufferEntry<'_>> {
        match self.ring.reserve(len) {
            Ok(reserved) => Ok(UserRingBufferEntry {
                ring: &mut self.ring,
                reserved: Some(reserved),
            }),
            Err(room) => Err(Error::UserRingBufferFull {
                map: self.map.clone(),
                record: len,
                free: room.free,
                capacity: room.capacity,
            }),
        }
    }
}

fn release(id: u32) {
    let mut producers = PRODUCERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = producers.as_mut() {
        set.remove(&id);
    }
}

impl Drop for UserRingBuffer {
    fn drop(&mut self) {
        release(self.id);
    }
}

/// A record reserved in a [`UserRingBuffer`], written in place through `DerefMut<[u8]>`.
pub struct UserRingBufferEntry<'a> {
    ring: &'a mut RingProducer,
    reserved: Option<Reserved>,
}

impl UserRingBufferEntry<'_> {
    /// Hands the record to the kernel.
    pub fn submit(mut self) {
        if let Some(r) = self.reserved.take() {
            self.ring.commit(r, false);
        }
    }

    /// Gives the space back: the kernel skips the record.
    pub fn discard(mut self) {
        if let Some(r) = self.reserved.take() {
            self.ring.commit(r, true);
        }
    }
}

impl Deref for UserRingBufferEntry<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let r = self.reserved.as_ref().expect("reserved until consumed");
        self.ring.body_ref(r)
    }
}

impl DerefMut for UserRingBufferEntry<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let r = self.reserved.as_ref().expect("reserved until consumed");
        self.ring.body(r)
    }
}

impl Drop for UserRingBufferEntry<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reserved.take() {
            self.ring.commit(r, true);
        }
    }
}

impl std::fmt::Debug for UserRingBufferEntry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRingBufferEntry")
            .field("len", &self.len())
            .finish()
    }
}
