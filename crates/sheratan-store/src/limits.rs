//! Rate limits as token buckets, shared by both backends: the SQLite writer keeps buckets in
//! memory, PostgreSQL hubs keep them in a table they update under the queue's lock.

use sheratan_proto::queues::Rate;

/// A token bucket: `tokens` as of `at_ms`, refilled continuously at the rate's pace up to
/// its capacity. Taking a job needs one whole token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub rate: Rate,
    pub tokens: f64,
    pub at_ms: i64,
}

impl Bucket {
    /// A full bucket: a new limit (or a forgotten one) allows a burst at once.
    pub fn full(rate: Rate, now_ms: i64) -> Bucket {
        Bucket {
            rate,
            tokens: rate.capacity(),
            at_ms: now_ms,
        }
    }

    /// The tokens it holds at `now_ms`.
    pub fn tokens_at(&self, now_ms: i64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms).max(0) as f64;
        (self.tokens + elapsed * self.rate.per_ms()).min(self.rate.capacity())
    }

    /// Whole tokens available at `now_ms`.
    pub fn whole_at(&self, now_ms: i64) -> u64 {
        self.tokens_at(now_ms).max(0.0).floor() as u64
    }

    /// Takes one token (the caller checked there is one).
    pub fn take(&mut self, now_ms: i64) {
        self.tokens = self.tokens_at(now_ms) - 1.0;
        self.at_ms = now_ms;
    }

    /// When the next whole token will be there (`now_ms` if it is).
    pub fn next_token_ms(&self, now_ms: i64) -> i64 {
        let missing = 1.0 - self.tokens_at(now_ms);
        if missing <= 0.0 {
            return now_ms;
        }
        now_ms.saturating_add((missing / self.rate.per_ms()).ceil() as i64)
    }

    /// Whether it is full at `now_ms` (forgetting it changes nothing).
    pub fn is_full_at(&self, now_ms: i64) -> bool {
        self.tokens_at(now_ms) >= self.rate.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_pace() {
        let rate = Rate {
            limit: 5,
            period_s: 1,
            burst: Some(2),
        };
        let mut b = Bucket::full(rate, 0);
        assert_eq!(b.whole_at(0), 2);
        b.take(0);
        b.take(0);
        assert_eq!(b.whole_at(0), 0);
        assert_eq!(b.next_token_ms(0), 200);
        assert_eq!(b.whole_at(199), 0);
        assert_eq!(b.whole_at(200), 1);
        // Never more than the burst, however long it rests.
        assert_eq!(b.whole_at(1_000_000), 2);
        assert!(b.is_full_at(1_000_000));
        // Without a burst, starts are spaced evenly: 60 a minute is one a second.
        let per_minute = Rate {
            limit: 60,
            period_s: 60,
            burst: None,
        };
        let mut m = Bucket::full(per_minute, 0);
        assert_eq!(m.whole_at(0), 1);
        m.take(0);
        assert_eq!(m.next_token_ms(0), 1000);
    }
}
