//! Schedules (docs/API.md, "Schedules"): a job submitted at every tick of a cron expression
//! or an `@every` interval, exactly once per tick however many hubs share the database.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::data::{JobStatus, SubmitJob};

/// What a tick does while the schedule's previous job has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Submit anyway (the default).
    #[default]
    Allow,
    /// Skip the tick while the previous job is queued or running.
    Skip,
    /// Submit while the previous job runs, but keep at most one waiting behind it.
    QueueOne,
}

/// What happens to ticks that passed while no hub ran the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Only a tick less than a minute late runs; older ones count as missed (the default).
    #[default]
    None,
    /// The latest passed tick runs, however late; older ones count as missed.
    Last,
    /// Every passed tick runs, the latest [`MAX_CATCH_UP`] at most.
    All,
}

/// The most ticks one catch-up submits (`catch_up: "all"`).
pub const MAX_CATCH_UP: usize = 100;

/// `POST /v1/schedules`. `name`, `cron` and `job` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 1 to 64 characters: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), an optional sixth for
    /// seconds in front, `@hourly`-style names, or `@every 30s`.
    pub cron: String,
    /// An IANA time zone name (`Europe/Berlin`); `UTC` when absent.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The job each tick submits, as `POST /v1/jobs` takes it (without `idempotency_key`
    /// and `run_at`: the schedule sets them).
    pub job: SubmitJob,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Each tick's job runs up to this many seconds after the tick (spread the same way on
    /// every hub). 0 to 3600.
    #[serde(default)]
    pub jitter_s: u32,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// `PATCH /v1/schedules/{name}`: the fields it names change, the others keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<SubmitJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_s: Option<u32>,
}

/// What became of one tick (or a run-now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// A job was submitted.
    Submitted,
    /// Skipped by the overlap rule.
    Skipped,
    /// Not submitted: the queue was full (429), the job was refused, or the tick passed while
    /// no hub ran the schedule (and `catch_up` did not bring it back).
    Missed,
}

/// The latest run of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRun {
    /// The tick it was for (the time of a run-now).
    #[serde(with = "time::serde::rfc3339")]
    pub tick: OffsetDateTime,
    pub outcome: RunOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Why it was skipped or missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The latest job a schedule submitted, and how it stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastJob {
    pub job_id: String,
    /// Absent once the job is gone (deleted, or purged by retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

/// A schedule as `GET /v1/schedules/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: SubmitJob,
    pub paused: bool,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub jitter_s: u32,
    /// The next ticks (up to five; none while paused).
    #[serde(with = "rfc3339_vec")]
    pub next_runs: Vec<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ScheduleRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<LastJob>,
    /// Ticks that submitted a job, and ticks skipped or missed, since the schedule was made.
    pub runs: u64,
    pub skipped: u64,
    pub missed: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `POST /v1/schedules/{name}/run`: the job a run-now submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunNowResponse {
    pub job_id: String,
}

/// A schedule's name: like a queue's, `[A-Za-z0-9._-]{1,64}`.
pub fn validate_name(name: &str) -> Result<(), String> {
    crate::ids::validate_name("name", name, 64)
}

mod rfc3339_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(v: &[OffsetDateTime], s: S) -> Result<S::Ok, S::Error> {
        let texts: Result<Vec<String>, _> = v.iter().map(|t| t.format(&Rfc3339)).collect();
        texts.map_err(serde::ser::Error::custom)?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OffsetDateTime>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(serde::de::Error::custom))
            .collect()
    }
}
