//! [`PerfMap`]: a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` and its reader.

/// A perf event array of the object, and how to read it.
#[derive(Debug, Clone, Default)]
pub struct PerfMap {
    /// The map's name in the object.
    pub map_name: String,
}
