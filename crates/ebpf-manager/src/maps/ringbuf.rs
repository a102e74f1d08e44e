//! [`RingBuffer`]: a `BPF_MAP_TYPE_RINGBUF` (Linux 5.8) and its reader.

/// A ring buffer of the object, and how to read it.
#[derive(Debug, Clone, Default)]
pub struct RingBuffer {
    /// The map's name in the object.
    pub map_name: String,
}
