//! Both sides of the auction protocol (docs/API.md, "Hosts, broker, relay, Core"). A [`host`] answers bids with a price that
//! rises with its load and executes awarded jobs through the shared handlers; the [`broker`]
//! leases jobs of the `auction` queue, asks every ONLINE host that has the job's capabilities
//! for a bid in parallel, awards the lowest price, forwards the job, keeps its lease alive,
//! and reports the result signed.

pub mod broker;
pub mod host;

pub use sheratan_client::{Identity, capability_hash};
