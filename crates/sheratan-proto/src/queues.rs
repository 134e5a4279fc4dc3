//! Queue settings: `GET/PUT /admin/queues/{queue}/settings` (docs/API.md, "Queue settings").
//!
//! One object per queue holds everything an operator tunes about it: whether it is paused,
//! how many of its jobs may run at once (in all and per `concurrency_key`), how fast jobs
//! may start (in all and per key), and the retry defaults of jobs submitted to it. Every
//! limit is absent by default, which means "no limit" and costs leasing nothing.

use serde::{Deserialize, Deserializer, Serialize};

/// Upper bounds that keep a typo from becoming a setting.
pub const MAX_CONCURRENCY: u32 = 1_000_000;
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
pub const MAX_RATE_PERIOD_S: u32 = 86_400;
/// Retry waits (base and cap): at most 7 days.
pub const MAX_RETRY_MS: u64 = 7 * 24 * 3600 * 1000;
/// The most attempts a queue's jobs may be given (as for a single job).
pub const MAX_ATTEMPTS: u32 = 100;
/// `concurrency_key`: at most this many bytes.
pub const MAX_CONCURRENCY_KEY_LEN: usize = 256;

/// "At most `limit` starts per `period_s` seconds, in bursts of at most `burst`": a token
/// bucket holding `burst` tokens refilled at `limit / period_s` per second. `burst` defaults
/// to 1: starts are spaced evenly (5/s starts one job every 200 ms); a larger burst lets that
/// many start at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rate {
    pub limit: u32,
    /// Seconds; 1 when left out.
    #[schema(required = false)]
    pub period_s: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// A rate as the wire writes it: an object only (serde's derive would also take an array).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFields {
    limit: u32,
    #[serde(default = "one_second")]
    period_s: u32,
    #[serde(default)]
    burst: Option<u32>,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let f: RateFields = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(serde::de::Error::custom)?;
        Ok(Rate {
            limit: f.limit,
            period_s: f.period_s,
            burst: f.burst,
        })
    }
}

fn one_second() -> u32 {
    1
}

impl Rate {
    /// Tokens the bucket holds when full.
    pub fn capacity(&self) -> f64 {
        f64::from(self.burst.unwrap_or(1).max(1))
    }

    /// Tokens added per millisecond.
    pub fn per_ms(&self) -> f64 {
        f64::from(self.limit) / (f64::from(self.period_s.max(1)) * 1000.0)
    }

    fn validate(&self, field: &str) -> Result<(), String> {
        if !(1..=MAX_RATE_LIMIT).contains(&self.limit) {
            return Err(format!(
                "{field}.limit: must be between 1 and {MAX_RATE_LIMIT}"
            ));
        }
        if !(1..=MAX_RATE_PERIOD_S).contains(&self.period_s) {
            return Err(format!(
                "{field}.period_s: must be between 1 and {MAX_RATE_PERIOD_S} seconds"
            ));
        }
        if let Some(burst) = self.burst
            && !(1..=MAX_RATE_LIMIT).contains(&burst)
        {
            return Err(format!(
                "{field}.burst: must be between 1 and {MAX_RATE_LIMIT}"
            ));
        }
        Ok(())
    }
}

/// A queue's settings, as `GET` answers them. Absent limits mean "no limit"; absent retry
/// settings mean the hub's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSettings {
    #[serde(default)]
    pub paused: bool,
    /// Jobs of this queue in progress at once, across every node and hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Jobs of one `concurrency_key` in progress at once, across every node and hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// Jobs of this queue started (leased) per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Jobs of one `concurrency_key` started per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rate: Option<Rate>,
    /// Attempts of jobs submitted without `max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Retry backoff of jobs submitted without `retry.base_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<u64>,
    /// Retry backoff cap of jobs submitted without `retry.max_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
    /// How long the queue's finished jobs are kept: a duration (`30s`, `12h`, `7d`), or `0` to
    /// keep them; absent: the hub's `SHERATAN_RETENTION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// How long its failed jobs are kept, when not as long as the others (`retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_retention: Option<String>,
}

/// A retention: `0` (keep) or a duration such as `30s`, `12h`, `7d`; in seconds, 0 for keep.
pub fn parse_retention(field: &str, text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    crate::data::duration_s(text)
        .filter(|s| *s <= MAX_RETENTION_S)
        .ok_or_else(|| {
            format!(
                "{field}: a duration such as 30s, 12h or 7d (at most 36500d), or 0 to keep finished jobs; got {text:?}"
            )
        })
}

/// The longest retention: 100 years (longer is "keep": say `0`).
pub const MAX_RETENTION_S: u64 = 100 * 365 * 86_400;

impl QueueSettings {
    /// Whether any limit applies at lease time (a queue without one leases on the fast path).
    pub fn limits_leasing(&self) -> bool {
        self.concurrency.is_some()
            || self.key_concurrency.is_some()
            || self.rate.is_some()
            || self.key_rate.is_some()
    }

