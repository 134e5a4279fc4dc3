//! The OTLP/HTTP exporter: a bounded queue of finished spans and one task that posts them in
//! batches as `ExportTraceServiceRequest` JSON (https://opentelemetry.io/docs/specs/otlp/).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{Counts, SpanData};

/// Spans waiting for export; beyond this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans in one request.
const BATCH: usize = 512;
/// How long a batch waits for more spans after its first.
const LINGER: Duration = Duration::from_millis(200);
/// The longest one export request may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Warnings about dropped spans, at most one per this.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Exporter {
    tx: mpsc::Sender<Box<SpanData>>,
    counts: Arc<Counts>,
}

impl Exporter {
    pub fn start(url: &str, service: &'static str, counts: Arc<Counts>) -> Result<Self, String> {
        let url = traces_url(url)?;
        // No redirects: spans go to the collector named, nowhere else.
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("SHERATAN_OTLP_ENDPOINT: no HTTP client: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = Task {
            client,
            url,
            service,
            counts: counts.clone(),
            warned: None,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "SHERATAN_OTLP_ENDPOINT: no async runtime to export from".to_string())?;
        tracing::info!(endpoint = %task.url, service, "exporting trace spans (OTLP/HTTP, JSON)");
        runtime.spawn(task.run(rx));
        Ok(Exporter { tx, counts })
    }

    pub fn send(&self, span: Box<SpanData>) {
        if self.tx.try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `http(s)://host[:port][/base]` → the traces URL; credentials in the URL are refused (they
/// would end up in logs).
fn traces_url(text: &str) -> Result<reqwest::Url, String> {
    let bad = |why: &str| {
        format!(
            "SHERATAN_OTLP_ENDPOINT: {why}; give the collector's OTLP/HTTP base URL, e.g. \
             http://127.0.0.1:4318"
        )
    };
    let mut url = reqwest::Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("not an http(s) URL with a host"));
    }
    // Credentials in the URL (user-info, a key in the query) would end up in logs.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not accepted"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "a query or fragment is not accepted (keys in URLs end up in logs)",
        ));
    }
    if !url.path().ends_with("/v1/traces") {
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/v1/traces"));
    }
    Ok(url)
}

struct Task {
    client: reqwest::Client,
    url: reqwest::Url,
    service: &'static str,
    counts: Arc<Counts>,
    warned: Option<Instant>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Box<SpanData>>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![*first];
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(span)) => batch.push(*span),
                    Ok(None) | Err(_) => break,
                }
            }
            self.export(batch).await;
        }
    }

    async fn export(&mut self, batch: Vec<SpanData>) {
        let n = batch.len() as u64;
        // Encoding a batch takes a millisecond or so: off the runtime's workers, which serve
        // the jobs' requests meanwhile.
        let service = self.service;
        let body = tokio::task::spawn_blocking(move || request(service, &batch).to_string())
            .await
            .unwrap_or_default();
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the collector answered {}", r.status())),
            Err(e) => Some(format!("the collector is unreachable: {e}")),
        };
        match failure {
            None => {
                self.counts.exported.fetch_add(n, Ordering::Relaxed);
            }
            Some(why) => {
                let dropped = self.counts.dropped.fetch_add(n, Ordering::Relaxed) + n;
                if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    self.warned = Some(Instant::now());
                    tracing::warn!(
                        endpoint = %self.url,
                        dropped,
                        "trace spans dropped: {why}; jobs are not affected (check \
                         SHERATAN_OTLP_ENDPOINT and the collector)"
                    );
                }
            }
        }
    }
}

/// One `ExportTraceServiceRequest` in OTLP's JSON encoding (ids as hex, times as decimal
/// strings of Unix nanoseconds).
fn request(service: &str, batch: &[SpanData]) -> Value {
    let spans: Vec<Value> = batch.iter().map(span).collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attribute("service.name", service)] },
            "scopeSpans": [{
                "scope": { "name": "sheratan", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

fn span(s: &SpanData) -> Value {
    let mut v = json!({
        "traceId": hex::encode(s.context.trace_id),
        "spanId": hex::encode(s.context.span_id),
        "name": s.name,
        "kind": s.kind as u8,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(s.end.unwrap_or(s.start)),
        "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
        "status": match &s.error {
            None => json!({ "code": 1 }),
            Some(why) => json!({ "code": 2, "message": why }),
        },
    });
    if let Some(parent) = s.parent {
        v["parentSpanId"] = json!(hex::encode(parent));
    }
    v
}

fn attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn endpoints_become_traces_urls_and_bad_ones_say_why() {
        for (given, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("https://c/otlp", "https://c/otlp/v1/traces"),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap().as_str(), want);
        }
        for bad in [
            "",
            "127.0.0.1:4318",
            "ftp://c/",
            "http://u:p@c:4318",
            "file:///tmp/x",
            "http://c:4318/?api_key=secret",
            "http://c:4318/#x",
        ] {
            let err = traces_url(bad).unwrap_err();
            assert!(err.starts_with("SHERATAN_OTLP_ENDPOINT: "), "{bad}: {err}");
        }
    }
}
