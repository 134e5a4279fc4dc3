//! The security audit log (docs/API.md, "Events and logs"): `logs/hub_security_audit.jsonl`, one JSON object a line.
//!
//! Handlers never wait on it. [`AuditLog::emit`] bumps the event's counter and hands the event
//! to a bounded channel; a dedicated writer thread folds identical repeats (same event, source
//! IP, node id and detail) within a window into one line with a `count`, and rotates the file
//! by size. When the channel is full the event is counted as dropped, never blocking: a flood
//! of bad requests costs the hub a counter increment and a failed `try_send`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sheratan_proto::{AuditRecord, EventKind, Plane};
use sheratan_store::Clock;
use time::OffsetDateTime;

/// One occurrence of an event, as the code that noticed it reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub plane: Plane,
    /// The peer's IP address (never the port: repeats from one host must fold together).
    pub remote: Option<IpAddr>,
    pub node_id: Option<String>,
    pub detail: serde_json::Value,
    /// The run nonce of a verified `sheratan smoke` probe that provoked the event.
    pub probe: Option<String>,
    /// How the request's credential is named (`Credential::label`).
    pub credential: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind, plane: Plane) -> Self {
        Self {
            kind,
            plane,
            remote: None,
            node_id: None,
            detail: serde_json::Value::Object(Default::default()),
            probe: None,
            credential: None,
        }
    }

    /// Names the credential the request presented.
    pub fn by(mut self, credential: &crate::auth::Credential) -> Self {
        self.credential = Some(credential.label());
        self
    }

    /// Marks the event as provoked by a `sheratan smoke` probe (kept apart when folding).
    pub fn probe(mut self, nonce: Option<String>) -> Self {
        self.probe = nonce;
        self
    }

    pub fn remote(mut self, ip: IpAddr) -> Self {
        self.remote = Some(ip);
        self
    }

    pub fn node(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Settings of the audit log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `$SHERATAN_HOME/logs`.
    pub dir: PathBuf,
    /// Rotate when the live file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` is the newest).
    pub keep: usize,
    /// Identical repeats within this window fold into one line.
    pub fold_window: Duration,
    /// Events buffered between handlers and the writer before new ones are dropped.
    pub channel_capacity: usize,
}

impl AuditConfig {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
            fold_window: Duration::from_secs(10),
            channel_capacity: 8192,
        }
    }
}

pub const AUDIT_FILE: &str = sheratan_proto::event::AUDIT_LOG_FILE;

enum Msg {
    Event(Event, OffsetDateTime),
    /// Flush everything, fsync, and answer.
    Flush(SyncSender<()>),
    /// Flush, fsync, answer, and end the thread.
    Stop(SyncSender<()>),
}

/// The handle every component emits through. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    counters: [AtomicU64; EventKind::ALL.len()],
    dropped: AtomicU64,
    clock: Arc<dyn Clock>,
}