    /// These settings with `patch` applied: named fields change, the others keep their value.
    pub fn patched(&self, patch: &QueueSettingsPatch) -> QueueSettings {
        fn pick<T: Clone>(old: &Option<T>, new: &Option<Option<T>>) -> Option<T> {
            match new {
                Some(v) => v.clone(),
                None => old.clone(),
            }
        }
        QueueSettings {
            paused: patch.paused.unwrap_or(self.paused),
            concurrency: pick(&self.concurrency, &patch.concurrency),
            key_concurrency: pick(&self.key_concurrency, &patch.key_concurrency),
            rate: pick(&self.rate, &patch.rate),
            key_rate: pick(&self.key_rate, &patch.key_rate),
            max_attempts: pick(&self.max_attempts, &patch.max_attempts),
            retry_base_ms: pick(&self.retry_base_ms, &patch.retry_base_ms),
            retry_max_ms: pick(&self.retry_max_ms, &patch.retry_max_ms),
            retention: pick(&self.retention, &patch.retention),
            failed_retention: pick(&self.failed_retention, &patch.failed_retention),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("concurrency", self.concurrency),
            ("key_concurrency", self.key_concurrency),
        ] {
            if let Some(n) = value
                && !(1..=MAX_CONCURRENCY).contains(&n)
            {
                return Err(format!(
                    "{field}: must be between 1 and {MAX_CONCURRENCY} (null removes the limit)"
                ));
            }
        }
        if let Some(rate) = &self.rate {
            rate.validate("rate")?;
        }
        if let Some(rate) = &self.key_rate {
            rate.validate("key_rate")?;
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            return Err(format!(
                "max_attempts: must be between 1 and {MAX_ATTEMPTS}"
            ));
        }
        for (field, value) in [
            ("retention", &self.retention),
            ("failed_retention", &self.failed_retention),
        ] {
            if let Some(text) = value {
                parse_retention(field, text)?;
            }
        }
        RetryPolicy {
            base_ms: self.retry_base_ms,
            max_ms: self.retry_max_ms,
        }
        .validate("retry_")
    }
}

/// `PUT /admin/queues/{queue}/settings`: only the fields it names change; `null` removes a
/// limit (or a retry default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub concurrency: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_concurrency: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate: Option<Option<Rate>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_rate: Option<Option<Rate>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_attempts: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_base_ms: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_max_ms: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub failed_retention: Option<Option<String>>,
}

/// A field that is present (its value possibly `null`) becomes `Some(value)`; an absent one
/// stays `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A job's own retry backoff (`retry` in a submit): `base_ms` doubles per attempt up to
/// `max_ms`. Fields left out take the queue's settings, then the hub's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

impl RetryPolicy {
    /// `prefix` names the fields in errors (`retry.` in a submit, `retry_` in settings).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        for (field, value) in [("base_ms", self.base_ms), ("max_ms", self.max_ms)] {
            if let Some(ms) = value
                && !(1..=MAX_RETRY_MS).contains(&ms)
            {
                return Err(format!(
                    "{prefix}{field}: must be between 1 and {MAX_RETRY_MS} ms"
                ));
            }
        }
        if let (Some(base), Some(max)) = (self.base_ms, self.max_ms)
            && max < base
        {
            return Err(format!("{prefix}max_ms: must not be below {prefix}base_ms"));
        }
        Ok(())
    }
}

/// `concurrency_key`: 1 to 256 bytes without control characters.
pub fn validate_concurrency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_CONCURRENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(format!(
            "concurrency_key: must be 1 to {MAX_CONCURRENCY_KEY_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_changes_only_what_it_names_and_null_clears() {
        let old = QueueSettings {
            concurrency: Some(4),
            key_concurrency: Some(1),
            ..Default::default()
        };
        let patch: QueueSettingsPatch =
            serde_json::from_str(r#"{"concurrency": null, "rate": {"limit": 5}}"#).unwrap();
        let new = old.patched(&patch);
        assert_eq!(new.concurrency, None);
        assert_eq!(new.key_concurrency, Some(1));
        assert_eq!(
            new.rate,
            Some(Rate {
                limit: 5,
                period_s: 1,
                burst: None
            })
        );
        assert!(new.validate().is_ok());
    }

    #[test]
    fn absurd_values_name_their_field() {
        for (body, field) in [
            (r#"{"concurrency": 0}"#, "concurrency"),
            (r#"{"key_concurrency": 2000000}"#, "key_concurrency"),
            (r#"{"rate": {"limit": 0}}"#, "rate.limit"),
            (
                r#"{"key_rate": {"limit": 1, "period_s": 0}}"#,
                "key_rate.period_s",
            ),
            (r#"{"max_attempts": 101}"#, "max_attempts"),
            (r#"{"retry_base_ms": 0}"#, "retry_base_ms"),
            (
                r#"{"retry_base_ms": 1000, "retry_max_ms": 10}"#,
                "retry_max_ms",
            ),
        ] {
            let patch: QueueSettingsPatch = serde_json::from_str(body).unwrap();
            let err = QueueSettings::default()
                .patched(&patch)
                .validate()
                .unwrap_err();
            assert!(err.starts_with(field), "{body}: {err}");
        }
        // Negative numbers, unknown fields and rates written as arrays do not even decode.
        assert!(serde_json::from_str::<QueueSettingsPatch>(r#"{"rate": [5]}"#).is_err());
        assert!(
            serde_json::from_str::<QueueSettingsPatch>(r#"{"key_rate": {"limit": 1, "x": 2}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<QueueSettingsPatch>(r#"{"concurrency": -1}"#).is_err());
        assert!(serde_json::from_str::<QueueSettingsPatch>(r#"{"concurency": 1}"#).is_err());
    }

    #[test]
    fn concurrency_keys_are_bounded() {
        assert!(validate_concurrency_key("acct-1").is_ok());
        assert!(validate_concurrency_key("").is_err());
        assert!(validate_concurrency_key(&"k".repeat(257)).is_err());
        assert!(validate_concurrency_key("a\nb").is_err());
    }
}
