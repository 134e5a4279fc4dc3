//! The conformance suite every storage backend passes (work in progress).
