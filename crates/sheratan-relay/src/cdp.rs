//! A plain Chrome DevTools Protocol client with flattened sessions for tabs, and the browser
//! it talks to: a Chrome at a DevTools URL (over a WebSocket), or a headless Chromium this
//! process launches (and relaunches after a crash), spoken to over the pipes of
//! `--remote-debugging-pipe`: no DevTools port is opened, so no other local user can drive it.
//!
//! Plain CDP because the relay needs eight methods (create, attach and close a target,
//! navigate, evaluate, insert text, a key event, a screenshot): a JSON-RPC multiplexer over
//! a WebSocket is small, and every failure mode (browser gone, call timing out) stays in our
//! hands. Nothing is downloaded, ever: the browser is the operator's, or Debian's `chromium`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CdpError {
    #[error("cannot reach the browser: {0}")]
    Connect(String),
    #[error("the browser went away (crashed, killed or restarted)")]
    Disconnected,
    #[error("{method}: no answer from the browser within {seconds} s")]
    Timeout { method: String, seconds: u64 },
    #[error("{method}: {message}")]
    Protocol { method: String, message: String },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;
/// Who wants a session's events (messages without an id): (session id, where to send them).
type Listeners = Arc<Mutex<Vec<(String, mpsc::UnboundedSender<Value>)>>>;

/// One connection to a browser: a WebSocket to a running Chrome, or the pipes of a Chromium
/// this process launched (`--remote-debugging-pipe`).
pub struct Connection {
    outgoing: mpsc::UnboundedSender<String>,
    pending: Pending,
    listeners: Listeners,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
    /// The browser's version string, from `Browser.getVersion`.
    pub version: String,
}

/// Where a connection's reader hands the browser's answers.
struct Inbox {
    pending: Pending,
    listeners: Listeners,
    alive: Arc<AtomicBool>,
}

impl Inbox {
    fn deliver(&self, text: &str) {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return;
        };
        // Events (no id) go to whoever listens to their session; the relay itself polls the
        // page instead, so with no listener they cost a parse.
        let Some(id) = value.get("id").and_then(Value::as_u64) else {
            self.dispatch(value);
            return;
        };
        let waiter = self.pending.lock().expect("cdp lock").remove(&id);
        if let Some(waiter) = waiter {
            let answer = match value.get("error") {
                Some(e) => Err(e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned()),
                None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = waiter.send(answer);
        }
    }

    fn dispatch(&self, event: Value) {
        let Some(session) = event.get("sessionId").and_then(Value::as_str) else {
            return;
        };
        let mut listeners = self.listeners.lock().expect("cdp lock");
        listeners.retain(|(wanted, tx)| wanted != session || tx.send(event.clone()).is_ok());
    }

    /// The browser is gone: every caller still waiting learns it.
    fn close(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending.lock().expect("cdp lock").clear();
    }
}

impl Connection {
    /// A connection whose messages go to the returned queue and whose answers are delivered
    /// to the returned inbox by the transport's tasks.
    fn parts() -> (Connection, mpsc::UnboundedReceiver<String>, Inbox) {
        let (outgoing, queue) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let listeners: Listeners = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let inbox = Inbox {
            pending: pending.clone(),
            listeners: listeners.clone(),
            alive: alive.clone(),
        };
        let connection = Connection {
            outgoing,
            pending,
            listeners,
            next_id: AtomicU64::new(1),
            alive,
            version: String::new(),
        };
        (connection, queue, inbox)
    }

    /// Asks the browser its version: the first call, which also proves the transport works.
    async fn handshake(mut self) -> Result<Connection, CdpError> {
        let version = self.call("Browser.getVersion", json!({}), None).await?;
        self.version = version["product"].as_str().unwrap_or("unknown").to_owned();
        Ok(self)
    }

