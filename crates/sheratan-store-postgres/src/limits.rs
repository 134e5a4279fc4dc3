//! Queue settings and the limits leasing obeys on a shared database (docs/API.md, "Queue
//! settings").
//!
//! A queue without limits leases on the fast path (`LEASE_JOBS`, one statement). A limited
//! queue leases here, under a transaction-scoped advisory lock of its own, so that hubs take
//! turns: each counts the queue's running jobs (in all and per `concurrency_key`) and its
//! rate buckets with every other hub's leases committed, and no two hubs together pass a
//! limit. The lock is only *tried*: a hub that finds it taken leases nothing from the queue
//! this time and wakes its lessees at the next tick, so no transaction ever waits on
//! another's group (two groups taking two queues' locks in opposite orders cannot deadlock).
//!
//! Each hub knows which queues are limited from a cache re-read at every tick (250 ms), so a
//! settings change reaches the other hubs' leases within a tick.

use std::collections::HashMap;
use std::sync::Arc;

use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_store::LeaseOrder;
use sheratan_store::limits::Bucket;

use crate::conn::Db;

/// The first key of the queues' advisory locks (the second is the queue name's hash).
const QUEUE_LOCK_CLASS: i32 = 0x5348_0003;

/// Candidates read per job a limited lease may hand out (jobs of busy keys are stepped over).
const SCAN_PER_JOB: i64 = 4;
const SCAN_MIN: i64 = 64;
const SCAN_MAX: i64 = 2048;

/// The limited queues' settings, by queue.
pub type LimitedQueues = Arc<HashMap<String, QueueSettings>>;

/// Leases up to `budget` jobs of one limited queue for `order`; the rows as `LEASE_JOBS`
/// returns them. `waiting` is set when jobs were held back (the next tick wakes lessees).
pub async fn lease_limited(
    tx: &Db<'_>,
    queue: &str,
    settings: &QueueSettings,
    order: &LeaseOrder,
    budget: i64,
    now: i64,
    waiting: &mut bool,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
            &[&QUEUE_LOCK_CLASS, &queue],
        )
        .await?
        .get(0);
    if !locked {
        *waiting = true;
        return Ok(Vec::new());
    }
    let mut room = budget;
    if let Some(n) = settings.concurrency {
        let running: i64 = tx
            .query_one(
                "SELECT count(*) FROM jobs WHERE queue = $1 AND status = 1",
                &[&queue],
            )
            .await?
            .get(0);
        room = room.min(i64::from(n) - running);
    }
    let mut queue_bucket = match settings.rate {
        Some(rate) => {
            let b = buckets(tx, queue, &[String::new()], rate, now).await?;
            let b = b.into_values().next().unwrap_or(Bucket::full(rate, now));
            room = room.min(b.whole_at(now) as i64);
            Some(b)
        }
        None => None,
    };
    if room <= 0 {
        *waiting = true;
        return Ok(Vec::new());
    }
    let blocked: Vec<String> = match settings.key_rate {
        Some(rate) => tx
            .query(
                "SELECT key FROM rate_buckets WHERE queue = $1 AND key <> '' \
                 AND tokens + ($2 - at_ms)::FLOAT8 * $3 < 1",
                &[&queue, &now, &rate.per_ms()],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        None => Vec::new(),
    };
    let scan = (room * SCAN_PER_JOB + SCAN_MIN).min(SCAN_MAX);
    let candidates = tx
        .query(
            CANDIDATES,
            &[
                &now,
                &queue,
                &order.capabilities,
                &settings.key_concurrency.map(i64::from),
                &blocked,
                &scan,
            ],
        )
        .await?;
    let mut key_buckets = match settings.key_rate {
        Some(rate) => {
            let mut keys: Vec<String> = candidates
                .iter()
                .filter_map(|r| r.get::<_, Option<String>>(1))
                .collect();
            keys.sort();
            keys.dedup();
            buckets(tx, queue, &keys, rate, now).await?
        }
        None => HashMap::new(),
    };
    let mut started: HashMap<String, i64> = HashMap::new();
    let mut ids: Vec<i64> = Vec::new();
    for c in &candidates {
        if ids.len() as i64 >= room {
            *waiting = true;
            break;
        }
        if let Some(key) = c.get::<_, Option<String>>(1) {
            let running: i64 = c.get(2);
            let already = started.get(&key).copied().unwrap_or(0);
            if settings
                .key_concurrency
                .is_some_and(|n| running + already >= i64::from(n))
            {
                *waiting = true;
                continue;
            }
            if let Some(rate) = settings.key_rate {
                let b = key_buckets
                    .entry(key.clone())
                    .or_insert(Bucket::full(rate, now));
                if b.whole_at(now) == 0 {
                    *waiting = true;
                    continue;
                }
                b.take(now);
            }
            *started.entry(key).or_default() += 1;
        }
        ids.push(c.get(0));
    }
    if !blocked.is_empty() {
        *waiting = true;
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut changed: Vec<(String, Bucket)> = Vec::new();
    if let Some(b) = queue_bucket.as_mut() {
        for _ in &ids {
            b.take(now);
        }
        changed.push((String::new(), *b));
    }
    for key in started.keys() {
        if let Some(b) = key_buckets.get(key) {
            changed.push((key.clone(), *b));
        }
    }
    save_buckets(tx, queue, &changed).await?;
    tx.query(LEASE_IDS, &[&now, &order.node_id, &ids]).await
}

/// Ready jobs of one queue the node may run, in leasing order, with the number of jobs of
/// their key running now; keys at `$4` running jobs and keys in `$5` (no rate token) are
/// left out by the database.
const CANDIDATES: &str = "SELECT j.id, j.concurrency_key, COALESCE(r.n, 0) FROM jobs j \
     LEFT JOIN (SELECT concurrency_key AS k, count(*) AS n FROM jobs \
                WHERE queue = $2 AND status = 1 AND concurrency_key IS NOT NULL \
                GROUP BY concurrency_key) r ON r.k = j.concurrency_key \
     WHERE j.status = 0 AND j.run_at <= $1 AND j.queue = $2 AND j.required_capabilities <@ $3 \
       AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.name = $2 AND q.paused) \
       AND ($4::BIGINT IS NULL OR j.concurrency_key IS NULL OR COALESCE(r.n, 0) < $4) \
       AND (j.concurrency_key IS NULL OR NOT (j.concurrency_key = ANY($5::TEXT[]))) \
     ORDER BY j.priority DESC, j.id LIMIT $6 \
     FOR UPDATE OF j SKIP LOCKED";

/// Leases the chosen jobs; the same columns as `LEASE_JOBS` returns.
const LEASE_IDS: &str = "UPDATE jobs j SET status = 1, attempt = j.attempt + 1, lease_id = gen_random_uuid(), \
        lease_node = $2, lease_expires_at = $1 + j.timeout_s::BIGINT * 1000, updated_at = $1, \
        lease_started_at = $1, progress = NULL \
     WHERE j.id = ANY($3) AND j.status = 0 \
     RETURNING j.job_id, j.lease_id, j.queue, j.kind, j.payload, j.attempt, j.lease_expires_at, j.priority, j.id, j.timeout_s, j.run_at, j.traceparent";

/// The stored buckets of `keys` (a key without a row has a full bucket, left out here).
async fn buckets(
    tx: &Db<'_>,
    queue: &str,
    keys: &[String],
    rate: sheratan_proto::queues::Rate,
    now: i64,
) -> Result<HashMap<String, Bucket>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT key, tokens, at_ms FROM rate_buckets WHERE queue = $1 AND key = ANY($2)",
            &[&queue, &keys],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let at_ms: i64 = r.get(2);
            let bucket = Bucket {
                rate,
                tokens: r.get(1),
                at_ms: at_ms.min(now),
            };
            (r.get::<_, String>(0), bucket)
        })
        .collect())
}

