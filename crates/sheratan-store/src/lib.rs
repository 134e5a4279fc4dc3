//! The job mesh's domain: the node registry's states and transitions (status, health,
//! attestation) and, with the data plane, the job lifecycle and the storage trait every backend
//! implements. Pure logic with an injectable clock: no sockets, no SQL driver, no files.

pub mod clock;
pub mod registry;

pub use clock::{Clock, ManualClock, SystemClock};
