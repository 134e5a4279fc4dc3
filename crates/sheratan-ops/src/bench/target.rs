//! The hub a benchmark measures: one it starts from this very binary in a temp dir (so the
//! figures are reproducible with one command), or a running one given by URL.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Target {
    pub control_url: String,
    pub data_url: String,
    pub token: String,
    /// For RSS readings; known when we started the hub or were told.
    pub pid: Option<u32>,
    child: Option<Child>,
    _home: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts `sheratan hub` on free loopback ports with `extra` arguments.
    pub fn spawn(extra: &[String]) -> anyhow::Result<Target> {
        Self::spawn_with(extra, None)
    }

    /// Like [`Target::spawn`], with the mesh token given (several hubs on one database share
    /// it) instead of generated.
    pub fn spawn_with(extra: &[String], token: Option<&str>) -> anyhow::Result<Target> {
        let home = tempfile::Builder::new()
            .prefix("sheratan-bench-")
            .tempdir()?;
        let exe = std::env::current_exe().context("find the sheratan binary")?;
        let mut child = Command::new(exe)
            .arg("hub")
            .arg("--home")
            .arg(home.path())
            .args([
                "--control-addr",
                "127.0.0.1:0",
                "--data-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("SHERATAN_HUB_TOKEN")
            .envs(token.map(|t| ("SHERATAN_HUB_TOKEN", t)))
            .env("SHERATAN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the hub")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut control_url, mut data_url, mut ready) = (None, None, false);
        while !ready {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the hub did not report its address within 20 s");
            }
            match lines.next() {
                Some(Ok(line)) => {
                    let line = line.trim();
                    if let Some(rest) = line.strip_prefix("control plane: ") {
                        control_url = rest.split_whitespace().next().map(str::to_owned);
                    } else if let Some(rest) = line.strip_prefix("data plane: ") {
                        data_url = rest.split_whitespace().next().map(str::to_owned);
                    } else if line.starts_with("ready:") {
                        ready = true;
                    }
                }
                _ => {
                    let _ = child.kill();
                    bail!("the hub exited before reporting its address");
                }
            }
        }
        // A hub serving TLS (--tls on) made its CA: the bench's clients trust it.
        let ca = home.path().join("tls").join("ca.pem");
        if ca.exists() {
            sheratan_client::trust_ca_file(ca);
        }
        // Keep draining stdout so the hub never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = match token {
            Some(t) => t.to_owned(),
            None => std::fs::read_to_string(home.path().join("hub_token"))
                .context("read the hub token")?
                .trim()
                .to_owned(),
        };
        Ok(Target {
            control_url: control_url.context("the hub reported no control plane address")?,
            data_url: data_url.context("the hub reported no data plane address")?,
            token,
            pid: Some(child.id()),
            child: Some(child),
            _home: Some(home),
        })
    }

    pub fn external(
        control_url: String,
        data_url: String,
        token: String,
        pid: Option<u32>,
    ) -> Target {
        Target {
            control_url,
            data_url,
            token,
            pid,
            child: None,
            _home: None,
        }
    }

    /// The home of a hub this bench started.
    pub fn home(&self) -> Option<&std::path::Path> {
        self._home.as_ref().map(|h| h.path())
    }

    /// Resident set size of the hub in bytes, if known.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(PathBuf::from(format!("/proc/{}/status", self.pid?))).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