async fn save_buckets(
    tx: &Db<'_>,
    queue: &str,
    changed: &[(String, Bucket)],
) -> Result<(), tokio_postgres::Error> {
    if changed.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = changed.iter().map(|(k, _)| k.as_str()).collect();
    let tokens: Vec<f64> = changed.iter().map(|(_, b)| b.tokens).collect();
    let at: Vec<i64> = changed.iter().map(|(_, b)| b.at_ms).collect();
    tx.execute(
        "INSERT INTO rate_buckets (queue, key, tokens, at_ms) \
         SELECT $1, k, t, a FROM unnest($2::TEXT[], $3::FLOAT8[], $4::BIGINT[]) AS n(k, t, a) \
         ON CONFLICT (queue, key) DO UPDATE SET tokens = EXCLUDED.tokens, at_ms = EXCLUDED.at_ms",
        &[&queue, &keys, &tokens, &at],
    )
    .await?;
    Ok(())
}

/// Every queue's settings, read by [`settings_of`].
pub const SETTINGS: &str = "SELECT name, paused, settings FROM queues ORDER BY name";

/// Rows of [`SETTINGS`] (a row from before settings existed has `paused` only).
pub fn settings_of(rows: &[tokio_postgres::Row]) -> Vec<(String, QueueSettings)> {
    rows.iter()
        .map(|r| {
            let json: Option<String> = r.get(2);
            let mut settings: QueueSettings = json
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            settings.paused = r.get(1);
            (r.get(0), settings)
        })
        .collect()
}

/// The queues whose limits apply at lease time.
pub fn limited_of(all: Vec<(String, QueueSettings)>) -> LimitedQueues {
    Arc::new(
        all.into_iter()
            .filter(|(_, s)| s.limits_leasing())
            .collect(),
    )
}

/// Applies a patch to a queue's settings under its row lock; the validation error of what it
/// would make, or the new settings. A changed rate starts with full buckets.
pub async fn update(
    tx: &Db<'_>,
    queue: &str,
    patch: &QueueSettingsPatch,
) -> Result<Result<QueueSettings, String>, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO queues (name, paused) VALUES ($1, FALSE) ON CONFLICT (name) DO NOTHING",
        &[&queue],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT paused, settings FROM queues WHERE name = $1 FOR UPDATE",
            &[&queue],
        )
        .await?;
    let mut old: QueueSettings = row
        .get::<_, Option<String>>(1)
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    old.paused = row.get(0);
    let new = old.patched(patch);
    if let Err(e) = new.validate() {
        return Ok(Err(e));
    }
    let json = serde_json::to_string(&new).expect("settings serialize");
    tx.execute(
        "UPDATE queues SET paused = $2, settings = $3 WHERE name = $1",
        &[&queue, &new.paused, &json],
    )
    .await?;
    if old.rate != new.rate || old.key_rate != new.key_rate {
        tx.execute("DELETE FROM rate_buckets WHERE queue = $1", &[&queue])
            .await?;
    }
    Ok(Ok(new))
}
