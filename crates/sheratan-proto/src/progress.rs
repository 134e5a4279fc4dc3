//! Progress and streamed output of a running job (docs/API.md, "Progress").
//!
//! The node holding a lease reports `POST /v1/leases/{lease_id}/progress` with a
//! [`ProgressReport`], signed like a result; the job view carries the latest as
//! [`JobProgress`]: the fraction done, a message, and the last [`OUTPUT_TAIL`] bytes of the
//! output appended so far with the count of every byte ever appended, so a follower prints
//! exactly what is new.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `message`: at most this many bytes.
pub const MAX_MESSAGE: usize = 1024;
/// `output` of one report: at most this many bytes (more is 413).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// How much of the output the job view keeps (its end).
pub const OUTPUT_TAIL: usize = 8 * 1024;

/// `POST /v1/leases/{lease_id}/progress`. Every field but `job_id` is optional; a report with
/// none of them is a no-op that proves the lease is held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    pub job_id: String,
    /// The fraction done, 0.0–1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// What the job is doing now (replaces the last message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Output produced since the last report (appended to what came before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl ProgressReport {
    /// The first field out of range, named; `Err(true)` when it is too large (413).
    pub fn check(&self) -> Result<(), (bool, String)> {
        if let Some(p) = self.progress
            && !(0.0..=1.0).contains(&p)
        {
            return Err((false, "progress: must be between 0.0 and 1.0".into()));
        }
        if let Some(m) = &self.message
            && m.len() > MAX_MESSAGE
        {
            return Err((true, format!("message: at most {MAX_MESSAGE} bytes")));
        }
        if let Some(o) = &self.output
            && o.len() > MAX_OUTPUT
        {
            return Err((
                true,
                format!("output: at most {MAX_OUTPUT} bytes per report; send it in parts"),
            ));
        }
        Ok(())
    }
}

/// The answer to a progress report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressAck {
    pub job_id: String,
    /// Output bytes appended so far (what the job view's `output_bytes` will say).
    pub output_bytes: u64,
}

/// A running job's latest progress, in its job view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last bytes of the output (at most [`OUTPUT_TAIL`], cut at a character boundary).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_tail: String,
    /// Every output byte appended so far: `output_bytes - output_tail.len()` were dropped
    /// from the front.
    #[serde(default)]
    pub output_bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Default for JobProgress {
    fn default() -> Self {
        Self {
            value: None,
            message: None,
            output_tail: String::new(),
            output_bytes: 0,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }
}

impl JobProgress {
    /// Folds a report in: the latest value and message win, output is appended and its tail
    /// kept.
    pub fn apply(&mut self, report: &ProgressReport, at: OffsetDateTime) {
        if let Some(p) = report.progress {
            // `-0.0` reads back as 0.
            self.value = Some(p + 0.0);
        }
        if report.message.is_some() {
            self.message.clone_from(&report.message);
        }
        if let Some(out) = &report.output {
            self.output_bytes += out.len() as u64;
            self.output_tail.push_str(out);
            if self.output_tail.len() > OUTPUT_TAIL {
                let mut cut = self.output_tail.len() - OUTPUT_TAIL;
                while !self.output_tail.is_char_boundary(cut) {
                    cut += 1;
                }
                self.output_tail.drain(..cut);
            }
        }
        self.updated_at = at;
    }

    /// What a follower that has printed `printed` bytes has not seen yet (as much of it as
    /// the tail still holds), and the new count.
    pub fn new_output(&self, printed: u64) -> (&str, u64) {
        let unseen = self.output_bytes.saturating_sub(printed) as usize;
        let start = self.output_tail.len().saturating_sub(unseen);
        let mut start = start;
        while !self.output_tail.is_char_boundary(start) {
            start += 1;
        }
        (&self.output_tail[start..], self.output_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(output: &str) -> ProgressReport {
        ProgressReport {
            job_id: "j".into(),
            output: Some(output.into()),
            ..Default::default()
        }
    }

    #[test]
    fn output_is_appended_its_tail_kept_and_followers_see_only_what_is_new() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut p = JobProgress {
            updated_at: at,
            ..Default::default()
        };
        p.apply(&report("Hello, "), at);
        assert_eq!(p.new_output(0), ("Hello, ", 7));
        p.apply(&report("world"), at);
        assert_eq!(p.new_output(7), ("world", 12));
        let big = "é".repeat(OUTPUT_TAIL);
        p.apply(&report(&big), at);
        assert!(p.output_tail.len() <= OUTPUT_TAIL);
        assert_eq!(p.output_bytes, 12 + big.len() as u64);
        // A follower far behind gets what the tail still holds, on a character boundary.
        let (new, total) = p.new_output(0);
        assert!(new.starts_with('é') && total == p.output_bytes);
    }

    #[test]
    fn reports_out_of_range_name_their_field() {
        let mut r = report("x");
        r.progress = Some(1.5);
        assert!(r.check().unwrap_err().1.starts_with("progress"));
        let r = report(&"x".repeat(MAX_OUTPUT + 1));
        assert!(r.check().unwrap_err().0);
        let mut r = report("");
        r.message = Some("m".repeat(MAX_MESSAGE + 1));
        assert!(r.check().unwrap_err().1.starts_with("message"));
    }
}
