//! Helpers of the uprobe, perf_event and BTF-typed program tests.
