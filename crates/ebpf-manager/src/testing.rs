//! Internals the integration tests compare the kernel against (feature `fault-injection`,
//! hidden from the docs: not an API).

pub use crate::kernel::instance::{own_group, token, PREFIX};
pub use crate::kernel::tracefs::{parse_event_line, remove_leftover_events};

/// Where tracefs is mounted.
pub fn tracefs_root() -> crate::Result<&'static std::path::Path> {
    crate::kernel::tracefs::root()
}
