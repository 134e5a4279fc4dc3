//! Prometheus text for the hosts' and broker's small counter sets.

use std::fmt::Write;

/// One metric family: `(name, help, kind, [(labels, value)])`.
pub(crate) type Family<'a> = (&'a str, &'a str, &'a str, Vec<(String, f64)>);

/// Families as exposition text.
pub(crate) fn render(families: &[Family<'_>]) -> String {
    let mut out = String::new();
    for (name, help, kind, samples) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
    out
}

/// A histogram family: `buckets` are `(le="…", cumulative count)` samples, `+Inf` included.
pub(crate) fn histogram(
    name: &str,
    help: &str,
    buckets: &[(String, f64)],
    sum: f64,
    count: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, value) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}}} {value}");
    }
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
    out
}
