//! `sheratan bench jobs`: the peer benchmarks' workload (the harness `scripts/bench-vs-peers.sh` runs) against the
//! hub over HTTP, so the figures stand beside BullMQ, Celery and PostgreSQL SKIP LOCKED:
//!
//! - enqueue: N single submits, P in flight; and N in batches of 100;
//! - drain: N queued jobs, C consumers lease and report signed results;
//! - concurrent: consumers running while the producers submit N;
//! - paced: RATE jobs/s for PACED_N jobs, submit-to-completion latency without a backlog;
//! - deep queue (`--deep-queue D`): lease latency with D jobs queued.
//!
//! Latency is the time after the result is acknowledged minus the time just before the
//! submit call, both read from one monotonic clock (one process).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use sheratan_proto::data::LeaseResponse;

use super::Percentiles;
use super::load::Lane;
use super::target::Target;

#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Jobs per phase.
    #[arg(long, env = "N", default_value_t = 20_000)]
    pub n: u64,
    /// Consumers (each one lease or result request in flight).
    #[arg(long, env = "C", default_value_t = 8)]
    pub consumers: usize,
    /// Producers (submit requests in flight).
    #[arg(long, env = "P", default_value_t = 8)]
    pub producers: usize,
    /// Jobs a consumer takes per lease call.
    #[arg(long, default_value_t = 8)]
    pub lease_max: u32,
    /// Rate of the paced phase, jobs/s.
    #[arg(long, env = "RATE", default_value_t = 500)]
    pub rate: u64,
    #[arg(long, env = "PACED_N", default_value_t = 2500)]
    pub paced_n: u64,
    /// Jobs submitted and drained before measuring.
    #[arg(long, env = "WARMUP", default_value_t = 5000)]
    pub warmup: u64,
    /// Instead of the phases: lease latency with this many jobs queued.
    #[arg(long)]
    pub deep_queue: Option<u64>,
    /// `SHERATAN_SYNC` of the hub the bench starts.
    #[arg(long, default_value = "normal")]
    pub sync: String,
    /// Run the hubs on this store (`postgres://…`; a fresh schema is used unless the URL
    /// names one) instead of a SQLite file.
    #[arg(long)]
    pub store: Option<String>,
    /// Hubs sharing the store (PostgreSQL only); the bench spreads its connections over them.
    #[arg(long, default_value_t = 1)]
    pub hubs: usize,
    /// How the bench authenticates: with the mesh token, with an admin credential, or as a
    /// least-privilege mesh does (`node`): producers with a submit credential, each consumer
    /// with a node credential of its own (`bench-0`, `bench-1`, …), its results signed with
    /// the key derived from it and checked against the lease's holder.
    #[arg(long, value_enum, default_value = "mesh")]
    pub auth: BenchAuth,
    /// Start the hubs with TLS on every listener (`--tls on`, a mesh CA of their own) and
    /// speak https:// to them, verified, over the same keep-alive connections.
    #[arg(long)]
    pub tls: bool,
    /// Measure this running hub (its data plane) instead of starting one. Its queue-depth and
    /// inflight limits must leave room for --n jobs.
    #[arg(long, conflicts_with_all = ["store", "hubs"])]
    pub data_url: Option<String>,
    /// Token of the hub given by --data-url.
    #[arg(long, env = "SHERATAN_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PID of the hub given by --data-url, for RSS readings.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Print one JSON object (the peers' format) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Jobs carry a `concurrency_key` out of this many (0: none).
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Sets the queue's `key_concurrency` before the run (with --keys: what a key limit costs).
    #[arg(long)]
    pub key_concurrency: Option<u32>,
    /// Consumers take jobs over the worker stream (`GET /v1/stream`, as `sheratan worker`
    /// does), each holding up to --lease-max jobs, instead of lease and result requests.
    #[arg(long, conflicts_with = "tls")]
    pub stream: bool,
}

