//! The broker's counters and its bid-latency histogram, and their exposition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sheratan_proto::auction::BidRecord;
use sheratan_runtime::metrics::{Family, Kind};

/// Upper bounds (ms) of the bid-latency histogram.
const LATENCY_BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
];

#[derive(Default)]
pub(super) struct BrokerMetrics {
    /// By final outcome of a job's auction on one attempt.
    auctions: Mutex<BTreeMap<&'static str, u64>>,
    rounds: AtomicU64,
    /// By answer: accept, decline, no_answer.
    bids: Mutex<BTreeMap<&'static str, u64>>,
    wins: Mutex<BTreeMap<String, u64>>,
    bid_latency_buckets: Mutex<[u64; LATENCY_BUCKETS_MS.len()]>,
    bid_latency_sum_ms: Mutex<f64>,
    bid_latency_count: AtomicU64,
}

impl BrokerMetrics {
    pub(super) fn auction(&self, outcome: &'static str) {
        *self
            .auctions
            .lock()
            .expect("metrics lock")
            .entry(outcome)
            .or_default() += 1;
    }

    pub(super) fn round(&self, bids: &[BidRecord], winner: Option<&str>, bid_ms: f64) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        {
            let mut counts = self.bids.lock().expect("metrics lock");
            for b in bids {
                let answer = if b.accept {
                    "accept"
                } else if b.reason.starts_with("no answer") || b.reason.starts_with("bid failed") {
                    "no_answer"
                } else {
                    "decline"
                };
                *counts.entry(answer).or_default() += 1;
            }
        }
        if let Some(w) = winner {
            *self
                .wins
                .lock()
                .expect("metrics lock")
                .entry(w.to_owned())
                .or_default() += 1;
        }
        let mut buckets = self.bid_latency_buckets.lock().expect("metrics lock");
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if bid_ms <= *le {
                buckets[i] += 1;
            }
        }
        *self.bid_latency_sum_ms.lock().expect("metrics lock") += bid_ms;
        self.bid_latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// What `/metrics` shows; `inflight` is the auctions running now.
    pub(super) fn families(&self, inflight: u32) -> Vec<Family> {
        let counted = |map: &Mutex<BTreeMap<&'static str, u64>>, name, help, label| {
            let map = map.lock().expect("metrics lock");
            map.iter()
                .fold(Family::new(name, help, Kind::Counter), |f, (k, v)| {
                    f.value(vec![(label, (*k).to_owned())], *v as f64)
                })
        };
        let wins = self.wins.lock().expect("metrics lock").iter().fold(
            Family::new(
                "sheratan_broker_wins_total",
                "Auctions won, by host.",
                Kind::Counter,
            ),
            |f, (node, n)| f.value(vec![("node_id", node.clone())], *n as f64),
        );
        vec![
            counted(
                &self.auctions,
                "sheratan_broker_auctions_total",
                "Auctions (one per job attempt), by outcome.",
                "outcome",
            ),
            Family::new(
                "sheratan_broker_rounds_total",
                "Auction rounds.",
                Kind::Counter,
            )
            .value(vec![], self.rounds.load(Ordering::Relaxed) as f64),
            counted(
                &self.bids,
                "sheratan_broker_bids_total",
                "Bids asked for, by answer.",
                "answer",
            ),
            wins,
            Family::new(
                "sheratan_broker_inflight",
                "Auctions running now.",
                Kind::Gauge,
            )
            .value(vec![], f64::from(inflight)),
            self.latency_histogram(),
        ]
    }

    fn latency_histogram(&self) -> Family {
        let buckets: Vec<(f64, u64)> = {
            let counts = self.bid_latency_buckets.lock().expect("metrics lock");
            LATENCY_BUCKETS_MS
                .iter()
                .zip(counts.iter())
                .map(|(le, n)| (le / 1000.0, *n))
                .collect()
        };
        Family::histogram(
            "sheratan_broker_bid_round_seconds",
            "Time from the first bid request to the award: the latency an auction adds.",
            &buckets,
            *self.bid_latency_sum_ms.lock().expect("metrics lock") / 1000.0,
            self.bid_latency_count.load(Ordering::Relaxed),
        )
    }
}
