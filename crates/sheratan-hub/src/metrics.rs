//! Metrics exposition: Prometheus text format and the `?format=json` view with the seed's
//! dotted names, both rendered from one list of samples so they cannot disagree.
//!
//! Values live where they are produced (atomics in the audit log, the registry, the token
//! authority); a scrape gathers them into [`Family`]s. This is a few dozen lines instead of a
//! metrics crate because both formats come from the same snapshot and nothing registers
//! global state (several hubs in one test process stay separate).

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
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
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    /// The name in the JSON view, e.g. `auth_failure.old_token_1m`.
    pub json_name: String,
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

    /// A family with a single unlabelled sample.
    pub fn single(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        json_name: &str,
        value: f64,
    ) -> Self {
        Self::new(name, help, kind).sample(Vec::new(), value, json_name)
    }

    pub fn sample(
        mut self,
        labels: Vec<(&'static str, String)>,
        value: f64,
        json_name: impl Into<String>,
    ) -> Self {
        self.samples.push(Sample {
            labels,
            value,
            json_name: json_name.into(),
        });
        self
    }
}

/// Prometheus text exposition format 0.0.4.
pub fn render_prometheus(families: &[Family]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for sample in &family.samples {
            out.push_str(family.name);
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

/// `{"dotted.name": value, …}`, sorted by name.
pub fn render_json(families: &[Family]) -> serde_json::Value {
    let map: std::collections::BTreeMap<&str, serde_json::Value> = families
        .iter()
        .flat_map(|f| f.samples.iter())
        .map(|s| (s.json_name.as_str(), json_number(s.value)))
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

/// Counts events over the last 60 seconds in one-second buckets. Cheap enough for a flood:
/// one short lock per event.
#[derive(Debug)]
pub struct MinuteWindow {
    buckets: Mutex<[(u64, u64); 60]>,
}

impl Default for MinuteWindow {
    fn default() -> Self {
        Self {
            buckets: Mutex::new([(0, 0); 60]),
        }
    }
}

impl MinuteWindow {
    pub fn record(&self) {
        let sec = unix_secs();
        let mut buckets = self.buckets.lock().expect("window lock is never poisoned");
        let bucket = &mut buckets[(sec % 60) as usize];
        if bucket.0 != sec {
            *bucket = (sec, 0);
        }
        bucket.1 += 1;
    }

    pub fn total(&self) -> u64 {
        let now = unix_secs();
        let buckets = self.buckets.lock().expect("window lock is never poisoned");
        buckets
            .iter()
            .filter(|(sec, _)| now.saturating_sub(*sec) < 60)
            .map(|(_, n)| n)
            .sum()
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn minute_window_counts() {
        let w = MinuteWindow::default();
        for _ in 0..5 {
            w.record();
        }
        assert_eq!(w.total(), 5);
    }
}