    /// Connects to a browser's WebSocket debugger URL (`ws://…/devtools/browser/…`).
    pub async fn connect(ws_url: &str) -> Result<Connection, CdpError> {
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(ws_url),
        )
        .await
        .map_err(|_| {
            CdpError::Connect(format!(
                "{}: no WebSocket handshake within 10 s",
                sheratan_proto::redact::url(ws_url)
            ))
        })?
        .map_err(|e| CdpError::Connect(format!("{}: {e}", sheratan_proto::redact::url(ws_url))))?;
        let (mut sink, mut stream) = socket.split();
        let (connection, mut queue, inbox) = Connection::parts();
        tokio::spawn(async move {
            while let Some(text) = queue.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    inbox.deliver(&text);
                }
            }
            inbox.close();
        });
        connection.handshake().await
    }

    /// Speaks CDP over the pipes of `--remote-debugging-pipe`: one JSON message per NUL-
    /// terminated record each way. Nothing listens on a port, so no other local user can
    /// drive the browser.
    pub async fn over_pipes(
        mut to_browser: impl AsyncWrite + Unpin + Send + 'static,
        from_browser: impl AsyncRead + Unpin + Send + 'static,
    ) -> Result<Connection, CdpError> {
        let (connection, mut queue, inbox) = Connection::parts();
        tokio::spawn(async move {
            while let Some(text) = queue.recv().await {
                let mut record = text.into_bytes();
                record.push(0);
                if to_browser.write_all(&record).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(from_browser);
            let mut record = Vec::new();
            loop {
                record.clear();
                match reader.read_until(0, &mut record).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if record.last() == Some(&0) {
                            record.pop();
                        }
                        inbox.deliver(&String::from_utf8_lossy(&record));
                    }
                }
            }
            inbox.close();
        });
        connection.handshake().await
    }

    /// The events of one session (a tab), as the browser sends them: `{method, params,
    /// sessionId}`. Enable a domain (`Runtime.enable`, `Log.enable`) to get its events.
    pub fn events(&self, session: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listeners
            .lock()
            .expect("cdp lock")
            .push((session.to_owned(), tx));
        rx
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Calls `method`; on a tab when `session` is given. Times out after 30 s.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, CdpError> {
        if !self.is_alive() {
            return Err(CdpError::Disconnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session.to_owned());
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("cdp lock").insert(id, tx);
        if self.outgoing.send(message.to_string()).is_err() {
            self.pending.lock().expect("cdp lock").remove(&id);
            return Err(CdpError::Disconnected);
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(message))) => Err(CdpError::Protocol {
                method: method.to_owned(),
                message,
            }),
            Ok(Err(_)) => Err(CdpError::Disconnected),
            Err(_) => {
                self.pending.lock().expect("cdp lock").remove(&id);
                Err(CdpError::Timeout {
                    method: method.to_owned(),
                    seconds: 30,
                })
            }
        }
    }
}

/// Where the browser comes from.
#[derive(Debug, Clone)]
pub enum BrowserSource {
    /// A running Chrome's DevTools HTTP endpoint (`http://127.0.0.1:9222`).
    Url(String),
    /// Launch this Chromium binary headless, profiles under `dir`, with or without its
    /// sandbox as `sandbox` says.
    Launch {
        chromium: PathBuf,
        dir: PathBuf,
        sandbox: SandboxMode,
    },
}

/// The flags a launched Chromium gets: headless, CDP over pipes, nothing that talks to the
/// network on its own (updates, sync, QUIC, background requests), and no throttling of
/// background tabs. The sandbox stays on unless [`Sandbox`] says it cannot.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--remote-debugging-pipe",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--mute-audio",
    // Every job's tab is a background tab to Chromium: without these, its timers are
    // throttled to once a second and pages that stream their answer crawl.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// The operator's choice for a launched Chromium's sandbox (`SHERATAN_CHROMIUM_SANDBOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// On, except when the relay runs as root: Chromium offers no sandbox to root, and the
    /// operator who runs the relay as root has chosen its rights for it (logged at start).
    #[default]
    Auto,
    /// Always on: as root, the launch fails instead.
    On,
    /// Always off (`--no-sandbox`), logged at start.
    Off,
}

/// Whether a launched Chromium keeps its sandbox, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    On,
    /// `--no-sandbox`, for the reason given (shown in `/health` and logged).
    Off(String),
}

impl Sandbox {
    fn of(mode: SandboxMode) -> Sandbox {
        match mode {
            SandboxMode::On => Sandbox::On,
            SandboxMode::Off => Sandbox::Off("SHERATAN_CHROMIUM_SANDBOX=off".into()),
            SandboxMode::Auto if rustix::process::geteuid().is_root() => Sandbox::Off(
                "the relay runs as root, where Chromium cannot use its sandbox; run the relay as an unprivileged user to keep it (SHERATAN_CHROMIUM_SANDBOX=on refuses to launch instead)".into(),
            ),
            SandboxMode::Auto => Sandbox::On,
        }
    }
}

