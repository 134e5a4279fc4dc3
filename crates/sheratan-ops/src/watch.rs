//! `sheratan audit-watch`: follows the hub's security audit log and raises alerts on bursts.
//!
//! The follower survives the log's size rotation (it finishes the renamed file before moving
//! to the new one) and truncation, and it remembers where it was (file identity, offset, rule
//! windows and cooldowns) in `logs/audit-watch.state`, so a restarted watcher neither repeats
//! nor skips alerts. Counts include folded repeats (`count`).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sheratan_proto::event::{ALERTS_FILE, AUDIT_LOG_FILE};
use sheratan_proto::{AuditRecord, EventKind};
use tokio_util::sync::CancellationToken;

/// One alerting rule: `threshold` occurrences of `event` within `window`, counted per source
/// (the peer address, or the node for node events) or hub-wide.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rule {
    pub name: String,
    pub event: EventKind,
    pub threshold: u64,
    pub window_s: u64,
    pub per_source: bool,
}

/// Thresholds and windows of the default rules (docs/API.md, "Events and logs"), each settable by flag and env.
#[derive(Debug, Clone, clap::Args)]
pub struct RuleArgs {
    /// AUTH_FAIL from one source within the window that raise an alert.
    #[arg(long, env = "SHERATAN_ALERT_AUTH_FAIL_THRESHOLD", default_value_t = 10)]
    pub auth_fail_threshold: u64,
    #[arg(
        long,
        env = "SHERATAN_ALERT_AUTH_FAIL_WINDOW_SEC",
        default_value_t = 60
    )]
    pub auth_fail_window_sec: u64,
    /// PORT_MISMATCH from one source within the window that raise an alert.
    #[arg(
        long,
        env = "SHERATAN_ALERT_PORT_MISMATCH_THRESHOLD",
        default_value_t = 5
    )]
    pub port_mismatch_threshold: u64,
    #[arg(
        long,
        env = "SHERATAN_ALERT_PORT_MISMATCH_WINDOW_SEC",
        default_value_t = 60
    )]
    pub port_mismatch_window_sec: u64,
    /// BACKPRESSURE_DROP (hub-wide) within the window that raise an alert.
    #[arg(
        long,
        env = "SHERATAN_ALERT_BACKPRESSURE_THRESHOLD",
        default_value_t = 100
    )]
    pub backpressure_threshold: u64,
    #[arg(
        long,
        env = "SHERATAN_ALERT_BACKPRESSURE_WINDOW_SEC",
        default_value_t = 60
    )]
    pub backpressure_window_sec: u64,
    /// After an alert, the same rule and source stay quiet this long.
    #[arg(long, env = "SHERATAN_ALERT_COOLDOWN_SEC", default_value_t = 300)]
    pub cooldown_sec: u64,
}

