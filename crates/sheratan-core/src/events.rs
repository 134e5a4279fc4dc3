//! `GET /api/events`: server-sent events of job and node changes.
//!
//! One poller serves every subscriber: while at least one listens, it reads the hub every
//! `poll_interval` (the newest 200 jobs, the running jobs, jobs it saw unfinished and lost
//! sight of, and the node registry), diffs against what it saw last, and broadcasts the
//! changes. Nothing is polled while nobody listens. A subscriber too slow to keep up gets a
//! `lagged` event and should reload its view.
//!
//! Events: `ready` (on connect), `job` (`{job_id, queue, kind, status, attempt, updated_at,
//! error, node_id}`), `node` (`{node_id, role, status, health, attestation, load}`), `alert` (a new
//! line of `logs/alerts.jsonl`), `hub` (`{reachable}` when Hub Data stops or starts
//! answering), `lagged`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::Value;
use sheratan_client::JobFilter;
use sheratan_proto::control::NodeView;
use sheratan_proto::core_api::{HubEvent, JobEvent, LaggedEvent, NodeEvent, ReadyEvent};
use sheratan_proto::data::{JobStatus, JobView};
use sheratan_proto::event::AlertRecord;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::CoreState;

/// Unfinished jobs followed individually per poll once they leave the listings.
const FOLLOW_PER_POLL: usize = 50;
/// Jobs remembered at most (the oldest finished ones are forgotten first).
const REMEMBER: usize = 5_000;