/// What Chromium prints when it cannot start its sandbox (no user namespaces, no setuid
/// helper, or running as root).
const SANDBOX_ERRORS: &[&str] = &[
    "no usable sandbox",
    "suid sandbox helper",
    "setuid sandbox",
    "failed to move to new namespace",
    "running as root without --no-sandbox",
];

/// How Chromium is started so that its fds 3 and 4 are the pipes CDP wants: through `sh`,
/// which maps our stdin/stdout pipes onto them and then becomes Chromium (`exec`, same PID
/// and process group). Done this way because mapping descriptors in the child directly needs
/// `unsafe` (`pre_exec`), which this workspace forbids.
const PIPE_SHIM: &str = r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#;

/// A browser the relay can always ask for a live connection: it reconnects (or relaunches)
/// when the previous one died.
pub struct Browser {
    pub source: BrowserSource,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    child: Mutex<Option<tokio::process::Child>>,
    /// The launched Chromium's profile dir, removed when it is stopped.
    profile: Mutex<Option<PathBuf>>,
    launches: AtomicU64,
    sandbox: Sandbox,
}

impl Browser {
    pub fn new(source: BrowserSource) -> Self {
        if let BrowserSource::Launch { dir, .. } = &source {
            reap_orphans(dir);
        }
        let sandbox = match &source {
            BrowserSource::Launch { sandbox, .. } => Sandbox::of(*sandbox),
            BrowserSource::Url(_) => Sandbox::On,
        };
        if let (BrowserSource::Launch { .. }, Sandbox::Off(why)) = (&source, &sandbox) {
            tracing::warn!("relay: Chromium will run without its sandbox: {why}");
        }
        Self {
            source,
            current: tokio::sync::Mutex::new(None),
            child: Mutex::new(None),
            profile: Mutex::new(None),
            launches: AtomicU64::new(0),
            sandbox,
        }
    }

    /// The live connection, if there is one now (without connecting).
    pub fn connected(&self) -> Option<Arc<Connection>> {
        self.current
            .try_lock()
            .ok()
            .and_then(|c| c.as_ref().filter(|c| c.is_alive()).cloned())
    }

