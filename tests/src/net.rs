//! Helpers of the network and cgroup tests.
