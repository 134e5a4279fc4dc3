//! Traces of jobs across the mesh (docs/API.md, "Traces"). A job carries a W3C `traceparent`
//! from its submitter through the hub's store to the node that runs it; each component adds
//! its spans (submit, lease, handler, result, auction, relay tab) as children, and exports
//! them over OTLP/HTTP with the JSON encoding when `SHERATAN_OTLP_ENDPOINT` is set. Off, a
//! [`Tracer`] exports nothing and passes the context it was given on unchanged, so a trace an
//! application started still reaches the workers.
//!
//! Export never slows a job down: a finished span is a `try_send` into a bounded queue; a task
//! sends batches; a full queue, an endpoint that is down or answers an error drop spans and
//! count them ([`Counts`]), and a warning says so at most once a minute.

mod context;
mod export;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub use context::TraceContext;

/// The environment variable that turns export on: the collector's OTLP/HTTP base URL
/// (`http://127.0.0.1:4318`; `/v1/traces` is added unless the URL ends with it).
pub const ENDPOINT_ENV: &str = "SHERATAN_OTLP_ENDPOINT";

/// What a span stands for, as OTLP's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// Spans exported and dropped since the start.
#[derive(Debug, Default)]
pub struct Counts {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

/// Makes spans; cheap to clone. [`Tracer::disabled`] (the default) makes spans that only carry
/// context.
#[derive(Clone, Default)]
pub struct Tracer {
    export: Option<Arc<export::Exporter>>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl Tracer {
    pub fn disabled() -> Tracer {
        Tracer::default()
    }

    /// A tracer exporting to `SHERATAN_OTLP_ENDPOINT` as `service` when it is set, else a
    /// disabled one. A set but unusable value is an error for the operator (exit 2). Must be
    /// called inside a Tokio runtime (the export task is spawned on it).
    pub fn from_env(service: &'static str) -> Result<Tracer, String> {
        match std::env::var(ENDPOINT_ENV) {
            Ok(url) if !url.trim().is_empty() => Tracer::exporting(&url, service),
            _ => Ok(Tracer::disabled()),
        }
    }

    /// A tracer exporting to the OTLP/HTTP endpoint `url` as `service`.
    pub fn exporting(url: &str, service: &'static str) -> Result<Tracer, String> {
        let counts = Arc::new(Counts::default());
        let exporter = export::Exporter::start(url, service, counts.clone())?;
        Ok(Tracer {
            export: Some(Arc::new(exporter)),
            counts,
        })
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.export.is_some()
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Starts a span named `name` as a child of `parent` (a new trace when there is none and
    /// export is on). Dropping the span ends it.
    pub fn start(&self, name: &'static str, kind: Kind, parent: Option<TraceContext>) -> Span {
        let Some(export) = &self.export else {
            return Span {
                export: None,
                context: parent,
                data: None,
            };
        };
        let context = parent.map_or_else(TraceContext::new_root, |p| p.child());
        Span {
            export: context.sampled().then(|| export.clone()),
            context: Some(context),
            data: Some(Box::new(SpanData {
                name,
                kind,
                context,
                parent: parent.map(|p| p.span_id),
                start: SystemTime::now(),
                end: None,
                attributes: Vec::new(),
                error: None,
            })),
        }
    }

    /// Starts a span whose parent is a `traceparent` text (ignored when malformed).
    pub fn start_from(&self, name: &'static str, kind: Kind, parent: Option<&str>) -> Span {
        self.start(name, kind, parent.and_then(TraceContext::parse))
    }
}

/// A span in progress. Its [`Span::context`] is what children and the next hop get.
pub struct Span {
    export: Option<Arc<export::Exporter>>,
    context: Option<TraceContext>,
    data: Option<Box<SpanData>>,
}

pub(crate) struct SpanData {
    pub name: &'static str,
    pub kind: Kind,
    pub context: TraceContext,
    pub parent: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub attributes: Vec<(&'static str, String)>,
    pub error: Option<String>,
}

impl Span {
    /// The context to pass on: this span's, or (export off) the parent's as it came.
    pub fn context(&self) -> Option<TraceContext> {
        self.context
    }

    /// The `traceparent` to pass on, if there is a context.
    pub fn traceparent(&self) -> Option<String> {
        self.context.map(|c| c.header())
    }

    /// Adds an attribute (`sheratan.job_id`, …), cut at [`MAX_TEXT`] bytes; a no-op when
    /// the span is not exported.
    pub fn attr(&mut self, key: &'static str, value: impl ToString) {
        if let (Some(_), Some(d)) = (&self.export, &mut self.data) {
            d.attributes.push((key, capped(value.to_string())));
        }
    }

    /// Marks the span failed, with why (cut at [`MAX_TEXT`] bytes).
    pub fn fail(&mut self, why: impl ToString) {
        if let (Some(_), Some(d)) = (&self.export, &mut self.data) {
            d.error = Some(capped(why.to_string()));
        }
    }
}

/// The longest attribute value or failure message a span keeps: a queued span stays small
/// whatever a request held (4,096 queued spans of a few hundred bytes each at most).
pub const MAX_TEXT: usize = 256;

fn capped(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl Drop for Span {
    fn drop(&mut self) {
        if let (Some(export), Some(mut data)) = (self.export.take(), self.data.take()) {
            data.end = Some(SystemTime::now());
            export.send(data);
        }
    }
}

impl Counts {
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_texts_are_capped_at_a_char_boundary() {
        assert_eq!(capped("short".into()), "short");
        let long = capped("é".repeat(1000));
        assert!(
            long.len() <= MAX_TEXT + '…'.len_utf8() && long.ends_with('…'),
            "{long}"
        );
    }
}