impl RuleArgs {
    pub fn rules(&self) -> Vec<Rule> {
        let rule = |name: &str, event, threshold, window_s, per_source| Rule {
            name: name.into(),
            event,
            threshold,
            window_s,
            per_source,
        };
        vec![
            rule(
                "auth_fail_burst",
                EventKind::AuthFail,
                self.auth_fail_threshold,
                self.auth_fail_window_sec,
                true,
            ),
            rule(
                "port_mismatch_burst",
                EventKind::PortMismatch,
                self.port_mismatch_threshold,
                self.port_mismatch_window_sec,
                true,
            ),
            rule(
                "result_integrity_fail",
                EventKind::ResultIntegrityFail,
                1,
                60,
                true,
            ),
            rule(
                "attestation_spoof_suspect",
                EventKind::AttestationSpoofSuspect,
                1,
                60,
                true,
            ),
            rule("node_dead", EventKind::NodeDead, 1, 60, true),
            // A late worker now and then is normal; a burst from one source is someone
            // trying lease ids.
            rule(
                "lease_mismatch_burst",
                EventKind::LeaseMismatch,
                10,
                60,
                true,
            ),
            rule(
                "sustained_backpressure",
                EventKind::BackpressureDrop,
                self.backpressure_threshold,
                self.backpressure_window_sec,
                false,
            ),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// `$SHERATAN_HOME/logs`.
    pub log_dir: PathBuf,
    pub rules: Vec<Rule>,
    pub cooldown: Duration,
    /// Each alert is also POSTed here as JSON.
    pub webhook: Option<String>,
    pub poll: Duration,
}

impl WatchConfig {
    pub fn new(log_dir: PathBuf, rules: &RuleArgs) -> Self {
        Self {
            log_dir,
            rules: rules.rules(),
            cooldown: Duration::from_secs(rules.cooldown_sec),
            webhook: None,
            poll: Duration::from_millis(250),
        }
    }
}

/// An alert: one line of `logs/alerts.jsonl` and the body of a webhook call.
pub use sheratan_proto::event::AlertRecord as Alert;

/// Where the follower is, and what the rules remember; saved after every batch of lines.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Identity of the file being read: (device, inode).
    file: Option<(u64, u64)>,
    offset: u64,
    /// Per "rule|source": recent (unix seconds, count) within the rule's window.
    windows: BTreeMap<String, VecDeque<(i64, u64)>>,
    /// Per "rule|source": unix seconds until which it stays quiet.
    cooldowns: BTreeMap<String, i64>,
}

const STATE_FILE: &str = "audit-watch.state";
/// Held (an exclusive `flock`) by the one watcher of a log directory, with its PID inside.
const LOCK_FILE: &str = "audit-watch.lock";

/// Another watcher already follows this log directory: a second one would write every alert
/// twice.
#[derive(Debug, thiserror::Error)]
#[error(
    "another audit watcher ({holder}) already follows {dir}: every alert would be written twice. `sheratan up` runs one already; stop the other watcher first if you want this one"
)]
pub struct AlreadyWatched {
    pub dir: String,
    pub holder: String,
}

/// Takes the directory's watcher lock, or says who holds it.
fn lock(log_dir: &Path) -> anyhow::Result<File> {
    let path = log_dir.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            write!(file, "{}", std::process::id())?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            let holder = match pid.trim() {
                "" => "a process".to_owned(),
                pid => format!("pid {pid}"),
            };
            Err(AlreadyWatched {
                dir: log_dir.display().to_string(),
                holder,
            }
            .into())
        }
        Err(fs::TryLockError::Error(err)) => Err(err.into()),
    }
}

/// The follower and rule engine, testable without a runtime: [`Watcher::poll`] reads what is
/// new and returns the alerts it raised (already appended to `alerts.jsonl`).
pub struct Watcher {
    /// The directory's watcher lock, held while this watcher lives.
    _lock: File,
    config: WatchConfig,
    state: State,
    reader: Option<BufReader<File>>,
    partial: String,
}

