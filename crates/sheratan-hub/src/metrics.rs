//! The hub's metrics: the families `/metrics` shows (gathered from where the values live:
//! the registry, the token authority, the audit log, the listeners, the store), and the
//! one-minute windows behind the `_1m` values. The exposition (Prometheus text, the JSON
//! view) is `sheratan_runtime::metrics`, shared with every component.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use sheratan_proto::{EventKind, Plane};
use sheratan_runtime::metrics::{Family, Kind};

use crate::HubState;

impl HubState {
    /// All metrics of the hub, gathered now; the data plane adds the jobs'.
    pub fn metric_families(&self, plane: Plane) -> Vec<Family> {
        let mut families = self.security_families();
        families.push(self.connection_family());
        families.push(self.forbidden_family());
        families.extend(self.registry_families());
        let spans = self.config.tracer.counts();
        families.push(Family::trace_spans(spans.exported(), spans.dropped()));
        families.push(Family::by_label(
            "sheratan_http_request_duration_seconds",
            "Requests to this hub (both planes), from routing to the answer, by route (long polls included: see sheratan_lease_wait_seconds).",
            "route",
            &self.jobs.http.0,
        ));
        if plane == Plane::Data {
            families.extend(self.data_families());
            families.extend(self.latency_families());
        }
        families
    }

    /// The data plane's histograms: the jobs' latencies and the store's group commits as the
    /// store measured them, and lease calls' waits. Series by queue are capped (64 queues,
    /// then `_other`), so a scrape costs the same with a hundred jobs or a million.
    fn latency_families(&self) -> Vec<Family> {
        let t = self.store.timings();
        let snapshot = |h: &sheratan_histogram::Histogram| vec![(Vec::new(), h.snapshot())];
        vec![
            Family::by_label(
                "sheratan_job_queue_wait_seconds",
                "From when a job was due (accepted, its run_at, or its retry's) to its lease, by queue.",
                "queue",
                &t.queue_wait,
            ),
            Family::by_label(
                "sheratan_job_run_seconds",
                "From a lease's start to its result, by queue (the attempt's run, as the node reported it).",
                "queue",
                &t.run,
            ),
            Family::by_label(
                "sheratan_job_end_to_end_seconds",
                "From acceptance to the job's end (completed, or failed for good), by queue.",
                "queue",
                &t.end_to_end,
            ),
            Family::by_label(
                "sheratan_stream_frame_duration_seconds",
                "Worker stream frames (GET /v1/stream), from the end of their checks (parse, signature) to their answer (after the commit), by frame: result, extend, progress, submit.",
                "frame",
                &self.jobs.stream_frames.0,
            ),
            Family::by_label(
                "sheratan_lease_wait_seconds",
                "How long lease calls waited on this hub, by outcome (jobs: got some; empty: waited out).",
                "outcome",
                &self.jobs.lease_wait.0,
            ),
            Family::histograms(
                "sheratan_store_group_ops",
                "Operations the job store applied in one group commit.",
                snapshot(&t.group_ops),
            ),
            Family::histograms(
                "sheratan_store_group_commit_seconds",
                "A group commit of the job store, from its first operation to its commit.",
                snapshot(&t.group_commit),
            ),
            Family::histograms(
                "sheratan_store_wal_pause_seconds",
                "The SQLite job store's writer paused for a checkpoint that lets its WAL start again (about every 32 MiB of WAL under load).",
                snapshot(&t.wal_pause),
            ),
        ]
    }

    /// Authentication, the audit log and the refusal pacer.
    fn security_families(&self) -> Vec<Family> {
        let (old_token, invalid) = self.tokens.failures_last_minute();
        let events = EventKind::ALL.iter().fold(
            Family::new(
                "sheratan_security_events_total",
                "Security and operations events emitted, by event.",
                Kind::Counter,
            ),
            |f, kind| {
                f.sample(
                    vec![("event", kind.as_str().to_owned())],
                    self.audit.count(*kind) as f64,
                    format!("events.{}", kind.as_str().to_ascii_lowercase()),
                )
            },
        );
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        vec![
            Family::new(
                "sheratan_auth_failures_1m",
                "Failed authentications in the last 60 seconds, by reason.",
                Kind::Gauge,
            )
            .sample(
                vec![("reason", "old_token".into())],
                old_token as f64,
                "auth_failure.old_token_1m",
            )
            .sample(
                vec![("reason", "invalid".into())],
                invalid as f64,
                "auth_failure.invalid_1m",
            ),
            events,
            Family::single(
                "sheratan_audit_events_dropped_total",
                "Events that did not reach the audit log because its queue was full.",
                Kind::Counter,
                "audit.dropped",
                self.audit.dropped() as f64,
            ),
            Family::single(
                "sheratan_refusals_paced_total",
                "Refused requests (400, 403, 405, 413, 421) whose answer waited for the refusal pacer.",
                Kind::Counter,
                "refusals.paced",
                self.refusals.paced() as f64,
            ),
            Family::single(
                "sheratan_worker_streams",
                "Worker streams (GET /v1/stream) open now.",
                Kind::Gauge,
                "streams.open",
                self.jobs.streams.load(Ordering::Relaxed) as f64,
            ),
            Family::single(
                "sheratan_stream_frames_refused_total",
                "Worker stream frames answered with an error frame for being wrong in themselves (unreadable, too large, a lease the stream does not hold, a bad signature, more jobs than max_jobs).",
                Kind::Counter,
                "streams.refused",
                self.jobs.stream_refusals.load(Ordering::Relaxed) as f64,
            ),
            Family::single(
                "sheratan_token_rotation_active",
                "1 while a token rotation accepts two tokens.",
                Kind::Gauge,
                "token.rotation_active",
                flag(self.tokens.rotation_status().active),
            ),
            Family::single(
                "sheratan_auth_required",
                "0 when authentication is disabled (SHERATAN_HUB_TOKEN_REQUIRED=0).",
                Kind::Gauge,
                "auth.required",
                flag(self.tokens.required()),
            ),
        ]
    }