pub(crate) struct Hub {
    sender: broadcast::Sender<(&'static str, Value)>,
    subscribers: Arc<AtomicUsize>,
    poll_interval: Duration,
    /// When the first of the current subscribers arrived: alerts from then on are news.
    listening_since: std::sync::Mutex<Option<time::OffsetDateTime>>,
}

impl Hub {
    pub(crate) fn new(poll_interval: Duration) -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self {
            sender,
            subscribers: Arc::new(AtomicUsize::new(0)),
            poll_interval,
            listening_since: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    fn listening_since(&self) -> Option<time::OffsetDateTime> {
        *self.listening_since.lock().expect("events lock")
    }
}

/// Counts a subscriber for as long as its stream lives.
struct Subscribed(Arc<AtomicUsize>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn stream(
    State(s): State<Arc<CoreState>>,
    caller: crate::Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // A credential the hub vouched for is asked about again while the stream is open: a
    // revoked one's stream ends within the vouch memory's length.
    let vouched = match caller.credential {
        crate::access::Access::Vouched { token, .. } => Some(token),
        crate::access::Access::Own => None,
    };
    let core = s.clone();
    let receiver = s.events.sender.subscribe();
    if s.events.subscribers.fetch_add(1, Ordering::Relaxed) == 0 {
        *s.events.listening_since.lock().expect("events lock") =
            Some(time::OffsetDateTime::now_utc());
    }
    let guard = Subscribed(s.events.subscribers.clone());
    let ready = Event::default().event("ready").data(
        wire(&ReadyEvent {
            poll_interval_ms: s.events.poll_interval.as_millis() as u64,
        })
        .to_string(),
    );
    let state = (Some(ready), receiver, guard);
    let events = futures_util::stream::unfold(state, move |(first, mut receiver, guard)| {
        let (core, vouched) = (core.clone(), vouched.clone());
        async move {
            if let Some(ready) = first {
                return Some((Ok(ready), (None, receiver, guard)));
            }
            // Asked before each event and every VOUCH_TTL while none comes (the answer is
            // remembered, so a busy stream costs a lookup per event, not a hub call).
            let received = loop {
                if !still_vouched(&core, vouched.as_deref()).await {
                    return None;
                }
                tokio::select! {
                    received = receiver.recv() => break received,
                    () = tokio::time::sleep(sheratan_client::VOUCH_TTL) => {}
                }
            };
            if !still_vouched(&core, vouched.as_deref()).await {
                return None;
            }
            let event = match received {
                Ok((name, data)) => Event::default().event(name).data(data.to_string()),
                Err(broadcast::error::RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(wire(&LaggedEvent { missed }).to_string()),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(event), (None, receiver, guard)))
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Whether a stream's caller may still follow it: Core's own token always; a vouched token
/// while the hub still knows it.
async fn still_vouched(core: &CoreState, token: Option<&str>) -> bool {
    match token {
        None => true,
        Some(token) => matches!(
            core.vouches.check(&core.data, token, None).await,
            Ok(Some(_))
        ),
    }
}

/// An event's data: its wire type as JSON (kept as a value to compare with what was sent).
fn wire<T: serde::Serialize>(event: &T) -> Value {
    serde_json::to_value(event).unwrap_or_default()
}

fn job_event(j: &JobView) -> Value {
    wire(&JobEvent {
        job_id: j.job_id.clone(),
        queue: j.queue.clone(),
        kind: j.kind.clone(),
        status: j.status,
        attempt: j.attempt,
        updated_at: (j.updated_at.unix_timestamp_nanos() / 1_000_000) as i64,
        error: j.error.clone(),
        node_id: j.node_id.clone(),
        run_at: (j.status == JobStatus::Accepted && j.run_at > time::OffsetDateTime::now_utc())
            .then_some(j.run_at),
    })
}

fn node_event(n: &NodeView) -> Value {
    wire(&NodeEvent {
        node_id: n.node_id.clone(),
        role: n.role,
        status: n.status,
        health: n.health,
        attestation: n.attestation,
        load: n.load,
    })
}

/// What the poller saw last.
#[derive(Default)]
struct Seen {
    /// job id → (what was sent, finished?, poll it was last seen in).
    jobs: HashMap<String, (Value, bool, u64)>,
    /// job id → when its last progress event's progress was reported.
    progress: HashMap<String, time::OffsetDateTime>,
    nodes: HashMap<String, Value>,
    hub_reachable: Option<bool>,
    /// The newest alert line seen; `None` before the first look since somebody listens.
    last_alert: Option<Option<AlertRecord>>,
}

pub(crate) async fn poll(s: Arc<CoreState>, shutdown: CancellationToken) {
    let mut seen = Seen::default();
    let mut round = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(s.events.poll_interval) => {}
        }
        if s.events.subscribers() == 0 {
            // Alerts raised while nobody listens are no news to the next subscriber (the
            // Security view lists them): look again from the end of the file, or every
            // sign-in would replay them as fresh toasts.
            seen.last_alert = None;
            continue;
        }
        round += 1;
        poll_once(&s, &mut seen, round).await;
    }
}

async fn poll_once(s: &CoreState, seen: &mut Seen, round: u64) {
    let send = |name: &'static str, v: Value| {
        let _ = s.events.sender.send((name, v));
    };
    let recent = s
        .data
        .jobs(&JobFilter {
            limit: Some(200),
            ..Default::default()
        })
        .await;
    let reachable = recent.is_ok();
    if seen.hub_reachable != Some(reachable) {
        if seen.hub_reachable.is_some() {
            send("hub", wire(&HubEvent { reachable }));
        }
        seen.hub_reachable = Some(reachable);
    }
    if let Ok(recent) = recent {
        let jobs = jobs_to_compare(s, seen, recent.jobs).await;
        for job in &jobs {
            if let Some(p) = &job.progress
                && seen.progress.get(&job.job_id) != Some(&p.updated_at)
            {
                seen.progress.insert(job.job_id.clone(), p.updated_at);
                send(
                    "progress",
                    wire(&sheratan_proto::core_api::ProgressEvent {
                        job_id: job.job_id.clone(),
                        progress: p.clone(),
                    }),
                );
            }
            let event = job_event(job);
            let finished = job.status.is_terminal();
            match seen.jobs.get_mut(&job.job_id) {
                Some(entry) if entry.0 == event => entry.2 = round,
                _ => {
                    send("job", event.clone());
                    seen.jobs
                        .insert(job.job_id.clone(), (event, finished, round));
                }
            }
        }
        seen.forget_old_jobs();
    }
    for alert in new_alerts(s, seen).await {
        send("alert", wire(&alert));
    }
    if let Ok(nodes) = s.control.nodes(None, None).await {
        for node in &nodes {
            let event = node_event(node);
            if seen.nodes.get(&node.node_id) != Some(&event) {
                send("node", event.clone());
                seen.nodes.insert(node.node_id.clone(), event);
            }
        }
    }
}

/// The recent jobs, the running ones, and (a few per poll) unfinished jobs that left both
/// listings, asked for one by one; a job that is gone (purged) is no longer followed.
async fn jobs_to_compare(s: &CoreState, seen: &mut Seen, mut jobs: Vec<JobView>) -> Vec<JobView> {
    let running = s
        .data
        .jobs(&JobFilter {
            status: Some(JobStatus::InProgress),
            limit: Some(200),
            ..Default::default()
        })
        .await
        .map(|l| l.jobs)
        .unwrap_or_default();
    jobs.extend(running);
    let listed: std::collections::HashSet<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    let lost: Vec<String> = seen
        .jobs
        .iter()
        .filter(|(id, (_, finished, _))| !finished && !listed.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .take(FOLLOW_PER_POLL)
        .collect();
    for id in lost {
        match s.data.job(&id).await {
            Ok(job) => jobs.push(job),
            Err(_) => {
                seen.jobs.remove(&id);
            }
        }
    }
    jobs
}

/// Alerts written since the last look; at the first look since somebody listens, those
/// written since they arrived (older ones are not replayed).
async fn new_alerts(s: &CoreState, seen: &mut Seen) -> Vec<AlertRecord> {
    let path = s
        .config
        .home
        .join("logs")
        .join(sheratan_proto::event::ALERTS_FILE);
    let Ok(Ok(mut alerts)) =
        tokio::task::spawn_blocking(move || crate::tail::jsonl::<AlertRecord>(&path, 50)).await
    else {
        return Vec::new();
    };
    let last = seen.last_alert.replace(alerts.last().cloned());
    let start = match last {
        // The first look since somebody listens: only what arrived after they did.
        None => s.events.listening_since().map_or(alerts.len(), |since| {
            alerts
                .iter()
                .position(|a| a.ts >= since)
                .unwrap_or(alerts.len())
        }),
        Some(None) => 0,
        Some(Some(last)) => alerts.iter().rposition(|a| *a == last).map_or(0, |i| i + 1),
    };
    alerts.split_off(start)
}

impl Seen {
    /// Past `REMEMBER` jobs, forgets the finished jobs seen longest ago.
    fn forget_old_jobs(&mut self) {
        if self.jobs.len() <= REMEMBER {
            return;
        }
        let mut finished: Vec<(u64, String)> = self
            .jobs
            .iter()
            .filter(|(_, (_, f, _))| *f)
            .map(|(id, (_, _, r))| (*r, id.clone()))
            .collect();
        finished.sort();
        let excess = self.jobs.len() - REMEMBER;
        for (_, id) in finished.into_iter().take(excess) {
            self.jobs.remove(&id);
            self.progress.remove(&id);
        }
    }
}
