//! Metrics exposition for every component: the Prometheus text format 0.0.4 and, where a
//! component offers it (the hub's `?format=json`), a JSON view with dotted names, both
//! rendered from one list of [`Family`]s so they cannot disagree.
//!
//! Values live where they are produced (atomics in each component); a scrape gathers them
//! into families. This is a hundred lines instead of a metrics crate because both formats
//! come from the same snapshot and nothing registers global state (several hubs, hosts and
//! brokers in one test process stay separate).

use std::fmt::Write;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: a name, its help text, and labelled samples.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// Appended to the family's name: `_bucket`, `_sum` and `_count` for a histogram.
    pub suffix: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    /// The name in the JSON view, e.g. `auth_failure.old_token_1m`; `None`: text only.
    pub json_name: Option<String>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// The spans a component exported to `SHERATAN_OTLP_ENDPOINT` and the ones it dropped
    /// (queue full, collector down or refusing): both 0 while export is off.
    pub fn trace_spans(exported: u64, dropped: u64) -> Self {
        Self::new(
            "sheratan_trace_spans_total",
            "Trace spans, by outcome: exported to SHERATAN_OTLP_ENDPOINT, or dropped (queue full, collector down or refusing).",
            Kind::Counter,
        )
        .sample(
            vec![("outcome", "exported".into())],
            exported as f64,
            "trace.spans_exported",
        )
        .sample(
            vec![("outcome", "dropped".into())],
            dropped as f64,
            "trace.spans_dropped",
        )
    }

    /// A family with a single unlabelled sample that the JSON view shows as `json_name`.
    pub fn single(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        json_name: &str,
        value: f64,
    ) -> Self {
        Self::new(name, help, kind).sample(Vec::new(), value, json_name)
    }

    /// Adds a sample that the JSON view shows as `json_name`.
    pub fn sample(
        mut self,
        labels: Vec<(&'static str, String)>,
        value: f64,
        json_name: impl Into<String>,
    ) -> Self {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
            json_name: Some(json_name.into()),
        });
        self
    }

    /// Adds a sample for the text format only.
    pub fn value(mut self, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
            json_name: None,
        });
        self
    }

    /// A histogram: `buckets` are (upper bound, cumulative count) in ascending order; the
    /// `+Inf` bucket is `count`.
    pub fn histogram(
        name: &'static str,
        help: &'static str,
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> Self {
        let snapshot = sheratan_histogram::Snapshot {
            buckets: buckets.to_vec(),
            sum,
            count,
        };
        Self::histograms(name, help, vec![(Vec::new(), snapshot)])
    }

    /// A histogram with one series per label set (each series' `_bucket`, `_sum`, `_count`).
    pub fn histograms(
        name: &'static str,
        help: &'static str,
        series: Vec<(Vec<(&'static str, String)>, sheratan_histogram::Snapshot)>,
    ) -> Self {
        let mut samples = Vec::new();
        for (labels, snapshot) in series {
            let bucket = |le: String, n: u64| {
                let mut labels = labels.clone();
                labels.push(("le", le));
                Sample {
                    suffix: "_bucket",
                    labels,
                    value: n as f64,
                    json_name: None,
                }
            };
            for (le, n) in &snapshot.buckets {
                samples.push(bucket(format_value(*le), *n));
            }
            samples.push(bucket("+Inf".into(), snapshot.count));
            for (suffix, value) in [("_sum", snapshot.sum), ("_count", snapshot.count as f64)] {
                samples.push(Sample {
                    suffix,
                    labels: labels.clone(),
                    value,
                    json_name: None,
                });
            }
        }
        Self {
            name,
            help,
            kind: Kind::Histogram,
            samples,
        }
    }

    /// The series of a [`sheratan_histogram::ByLabel`], labelled `label`.
    pub fn by_label(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        by: &sheratan_histogram::ByLabel,
    ) -> Self {
        let series = by
            .snapshots()
            .into_iter()
            .map(|(value, snapshot)| (vec![(label, value)], snapshot))
            .collect();
        Self::histograms(name, help, series)
    }
}

/// Prometheus text exposition format 0.0.4.
pub fn render_prometheus(families: &[Family]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            out.push_str(family.name);
            out.push_str(sample.suffix);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(sample.value));
        }
    }
    out
}

/// The text format as an HTTP answer, with the format's content type.
pub fn prometheus_response(families: &[Family]) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        render_prometheus(families),
    )
        .into_response()
}

/// `{"dotted.name": value, …}`, sorted by name; samples without a JSON name are left out.
pub fn render_json(families: &[Family]) -> serde_json::Value {
    let map: std::collections::BTreeMap<&str, serde_json::Value> = families
        .iter()
        .flat_map(|f| f.samples.iter())
        .filter_map(|s| Some((s.json_name.as_deref()?, json_number(s.value))))
        .collect();
    serde_json::to_value(map).expect("a map of numbers always serializes")
}

fn json_number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_carry_the_same_values() {
        let families = vec![
            Family::new("sheratan_nodes", "Nodes by status.", Kind::Gauge)
                .sample(vec![("status", "online".into())], 3.0, "nodes.online")
                .sample(vec![("status", "stale".into())], 0.0, "nodes.stale"),
            Family::single(
                "sheratan_x_seconds",
                "A float.",
                Kind::Gauge,
                "x.seconds",
                0.25,
            ),
        ];
        let text = render_prometheus(&families);
        assert!(text.contains("# TYPE sheratan_nodes gauge\n"));
        assert!(text.contains("sheratan_nodes{status=\"online\"} 3\n"));
        assert!(text.contains("sheratan_x_seconds 0.25\n"));
        let json = render_json(&families);
        assert_eq!(json["nodes.online"], 3);
        assert_eq!(json["x.seconds"], 0.25);
    }

    #[test]
    fn text_only_samples_stay_out_of_json() {
        let families = [Family::new("sheratan_a_total", "A.", Kind::Counter).value(vec![], 2.0)];
        assert_eq!(
            render_prometheus(&families).lines().nth(2),
            Some("sheratan_a_total 2")
        );
        assert_eq!(render_json(&families), serde_json::json!({}));
    }

    #[test]
    fn histograms_have_buckets_sum_and_count() {
        let h = Family::histogram("sheratan_b_seconds", "B.", &[(0.005, 1), (0.25, 3)], 0.5, 4);
        let text = render_prometheus(&[h]);
        let expected = "# HELP sheratan_b_seconds B.\n\
                        # TYPE sheratan_b_seconds histogram\n\
                        sheratan_b_seconds_bucket{le=\"0.005\"} 1\n\
                        sheratan_b_seconds_bucket{le=\"0.25\"} 3\n\
                        sheratan_b_seconds_bucket{le=\"+Inf\"} 4\n\
                        sheratan_b_seconds_sum 0.5\n\
                        sheratan_b_seconds_count 4\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let f =
            Family::new("m", "M.", Kind::Gauge).value(vec![("node_id", "x\"} 1\ny".into())], 1.0);
        assert_eq!(
            render_prometheus(&[f]).lines().nth(2),
            Some("m{node_id=\"x\\\"} 1\\ny\"} 1")
        );
    }
}