    /// Requests a credential's role did not allow (403 FORBIDDEN), by role.
    fn forbidden_family(&self) -> Family {
        crate::credentials::RoleRefusals::ROLES.iter().fold(
            Family::new(
                "sheratan_forbidden_total",
                "Requests refused 403 FORBIDDEN because the credential's role does not allow them, by role.",
                Kind::Counter,
            ),
            |family, role| {
                family.sample(
                    vec![("role", role.as_str().to_owned())],
                    self.role_refusals.get(*role) as f64,
                    format!("forbidden.{role}"),
                )
            },
        )
    }

    /// Connections the listeners closed without serving them, by plane and reason.
    fn connection_family(&self) -> Family {
        let mut family = Family::new(
            "sheratan_connections_closed_total",
            "Connections closed without a request: at the listener's cap, at a source's cap (SHERATAN_MAX_CONN_PER_IP), at the request-head deadline, at a failed TLS handshake, or for speaking plain HTTP to a TLS port.",
            Kind::Counter,
        );
        for (plane, stats) in [
            ("control", &self.serve_stats[0]),
            ("data", &self.serve_stats[1]),
        ] {
            for (reason, counter) in [
                ("listener_cap", &stats.refused),
                ("source_cap", &stats.refused_per_source),
                ("deadline", &stats.timed_out),
                ("tls_handshake", &stats.tls_failed),
                ("plain_http", &stats.plain_http),
            ] {
                family = family.sample(
                    vec![("plane", plane.to_owned()), ("reason", reason.to_owned())],
                    counter.load(Ordering::Relaxed) as f64,
                    format!("connections.{plane}.{reason}"),
                );
            }
        }
        family
    }

    /// The node registry: nodes by status, heartbeats, and its snapshot writes.
    fn registry_families(&self) -> Vec<Family> {
        let [online, stale, dead] = self.registry.counts();
        let snapshot = self.registry.snapshot_stats();
        vec![
            Family::new("sheratan_nodes", "Registered nodes by status.", Kind::Gauge)
                .sample(
                    vec![("status", "online".into())],
                    online as f64,
                    "nodes.online",
                )
                .sample(
                    vec![("status", "stale".into())],
                    stale as f64,
                    "nodes.stale",
                )
                .sample(vec![("status", "dead".into())], dead as f64, "nodes.dead"),
            Family::single(
                "sheratan_heartbeats_total",
                "Heartbeats accepted.",
                Kind::Counter,
                "heartbeats.total",
                self.registry.heartbeats() as f64,
            ),
            Family::single(
                "sheratan_registry_snapshots_total",
                "Registry snapshots written.",
                Kind::Counter,
                "registry.snapshots",
                snapshot.writes as f64,
            ),
            Family::single(
                "sheratan_registry_snapshot_failures_total",
                "Registry snapshot writes that failed.",
                Kind::Counter,
                "registry.snapshot_failures",
                snapshot.failures as f64,
            ),
            Family::single(
                "sheratan_registry_snapshot_seconds",
                "Duration of the last registry snapshot write.",
                Kind::Gauge,
                "registry.snapshot_seconds",
                snapshot.last_duration.as_secs_f64(),
            ),
            Family::single(
                "sheratan_registry_snapshot_last_start_timestamp_seconds",
                "When the last registry snapshot write started (Unix seconds).",
                Kind::Gauge,
                "registry.snapshot_last_start_unix_s",
                snapshot.last_started_unix_s,
            ),
            Family::single(
                "sheratan_registry_snapshot_bytes",
                "Size of the last registry snapshot.",
                Kind::Gauge,
                "registry.snapshot_bytes",
                snapshot.last_bytes as f64,
            ),
        ]
    }

    /// The data plane's gauges and counters.
    fn data_families(&self) -> Vec<Family> {
        let counts = self.store.counts();
        let mut depth = Family::new(
            "sheratan_queue_depth",
            "Accepted (not yet leased) jobs, by queue.",
            Kind::Gauge,
        );
        for (queue, n) in &counts.queue_depth {
            depth = depth.sample(
                vec![("queue", queue.clone())],
                *n as f64,
                format!("queue_depth.{queue}"),
            );
        }
        vec![
            depth,
            Family::single(
                "sheratan_queue_depth_total",
                "Accepted jobs, all queues (the backpressure limit applies to this).",
                Kind::Gauge,
                "queue_depth_total",
                counts.total_depth() as f64,
            ),
            Family::single(
                "sheratan_inflight",
                "Leased jobs not yet finished.",
                Kind::Gauge,
                "inflight",
                counts.inflight as f64,
            ),
            Family::single(
                "sheratan_results_pending",
                "Finished jobs whose submitter follows the result (follow_result, the data plane's default) and has not acknowledged it.",
                Kind::Gauge,
                "results_pending",
                counts.results_pending as f64,
            ),
            self.jobs.families(),
            Family::single(
                "sheratan_jobs_purged_total",
                "Finished jobs deleted by retention (SHERATAN_RETENTION, queues' retention settings) on this hub.",
                Kind::Counter,
                "jobs_purged",
                self.retention.purged.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ),
        ]
        .into_iter()
        .chain(self.schedules.metrics.families())
        .collect()
    }
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
    fn minute_window_counts() {
        let w = MinuteWindow::default();
        for _ in 0..5 {
            w.record();
        }
        assert_eq!(w.total(), 5);
    }
}
