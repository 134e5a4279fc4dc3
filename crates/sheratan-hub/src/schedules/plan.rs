//! When a schedule's ticks fall: a cron expression in a named time zone (through `croner` and
//! `chrono-tz`: no cron or daylight-saving arithmetic of our own) or an `@every` interval.
//!
//! Daylight-saving changes follow croner (3.0.1, pinned by the tests below): a fixed time that
//! falls into the hour skipped in spring runs right after the gap; wildcard and step fields
//! (`*/15`) have no ticks in the skipped hour; every wall-clock time of the hour that occurs
//! twice in autumn runs once, at its first occurrence, fixed time or wildcard alike (croner's
//! README says wildcard patterns repeat that hour; 3.0.1 does not). `@every` intervals count
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
/// The longest `@every` interval: 100 years (longer ones overflow the arithmetic of ticks).
const MAX_INTERVAL_S: u64 = 100 * 365 * 86_400;

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

    /// The first tick strictly after `t`; `None` when there is none (a date that never comes,
    /// or one past what a time can hold). Always later than `t`.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let ms = unix_ms(t);
        let next = match &self.every {
            Every::Interval(step) => ms
                .div_euclid(*step)
                .checked_add(1)
                .and_then(|n| n.checked_mul(*step))
                .and_then(from_ms),
            Every::Cron(cron, tz) => {
                // Whole seconds: croner keeps a fraction it is given in the ticks it returns.
                let secs = ms.div_euclid(1000);
                let at =
                    tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp(secs, 0)?.naive_utc());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                from_ms(next.timestamp_millis())
            }
        };
        // A tick that does not move forward would make every caller loop forever.
        next.filter(|n| *n > t)
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
    if seconds > MAX_INTERVAL_S {
        return Err(format!(
            "@every {text:?}: the longest interval is 36500d (100 years)"
        ));
    }
    Ok((seconds as i64).saturating_mul(1000).max(MIN_INTERVAL_MS))
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn ticks(cron: &str, tz: &str, after: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        Plan::parse(cron, tz).unwrap().next_n(after, n)
    }

    /// Spring forward in Berlin (2027-03-28, 02:00 → 03:00 local): 02:30 does not exist that
    /// day, so the fixed-time job runs right after the gap, at 03:00 CEST.
    #[test]
    fn a_fixed_time_in_the_skipped_hour_runs_right_after_it() {
        let got = ticks(
            "30 2 * * *",
            "Europe/Berlin",
            datetime!(2027-03-26 12:00 UTC),
            3,
        );
        assert_eq!(
            got,
            [
                datetime!(2027-03-27 01:30 UTC), // 02:30 CET
                datetime!(2027-03-28 01:00 UTC), // 03:00 CEST, right after the gap
                datetime!(2027-03-29 00:30 UTC), // 02:30 CEST
            ]
        );
    }

    /// Fall back in Berlin (2027-10-31, 03:00 → 02:00 local): 02:30 happens twice; a fixed
    /// time runs once, at the first. So does a wildcard: croner 3.0.1 runs every wall-clock
    /// time of the doubled hour once (its README says wildcard patterns repeat it; this test
    /// pins what it does), so `*/30 * * * *` has a real-time hour without ticks that night.
    #[test]
    fn the_doubled_hour_runs_once_fixed_time_or_wildcard() {
        let got = ticks(
            "30 2 * * *",
            "Europe/Berlin",
            datetime!(2027-10-30 12:00 UTC),
            2,
        );
        assert_eq!(
            got,
            [
                datetime!(2027-10-31 00:30 UTC), // 02:30 CEST, the first of the two
                datetime!(2027-11-01 01:30 UTC), // 02:30 CET
            ]
        );
        let got = ticks(
            "*/30 * * * *",
            "Europe/Berlin",
            datetime!(2027-10-30 23:45 UTC),
            4,
        );
        assert_eq!(
            got,
            [
                datetime!(2027-10-31 00:00 UTC), // 02:00 CEST
                datetime!(2027-10-31 00:30 UTC), // 02:30 CEST
                // 02:00 and 02:30 CET (01:00Z, 01:30Z) do not run again.
                datetime!(2027-10-31 02:00 UTC), // 03:00 CET
                datetime!(2027-10-31 02:30 UTC), // 03:30 CET
            ]
        );
    }

    #[test]
    fn seconds_names_and_every_intervals() {
        let at = datetime!(2026-12-05 12:00:00.400 UTC);
        assert_eq!(
            ticks("*/20 * * * * *", "UTC", at, 2),
            [
                datetime!(2026-12-05 12:00:20 UTC),
                datetime!(2026-12-05 12:00:40 UTC)
            ]
        );
        assert_eq!(
            ticks("@hourly", "UTC", at, 1),
            [datetime!(2026-12-05 13:00 UTC)]
        );
        // Intervals count from the Unix epoch: every hub computes the same ticks.
        assert_eq!(
            ticks("@every 30s", "UTC", at, 2),
            [
                datetime!(2026-12-05 12:00:30 UTC),
                datetime!(2026-12-05 12:01:00 UTC)
            ]
        );
        assert_eq!(
            ticks("@every 1d", "Asia/Tokyo", at, 1),
            [datetime!(2026-12-06 00:00 UTC)]
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_the_field() {
        for (cron, tz, field) in [
            ("61 * * * *", "UTC", "cron:"),
            ("* * * *", "UTC", "cron:"),
            ("0 0 1 1 * 2027", "UTC", "cron:"),
            ("@every", "UTC", "cron:"),
            ("@every 10", "UTC", "cron:"),
            ("@every -5s", "UTC", "cron:"),
            ("@every 3000000d", "UTC", "cron:"),
            ("@every 18446744073709551615s", "UTC", "cron:"),
            ("0 3 * * *", "Europe/Atlantis", "timezone:"),
            ("0 3 * * *", "", "timezone:"),
        ] {
            let err = Plan::parse(cron, tz).unwrap_err();
            assert!(err.starts_with(field), "{cron} {tz}: {err}");
        }
    }

    #[test]
    fn due_keeps_the_latest_ticks_and_counts_the_rest() {
        let plan = Plan::parse("@every 1m", "UTC").unwrap();
        let after = datetime!(2026-12-05 12:00 UTC);
        let until = datetime!(2026-12-05 12:10:30 UTC);
        let due = plan.due(after, until, 3, time::Duration::days(7));
        assert_eq!(
            Vec::from(due.ticks),
            [
                datetime!(2026-12-05 12:08 UTC),
                datetime!(2026-12-05 12:09 UTC),
                datetime!(2026-12-05 12:10 UTC),
            ]
        );
        assert_eq!(due.dropped, 7);
        assert_eq!(due.through, datetime!(2026-12-05 12:10 UTC));
        // A year idle looks back a week only, and says some were dropped.
        let due = plan.due(
            after - time::Duration::days(365),
            after,
            1,
            time::Duration::days(7),
        );
        assert_eq!(Vec::from(due.ticks), [after]);
        assert!(due.dropped > 0);
        // Nothing due.
        let due = plan.due(
            after,
            after + time::Duration::seconds(30),
            1,
            time::Duration::days(7),
        );
        assert!(due.ticks.is_empty() && due.dropped == 0);
    }
}
