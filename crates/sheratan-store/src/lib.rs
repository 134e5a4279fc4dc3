//! The job mesh's domain: the node registry's states and transitions (status, health,
//! attestation), the job lifecycle, and the storage trait every backend implements, with the
//! conformance suite that holds them to it. Pure logic with an injectable clock: no sockets,
//! no SQL driver, no files.

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod group;
pub mod jobs;
pub mod limits;
#[cfg(feature = "conformance")]
pub mod model;
pub mod registry;
pub mod retention;
pub mod schedules;
pub mod store;
pub mod timings;

pub use clock::{Clock, ManualClock, SystemClock};
pub use jobs::{JobDefaults, JobRecord, JobSpec, Lease};
pub use schedules::{ScheduleAdvance, ScheduleRecord, ScheduleStore};
pub use store::{
    AuctionStore, Counts, CredentialRecord, CredentialStore, ExtendOutcome, FinishOutcome,
    HolderRule, LeaseGrant, LeaseOrder, LeasedJob, ListFilter, QueueState, Reaped, ResultReport,
    SharedState, Store, StoreError, StoreLimits, SubmitOutcome, TickReport,
};
