//! When a schedule's ticks fall: a cron expression in a named time zone (through `croner` and
//! `chrono-tz`: no cron or daylight-saving arithmetic of our own) or an `@every` interval.
//!
//! Daylight-saving changes follow croner's documented rules: a fixed time that falls into the
//! hour skipped in spring runs right after the gap; a fixed time that occurs twice in autumn
//! runs once, at its first occurrence; wildcard and step fields (`*/15`) run at every wall-clock
//! match, so they skip the missing hour and repeat the doubled one. `@every` intervals count
//! real seconds from the Unix epoch and know nothing of time zones: every hub computes the same
//! ticks.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use time::OffsetDateTime;

/// A parsed schedule: when its ticks fall.
#[derive(Debug, Clone)]
pub struct Plan {
    every: Every,
}

#[derive(Debug, Clone)]
enum Every {
    Cron(Box<Cron>, chrono_tz::Tz),
    /// Milliseconds between ticks.
    Interval(i64),
}

/// The shortest `@every` interval (`duration_s` takes whole seconds from 1 up).
const MIN_INTERVAL_MS: i64 = 1000;

impl Plan {
    /// Parses `cron` in `timezone`. The error names the field and what it expects.
    pub fn parse(cron: &str, timezone: &str) -> Result<Plan, String> {
        let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            format!(
                "timezone: {timezone:?} is not a time zone name; expected an IANA name such as UTC, Europe/Berlin or America/New_York"
            )
        })?;
        let cron = cron.trim();
        if let Some(interval) = cron.strip_prefix("@every") {
            let ms = parse_interval(interval.trim()).map_err(|why| format!("cron: {why}"))?;
            return Ok(Plan {
                every: Every::Interval(ms),
            });
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| {
                format!(
                    "cron: {cron:?} is not a cron expression ({e}); expected five fields (minute hour day-of-month month day-of-week), an optional seconds field in front, @hourly/@daily/@weekly/@monthly/@yearly, or @every 30s"
                )
            })?;
        Ok(Plan {
            every: Every::Cron(Box::new(parsed), tz),
        })
    }

    /// The first tick strictly after `t`; `None` when there is none (a date that never comes).
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let ms = unix_ms(t);
        match &self.every {
            Every::Interval(step) => Some(from_ms((ms.div_euclid(*step) + 1) * step)),
            Every::Cron(cron, tz) => {
                let at =
                    tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp_millis(ms)?.naive_utc());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(from_ms(next.timestamp_millis()))
            }
        }
    }

    /// Up to `n` ticks after `t`, in order.
    pub fn next_n(&self, t: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        let mut ticks = Vec::with_capacity(n);
        let mut at = t;
        while ticks.len() < n {
            let Some(next) = self.next_after(at) else {
                break;
            };
            ticks.push(next);
            at = next;
        }
        ticks
    }

    /// The ticks in `(after, until]`: the latest `keep` of them, and how many earlier ones
    /// there were. Looks back at most `horizon` from `until`, so a schedule idle for a year
    /// costs no more than one idle for a week.
    pub fn due(
        &self,
        after: OffsetDateTime,
        until: OffsetDateTime,
        keep: usize,
        horizon: time::Duration,
    ) -> Due {
        let start = after.max(until - horizon);
        let mut due = Due {
            ticks: std::collections::VecDeque::new(),
            dropped: 0,
            through: start,
        };
        // Ticks older than the horizon are not enumerated; they count as one "dropped" batch
        // only if any exist.
        if start > after && self.next_after(after).is_some_and(|t| t <= start) {
            due.dropped += 1;
        }
        let mut at = start;
        while let Some(next) = self.next_after(at) {
            if next > until {
                break;
            }
            if due.ticks.len() == keep {
                due.ticks.pop_front();
                due.dropped += 1;
            }
            due.ticks.push_back(next);
            due.through = next;
            at = next;
        }
        due
    }
}

/// Ticks that passed: the latest ones, and how many earlier ones were left out.
#[derive(Debug, PartialEq)]
pub struct Due {
    pub ticks: std::collections::VecDeque<OffsetDateTime>,
    pub dropped: u64,
    /// Every tick up to this time is accounted for (the latest tick, or where the look-back
    /// started when no tick fell in it).
    pub through: OffsetDateTime,
}

/// `30s`, `5m`, `1h`, `1d`: at least one second.
fn parse_interval(text: &str) -> Result<i64, String> {
    let seconds = sheratan_proto::data::duration_s(text).ok_or_else(|| {
        format!("@every {text:?}: expected an interval such as 30s, 5m, 2h or 1d")
    })?;
    Ok((seconds as i64).saturating_mul(1000).max(MIN_INTERVAL_MS))
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