    /// How many times this process launched Chromium.
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// Whether a Chromium this process launches keeps its sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The PID of the Chromium this process launched, if it runs.
    pub fn child_pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("child lock")
            .as_ref()
            .and_then(|c| c.id())
    }

    /// A live connection: the current one, or a new one (launching Chromium if that is the
    /// source and it is not running).
    pub async fn connection(&self) -> Result<Arc<Connection>, CdpError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref()
            && c.is_alive()
        {
            return Ok(c.clone());
        }
        *current = None;
        let connection = match &self.source {
            BrowserSource::Url(url) => Connection::connect(&discover(url).await?).await?,
            BrowserSource::Launch { chromium, dir, .. } => self.launch(chromium, dir).await?,
        };
        let connection = Arc::new(connection);
        tracing::info!(version = %connection.version, "relay: connected to the browser");
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// Launches Chromium (as the sandbox mode says) and connects over its pipes.
    async fn launch(&self, chromium: &Path, dir: &Path) -> Result<Connection, CdpError> {
        // A previous Chromium (dead, or running but unreachable) is replaced.
        self.shutdown().await;
        let n = self.launches.fetch_add(1, Ordering::Relaxed) + 1;
        let profile = dir.join(format!("chromium-profile-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)
            .map_err(|e| CdpError::Connect(format!("{}: {e}", profile.display())))?;
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(PIPE_SHIM)
            .arg(chromium)
            .args(CHROMIUM_FLAGS);
        if let Sandbox::Off(_) = self.sandbox {
            command.arg("--no-sandbox");
        }
        let mut child = command
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| CdpError::Connect(format!("cannot start {}: {e}", chromium.display())))?;
        let to_browser = child.stdin.take().expect("stdin is piped");
        let from_browser = child.stdout.take().expect("stdout is piped");
        // Keep draining its stderr (or Chromium blocks once the pipe is full), keeping the
        // last lines to explain a failed start.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let kept = tail.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = kept.lock().expect("stderr tail lock");
                if kept.len() == 20 {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let pid = child.id();
        *self.child.lock().expect("child lock") = Some(child);
        match Connection::over_pipes(to_browser, from_browser).await {
            Ok(connection) => {
                tracing::info!(?pid, profile = %profile.display(), sandbox = ?self.sandbox, "relay: launched Chromium (CDP over pipes)");
                *self.profile.lock().expect("profile lock") = Some(profile);
                Ok(connection)
            }
            Err(err) => {
                let status = {
                    let mut child = self.child.lock().expect("child lock");
                    child.as_mut().and_then(|c| c.try_wait().ok().flatten())
                };
                *self.profile.lock().expect("profile lock") = Some(profile);
                self.shutdown().await;
                let stderr = tail
                    .lock()
                    .expect("stderr tail lock")
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                let exited = status.map_or(String::new(), |s| format!(" (it exited: {s})"));
                let lower = stderr.to_lowercase();
                let advice = if SANDBOX_ERRORS.iter().any(|e| lower.contains(e)) {
                    "; Chromium could not start its sandbox here: run the relay as an unprivileged user on a kernel with user namespaces, or set SHERATAN_CHROMIUM_SANDBOX=off to run it without (docs/SECURITY.md)"
                } else {
                    ""
                };
                Err(CdpError::Connect(format!(
                    "{} did not answer over its DevTools pipe{exited}: {err}; its last output: {}{advice}",
                    chromium.display(),
                    stderr.lines().last().unwrap_or("(none)")
                )))
            }
        }
    }

    /// Stops a Chromium this process launched (never a browser it only connected to).
    pub async fn shutdown(&self) {
        let child = self.child.lock().expect("child lock").take();
        if let Some(mut child) = child {
            let profile = self.profile.lock().expect("profile lock").take();
            if let Some(pid) = child.id() {
                // The whole group: Chromium's helper processes too. Its profile is throwaway,
                // so there is nothing to shut down gracefully.
                kill_group(pid);
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(profile) = profile {
                let _ = std::fs::remove_dir_all(profile);
            }
        }
    }
}

/// Chromiums left behind by relays that died without stopping them (SIGKILL, a crash): their
/// profile dirs are named after the relay's PID. A profile whose relay is gone has its
/// Chromium (the PID in its `SingletonLock`) killed and the dir removed.
fn reap_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("chromium-profile-") else {
            continue;
        };
        let Some(relay_pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if relay_pid == std::process::id() || process_is_sheratan(relay_pid) {
            continue;
        }
        let profile = entry.path();
        if let Ok(lock) = std::fs::read_link(profile.join("SingletonLock"))
            && let Some(pid) = lock
                .to_string_lossy()
                .rsplit('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*profile.to_string_lossy()))
        {
            tracing::warn!(pid, profile = %profile.display(), "relay: stopping a Chromium left behind by an earlier relay");
            kill_group(pid);
        }
        let _ = std::fs::remove_dir_all(&profile);
    }
}

/// SIGKILL to the process group `pid` leads (a launched Chromium and its helpers), by system
/// call: `kill(1)` from procps 4.0 has been seen to treat `kill -KILL -PGID` as `-1`, i.e.
/// every process, so it is never shelled out to.
fn kill_group(pid: u32) {
    if let Some(group) = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = rustix::process::kill_process(group, rustix::process::Signal::KILL);
    }
}

fn process_is_sheratan(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sheratan"))
}

/// The browser's WebSocket URL from its DevTools HTTP endpoint.
async fn discover(url: &str) -> Result<String, CdpError> {
    let base = url.trim_end_matches('/');
    // Errors end up in job results: the URL without its user-info.
    let shown = sheratan_proto::redact::url(base);
    if base.starts_with("ws://") {
        return Ok(base.to_owned());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CdpError::Connect(e.to_string()))?;
    let version: Value = client
        .get(format!("{base}/json/version"))
        .send()
        .await
        .map_err(|e| {
            CdpError::Connect(format!(
                "{shown}: {} (is Chrome running with --remote-debugging-port?)",
                e.without_url()
            ))
        })?
        .json()
        .await
        .map_err(|e| CdpError::Connect(format!("{shown}/json/version: {}", e.without_url())))?;
    version["webSocketDebuggerUrl"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            CdpError::Connect(format!("{shown}/json/version has no webSocketDebuggerUrl"))
        })
}

/// Finds `chromium` (or `chromium-browser`, `google-chrome`) on the PATH.
pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}
