//! Operator tools that work against a hub and its state directory: the audit watcher, the
//! diagnostics bundle, the smoke checklist, and benchmarks.

pub mod bench;
pub mod diagnose;
pub mod smoke;
pub mod watch;
