//! Latency histograms for `/metrics` (Prometheus histograms): fixed bucket bounds, recorded with
//! two relaxed atomic adds and no lock, so a hot path (a lease, a result, a group commit) can
//! afford one; read as a snapshot at scrape time, whose cost depends on the number of series,
//! never on the number of jobs. Series by one label (a queue, a route) are capped: values past
//! the cap share one `_other` series, so a client inventing queue names cannot grow the scrape.
//!
//! A crate of its own because the stores (which time group commits, leases and results where
//! those times are at hand) and the HTTP edge (which times every request) both record into it,
//! and neither depends on the other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Bounds for latencies in seconds: half a millisecond to an hour, about ×2.5 apart.
pub const LATENCY_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
];

/// Bounds for counts of operations (a group commit's size).
pub const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The value label of the series every value past a [`ByLabel`]'s cap shares.
pub const OTHER: &str = "_other";

/// One histogram.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one past every bound.
    counts: Box<[AtomicU64]>,
    /// The sum of the observations, in millionths (of a second, for latencies).
    sum_micros: AtomicU64,
}

/// A histogram as Prometheus shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// (upper bound, cumulative count), ascending; the `+Inf` bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation (negative ones count as 0: clocks of two machines).
    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        Snapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
        }
    }
}

/// Histograms by the value of one label, at most `cap` values plus [`OTHER`].
#[derive(Debug)]
pub struct ByLabel {
    bounds: &'static [f64],
    cap: usize,
    series: RwLock<HashMap<Arc<str>, Arc<Histogram>>>,
}

impl ByLabel {
    pub fn new(bounds: &'static [f64], cap: usize) -> Self {
        Self {
            bounds,
            cap,
            series: RwLock::new(HashMap::new()),
        }
    }

    /// The series of `value` (made on first use; past the cap, the shared [`OTHER`] one).
    pub fn get(&self, value: &str) -> Arc<Histogram> {
        if let Some(h) = self.read().get(value) {
            return h.clone();
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        let key: Arc<str> = if series.len() < self.cap || series.contains_key(value) {
            value.into()
        } else {
            OTHER.into()
        };
        series
            .entry(key)
            .or_insert_with(|| Arc::new(Histogram::new(self.bounds)))
            .clone()
    }

    pub fn observe(&self, value: &str, observed: f64) {
        self.get(value).observe(observed);
    }

    /// Every series, by label value.
    pub fn snapshots(&self) -> Vec<(String, Snapshot)> {
        let mut all: Vec<(String, Snapshot)> = self
            .read()
            .iter()
            .map(|(k, h)| (k.to_string(), h.snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Histogram>>> {
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for ByLabel {
    /// Latencies by queue: 64 queues, the rest as [`OTHER`].
    fn default() -> Self {
        Self::new(LATENCY_SECONDS, 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_with_their_sum() {
        let h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0, -1.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        // 0.05, 0.1 (a bound is inclusive), -1 and NaN as 0 → ≤ 0.1; 0.5 → ≤ 1; 2 → +Inf.
        assert_eq!(s.buckets, vec![(0.1, 4), (1.0, 5)]);
        assert_eq!(s.count, 6);
        assert!((s.sum - 2.65).abs() < 1e-6, "{}", s.sum);
    }

    #[test]
    fn labels_past_the_cap_share_one_series() {
        let by = ByLabel::new(LATENCY_SECONDS, 3);
        for q in ["a", "b", "c", "d", "e", "a"] {
            by.observe(q, 0.01);
        }
        let names: Vec<String> = by.snapshots().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["_other", "a", "b", "c"]);
        let other = by.get("zzz").snapshot();
        assert_eq!(other.count, 2, "d and e went to _other");
        assert_eq!(by.get("a").snapshot().count, 2);
    }
}