impl Watcher {
    /// Opens the watcher of `config.log_dir`; [`AlreadyWatched`] when another one runs.
    pub fn open(config: WatchConfig) -> anyhow::Result<Watcher> {
        fs::create_dir_all(&config.log_dir)?;
        let lock = lock(&config.log_dir)?;
        let state = fs::read(config.log_dir.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut w = Watcher {
            _lock: lock,
            config,
            state,
            reader: None,
            partial: String::new(),
        };
        w.resume()?;
        Ok(w)
    }

    fn log_path(&self) -> PathBuf {
        self.config.log_dir.join(AUDIT_LOG_FILE)
    }

    fn rotated(&self, n: usize) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.log_path().display()))
    }

    /// Reopens where the saved state says: the same file if it is still the live log, or the
    /// rotated file that now has that identity (its rest is read before the live log).
    fn resume(&mut self) -> std::io::Result<()> {
        let Some(id) = self.state.file else {
            return Ok(());
        };
        let candidates = std::iter::once(self.log_path()).chain((1..=20).map(|n| self.rotated(n)));
        for path in candidates {
            if let Ok(file) = File::open(&path) {
                let meta = file.metadata()?;
                if (meta.dev(), meta.ino()) == id {
                    let mut reader = BufReader::new(file);
                    let offset = self.state.offset.min(meta.len());
                    reader.seek(SeekFrom::Start(offset))?;
                    self.state.offset = offset;
                    self.reader = Some(reader);
                    return Ok(());
                }
            }
        }
        // The file is gone (rotated past the kept ones): start at the live log's beginning.
        self.state.file = None;
        self.state.offset = 0;
        Ok(())
    }

    /// Reads everything new, applies the rules, writes alerts; returns them.
    pub fn poll(&mut self) -> std::io::Result<Vec<Alert>> {
        let mut alerts = Vec::new();
        loop {
            if self.reader.is_none() && !self.open_live()? {
                break;
            }
            let mut lines = Vec::new();
            {
                let reader = self.reader.as_mut().expect("opened above");
                // Truncated under us (the offset is past the end): start over.
                let len = reader.get_ref().metadata()?.len();
                if len < self.state.offset {
                    reader.seek(SeekFrom::Start(0))?;
                    self.state.offset = 0;
                    self.partial.clear();
                }
                loop {
                    let n = reader.read_line(&mut self.partial)?;
                    if n == 0 {
                        break;
                    }
                    if self.partial.ends_with('\n') {
                        let raw = std::mem::take(&mut self.partial);
                        self.state.offset += raw.len() as u64;
                        lines.push(raw.trim_end().to_owned());
                    }
                    // Otherwise a line is being written right now: it stays in `partial`
                    // (not counted in the offset) until its newline arrives.
                }
            }
            for line in lines {
                if let Ok(record) = serde_json::from_str::<AuditRecord>(&line) {
                    alerts.extend(self.apply(&record));
                }
            }
            // Rotated away? Finish this file (done above), then move to the live one.
            let live_id = fs::metadata(self.log_path())
                .ok()
                .map(|m| (m.dev(), m.ino()));
            if live_id.is_some() && live_id != self.state.file {
                self.reader = None;
                self.partial.clear();
                self.state.file = None;
                self.state.offset = 0;
                continue;
            }
            break;
        }
        if !alerts.is_empty() {
            self.append_alerts(&alerts)?;
        }
        self.save()?;
        Ok(alerts)
    }

    fn open_live(&mut self) -> std::io::Result<bool> {
        let Ok(file) = File::open(self.log_path()) else {
            return Ok(false);
        };
        let meta = file.metadata()?;
        self.state.file = Some((meta.dev(), meta.ino()));
        self.state.offset = 0;
        self.reader = Some(BufReader::new(file));
        Ok(true)
    }

    fn apply(&mut self, record: &AuditRecord) -> Vec<Alert> {
        let mut alerts = Vec::new();
        // What a verified `sheratan smoke` probe provoked (the hub checked the probe's MAC
        // against its token): recorded in the log, never an alert for the operator who ran
        // the checklist.
        if record.probe.is_some() {
            return alerts;
        }
        let now = record.ts.unix_timestamp();
        for rule in self.config.rules.iter().filter(|r| r.event == record.event) {
            let source = if rule.per_source {
                record
                    .node_id
                    .clone()
                    .filter(|_| {
                        matches!(
                            record.event,
                            EventKind::NodeDead | EventKind::AttestationSpoofSuspect
                        )
                    })
                    .or_else(|| record.remote_addr.clone())
                    .or_else(|| record.node_id.clone())
                    .unwrap_or_else(|| "*".into())
            } else {
                "*".into()
            };
            let key = format!("{}|{source}", rule.name);
            let window = self.state.windows.entry(key.clone()).or_default();
            window.push_back((now, record.count));
            while window
                .front()
                .is_some_and(|(t, _)| now - t >= rule.window_s as i64)
            {
                window.pop_front();
            }
            let total: u64 = window.iter().map(|(_, n)| n).sum();
            if total < rule.threshold {
                continue;
            }
            if self
                .state
                .cooldowns
                .get(&key)
                .is_some_and(|until| now < *until)
            {
                continue;
            }
            self.state
                .cooldowns
                .insert(key.clone(), now + self.config.cooldown.as_secs() as i64);
            window.clear();
            alerts.push(Alert {
                ts: record.ts,
                rule: rule.name.clone(),
                event: record.event,
                severity: record.event.severity(),
                source: source.clone(),
                count: total,
                window_s: rule.window_s,
                message: format!(
                    "{} × {} from {source} within {} s (threshold {}){}",
                    total,
                    record.event,
                    rule.window_s,
                    rule.threshold,
                    record
                        .credential
                        .as_ref()
                        .map(|c| format!(", the last by {c}"))
                        .unwrap_or_default()
                ),
                detail: record.detail.clone(),
                credential: record.credential.clone(),
            });
        }
        // Forget quiet keys so the state stays small.
        let horizon = now - 3600;
        self.state
            .windows
            .retain(|_, w| w.back().is_some_and(|(t, _)| *t > horizon));
        self.state.cooldowns.retain(|_, until| *until > now);
        alerts
    }

    fn append_alerts(&self, alerts: &[Alert]) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.log_dir.join(ALERTS_FILE))?;
        let mut buf = Vec::new();
        for alert in alerts {
            serde_json::to_writer(&mut buf, alert).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        file.write_all(&buf)?;
        file.sync_data()
    }

    fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.state).map_err(std::io::Error::other)?;
        let path = self.config.log_dir.join(STATE_FILE);
        let tmp = path.with_extension("state.tmp");
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &path)
    }
}

