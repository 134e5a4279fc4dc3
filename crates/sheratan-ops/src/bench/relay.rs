//! `sheratan bench relay`: the WebRelay's CDP backend against a local chat page that answers
//! `--delay-ms` after the prompt is sent and streams "You said: <prompt>" a word every 100 ms.
//! A hub and a `sheratan relay --launch-chromium 1` process are started from this binary;
//! the page is served by the bench.
//!
//! - **overhead**: completions one at a time through `POST /v1/complete`; overhead = the
//!   relay's time minus the page's own (delay + streaming). It includes the profile's
//!   `stable_ms`, the quiet period the relay waits to call an answer final, shown apart.
//! - **throughput**: `--jobs` jobs through the `llm` queue with 1 and with 4 tabs: jobs/minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sheratan_client::{DataClient, JobFilter};
use sheratan_proto::data::{JobStatus, SubmitJob};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Percentiles;
use super::target::Target;

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Completions in the overhead measurement.
    #[arg(long, default_value_t = 30)]
    pub n: u32,
    /// Jobs per throughput measurement.
    #[arg(long, default_value_t = 40)]
    pub jobs: u32,
    /// The page's answer delay.
    #[arg(long, default_value_t = 500)]
    pub delay_ms: u64,
    /// The profile's quiet period before an answer counts as final.
    #[arg(long, default_value_t = 300)]
    pub stable_ms: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    n: u32,
    page_answer_ms: u64,
    stable_ms: u64,
    /// Relay time minus the page's own answer time.
    overhead: Percentiles,
    jobs: u32,
    jobs_per_min_1_tab: f64,
    jobs_per_min_4_tabs: f64,
}

const PROMPT: &str = "benchmark prompt";

fn page(delay_ms: u64) -> String {
    format!(
        r#"<!doctype html><html><body><div id="log"></div><textarea id="q"></textarea><button id="send">Send</button>
<script>
const log = document.getElementById('log'), q = document.getElementById('q');
document.getElementById('send').onclick = () => {{
  const text = q.value; q.value = '';
  const typing = document.createElement('div'); typing.className = 'typing'; log.appendChild(typing);
  setTimeout(() => {{
    const bot = document.createElement('div'); bot.className = 'msg bot'; log.appendChild(bot);
    const words = ('You said: ' + text).split(' '); let i = 0;
    const t = setInterval(() => {{ bot.textContent += (i ? ' ' : '') + words[i++]; if (i >= words.length) {{ clearInterval(t); typing.remove(); }} }}, 100);
  }}, {delay_ms});
}};
</script></body></html>"#
    )
}

