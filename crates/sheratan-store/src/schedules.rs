//! Where schedules live: a small table beside the jobs, in the same database, so every hub on
//! one PostgreSQL sees the same schedules and where their ticks stand. Read whole by each
//! hub's scheduler about once a second; written once per tick that does anything.

use async_trait::async_trait;
use sheratan_proto::schedules::{ScheduleRun, ScheduleSpec};
use time::OffsetDateTime;

use crate::StoreError;

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub spec: ScheduleSpec,
    /// Every tick up to and including this time is done (submitted, skipped or missed).
    pub done_until: OffsetDateTime,
    pub last_run: Option<ScheduleRun>,
    /// The latest job it submitted (what `overlap` looks at).
    pub last_job_id: Option<String>,
    pub runs: u64,
    pub skipped: u64,
    pub missed: u64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What a pass of the scheduler (or a run-now) did to one schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleAdvance {
    pub name: String,
    /// Applies only while the stored `done_until` is still this one (another hub that got
    /// there first wins); `None` applies whatever it is.
    pub expect: Option<OffsetDateTime>,
    /// The new `done_until`; a stored later one is kept.
    pub done_until: OffsetDateTime,
    /// Replaces the stored last run when present.
    pub last_run: Option<ScheduleRun>,
    /// Replaces the stored last job when present.
    pub last_job_id: Option<String>,
    /// Added to the counters.
    pub runs: u64,
    pub skipped: u64,
    pub missed: u64,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Adds `record`; `false` when its name is taken.
    async fn create_schedule(&self, record: ScheduleRecord) -> Result<bool, StoreError>;

    /// Replaces the spec of `name` (and its `done_until` when given: a resume starts from
    /// now); `false` when there is no such schedule.
    async fn update_schedule(
        &self,
        spec: ScheduleSpec,
        done_until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Removes `name`; `false` when there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError>;

    /// Applies `advance`; `false` when the schedule is gone or another hub advanced it first.
    async fn advance_schedule(&self, advance: ScheduleAdvance) -> Result<bool, StoreError>;
}

/// The JSON the stores keep a spec and a last run as.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

/// A spec or last run read back; a row that does not parse is an internal error naming it.
pub fn from_json<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("schedule {name:?} in the store: {e}")))
}
