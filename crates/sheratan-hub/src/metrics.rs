//! Counting for the hub's metrics: the one-minute windows behind the `_1m` values. The
//! exposition (families, Prometheus text, the JSON view) is `sheratan_runtime::metrics`,
//! shared with every component.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
    fn minute_window_counts() {
        let w = MinuteWindow::default();
        for _ in 0..5 {
            w.record();
        }
        assert_eq!(w.total(), 5);
    }
}
