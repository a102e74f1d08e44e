//! Starting and stopping the readers of perf maps and ring buffers by hand.

use super::{Manager, ManagerState};
use crate::Result;

impl Manager {
    /// Starts the reader of the perf map or ring buffer whose map is `map_name`: one declared
    /// with `skip_start`, one stopped by [`stop_reader`](Self::stop_reader), or one whose
    /// handler panicked. Does nothing when it already runs. Needs a started manager (running or paused).
    pub fn start_reader(&mut self, map_name: &str) -> Result<()> {
        self.expect(
            "start_reader",
            &[ManagerState::Running, ManagerState::Paused],
        )?;
        self.state.readers.start_one(map_name)
    }

    /// Stops the reader of the perf map or ring buffer whose map is `map_name`, after it has
    /// handled what its buffers hold. Records the programs write while it is stopped are lost
    /// (perf maps do not report them). Does nothing when it is stopped already.
    pub fn stop_reader(&mut self, map_name: &str) -> Result<()> {
        self.expect(
            "stop_reader",
            &[ManagerState::Running, ManagerState::Paused],
        )?;
        self.state.readers.stop_one(map_name)
    }

    /// Whether the reader of `map_name` runs (false once stopped, or once a handler of it
    /// panicked); `None` when the manager has not started or has no perf map or ring buffer of
    /// that name.
    pub fn is_reader_running(&self, map_name: &str) -> Option<bool> {
        self.state.readers.is_running(map_name)
    }
}