/// Serves `html` for every request (HTTP/1.1, one request per connection).
async fn serve_page(html: String) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/chat.html", listener.local_addr()?);
    let html = Arc::new(html);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    html.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(html.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

/// A `sheratan relay` process; killed (with its Chromium, via SIGTERM) when dropped.
struct RelayProcess {
    child: std::process::Child,
    url: String,
}

impl RelayProcess {
    fn start(
        target: &Target,
        home: &std::path::Path,
        profiles: &std::path::Path,
        tabs: u32,
    ) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(exe)
            .args([
                "relay",
                "--listen",
                "127.0.0.1:0",
                "--launch-chromium",
                "1",
                "--relay-tabs",
                &tabs.to_string(),
            ])
            .arg("--home")
            .arg(home)
            .arg("--relay-profiles")
            .arg(profiles)
            .env("SHERATAN_CONTROL_URL", &target.control_url)
            .env("SHERATAN_DATA_URL", &target.data_url)
            .env("SHERATAN_HUB_TOKEN", &target.token)
            .env("SHERATAN_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("start the relay")?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line?;
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("relay: ") {
                url = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.starts_with("ready:") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            url: url.context("the relay reported no address")?,
        })
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn complete(
    http: &reqwest::Client,
    relay: &RelayProcess,
    token: &str,
) -> anyhow::Result<u64> {
    let t = Instant::now();
    let response = http
        .post(format!("{}/v1/complete", relay.url))
        .bearer_auth(token)
        .json(&serde_json::json!({"prompt": PROMPT, "profile": "bench"}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    if !status.is_success() || body["text"] != format!("You said: {PROMPT}") {
        bail!("the relay answered {status}: {body}");
    }
    Ok(t.elapsed().as_micros() as u64)
}

async fn throughput(
    target: &Target,
    relay: &RelayProcess,
    token: &str,
    jobs: u32,
) -> anyhow::Result<f64> {
    let http = sheratan_client::http_client_builder()?.build()?;
    complete(&http, relay, token).await.context("warm-up")?;
    let data = DataClient::new(&target.data_url, Some(token.to_owned()))?;
    let batch: Vec<SubmitJob> = (0..jobs)
        .map(|_| SubmitJob {
            queue: "llm".into(),
            kind: "chat".into(),
            payload: serde_json::json!({"prompt": PROMPT, "profile": "bench"}),
            priority: 0,
            required_capabilities: Vec::new(),
            idempotency_key: None,
            max_attempts: Some(1),
            timeout_s: None,
            run_at: None,
            follow_result: None,
            concurrency_key: None,
            retry: None,
        })
        .collect();
    let started = Instant::now();
    let submitted = data.submit_batch(batch).await?;
    let ids: Vec<String> = submitted
        .jobs
        .iter()
        .filter_map(|o| o.job_id.clone())
        .collect();
    loop {
        let done = data
            .jobs(&JobFilter {
                queue: Some("llm".into()),
                status: Some(JobStatus::Completed),
                limit: Some(1000),
                cursor: None,
                ..Default::default()
            })
            .await?
            .jobs
            .iter()
            .filter(|j| ids.contains(&j.job_id))
            .count();
        let failed = data
            .jobs(&JobFilter {
                queue: Some("llm".into()),
                status: Some(JobStatus::Failed),
                limit: Some(1000),
                cursor: None,
                ..Default::default()
            })
            .await?
            .jobs
            .len();
        if failed > 0 {
            bail!("{failed} relay jobs failed");
        }
        if done == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(f64::from(jobs) / started.elapsed().as_secs_f64() * 60.0)
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.jobs == 0 {
        bail!("--n and --jobs must be at least 1");
    }
    eprintln!("serving the chat page, starting a hub ...");
    let url = serve_page(page(args.delay_ms)).await?;
    let target = Target::spawn(&[])?;
    let token = target.token.clone();
    let dir = tempfile::Builder::new()
        .prefix("sheratan-bench-relay-")
        .tempdir()?;
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(
        &profiles,
        format!(
            "[profiles.bench]\nurl = \"{url}\"\ninput = \"textarea\"\nsubmit = \"button#send\"\nanswer = \".msg.bot\"\nbusy = \".typing\"\nstable_ms = {}\ntimeout_s = 60\n",
            args.stable_ms
        ),
    )?;
    // "You said: <prompt>": after the delay, one word every 100 ms (the first 100 ms after
    // the delay); the last lands at:
    let words = format!("You said: {PROMPT}").split(' ').count() as u64;
    let page_answer_ms = args.delay_ms + words * 100;

    eprintln!(
        "relay with 4 tabs; {} completions one at a time ...",
        args.n
    );
    let relay = RelayProcess::start(&target, dir.path(), &profiles, 4)?;
    let http = sheratan_client::http_client_builder()?.build()?;
    complete(&http, &relay, &token)
        .await
        .context("warm-up (launches Chromium)")?;
    let mut overhead_us = Vec::new();
    for _ in 0..args.n {
        let us = complete(&http, &relay, &token).await?;
        overhead_us.push(us.saturating_sub(page_answer_ms * 1000) as u32);
    }
    eprintln!("{} jobs through the llm queue with 4 tabs ...", args.jobs);
    let four = throughput(&target, &relay, &token, args.jobs).await?;
    drop(relay);
    eprintln!("{} jobs through the llm queue with 1 tab ...", args.jobs);
    let relay = RelayProcess::start(&target, dir.path(), &profiles, 1)?;
    let one = throughput(&target, &relay, &token, args.jobs).await?;
    drop(relay);

    let report = Report {
        bench: "relay",
        n: args.n,
        page_answer_ms,
        stable_ms: args.stable_ms,
        overhead: Percentiles::from_micros(&mut overhead_us),
        jobs: args.jobs,
        jobs_per_min_1_tab: one,
        jobs_per_min_4_tabs: four,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "relay overhead beyond the page's own {} ms: p50 {:.0} ms, p99 {:.0} ms (of which {} ms is the stable_ms quiet period); \
             {:.0} jobs/min with 1 tab, {:.0} with 4 tabs",
            page_answer_ms,
            report.overhead.p50_ms,
            report.overhead.p99_ms,
            args.stable_ms,
            one,
            four
        );
    }
    Ok(())
}
