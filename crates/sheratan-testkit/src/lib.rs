//! Test support: starts real `sheratan` processes on free loopback ports, each with its own
//! temp home, and keeps their logs when a test fails (the temp dir is left in place and its
//! path printed).
//!
//! Processes are started from the binary cargo built for the test (`CARGO_BIN_EXE_sheratan`),
//! so the code under test is exactly what an operator runs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sheratan_proto::AuditRecord;

/// How to start a hub.
pub struct HubBuilder {
    bin: PathBuf,
    home: Option<PathBuf>,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    control_addr: String,
    data_addr: String,
    subcommand: String,
}

impl HubBuilder {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            home: None,
            env: BTreeMap::new(),
            args: Vec::new(),
            control_addr: "127.0.0.1:0".into(),
            data_addr: "127.0.0.1:0".into(),
            subcommand: "hub".into(),
        }
    }

    /// Runs `sheratan up` instead of `sheratan hub`.
    pub fn up(mut self) -> Self {
        self.subcommand = "up".into();
        self
    }

    /// Reuses a home (e.g. to restart on the same state).
    pub fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn data_addr(mut self, addr: impl Into<String>) -> Self {
        self.data_addr = addr.into();
        self
    }

    pub fn control_addr(mut self, addr: impl Into<String>) -> Self {
        self.control_addr = addr.into();
        self
    }

    /// Starts the process and waits until its banner says it is ready.
    pub fn start(self) -> HubProcess {
        let (dir, home) = match &self.home {
            Some(home) => (None, home.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("sheratan-test-")
                    .tempdir()
                    .expect("create a temp home");
                let home = dir.path().to_owned();
                (Some(dir), home)
            }
        };
        let mut process = HubProcess {
            spec: self,
            home,
            _dir: dir,
            child: None,
            control_url: String::new(),
            data_url: String::new(),
            urls: BTreeMap::new(),
            starts: 0,
        };
        process.launch();
        process
    }
}

/// A running hub process. Killed when dropped.
pub struct HubProcess {
    spec: HubBuilder,
    pub home: PathBuf,
    _dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    pub control_url: String,
    pub data_url: String,
    /// With `up`: the URLs of `core`, `broker`, `host-a`, `host-b` from the banner.
    pub urls: BTreeMap<String, String>,
    starts: u32,
}

impl HubProcess {
    fn launch(&mut self) {
        self.starts += 1;
        let stdout_log = self.home.join(format!("stdout.{}.log", self.starts));
        let stderr_log = self.home.join(format!("stderr.{}.log", self.starts));
        fs::create_dir_all(&self.home).expect("create the home");
        let mut cmd = Command::new(&self.spec.bin);
        cmd.arg(&self.spec.subcommand)
            .arg("--home")
            .arg(&self.home)
            .arg("--control-addr")
            .arg(&self.spec.control_addr)
            .arg("--data-addr")
            .arg(&self.spec.data_addr)
            .args(&self.spec.args);
        if self.spec.subcommand == "up" {
            // Everything `up` runs beside the hub on free ports too, unless the test moved it.
            for (flag, var) in [
                ("--core-addr", "SHERATAN_CORE_ADDR"),
                ("--broker-addr", "SHERATAN_BROKER_ADDR"),
                ("--host-a-addr", "SHERATAN_HOST_A_ADDR"),
                ("--host-b-addr", "SHERATAN_HOST_B_ADDR"),
                ("--relay-addr", "SHERATAN_RELAY_ADDR"),
                ("--dashboard-addr", "SHERATAN_DASHBOARD_ADDR"),
            ] {
                if !self.spec.env.contains_key(var) && !self.spec.args.iter().any(|a| a == flag) {
                    cmd.arg(flag).arg("127.0.0.1:0");
                }
            }
        }
        cmd.env_remove("SHERATAN_HUB_TOKEN")
            .env_remove("SHERATAN_HUB_TOKEN_NEXT")
            .env_remove("SHERATAN_HUB_TOKEN_ROTATION_UNTIL")
            .env_remove("SHERATAN_HUB_TOKEN_REQUIRED")
            .env("SHERATAN_LOG", "info")
            .envs(&self.spec.env)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log).expect("create the stderr log"));
        let mut child = cmd.spawn().expect("start sheratan");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = File::create(&stdout_log).expect("create the stdout log");
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut control, mut data, mut ready) = (None, None, false);
        self.urls.clear();
        while !ready {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim();
                    if let Some(rest) = line.strip_prefix("control plane: ") {
                        control = rest.split_whitespace().next().map(str::to_owned);
                    } else if let Some(rest) = line.strip_prefix("data plane: ") {
                        data = rest.split_whitespace().next().map(str::to_owned);
                    } else if line.starts_with("ready:") {
                        ready = true;
                    } else if let Some((name, url)) = banner_url(line) {
                        self.urls.insert(name, url);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "the hub did not report its addresses (exit: {status:?}); stderr:\n{}",
                        fs::read_to_string(&stderr_log).unwrap_or_default()
                    );
                }
            }
        }
        self.control_url = control.unwrap_or_default();
        self.data_url = data.unwrap_or_default();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the hub is running").id()
    }

    /// The token from `$SHERATAN_HOME/hub_token` (or the one set by the test's env).
    pub fn token(&self) -> String {
        if let Some(token) = self.spec.env.get("SHERATAN_HUB_TOKEN") {
            return token.clone();
        }
        fs::read_to_string(self.home.join("hub_token"))
            .expect("read hub_token")
            .trim()
            .to_owned()
    }

    /// SIGKILL: no shutdown work happens.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (up to 30 s) for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Sends `signal` (e.g. "INT", "TERM") and waits (up to 30 s) for the process to exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("the hub is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the hub") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the hub did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same home and settings.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.launch();
    }

    /// Replaces an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.spec.env.insert(key.into(), value.into());
    }

    pub fn remove_env(&mut self, key: &str) {
        self.spec.env.remove(key);
    }

    /// Everything the hub wrote to stderr, over all its starts.
    pub fn stderr(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                fs::read_to_string(self.home.join(format!("stderr.{n}.log"))).unwrap_or_default()
            })
            .collect()
    }

    /// Everything the hub wrote to stdout, over all its starts.
    pub fn stdout(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                fs::read_to_string(self.home.join(format!("stdout.{n}.log"))).unwrap_or_default()
            })
            .collect()
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.home.join("logs")
    }

    /// All audit records, rotated files included, oldest first.
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        read_audit(&self.audit_dir())
    }

    /// Polls until `pred` holds for the audit log or `timeout` passes; returns the records.
    pub fn wait_audit(
        &self,
        timeout: Duration,
        pred: impl Fn(&[AuditRecord]) -> bool,
    ) -> Vec<AuditRecord> {
        wait_for(timeout, || {
            let records = self.audit_records();
            pred(&records).then_some(records)
        })
        .unwrap_or_else(|| panic!("audit condition not met; log:\n{:#?}", self.audit_records()))
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self._dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "test failed: the hub's home and logs are kept in {}",
                kept.display()
            );
        }
    }
}

