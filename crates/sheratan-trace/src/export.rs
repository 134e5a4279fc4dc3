//! The OTLP/HTTP exporter: a bounded queue of finished spans and one task that posts them in
//! batches as `ExportTraceServiceRequest` JSON (https://opentelemetry.io/docs/specs/otlp/).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::io::Write as _;
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
        let body = tokio::task::spawn_blocking(move || request(service, &batch))
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
/// strings of Unix nanoseconds), written straight into bytes: building `serde_json::Value`s
/// first cost the hub a third of its throughput with every job traced.
fn request(service: &str, batch: &[SpanData]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + batch.len() * 480);
    out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    attribute(&mut out, "service.name", service);
    out.extend_from_slice(b"]},\"scopeSpans\":[{\"scope\":{\"name\":\"sheratan\",\"version\":");
    string(&mut out, env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(b"},\"spans\":[");
    for (i, s) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        span(&mut out, s);
    }
    out.extend_from_slice(b"]}]}]}");
    out
}

fn span(out: &mut Vec<u8>, s: &SpanData) {
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\",",
        hex::encode(s.context.trace_id),
        hex::encode(s.context.span_id)
    );
    if let Some(parent) = s.parent {
        let _ = write!(out, "\"parentSpanId\":\"{}\",", hex::encode(parent));
    }
    out.extend_from_slice(b"\"name\":");
    string(out, s.name);
    let _ = write!(
        out,
        ",\"kind\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        s.kind as u8,
        nanos(s.start),
        nanos(s.end.unwrap_or(s.start))
    );
    for (i, (k, v)) in s.attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        attribute(out, k, v);
    }
    match &s.error {
        None => out.extend_from_slice(b"],\"status\":{\"code\":1}}"),
        Some(why) => {
            out.extend_from_slice(b"],\"status\":{\"code\":2,\"message\":");
            string(out, why);
            out.extend_from_slice(b"}}");
        }
    }
}

fn attribute(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b"{\"key\":");
    string(out, key);
    out.extend_from_slice(b",\"value\":{\"stringValue\":");
    string(out, value);
    out.extend_from_slice(b"}}");
}

/// A JSON string, escaped by serde_json.
fn string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to memory cannot fail");
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::{SpanData, request, traces_url};
    use crate::{Kind, TraceContext};

    /// The bytes are the OTLP JSON a collector parses: escaped texts, hex ids, times as strings.
    #[test]
    fn a_batch_encodes_as_otlp_json() {
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123);
        let context =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = |parent, error| SpanData {
            name: "sheratan.lease",
            kind: Kind::Server,
            context,
            parent,
            start,
            end: Some(start + std::time::Duration::from_nanos(5)),
            attributes: vec![("sheratan.queue", "q\"\n\u{1}é".into())],
            error,
        };
        let batch = [
            span(None, None),
            span(Some([1; 8]), Some("bad \"input\"".into())),
        ];
        let doc: serde_json::Value = serde_json::from_slice(&request("svc", &batch)).unwrap();
        let spans = &doc["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(
            doc["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "svc"
        );
        assert_eq!(spans[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(spans[0]["spanId"], "00f067aa0ba902b7");
        assert!(spans[0].get("parentSpanId").is_none());
        assert_eq!(spans[0]["kind"], 2);
        assert_eq!(spans[0]["startTimeUnixNano"], "1700000000123");
        assert_eq!(spans[0]["endTimeUnixNano"], "1700000000128");
        assert_eq!(
            spans[0]["attributes"][0]["value"]["stringValue"],
            "q\"\n\u{1}é"
        );
        assert_eq!(spans[0]["status"], serde_json::json!({"code": 1}));
        assert_eq!(spans[1]["parentSpanId"], "0101010101010101");
        assert_eq!(
            spans[1]["status"],
            serde_json::json!({"code": 2, "message": "bad \"input\""})
        );
    }

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
