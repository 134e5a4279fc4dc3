//! Operator tools that work against a running hub: benchmarks now; the audit watcher,
//! diagnostics bundle and smoke checklist with the operations issue.

pub mod bench;