/// Runs the watcher until `shutdown`, posting each alert to the webhook if one is set.
pub async fn run(config: WatchConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let watcher = tokio::task::spawn_blocking(move || Watcher::open(config)).await??;
    follow(watcher, shutdown).await
}

/// Runs an opened watcher (it holds the directory's lock already) until `shutdown`.
pub async fn follow(mut watcher: Watcher, shutdown: CancellationToken) -> anyhow::Result<()> {
    let poll = watcher.config.poll;
    let webhook = watcher.config.webhook.clone();
    let http = sheratan_client::http_client_builder()?
        .timeout(Duration::from_secs(5))
        .build()?;
    tracing::info!("audit watcher following the security audit log");
    loop {
        let (w, polled) = tokio::task::spawn_blocking(move || {
            let polled = watcher.poll();
            (watcher, polled)
        })
        .await?;
        watcher = w;
        match polled {
            Ok(alerts) => {
                for alert in alerts {
                    tracing::warn!(rule = %alert.rule, source = %alert.source, "ALERT: {}", alert.message);
                    if let Some(url) = &webhook {
                        match http.post(url).json(&alert).send().await {
                            Ok(r) if r.status().is_success() => {}
                            Ok(r) => {
                                tracing::warn!(status = %r.status(), "the alert webhook refused an alert")
                            }
                            Err(err) => tracing::warn!(%err, "cannot reach the alert webhook"),
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the audit log; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Reads `alerts.jsonl` (for tests and `diagnose`).
pub fn read_alerts(log_dir: &Path) -> Vec<Alert> {
    fs::read_to_string(log_dir.join(ALERTS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn line(event: &str, remote: &str, secs: i64) -> String {
        let ts = (time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        format!(
            r#"{{"ts":"{ts}","event":"{event}","severity":"warning","plane":"control","remote_addr":"{remote}","node_id":null,"detail":{{}},"count":1}}"#
        ) + "\n"
    }

    fn append(path: &Path, text: &str) {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn config(dir: &Path, cooldown_s: u64) -> WatchConfig {
        let mut rules = RuleArgs {
            auth_fail_threshold: 10,
            auth_fail_window_sec: 60,
            port_mismatch_threshold: 1,
            port_mismatch_window_sec: 60,
            backpressure_threshold: 100,
            backpressure_window_sec: 60,
            cooldown_sec: cooldown_s,
        };
        rules.cooldown_sec = cooldown_s;
        WatchConfig::new(dir.to_owned(), &rules)
    }

    #[test]
    fn a_burst_raises_one_alert_per_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(AUDIT_LOG_FILE);
        let mut w = Watcher::open(config(dir.path(), 300)).unwrap();
        let burst: String = (0..25).map(|i| line("AUTH_FAIL", "10.0.0.7", i)).collect();
        append(&log, &burst);
        let alerts = w.poll().unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].rule, "auth_fail_burst");
        assert_eq!(alerts[0].source, "10.0.0.7");
        assert_eq!(alerts[0].count, 10);
        // Still inside the cooldown: silence, however long the burst goes on.
        let more: String = (25..200)
            .map(|i| line("AUTH_FAIL", "10.0.0.7", i))
            .collect();
        append(&log, &more);
        assert!(w.poll().unwrap().is_empty());
        // Another source is another alert.
        let other: String = (0..10)
            .map(|i| line("AUTH_FAIL", "10.0.0.8", 200 + i))
            .collect();
        append(&log, &other);
        assert_eq!(w.poll().unwrap().len(), 1);
        // After the cooldown, the burst alerts again.
        let later: String = (0..10)
            .map(|i| line("AUTH_FAIL", "10.0.0.7", 400 + i))
            .collect();
        append(&log, &later);
        assert_eq!(w.poll().unwrap().len(), 1);
        assert_eq!(read_alerts(dir.path()).len(), 3);
    }

    #[test]
    fn an_alert_names_the_credential_of_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(AUDIT_LOG_FILE);
        let mut w = Watcher::open(config(dir.path(), 300)).unwrap();
        let named = line("PORT_MISMATCH", "10.0.0.5", 0)
            .replace("\"count\":1", "\"count\":1,\"credential\":\"w-1 (node)\"");
        append(&log, &named);
        let alerts = w.poll().unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].credential.as_deref(), Some("w-1 (node)"));
        assert!(
            alerts[0].message.ends_with("the last by w-1 (node)"),
            "{}",
            alerts[0].message
        );
    }

    #[test]
    fn folded_counts_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(AUDIT_LOG_FILE);
        let mut w = Watcher::open(config(dir.path(), 300)).unwrap();
        append(
            &log,
            &line("AUTH_FAIL", "10.0.0.9", 0).replace("\"count\":1", "\"count\":4999"),
        );
        let alerts = w.poll().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].count, 4999);
    }

    #[test]
    fn rotation_and_truncation_lose_no_event_and_a_restart_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(AUDIT_LOG_FILE);
        // Every PORT_MISMATCH alerts (threshold 1, no cooldown), one per distinct source, so
        // alerts count events.
        let mut n = 0;
        let mut next = |count: usize| -> String {
            (0..count)
                .map(|_| {
                    n += 1;
                    line("PORT_MISMATCH", &format!("10.1.0.{n}"), n)
                })
                .collect()
        };
        let mut w = Watcher::open(config(dir.path(), 0)).unwrap();
        append(&log, &next(3));
        assert_eq!(w.poll().unwrap().len(), 3);
        // Two more lines land in the file, then it is rotated and the new one gets four.
        append(&log, &next(2));
        fs::rename(&log, dir.path().join(format!("{AUDIT_LOG_FILE}.1"))).unwrap();
        append(&log, &next(4));
        assert_eq!(
            w.poll().unwrap().len(),
            6,
            "the rest of the old file, then the new one"
        );
        // A half-written line waits for its newline.
        let tail = next(1);
        append(&log, &tail[..20]);
        assert_eq!(w.poll().unwrap().len(), 0);
        append(&log, &tail[20..]);
        assert_eq!(w.poll().unwrap().len(), 1);
        // A restarted watcher goes on where it stopped.
        drop(w);
        append(&log, &next(2));
        let mut w = Watcher::open(config(dir.path(), 0)).unwrap();
        assert_eq!(w.poll().unwrap().len(), 2, "no repeats, nothing skipped");
        // Restarted across a rotation too.
        drop(w);
        append(&log, &next(1));
        fs::rename(&log, dir.path().join(format!("{AUDIT_LOG_FILE}.1"))).unwrap();
        append(&log, &next(2));
        let mut w = Watcher::open(config(dir.path(), 0)).unwrap();
        assert_eq!(w.poll().unwrap().len(), 3);
        // Truncated in place: read again from the start.
        fs::write(&log, next(1)).unwrap();
        assert_eq!(w.poll().unwrap().len(), 1);
        assert_eq!(read_alerts(dir.path()).len(), 16);
    }

    #[test]
    fn one_watcher_per_log_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Watcher::open(config(dir.path(), 0)).unwrap();
        let second = Watcher::open(config(dir.path(), 0))
            .err()
            .expect("a second watcher is refused");
        let already = second
            .downcast_ref::<AlreadyWatched>()
            .expect("AlreadyWatched");
        assert_eq!(already.holder, format!("pid {}", std::process::id()));
        assert!(second.to_string().contains("written twice"), "{second}");
        drop(first);
        Watcher::open(config(dir.path(), 0)).expect("free again once the first is gone");
    }
}
