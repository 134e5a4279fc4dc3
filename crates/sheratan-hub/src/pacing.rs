//! Refusal pacing: the hub answers at most `rate` refusals a second (400, 403, 405, 413, 421:
//! requests that are wrong in themselves), with a burst of one second's worth; more refusals
//! wait their turn before their answer goes out.
//!
//! Why: a client hammering the hub with bad tokens or garbage waits for each answer, so
//! slowing the answers slows the flood, and the CPU the flood would have burned stays with the
//! valid traffic (on 2 cores a closed-loop flood otherwise takes every cycle it can get, and
//! valid requests queue behind it). A refusal's own work is done before it waits; waiting costs
//! a sleeping task, and open connections are capped (`max_connections`), so many waiting
//! refusals cannot exhaust memory. Successful requests and the hub's own answers about state
//! (404 of a job, 409, 429, 503) are never paced. The limit is global, not per client: during a
//! flood a valid client's own mistake (a stale token, a bad body) may wait too, up to
//! [`MAX_WAIT`]; its successful requests never do.
//!
//! Only refusals the routers make are paced: a request hyper itself rejects (a broken request
//! line, headers over its limits) gets hyper's 400/431 and a closed connection at once.
//!
//! The limiter is GCRA ("generic cell rate algorithm"): one atomic theoretical arrival time,
//! no lock, no timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A refusal waits at most this long; beyond it the pacer stops pushing the schedule further
/// out. A flood from more connections at once than the rate fills in a second is then answered
/// at up to the rate plus (open connections ÷ this wait) a second.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// The highest rate accepted (one refusal a microsecond); the configuration refuses more.
pub const MAX_RATE: u32 = 1_000_000;

/// Statuses the pacer slows down: the request itself is wrong (bad token, malformed or too
/// large body, wrong method, wrong plane).
pub fn is_refusal(status: u16) -> bool {
    matches!(status, 400 | 403 | 405 | 413 | 421)
}

/// The shared limiter of both planes.
#[derive(Debug)]
pub struct RefusalPacer {
    /// Nanoseconds between refusals at the sustained rate; 0 disables pacing.
    interval_ns: u64,
    /// How far ahead of now the schedule may run before refusals wait (the burst).
    burst_ns: u64,
    max_wait_ns: u64,
    /// Theoretical arrival time of the next refusal, in nanoseconds since `epoch`.
    tat_ns: AtomicU64,
    epoch: Instant,
    /// Refusals that had to wait.
    paced: AtomicU64,
}

impl RefusalPacer {
    /// `per_sec` refusals a second sustained (at most [`MAX_RATE`]), the same number at once;
    /// 0 turns pacing off.
    pub fn new(per_sec: u32) -> Self {
        let per_sec = u64::from(per_sec.min(MAX_RATE));
        let interval_ns = 1_000_000_000u64.checked_div(per_sec).unwrap_or(0);
        Self {
            interval_ns,
            // One second's worth (≤ 10⁹ ns: no overflow).
            burst_ns: interval_ns * per_sec,
            max_wait_ns: u64::try_from(MAX_WAIT.as_nanos()).unwrap_or(u64::MAX),
            tat_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            paced: AtomicU64::new(0),
        }
    }

    /// Whether refusals are paced at all (`SHERATAN_REFUSALS_PER_SEC` is not 0).
    pub fn is_on(&self) -> bool {
        self.interval_ns != 0
    }

    /// How long the refusal being answered now must wait (zero within the rate).
    pub fn delay(&self) -> Duration {
        if !self.is_on() {
            return Duration::ZERO;
        }
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wait = self.delay_at(now);
        if wait > 0 {
            self.paced.fetch_add(1, Ordering::Relaxed);
        }
        Duration::from_nanos(wait)
    }

    /// Refusals that waited since start.
    pub fn paced(&self) -> u64 {
        self.paced.load(Ordering::Relaxed)
    }

    /// GCRA at `now` (nanoseconds since `epoch`): books the next slot and returns the wait.
    fn delay_at(&self, now: u64) -> u64 {
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            // The slot this refusal takes, and the earliest time it may be answered.
            let slot = tat.max(now) + self.interval_ns;
            let wait = (slot - now).saturating_sub(self.burst_ns);
            // Past the longest wait no slot is booked (the schedule does not run away under a
            // flood from more connections than the rate and the wait allow), and nothing is
            // written: the schedule only moves forward, so it would still be too far out.
            if wait > self.max_wait_ns {
                return self.max_wait_ns;
            }
            match self
                .tat_ns
                .compare_exchange_weak(tat, slot, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return wait,
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_of_the_rate_passes_then_refusals_are_spaced() {
        let pacer = RefusalPacer::new(10); // 100 ms apart, burst 10
        let now = 5_000 * MS;
        for _ in 0..10 {
            assert_eq!(pacer.delay_at(now), 0);
        }
        assert_eq!(pacer.delay_at(now), 100 * MS);
        assert_eq!(pacer.delay_at(now), 200 * MS);
        // Time passing frees slots again.
        assert_eq!(pacer.delay_at(now + 300 * MS), 0);
    }

    #[test]
    fn idle_time_refills_the_burst_but_no_more() {
        let pacer = RefusalPacer::new(10);
        for _ in 0..10 {
            assert_eq!(pacer.delay_at(0), 0);
        }
        // Ten seconds of quiet: again ten at once, not a hundred.
        let later = 10_000 * MS;
        for _ in 0..10 {
            assert_eq!(pacer.delay_at(later), 0);
        }
        assert_eq!(pacer.delay_at(later), 100 * MS);
    }

    #[test]
    fn waits_are_capped_and_do_not_push_the_schedule_out() {
        let pacer = RefusalPacer::new(10);
        let now = 60_000 * MS;
        let waits: Vec<u64> = (0..40).map(|_| pacer.delay_at(now)).collect();
        assert!(waits.iter().all(|w| *w <= MAX_WAIT.as_nanos() as u64));
        assert_eq!(waits[19], 1_000 * MS, "the 20th waits the full second");
        assert_eq!(waits[39], 1_000 * MS, "later ones wait no longer");
        // One second on: the booked slots end at now + 2 s (burst + longest wait), so the next
        // refusal waits one interval again.
        assert_eq!(pacer.delay_at(now + 1_000 * MS), 100 * MS);
    }

    #[test]
    fn zero_turns_pacing_off() {
        let pacer = RefusalPacer::new(0);
        for _ in 0..1000 {
            assert_eq!(pacer.delay(), Duration::ZERO);
        }
        assert_eq!(pacer.paced(), 0);
    }

    #[test]
    fn only_requests_wrong_in_themselves_are_refusals() {
        for status in [400, 403, 405, 413, 421] {
            assert!(is_refusal(status), "{status}");
        }
        for status in [200, 202, 204, 404, 409, 429, 500, 503] {
            assert!(!is_refusal(status), "{status}");
        }
    }
}
