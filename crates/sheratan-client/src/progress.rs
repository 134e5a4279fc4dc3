//! A running job's progress as its handler reports it ([`ProgressSink`]), and the loop that
//! sends it to the hub ([`send_loop`], docs/API.md "Progress").
//!
//! Handlers report as often as they like: the sink only keeps the latest fraction and message
//! and the output not yet sent, and the loop sends what piled up at most every
//! [`SEND_EVERY`], so a chatty handler costs a request a quarter second.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sheratan_proto::progress::{MAX_MESSAGE, MAX_OUTPUT, ProgressReport};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ClientError;

/// The most often a job's progress is sent.
pub const SEND_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Pending {
    value: Option<f64>,
    message: Option<String>,
    output: String,
}

struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

/// Where a handler reports progress; cheap to clone, never blocks. A disabled sink (a
/// handler run without a hub, in tests) drops everything.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<Shared>>);

impl ProgressSink {
    /// A sink whose reports [`send_loop`] sends.
    pub fn new() -> Self {
        Self(Some(Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
        })))
    }

    /// A sink that drops what it is told.
    pub fn disabled() -> Self {
        Self(None)
    }

    fn update(&self, f: impl FnOnce(&mut Pending)) {
        if let Some(shared) = &self.0 {
            f(&mut shared.pending.lock().expect("progress sink"));
            shared.notify.notify_one();
        }
    }

    /// The fraction done (clamped to 0.0–1.0).
    pub fn fraction(&self, value: f64) {
        if value.is_finite() {
            self.update(|p| p.value = Some(value.clamp(0.0, 1.0)));
        }
    }

    /// What the job is doing now (cut to the contract's 1 KiB).
    pub fn message(&self, text: &str) {
        let text = cut(text, MAX_MESSAGE).to_owned();
        self.update(|p| p.message = Some(text));
    }

    /// Output to append. What waits to be sent is capped at one report (64 KiB, its end
    /// kept): a handler writing faster than that loses the middle, not the node's memory.
    pub fn output(&self, text: &str) {
        if !text.is_empty() {
            self.update(|p| {
                p.output.push_str(text);
                if p.output.len() > MAX_OUTPUT {
                    let mut cut = p.output.len() - MAX_OUTPUT;
                    while !p.output.is_char_boundary(cut) {
                        cut += 1;
                    }
                    p.output.drain(..cut);
                }
            });
        }
    }

    /// What piled up since the last call, as reports (long output in parts); empty when
    /// nothing did.
    fn take(&self, job_id: &str) -> Vec<ProgressReport> {
        let Some(shared) = &self.0 else {
            return Vec::new();
        };
        let pending = std::mem::take(&mut *shared.pending.lock().expect("progress sink"));
        if pending.value.is_none() && pending.message.is_none() && pending.output.is_empty() {
            return Vec::new();
        }
        let mut reports = vec![ProgressReport {
            job_id: job_id.to_owned(),
            progress: pending.value,
            message: pending.message,
            output: None,
        }];
        let mut rest = pending.output.as_str();
        while !rest.is_empty() {
            let part = cut(rest, MAX_OUTPUT);
            rest = &rest[part.len()..];
            match reports.last_mut() {
                Some(last) if last.output.is_none() => last.output = Some(part.to_owned()),
                _ => reports.push(ProgressReport {
                    job_id: job_id.to_owned(),
                    output: Some(part.to_owned()),
                    ..Default::default()
                }),
            }
        }
        reports
    }

    /// What was reported and not yet sent: the latest fraction and message, the output.
    pub fn unsent(&self) -> (Option<f64>, Option<String>, String) {
        match &self.0 {
            Some(shared) => {
                let p = shared.pending.lock().expect("progress sink");
                (p.value, p.message.clone(), p.output.clone())
            }
            None => (None, None, String::new()),
        }
    }

    async fn changed(&self) {
        match &self.0 {
            Some(shared) => shared.notify.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sends what `sink` collects for the lease, at most every [`SEND_EVERY`], until `done` is
/// cancelled; then sends what is left, so the output is complete before the result. Stops
/// early when the hub says the lease is no longer held.
pub async fn send_loop(
    link: &crate::stream::Link,
    job_id: &str,
    lease_id: &str,
    sink: &ProgressSink,
    done: &CancellationToken,
) {
    loop {
        let finished = tokio::select! {
            () = done.cancelled() => true,
            () = sink.changed() => false,
        };
        for report in sink.take(job_id) {
            match link.progress(lease_id, &report).await {
                Ok(_) => {}
                Err(ClientError::Api { status: 409, .. }) => return,
                Err(err) => {
                    tracing::debug!(job_id, %err, "progress not sent; the next report carries on")
                }
            }
        }
        if finished {
            return;
        }
        tokio::select! {
            () = done.cancelled() => {}
            () = tokio::time::sleep(SEND_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_keeps_the_latest_value_and_all_output_in_parts() {
        let sink = ProgressSink::new();
        assert!(sink.take("j").is_empty());
        sink.fraction(0.2);
        sink.fraction(7.0);
        sink.output("a");
        sink.output(&"é".repeat(MAX_OUTPUT));
        let reports = sink.take("j");
        assert_eq!(reports[0].progress, Some(1.0));
        // At most one report of output waits: its end.
        assert_eq!(reports.len(), 1);
        let sent = reports[0].output.clone().unwrap();
        assert!(sent.len() <= MAX_OUTPUT && sent.ends_with('é') && !sent.contains('a'));
        assert!(reports.iter().all(|r| r.check().is_ok()));
        assert!(sink.take("j").is_empty(), "taken once");
        ProgressSink::disabled().output("dropped");
    }
}
