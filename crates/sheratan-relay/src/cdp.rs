//! A plain Chrome DevTools Protocol client over one WebSocket to the browser, with flattened
//! sessions for tabs, and the browser it talks to: a Chrome at a DevTools URL, or a headless
//! Chromium this process launches (and relaunches after a crash).
//!
//! Plain CDP because the relay needs eight methods (create, attach and close a target,
//! navigate, evaluate, insert text, a key event, a screenshot): a JSON-RPC multiplexer over
//! a WebSocket is small, and every failure mode (browser gone, call timing out) stays in our
//! hands. Nothing is downloaded, ever: the browser is the operator's, or Debian's `chromium`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
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

/// One WebSocket connection to a browser.
pub struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
    /// The browser's version string, from `/json/version` or `Browser.getVersion`.
    pub version: String,
}

impl Connection {
    /// Connects to a browser's WebSocket debugger URL (`ws://…/devtools/browser/…`).
    pub async fn connect(ws_url: &str) -> Result<Connection, CdpError> {
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(ws_url),
        )
        .await
        .map_err(|_| CdpError::Connect(format!("{ws_url}: no WebSocket handshake within 10 s")))?
        .map_err(|e| CdpError::Connect(format!("{ws_url}: {e}")))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let (reader_pending, reader_alive) = (pending.clone(), alive.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Events (no id) are not used: the relay polls the page instead.
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let waiter = reader_pending.lock().expect("cdp lock").remove(&id);
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
            reader_alive.store(false, Ordering::Release);
            // Every caller still waiting learns the browser is gone.
            reader_pending.lock().expect("cdp lock").clear();
        });
        let mut connection = Connection {
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            alive,
            version: String::new(),
        };
        let version = connection
            .call("Browser.getVersion", json!({}), None)
            .await?;
        connection.version = version["product"].as_str().unwrap_or("unknown").to_owned();
        Ok(connection)
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
        if self
            .outgoing
            .send(Message::text(message.to_string()))
            .is_err()
        {
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
    /// Launch this Chromium binary headless, profiles under `dir`.
    Launch { chromium: PathBuf, dir: PathBuf },
}

/// The flags a launched Chromium gets: headless, no sandbox (containers), nothing that talks
/// to the network on its own (updates, sync, QUIC, background requests), and no throttling of
/// background tabs.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
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
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

/// A browser the relay can always ask for a live connection: it reconnects (or relaunches)
/// when the previous one died.
pub struct Browser {
    pub source: BrowserSource,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    child: Mutex<Option<tokio::process::Child>>,
    /// The launched Chromium's profile dir, removed when it is stopped.
    profile: Mutex<Option<PathBuf>>,
    launches: AtomicU64,
}

impl Browser {
    pub fn new(source: BrowserSource) -> Self {
        if let BrowserSource::Launch { dir, .. } = &source {
            reap_orphans(dir);
        }
        Self {
            source,
            current: tokio::sync::Mutex::new(None),
            child: Mutex::new(None),
            profile: Mutex::new(None),
            launches: AtomicU64::new(0),
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
        let ws_url = match &self.source {
            BrowserSource::Url(url) => discover(url).await?,
            BrowserSource::Launch { chromium, dir } => self.launch(chromium, dir).await?,
        };
        let connection = Arc::new(Connection::connect(&ws_url).await?);
        tracing::info!(version = %connection.version, "relay: connected to the browser");
        *current = Some(connection.clone());
        Ok(connection)
    }

    async fn launch(&self, chromium: &Path, dir: &Path) -> Result<String, CdpError> {
        // A previous Chromium (dead, or running but unreachable) is replaced.
        self.shutdown().await;
        let n = self.launches.fetch_add(1, Ordering::Relaxed) + 1;
        let profile = dir.join(format!("chromium-profile-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)
            .map_err(|e| CdpError::Connect(format!("{}: {e}", profile.display())))?;
        let mut child = tokio::process::Command::new(chromium)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| CdpError::Connect(format!("cannot start {}: {e}", chromium.display())))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("ws://") {
                    return Some(line[at..].trim().to_owned());
                }
            }
            None
        })
        .await;
        let ws_url = match found {
            Ok(Some(url)) => url,
            Ok(None) => {
                let status = child.wait().await.ok();
                return Err(CdpError::Connect(format!(
                    "{} exited before it listened for DevTools ({status:?})",
                    chromium.display()
                )));
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(CdpError::Connect(format!(
                    "{} did not start within 30 s",
                    chromium.display()
                )));
            }
        };
        // Keep draining its stderr, or Chromium blocks once the pipe is full.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tracing::info!(pid = ?child.id(), profile = %profile.display(), "relay: launched Chromium");
        *self.child.lock().expect("child lock") = Some(child);
        *self.profile.lock().expect("profile lock") = Some(profile);
        Ok(ws_url)
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
                "{base}: {e} (is Chrome running with --remote-debugging-port?)"
            ))
        })?
        .json()
        .await
        .map_err(|e| CdpError::Connect(format!("{base}/json/version: {e}")))?;
    version["webSocketDebuggerUrl"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            CdpError::Connect(format!("{base}/json/version has no webSocketDebuggerUrl"))
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