#[derive(Debug, Serialize)]
struct Paced {
    rate: u64,
    n: u64,
    achieved_jps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Lat {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl From<&Percentiles> for Lat {
    fn from(p: &Percentiles) -> Lat {
        Lat {
            p50: p.p50_ms,
            p90: p.p90_ms,
            p99: p.p99_ms,
            max: p.max_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    peer: &'static str,
    variant: String,
    n: u64,
    consumers: usize,
    producers: usize,
    lease_max: u32,
    enqueue_jps: f64,
    enqueue_bulk100_jps: f64,
    drain_jps: f64,
    concurrent_jps: f64,
    concurrent_lat_ms: Lat,
    paced: Paced,
    hub_rss_end_bytes: Option<u64>,
    versions: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct DeepReport {
    peer: &'static str,
    bench: &'static str,
    variant: String,
    queued: u64,
    fill_jps: f64,
    leases: usize,
    lease_latency: Percentiles,
    hub_rss_bytes: Option<u64>,
}

/// What every lane shares.
#[derive(Clone)]
struct Ctx {
    /// The hubs' data planes; lanes are spread over them.
    urls: Arc<Vec<String>>,
    next_lane: Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    /// Consumer `c`'s own token (a node credential named `bench-{c}`); the shared token where
    /// there is none.
    consumer_tokens: Arc<Vec<String>>,
    /// The zero of every latency: submits carry their offset from it.
    epoch: Instant,
    /// Jobs carry one of this many concurrency keys (0: none).
    keys: u64,
    /// Consumers use the worker stream.
    stream: bool,
}

impl Ctx {
    async fn lane(&self) -> anyhow::Result<Lane> {
        self.lane_with(&self.token).await
    }

    /// A lane for consumer `c`, which leases as node `bench-{c}`.
    async fn consumer_lane(&self, c: usize) -> anyhow::Result<Lane> {
        self.lane_with(self.consumer_tokens.get(c).unwrap_or(&self.token))
            .await
    }

    async fn lane_with(&self, token: &str) -> anyhow::Result<Lane> {
        let i = self.next_lane.fetch_add(1, Ordering::Relaxed);
        Lane::connect(&self.urls[i % self.urls.len()], token).await
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// About 100 bytes of JSON, like the peers' payload, carrying the submit time.
    fn job(&self, i: u64) -> String {
        let t = self.now_us();
        let key = match self.keys {
            0 => String::new(),
            k => format!(r#","concurrency_key":"acct-{}""#, i % k),
        };
        format!(
            r#"{{"kind":"email.send"{key},"payload":{{"i":{i},"t":{t},"kind":"email.send","user":"u_{i:08}","pad":"xxxxxxxxxxxxxxxxxxxxxx"}}}}"#
        )
    }
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.consumers == 0 || args.producers == 0 {
        bail!("--n, --consumers and --producers must be at least 1");
    }
    if args.hubs == 0 || (args.hubs > 1 && args.store.is_none()) {
        bail!("--hubs must be 1, or more with --store postgres://…");
    }
    let (targets, variant) = targets(&args)?;
    let target = &targets[0];
    let (token, consumer_tokens, mut variant) = bench_tokens(&args, target, variant).await?;
    if let Some(n) = args.key_concurrency {
        let admin = sheratan_client::DataClient::new(&target.data_url, Some(target.token.clone()))?;
        let patch = sheratan_proto::queues::QueueSettingsPatch {
            key_concurrency: Some(Some(n)),
            ..Default::default()
        };
        admin.put_queue_settings("default", &patch).await?;
        variant = format!("{variant}, key_concurrency {n}");
    }
    if args.keys > 0 {
        variant = format!("{variant}, {} keys", args.keys);
    }
    let ctx = Ctx {
        urls: Arc::new(targets.iter().map(|t| t.data_url.clone()).collect()),
        next_lane: Arc::default(),
        token,
        consumer_tokens: Arc::new(consumer_tokens),
        epoch: Instant::now(),
        keys: args.keys,
        stream: args.stream,
    };
    if let Some(depth) = args.deep_queue {
        return deep_queue(&ctx, target, depth, &args).await;
    }
    let report = phases(&ctx, &args, variant, target).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        print_table(&mut out, &report)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchAuth {
    Mesh,
    Credential,
    Node,
}

/// The tokens the lanes send (made on the hub with its mesh token): the producers' and each
/// consumer's; and the variant's name.
async fn bench_tokens(
    args: &JobsArgs,
    target: &Target,
    variant: String,
) -> anyhow::Result<(String, Vec<String>, String)> {
    use sheratan_proto::credentials::{CreateCredential, CredentialRole};
    if args.auth == BenchAuth::Mesh {
        return Ok((target.token.clone(), Vec::new(), variant));
    }
    let admin = sheratan_client::DataClient::new(&target.data_url, Some(target.token.clone()))?;
    let create = |name: &str, role| CreateCredential {
        name: name.into(),
        role,
        queues: vec![],
        expires_in_s: None,
    };
    if args.auth == BenchAuth::Credential {
        let secret = admin
            .create_credential(&create("bench", CredentialRole::Admin))
            .await?
            .secret;
        return Ok((secret, Vec::new(), format!("{variant}, admin credential")));
    }
    let submit = admin
        .create_credential(&create("bench-submit", CredentialRole::Submit))
        .await?
        .secret;
    let mut nodes = Vec::with_capacity(args.consumers);
    for c in 0..args.consumers {
        let name = format!("bench-{c}");
        nodes.push(
            admin
                .create_credential(&create(&name, CredentialRole::Node))
                .await?
                .secret,
        );
    }
    let variant = format!("{variant}, submit and node credentials");
    Ok((submit, nodes, variant))
}

/// The hubs to measure (started here, or the running one of `--data-url`) and the variant's
/// name for the report.
fn targets(args: &JobsArgs) -> anyhow::Result<(Vec<Target>, String)> {
    if let Some(url) = &args.data_url {
        let token = args
            .token
            .clone()
            .context("--token (or SHERATAN_HUB_TOKEN) is required with --data-url")?;
        let target = Target::external(String::new(), url.clone(), token, args.hub_pid);
        return Ok((vec![target], format!("running hub at {url}")));
    }
    let mut extra: Vec<String> = [
        "--max-queue-depth",
        "100000000",
        "--max-inflight",
        "1000000",
        "--sync",
        &args.sync,
    ]
    .map(String::from)
    .into();
    if args.tls {
        extra.extend(["--tls".into(), "on".into()]);
    }
    let variant = match &args.store {
        Some(url) => {
            let url = if url.contains("schema=") {
                url.clone()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}schema=bench_{}", std::process::id())
            };
            extra.extend(["--store".into(), url]);
            let plural = if args.hubs == 1 { "" } else { "s" };
            format!("postgres/{} hub{plural}", args.hubs)
        }
        None => format!("sqlite/{}", args.sync),
    };
    let variant = if args.tls {
        format!("{variant}, TLS")
    } else if args.stream {
        format!("{variant}, worker stream")
    } else {
        variant
    };
    eprintln!("starting {} hub(s) in temp dirs ({variant}) ...", args.hubs);
    let token = format!("bench-token-{:010}", std::process::id());
    let targets = (0..args.hubs)
        .map(|_| Target::spawn_with(&extra, Some(&token)))
        .collect::<anyhow::Result<_>>()?;
    Ok((targets, variant))
}

/// The warm-up, then each phase in turn.
async fn phases(
    ctx: &Ctx,
    args: &JobsArgs,
    variant: String,
    target: &Target,
) -> anyhow::Result<Report> {
    let (n, producers, consumers, lease_max) =
        (args.n, args.producers, args.consumers, args.lease_max);
    if args.warmup > 0 {
        eprintln!("warm-up: {} jobs", args.warmup);
        enqueue(ctx, args.warmup, producers, 1).await?;
        drain(ctx, args.warmup, consumers, lease_max).await?;
    }
    eprintln!("enqueue: {n} single submits, {producers} in flight");
    let enqueue_jps = enqueue(ctx, n, producers, 1).await?;
    eprintln!("drain: {n} jobs, {consumers} consumers");
    let (drain_jps, _) = drain(ctx, n, consumers, lease_max).await?;
    eprintln!("enqueue: {n} jobs in batches of 100");
    let enqueue_bulk100_jps = enqueue(ctx, n, producers, 100).await?;
    drain(ctx, n, consumers, lease_max).await?;
    eprintln!("concurrent: {n} jobs, producers and consumers at once");
    let (concurrent_jps, concurrent) = with_consumers(ctx, args, n, async {
        enqueue(ctx, n, producers, 1).await.map(drop)
    })
    .await?;
    eprintln!("paced: {} jobs at {}/s", args.paced_n, args.rate);
    let (achieved_jps, paced_lat) = with_consumers(ctx, args, args.paced_n, async {
        paced(ctx, args.paced_n, args.rate).await
    })
    .await?;
    Ok(Report {
        peer: "hub",
        variant,
        n,
        consumers,
        producers,
        lease_max,
        enqueue_jps,
        enqueue_bulk100_jps,
        drain_jps,
        concurrent_jps,
        concurrent_lat_ms: Lat::from(&concurrent),
        paced: Paced {
            rate: args.rate,
            n: args.paced_n,
            achieved_jps,
            p50_ms: paced_lat.p50_ms,
            p90_ms: paced_lat.p90_ms,
            p99_ms: paced_lat.p99_ms,
            max_ms: paced_lat.max_ms,
        },
        hub_rss_end_bytes: target.rss_bytes(),
        versions: serde_json::json!({"sheratan": env!("CARGO_PKG_VERSION"), "client": "rust hyper 1"}),
    })
}

/// Runs `produce` while the consumers drain `n` jobs; jobs/s over both, and the latencies.
async fn with_consumers(
    ctx: &Ctx,
    args: &JobsArgs,
    n: u64,
    produce: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(f64, Percentiles)> {
    let started = Instant::now();
    let consumers = tokio::spawn(drain_owned(ctx.clone(), n, args.consumers, args.lease_max));
    produce.await?;
    let (_, mut lat) = consumers.await??;
    let jps = n as f64 / started.elapsed().as_secs_f64();
    Ok((jps, Percentiles::from_micros(&mut lat)))
}

fn print_table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "jobs over HTTP: {}, N={}, C={}, P={}, {} per lease",
        r.variant, r.n, r.consumers, r.producers, r.lease_max
    )?;
    writeln!(out, "  enqueue             {:>9.0} jobs/s", r.enqueue_jps)?;
    writeln!(
        out,
        "  enqueue bulk100     {:>9.0} jobs/s",
        r.enqueue_bulk100_jps
    )?;
    writeln!(out, "  drain               {:>9.0} jobs/s", r.drain_jps)?;
    let c = &r.concurrent_lat_ms;
    writeln!(
        out,
        "  concurrent          {:>9.0} jobs/s  (backlog latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        r.concurrent_jps, c.p50, c.p90, c.p99, c.max
    )?;
    let p = &r.paced;
    writeln!(
        out,
        "  paced {}/s          {:>9.0} jobs/s  latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p.rate, p.achieved_jps, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
    )?;
    if let Some(rss) = r.hub_rss_end_bytes {
        let mib = rss as f64 / 1048576.0;
        writeln!(out, "  hub RSS at the end  {mib:>9.1} MiB")?;
    }
    Ok(())
}

/// Submits `n` jobs over `lanes` connections, `batch` per request; returns jobs/s.
async fn enqueue(ctx: &Ctx, n: u64, lanes: usize, batch: u64) -> anyhow::Result<f64> {
    if ctx.stream && batch == 1 {
        return enqueue_streams(ctx, n, lanes).await;
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..lanes {
        let mut lane = ctx.lane().await?;
        let (ctx, next) = (ctx.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let last = (first + batch).min(n);
                let (path, body) = if batch == 1 {
                    ("/v1/jobs", ctx.job(first))
                } else {
                    let items: Vec<String> = (first..last).map(|i| ctx.job(i)).collect();
                    (
                        "/v1/jobs/batch",
                        format!(r#"{{"jobs":[{}]}}"#, items.join(",")),
                    )
                };
                let (status, answer, _) = lane.exchange(path, Bytes::from(body), &[]).await?;
                if status != 202 && status != 200 {
                    bail!(
                        "submit answered HTTP {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// A producer's stream (only submits) to one of the hubs.
async fn producer_stream(ctx: &Ctx) -> anyhow::Result<sheratan_client::stream::WorkerStream> {
    let i = ctx.next_lane.fetch_add(1, Ordering::Relaxed);
    let data =
        sheratan_client::DataClient::new(&ctx.urls[i % ctx.urls.len()], Some(ctx.token.clone()))?;
    let (stream, _) = data
        .open_stream(
            sheratan_client::stream::StreamSpec::producer(),
            Arc::new(Vec::new),
        )
        .await
        .context("open a producer stream")?;
    Ok(stream)
}

/// [`enqueue`] of single jobs over one producer stream, `lanes` submits in flight on it (as
/// many as the request lanes have in all).
async fn enqueue_streams(ctx: &Ctx, n: u64, lanes: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let shared = producer_stream(ctx).await?;
    let streams = vec![shared.clone(); lanes];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream in streams {
        let (ctx, next) = (ctx.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let job: sheratan_proto::data::SubmitJob = serde_json::from_str(&ctx.job(i))?;
                stream
                    .submit(&job, None)
                    .await
                    .context("a submit on the stream")?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let jps = n as f64 / started.elapsed().as_secs_f64();
    shared.close();
    Ok(jps)
}

/// Submits at `rate` jobs/s from one lane.
async fn paced(ctx: &Ctx, n: u64, rate: u64) -> anyhow::Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = tokio::time::Instant::now();
    if ctx.stream {
        let stream = producer_stream(ctx).await?;
        for i in 0..n {
            tokio::time::sleep_until(next).await;
            next += period;
            let job: sheratan_proto::data::SubmitJob = serde_json::from_str(&ctx.job(i))?;
            stream
                .submit(&job, None)
                .await
                .context("a submit on the stream")?;
        }
        stream.close();
        return Ok(());
    }
    let mut lane = ctx.lane().await?;
    for i in 0..n {
        tokio::time::sleep_until(next).await;
        next += period;
        let (status, _, _) = lane
            .exchange("/v1/jobs", Bytes::from(ctx.job(i)), &[])
            .await?;
        if status != 202 {
            bail!("submit answered HTTP {status}");
        }
    }
    Ok(())
}

async fn drain(
    ctx: &Ctx,
    n: u64,
    consumers: usize,
    lease_max: u32,
) -> anyhow::Result<(f64, Vec<u32>)> {
    drain_owned(ctx.clone(), n, consumers, lease_max).await
}

/// Consumers lease and report signed results until `n` jobs are acknowledged; returns
/// jobs/s and each job's submit-to-acknowledgement latency in microseconds.
async fn drain_owned(
    ctx: Ctx,
    n: u64,
    consumers: usize,
    lease_max: u32,
) -> anyhow::Result<(f64, Vec<u32>)> {
    if ctx.stream {
        return drain_streams(ctx, n, consumers, lease_max).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let mut lane = ctx.consumer_lane(c).await?;
        let (ctx, done, latencies) = (ctx.clone(), done.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let lease_body = Bytes::from(format!(
                r#"{{"node_id":"bench-{c}","capabilities":["email.send"],"max_jobs":{lease_max},"wait_ms":200}}"#
            ));
            let mut mine = Vec::new();
            while done.load(Ordering::Relaxed) < n {
                let (status, answer, _) =
                    lane.exchange("/v1/leases", lease_body.clone(), &[]).await?;
                if status != 200 {
                    bail!("lease answered HTTP {status}");
                }
                let grant: LeaseResponse =
                    serde_json::from_slice(&answer).context("decode a lease")?;
                for job in grant.jobs {
                    let (status, answer, _) =
                        lane.report_success(&job.job_id, &job.lease_id).await?;
                    if status != 200 {
                        bail!(
                            "result answered HTTP {status}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                    let sent_us = job.payload["t"].as_u64().unwrap_or(0);
                    mine.push(
                        u32::try_from(ctx.now_us().saturating_sub(sent_us)).unwrap_or(u32::MAX),
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies.lock().expect("latency lock").extend(mine);
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let jps = n as f64 / started.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *latencies.lock().expect("latency lock"));
    Ok((jps, lat))
}

/// [`drain_owned`] over worker streams: each consumer holds up to `lease_max` jobs, reports
/// each one on the stream as soon as it is pushed, and asks for the next as the result goes
/// out (as `sheratan worker` does); a job counts once the hub answered its result.
async fn drain_streams(
    ctx: Ctx,
    n: u64,
    consumers: usize,
    lease_max: u32,
) -> anyhow::Result<(f64, Vec<u32>)> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let (ctx, done) = (ctx.clone(), done.clone());
        let url = ctx.urls[c % ctx.urls.len()].clone();
        let token = ctx.consumer_tokens.get(c).unwrap_or(&ctx.token).clone();
        let data = sheratan_client::DataClient::new(&url, Some(token))?;
        let spec = sheratan_client::stream::StreamSpec {
            node_id: format!("bench-{c}"),
            queues: vec!["default".into()],
            capabilities: vec!["email.send".into()],
            max_jobs: lease_max,
        };
        let (stream, events) = data
            .open_stream(spec, Arc::new(Vec::new))
            .await
            .context("open a worker stream")?;
        tasks.push(tokio::spawn(stream_consumer(
            ctx, stream, events, n, lease_max, done,
        )));
    }
    let mut lat = Vec::with_capacity(n as usize);
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), lat))
}

async fn stream_consumer(
    ctx: Ctx,
    stream: sheratan_client::stream::WorkerStream,
    mut events: tokio::sync::mpsc::Receiver<sheratan_client::stream::StreamEvent>,
    n: u64,
    lease_max: u32,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Vec<u32>> {
    use futures_util::StreamExt;
    use sheratan_client::stream::StreamEvent;
    let mut answers = futures_util::stream::FuturesUnordered::new();
    let mut mine = Vec::new();
    let mut look = tokio::time::interval(Duration::from_millis(10));
    stream.want(lease_max);
    while done.load(Ordering::Relaxed) < n || !answers.is_empty() {
        tokio::select! {
            event = events.recv() => match event {
                Some(StreamEvent::Job(job)) => {
                    let report = sheratan_proto::data::ResultRequest {
                        job_id: job.job_id.clone(),
                        lease_id: job.lease_id.clone(),
                        outcome: sheratan_proto::data::Outcome::Success,
                        result: serde_json::Value::Null,
                        error: None,
                    };
                    let sent = stream.send_result(&report, None);
                    stream.want(1);
                    let sent_us = job.payload["t"].as_u64().unwrap_or(0);
                    let stream = stream.clone();
                    answers.push(async move { (stream.answer_of(sent).await, sent_us) });
                }
                Some(StreamEvent::Lost(why)) => bail!("the worker stream was lost: {why}"),
                Some(_) => {}
                None => bail!("the worker stream closed"),
            },
            Some((answer, sent_us)) = answers.next(), if !answers.is_empty() => {
                answer.context("a result on the stream")?;
                mine.push(u32::try_from(ctx.now_us().saturating_sub(sent_us)).unwrap_or(u32::MAX));
                done.fetch_add(1, Ordering::Relaxed);
            }
            _ = look.tick() => {}
        }
    }
    // No job may be left pushed and unseen when the next phase starts.
    stream.stop();
    loop {
        match events.recv().await {
            Some(StreamEvent::Stopped) | None => break,
            Some(StreamEvent::Job(job)) => bail!("job {} pushed after the last one", job.job_id),
            Some(_) => {}
        }
    }
    stream.close();
    Ok(mine)
}

/// Lease latency with `depth` jobs queued: fill the queue in batches, then lease one job at a
/// time (and complete it, so inflight stays low) and time each lease call.
async fn deep_queue(ctx: &Ctx, target: &Target, depth: u64, args: &JobsArgs) -> anyhow::Result<()> {
    eprintln!("filling the queue with {depth} jobs ...");
    let started = Instant::now();
    let filler = {
        let ctx = ctx.clone();
        tokio::spawn(async move { enqueue(&ctx, depth, 4, 1000).await })
    };
    while !filler.is_finished() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        eprintln!("  {:.0} s", started.elapsed().as_secs_f64());
    }
    let fill_jps = filler.await??;
    let mut lane = ctx.consumer_lane(0).await?;
    let body =
        Bytes::from_static(br#"{"node_id":"bench-0","capabilities":["email.send"],"max_jobs":1}"#);
    let leases = 2000;
    let mut samples = Vec::with_capacity(leases);
    for _ in 0..leases {
        let (status, answer, micros) = lane.exchange("/v1/leases", body.clone(), &[]).await?;
        if status != 200 {
            bail!("lease answered HTTP {status}");
        }
        samples.push(micros);
        let grant: LeaseResponse = serde_json::from_slice(&answer)?;
        for job in grant.jobs {
            lane.report_success(&job.job_id, &job.lease_id).await?;
        }
    }
    let report = DeepReport {
        peer: "hub",
        bench: "deep_queue_lease",
        variant: format!("sqlite/{}", args.sync),
        queued: depth,
        fill_jps,
        leases,
        lease_latency: Percentiles::from_micros(&mut samples),
        hub_rss_bytes: target.rss_bytes(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "lease latency with {depth} jobs queued: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (filled at {fill_jps:.0} jobs/s)",
            report.lease_latency.p50_ms,
            report.lease_latency.p90_ms,
            report.lease_latency.p99_ms,
            report.lease_latency.max_ms
        )?;
    }
    Ok(())
}