/// Reads `hub_security_audit.jsonl` and its rotations (`.N`, oldest first).
pub fn read_audit(dir: &Path) -> Vec<AuditRecord> {
    let base = dir.join("hub_security_audit.jsonl");
    let mut files: Vec<PathBuf> = (1..=20)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .filter(|p| p.exists())
        .collect();
    files.push(base);
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(record) => out.push(record),
                // A line being written right now may be incomplete; it is the last one.
                Err(_) => continue,
            }
        }
    }
    out
}

/// Calls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A local IPv4 address that is not loopback, to make requests that a hub sees as remote.
/// Asks the routing table (a UDP "connect" sends nothing). `None` on a machine without one.
pub fn non_loopback_ipv4() -> Option<std::net::Ipv4Addr> {
    for probe in ["192.0.2.1:9", "10.255.255.1:9", "8.8.8.8:53"] {
        let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            continue;
        };
        if socket.connect(probe).is_ok()
            && let Ok(std::net::SocketAddr::V4(local)) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return Some(*local.ip());
        }
    }
    None
}

/// Counts occurrences of `event` (folded repeats included).
pub fn count_events(records: &[AuditRecord], event: sheratan_proto::EventKind) -> u64 {
    records
        .iter()
        .filter(|r| r.event == event)
        .map(|r| r.count)
        .sum()
}

/// `core: URL …`, `broker: URL …`, `relay: URL …` and `host: NAME URL …` banner lines as
/// (name, URL).
fn banner_url(line: &str) -> Option<(String, String)> {
    let (label, rest) = line.split_once(": ")?;
    let mut words = rest.split_whitespace();
    match label {
        "core" | "broker" | "relay" | "dashboard" => {
            Some((label.to_owned(), words.next()?.to_owned()))
        }
        "host" => {
            let name = words.next()?.to_owned();
            Some((name, words.next()?.to_owned()))
        }
        _ => None,
    }
    .filter(|(_, url)| url.starts_with("http"))
}

/// Any other `sheratan` process a test runs (a worker, say), with its output in log files.
pub struct Proc {
    child: Option<Child>,
    pub dir: PathBuf,
    name: String,
    /// URLs from `core:`, `broker:` and `host: NAME` banner lines.
    pub urls: BTreeMap<String, String>,
    _dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// Starts `bin args…` with `env`; waits for its `ready:` line when `wait_ready`.
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)], wait_ready: bool) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("sheratan-proc-")
            .tempdir()
            .expect("temp dir");
        let name = args.first().copied().unwrap_or("proc").to_owned();
        let stdout_log = dir.path().join("stdout.log");
        let stderr_log = dir.path().join("stderr.log");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("SHERATAN_HUB_TOKEN")
            .env("SHERATAN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log).expect("stderr log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the process");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = File::create(&stdout_log).expect("stdout log");
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        });
        let mut urls = BTreeMap::new();
        if wait_ready {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) if line.starts_with("ready:") => break,
                    Ok(line) => {
                        if let Some((name, url)) = banner_url(line.trim()) {
                            urls.insert(name, url);
                        }
                    }
                    Err(_) => panic!(
                        "{name} did not get ready; stderr:\n{}",
                        fs::read_to_string(&stderr_log).unwrap_or_default()
                    ),
                }
            }
        }
        let path = dir.path().to_owned();
        Proc {
            child: Some(child),
            dir: path,
            name,
            urls,
            _dir: Some(dir),
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` and waits up to 60 s for the exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within 60 s of SIG{signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    /// SIGTERM first, so the process stops what it started (a relay its Chromium); SIGKILL
    /// after 5 s.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self._dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "test failed: {}'s logs are kept in {}",
                self.name,
                kept.display()
            );
        }
    }
}