/// The writer thread; [`AuditWriter::shutdown`] flushes and joins it.
pub struct AuditWriter {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (creating) the log directory and starts the writer thread.
    pub fn start(
        config: AuditConfig,
        clock: Arc<dyn Clock>,
    ) -> io::Result<(AuditLog, AuditWriter)> {
        fs::create_dir_all(&config.dir)?;
        let file = RotatingFile::open(&config.dir.join(AUDIT_FILE), config.max_bytes, config.keep)?;
        let (tx, rx) = mpsc::sync_channel(config.channel_capacity.max(1));
        let fold_window = config.fold_window;
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_loop(rx, file, fold_window))?;
        let log = AuditLog {
            inner: Arc::new(Inner {
                tx: tx.clone(),
                counters: std::array::from_fn(|_| AtomicU64::new(0)),
                dropped: AtomicU64::new(0),
                clock,
            }),
        };
        Ok((
            log,
            AuditWriter {
                tx,
                thread: Some(thread),
            },
        ))
    }

    /// Records an event. Never blocks.
    pub fn emit(&self, event: Event) {
        self.inner.counters[index(event.kind)].fetch_add(1, Ordering::Relaxed);
        let now = self.inner.clock.now();
        match self.inner.tx.try_send(Msg::Event(event, now)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Occurrences of `kind` since start, whether or not they reached the file.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.inner.counters[index(kind)].load(Ordering::Relaxed)
    }

    /// Events that did not fit in the channel and are missing from the file.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything emitted so far is written and flushed to the OS.
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

impl AuditWriter {
    /// Writes what is pending (folded repeats included), fsyncs, and stops the thread.
    /// Events emitted afterwards are counted as dropped.
    pub fn shutdown(mut self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Stop(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn index(kind: EventKind) -> usize {
    EventKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("EventKind::ALL lists every variant")
}

#[derive(PartialEq, Eq, Hash, Clone)]
struct FoldKey {
    kind: EventKind,
    remote: Option<IpAddr>,
    node_id: Option<String>,
    detail: String,
    /// Folded across all sources: too many distinct sources were seen at once.
    any_source: bool,
    /// Probes fold apart from real traffic, so a probe never hides a real event's line.
    probe: Option<String>,
    credential: Option<String>,
}

impl FoldKey {
    fn remote_addr(&self) -> Option<String> {
        if self.any_source {
            Some(ANY_SOURCE.to_owned())
        } else {
            self.remote.map(|ip| ip.to_string())
        }
    }
}

/// `remote_addr` of lines that fold events from many sources.
pub const ANY_SOURCE: &str = "*";

struct Folded {
    window_start: Instant,
    plane: Plane,
    detail: serde_json::Value,
    repeats: u64,
    first_repeat: Option<OffsetDateTime>,
    last_repeat: OffsetDateTime,
}

/// The most distinct (event, source, detail) keys remembered for folding. Past it, pending
/// repeats are written out and forgotten, so memory stays bounded whatever the traffic.
const MAX_FOLD_KEYS: usize = 10_000;

fn writer_loop(rx: Receiver<Msg>, mut file: RotatingFile, window: Duration) {
    let mut folds: HashMap<FoldKey, Folded> = HashMap::new();
    let tick = (window / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut last_sweep = Instant::now();
    loop {
        let msg = rx.recv_timeout(tick);
        match msg {
            Ok(Msg::Event(event, ts)) => {
                record(&mut file, &mut folds, event, ts, window);
                // Drain what else is queued before flushing the buffer once.
                while let Ok(next) = rx.try_recv() {
                    match next {
                        Msg::Event(event, ts) => record(&mut file, &mut folds, event, ts, window),
                        Msg::Flush(ack) => {
                            flush_all(&mut file, &mut folds, true);
                            let _ = ack.send(());
                        }
                        Msg::Stop(ack) => {
                            flush_all(&mut file, &mut folds, true);
                            let _ = ack.send(());
                            return;
                        }
                    }
                }
                file.flush();
            }
            Ok(Msg::Flush(ack)) => {
                flush_all(&mut file, &mut folds, true);
                let _ = ack.send(());
            }
            Ok(Msg::Stop(ack)) => {
                flush_all(&mut file, &mut folds, true);
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush_all(&mut file, &mut folds, true);
                return;
            }
        }
        if last_sweep.elapsed() >= tick {
            last_sweep = Instant::now();
            sweep_expired(&mut file, &mut folds, window);
        }
    }
}

fn record(
    file: &mut RotatingFile,
    folds: &mut HashMap<FoldKey, Folded>,
    event: Event,
    ts: OffsetDateTime,
    window: Duration,
) {
    let mut key = FoldKey {
        kind: event.kind,
        remote: event.remote,
        node_id: event.node_id.clone(),
        detail: event.detail.to_string(),
        any_source: false,
        probe: event.probe.clone(),
        credential: event.credential.clone(),
    };
    if folds.len() >= MAX_FOLD_KEYS && !folds.contains_key(&key) {
        // A flood from more sources than we can remember one by one (an IPv6 range, say):
        // fold by event and detail alone, so the log stays small whatever the spread. The
        // periodic sweep frees remembered keys as their windows end.
        key.remote = None;
        key.node_id = None;
        key.any_source = true;
    }
    if let Some(fold) = folds.get_mut(&key) {
        if fold.window_start.elapsed() < window {
            fold.repeats += 1;
            fold.first_repeat.get_or_insert(ts);
            fold.last_repeat = ts;
            return;
        }
        let expired = folds.remove(&key).expect("entry was just found");
        write_fold(file, &key, expired);
    }
    if folds.len() >= 2 * MAX_FOLD_KEYS {
        // Even the per-detail keys overflow: write out what is pending and start over.
        flush_all(file, folds, false);
    }
    file.write_record(&AuditRecord {
        ts,
        event: event.kind,
        severity: event.kind.severity(),
        plane: event.plane,
        remote_addr: key.remote_addr(),
        node_id: key.node_id.clone(),
        detail: event.detail.clone(),
        count: 1,
        first_ts: None,
        probe: key.probe.clone(),
        credential: key.credential.clone(),
    });
    folds.insert(
        key,
        Folded {
            window_start: Instant::now(),
            plane: event.plane,
            detail: event.detail,
            repeats: 0,
            first_repeat: None,
            last_repeat: ts,
        },
    );
}

fn write_fold(file: &mut RotatingFile, key: &FoldKey, fold: Folded) {
    if fold.repeats == 0 {
        return;
    }
    file.write_record(&AuditRecord {
        ts: fold.last_repeat,
        event: key.kind,
        severity: key.kind.severity(),
        plane: fold.plane,
        remote_addr: key.remote_addr(),
        node_id: key.node_id.clone(),
        detail: fold.detail,
        count: fold.repeats,
        first_ts: fold.first_repeat,
        probe: key.probe.clone(),
        credential: key.credential.clone(),
    });
}

fn sweep_expired(file: &mut RotatingFile, folds: &mut HashMap<FoldKey, Folded>, window: Duration) {
    let expired: Vec<FoldKey> = folds
        .iter()
        .filter(|(_, f)| f.window_start.elapsed() >= window)
        .map(|(k, _)| k.clone())
        .collect();
    if expired.is_empty() {
        return;
    }
    for key in expired {
        if let Some(fold) = folds.remove(&key) {
            write_fold(file, &key, fold);
        }
    }
    file.flush();
}

fn flush_all(file: &mut RotatingFile, folds: &mut HashMap<FoldKey, Folded>, sync: bool) {
    for (key, fold) in folds.drain() {
        write_fold(file, &key, fold);
    }
    file.flush();
    if sync {
        file.sync();
    }
}

/// An append-only JSONL file that rotates by size: `name` → `name.1` → … → `name.<keep>`.
struct RotatingFile {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            out: Some(BufWriter::new(file)),
            size,
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
        })
    }

    fn write_record(&mut self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(err) => {
                tracing::error!(%err, "cannot encode an audit record");
                return;
            }
        };
        line.push(b'\n');
        if self.size + line.len() as u64 > self.max_bytes
            && self.size > 0
            && let Err(err) = self.rotate()
        {
            tracing::error!(%err, path = %self.path.display(), "cannot rotate the audit log; writing on");
        }
        if self.out.is_none() {
            self.reopen();
        }
        if let Some(out) = self.out.as_mut() {
            match out.write_all(&line) {
                Ok(()) => self.size += line.len() as u64,
                Err(err) => {
                    tracing::error!(%err, path = %self.path.display(), "cannot write the audit log");
                    self.out = None;
                }
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.flush();
        self.out = None;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                fs::rename(&from, numbered(n + 1))?;
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.reopen();
        Ok(())
    }

    fn reopen(&mut self) {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.out = Some(BufWriter::new(file));
            }
            Err(err) => {
                tracing::error!(%err, path = %self.path.display(), "cannot open the audit log");
            }
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && let Err(err) = out.flush()
        {
            tracing::error!(%err, "cannot flush the audit log");
        }
    }

    fn sync(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.get_ref().sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use sheratan_store::SystemClock;

    use super::*;

    fn read_records(dir: &Path) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            for line in fs::read_to_string(f).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }

    #[test]
    fn repeats_fold_into_one_line_with_an_exact_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuditConfig::new(dir.path().to_owned());
        config.channel_capacity = 100_000;
        let (log, writer) = AuditLog::start(config, Arc::new(SystemClock)).unwrap();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..5000 {
            log.emit(
                Event::new(EventKind::AuthFail, Plane::Control)
                    .remote(ip)
                    .detail(serde_json::json!({"reason": "invalid"})),
            );
        }
        // A different detail is a line of its own.
        log.emit(
            Event::new(EventKind::AuthFail, Plane::Control)
                .remote(ip)
                .detail(serde_json::json!({"reason": "missing"})),
        );
        writer.shutdown();
        let records = read_records(dir.path());
        assert_eq!(records.len(), 3, "{records:?}");
        let invalid: u64 = records
            .iter()
            .filter(|r| r.detail["reason"] == "invalid")
            .map(|r| r.count)
            .sum();
        assert_eq!(invalid, 5000);
        assert_eq!(log.count(EventKind::AuthFail), 5001);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_flood_from_more_sources_than_remembered_folds_across_sources() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuditConfig::new(dir.path().to_owned());
        config.channel_capacity = 100_000;
        config.max_bytes = 1 << 30;
        let (log, writer) = AuditLog::start(config, Arc::new(SystemClock)).unwrap();
        for i in 0..30_000u32 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
            ));
            log.emit(
                Event::new(EventKind::AuthFail, Plane::Control)
                    .remote(ip)
                    .detail(serde_json::json!({"reason": "invalid"})),
            );
        }
        writer.shutdown();
        let records = read_records(dir.path());
        let total: u64 = records.iter().map(|r| r.count).sum();
        assert_eq!(total, 30_000);
        // One line per remembered source, then one line (and its folded repeats) for all others.
        assert!(
            records.len() <= MAX_FOLD_KEYS + 2,
            "{} lines",
            records.len()
        );
        assert!(
            records
                .iter()
                .any(|r| r.remote_addr.as_deref() == Some(ANY_SOURCE))
        );
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuditConfig::new(dir.path().to_owned());
        config.max_bytes = 2048;
        config.keep = 2;
        config.channel_capacity = 10_000;
        let (log, writer) = AuditLog::start(config, Arc::new(SystemClock)).unwrap();
        for i in 0..200 {
            // Distinct node ids: nothing folds.
            log.emit(Event::new(EventKind::NodeStale, Plane::Control).node(format!("n{i}")));
        }
        writer.shutdown();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        for entry in fs::read_dir(dir.path()).unwrap() {
            assert!(entry.unwrap().metadata().unwrap().len() <= 2048);
        }
    }

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuditConfig::new(dir.path().to_owned());
        config.channel_capacity = 1;
        let (log, writer) = AuditLog::start(config, Arc::new(SystemClock)).unwrap();
        for i in 0..100_000 {
            log.emit(Event::new(EventKind::AuthFail, Plane::Data).node(format!("n{}", i % 7)));
        }
        writer.shutdown();
        let written: u64 = read_records(dir.path()).iter().map(|r| r.count).sum();
        assert_eq!(written + log.dropped(), 100_000);
    }
}
