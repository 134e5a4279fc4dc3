//! Commands for people: submit, jobs, nodes, bundle, token. Readable tables by default,
//! `--json` for scripts.
//!
//! Exit codes: 0 success; 1 a failure (the hub's error is printed with its hint); 2 usage;
//! 3 a waited-for job ended `failed`; 4 it ended `cancelled`; 5 waiting timed out.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use sheratan_client::{BundleFetch, JobFilter, Submitted};
use sheratan_proto::control::{NodeStatus, NodeView, Role};
use sheratan_proto::data::{JobStatus, JobView, SubmitJob};

use crate::Failure;
use crate::client_args::ClientArgs;

/// What a job is, as `submit` and `schedule add` take it.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The handler to run (echo, sleep, http, or an exec handler's name).
    #[arg(long)]
    pub kind: String,
    /// The payload: JSON text, or @FILE to read it from a file (@- for stdin).
    #[arg(long, default_value = "null")]
    pub payload: String,
    #[arg(long, default_value = "default")]
    pub queue: String,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The longest the job may run, in seconds (the hub's default when absent): its handler
    /// is killed then and the job fails with TIMEOUT.
    #[arg(long)]
    pub timeout_s: Option<u32>,
    /// Jobs sharing a key obey the queue's key_concurrency and key_rate together.
    #[arg(long)]
    pub concurrency_key: Option<String>,
    /// Capabilities a node needs besides the job's kind (which the hub always requires: a job
    /// goes only to a node with a handler for it), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub require: Option<Vec<String>>,
}

impl JobArgs {
    /// The wire job (no idempotency key, run time or result following: the caller's to add),
    /// or a usage error for a payload that is not JSON.
    pub fn job(&self) -> Result<SubmitJob, Failure> {
        let payload = read_payload(&self.payload).map_err(|e| crate::usage(format!("{e:#}")))?;
        // The hub adds the kind itself: a job goes only to a node that offers its kind.
        let required = self
            .require
            .iter()
            .flatten()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect();
        Ok(SubmitJob {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            payload,
            priority: self.priority,
            required_capabilities: required,
            idempotency_key: None,
            max_attempts: self.max_attempts,
            timeout_s: self.timeout_s,
            run_at: None,
            follow_result: None,
            concurrency_key: self.concurrency_key.clone(),
            retry: None,
        })
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub job: JobArgs,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Not before this time: RFC 3339 (2026-12-24T09:00:00Z) or Unix seconds.
    #[arg(long, value_parser = crate::hub_args::parse_time, conflicts_with = "in_")]
    pub at: Option<time::OffsetDateTime>,
    /// Not before this long from now: 90s, 10m, 12h, 7d.
    #[arg(long = "in", id = "in_", value_parser = parse_lifetime)]
    pub in_: Option<u64>,
    /// Wait for the job to finish and print its result.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit code 5).
    #[arg(long, default_value_t = 600)]
    pub wait_timeout_s: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn read_payload(arg: &str) -> anyhow::Result<serde_json::Value> {
    let text = match arg.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("read the payload from stdin")?;
            s
        }
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("read the payload from {path}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).context("--payload is not valid JSON")
}

pub async fn submit(args: SubmitArgs) -> Result<(), Failure> {
    let job = SubmitJob {
        idempotency_key: args.idempotency_key.clone(),
        run_at: args.at.or_else(|| {
            args.in_.map(|s| {
                time::OffsetDateTime::now_utc()
                    + time::Duration::seconds(s.min(i64::MAX as u64) as i64)
            })
        }),
        // With --wait this command collects the result (and acknowledges it); without, nobody
        // does: the result stays with the job but never counts as pending.
        follow_result: Some(args.wait),
        ..args.job.job()?
    };
    let data = args.client.data()?;
    let submitted = data.submit(&job).await.map_err(anyhow::Error::new)?;
    let job_id = submitted.response().job_id.clone();
    // An idempotent repeat may be somebody else's job: its result is theirs to acknowledge.
    let ours = matches!(submitted, Submitted::Created(_));
    if let Some(warning) = &submitted.response().warning {
        eprintln!("note: {warning}");
    }
    if !args.wait {
        print_submitted(&submitted, job.run_at, args.json);
        return Ok(());
    }
    let view = wait_for(&data, &job_id, Duration::from_secs(args.wait_timeout_s)).await?;
    // This command submitted the job and has seen the outcome: acknowledge it, so it does not
    // stay among the pending results (`sheratan_results_pending`).
    if ours && let Err(err) = data.ack(vec![job_id.clone()]).await {
        eprintln!("note: could not acknowledge the result of {job_id}: {err}");
    }
    print_outcome(&view, args.json);
    match view.status {
        JobStatus::Completed => Ok(()),
        JobStatus::Cancelled => Err(Failure::quiet(4)),
        _ => Err(Failure::quiet(3)),
    }
}

/// The submit's answer: the job id and whether it is new.
fn print_submitted(submitted: &Submitted, run_at: Option<time::OffsetDateTime>, json: bool) {
    let mut out = std::io::stdout().lock();
    let answer = submitted.response();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(answer).expect("serializes")
        )
        .ok();
        return;
    }
    let what = match submitted {
        Submitted::Created(_) => "submitted",
        Submitted::Existing(_) => "already submitted (same idempotency key)",
    };
    match run_at.filter(|t| *t > time::OffsetDateTime::now_utc()) {
        Some(t) => writeln!(
            out,
            "{} {what}, delayed until {}",
            answer.job_id,
            fmt_time(t)
        )
        .ok(),
        None => writeln!(out, "{} {what}", answer.job_id).ok(),
    };
}

/// A job's status as people read it: an accepted job that may not run yet is "delayed".
fn shown_status(view: &JobView) -> &'static str {
    if view.status == JobStatus::Accepted && view.run_at > time::OffsetDateTime::now_utc() {
        "delayed"
    } else {
        view.status.as_str()
    }
}

/// A finished job: its result, or what became of it.
fn print_outcome(view: &JobView, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(view).expect("serializes")).ok();
    } else if view.status == JobStatus::Completed {
        let result = serde_json::to_string_pretty(&view.result).expect("serializes");
        writeln!(out, "{result}").ok();
    } else {
        let message = view.error.as_ref().map_or("", |e| e.message.as_str());
        writeln!(
            out,
            "job {} {} after {} attempt(s): {message}",
            view.job_id,
            view.status.as_str(),
            view.attempt
        )
        .ok();
    }
}

/// Polls the job until it is finished, showing its status on a terminal and printing its
/// streamed output (docs/API.md, "Progress") to standard error as it arrives; standard output
/// keeps only the result.
async fn wait_for(
    data: &sheratan_client::DataClient,
    job_id: &str,
    timeout: Duration,
) -> Result<JobView, Failure> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let mut output = StreamedOutput::default();
    loop {
        let view = data.job(job_id).await.map_err(anyhow::Error::new)?;
        if output.show(&view, tty && tick > 0 && output.printed == 0) && tty {
            tick = 0;
        }
        if view.status.is_terminal() {
            output.end();
            if tty && output.printed == 0 {
                eprint!("\r\x1b[2K");
            }
            return Ok(view);
        }
        if started.elapsed() > timeout {
            if tty {
                eprintln!();
            }
            let fate = match view.status {
                JobStatus::Accepted => "it stays queued until a node takes it",
                _ => "it keeps running",
            };
            eprintln!(
                "error: job {job_id} is still {} after {:?}; {fate} (sheratan jobs show {job_id})",
                view.status.as_str(),
                timeout
            );
            return Err(Failure::quiet(5));
        }
        if tty && output.printed == 0 {
            let detail = match &view.lease {
                Some(l) => format!("on {} (attempt {})", l.node_id, view.attempt),
                None if view.attempt > 0 => {
                    format!("waiting to retry (attempt {} failed)", view.attempt)
                }
                None if shown_status(&view) == "delayed" => {
                    format!("delayed until {}", fmt_time(view.run_at))
                }
                None => "waiting for a worker".into(),
            };
            let detail = match view.progress.as_ref().and_then(|p| p.value) {
                Some(v) => format!("{detail} {:.0}%", v * 100.0),
                None => detail,
            };
            eprint!(
                "\r\x1b[2K{} {} {} {:.1}s",
                spinner[tick % 4],
                view.status.as_str(),
                detail,
                started.elapsed().as_secs_f64()
            );
            tick += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a waiting `submit` printed of the job's output.
#[derive(Default)]
struct StreamedOutput {
    printed: u64,
    ends_with_newline: bool,
}

impl StreamedOutput {
    /// Prints the output the job produced since the last look; true when it printed some
    /// (`clear`: a spinner is on the line and goes first).
    fn show(&mut self, view: &JobView, clear: bool) -> bool {
        let Some(progress) = &view.progress else {
            return false;
        };
        let (new, total) = progress.new_output(self.printed);
        if new.is_empty() {
            return false;
        }
        let mut err = std::io::stderr().lock();
        if clear {
            let _ = write!(err, "\r\x1b[2K");
        }
        // The hub keeps the output's end only: say what came and went between two looks.
        let skipped = total.saturating_sub(self.printed) - new.len() as u64;
        if skipped > 0 {
            let _ = write!(err, "\n[… {skipped} bytes of output not shown …]\n");
        }
        let _ = write!(err, "{new}");
        let _ = err.flush();
        self.printed = total;
        self.ends_with_newline = new.ends_with('\n');
        true
    }

    /// Ends the streamed output on a line of its own.
    fn end(&self) {
        if self.printed > 0 && !self.ends_with_newline {
            eprintln!();
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        narrow: Narrow,
        #[arg(long)]
        json: bool,
    },
    /// One job, with payload, attempts, result and error.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The whole job id, or 8+ characters from its end (or start).
        job_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel an accepted or running job.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        /// The whole job id, or 8+ characters from its end (or start).
        job_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a job back to accepted with fresh attempts, or, without a job id, every finished
    /// job matching the filters (admin path: run on the hub's machine).
    Requeue {
        #[command(flatten)]
        client: ClientArgs,
        /// The whole job id, or 8+ characters from its end (or start).
        job_id: Option<String>,
        /// Without a job id: the jobs to requeue in bulk (failed or cancelled).
        #[command(flatten)]
        select: Select,
        #[arg(long)]
        json: bool,
    },
    /// Delete finished jobs matching the filters, results and all (admin path).
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The jobs to delete (failed, cancelled or completed).
        #[command(flatten)]
        select: Select,
        #[arg(long)]
        json: bool,
    },
}

/// Which finished jobs a bulk requeue or delete takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Select {
    /// failed (the default), cancelled, or (delete only) completed.
    #[arg(long)]
    status: Option<String>,
    /// Only this queue's jobs.
    #[arg(long)]
    queue: Option<String>,
    #[command(flatten)]
    narrow: Narrow,
    /// At most this many (default 1,000).
    #[arg(long)]
    limit: Option<u32>,
}

impl Select {
    /// The wire form, or a usage error when nothing narrows it (no "everything" by accident).
    fn selection(self) -> Result<sheratan_proto::data::BulkSelection, Failure> {
        let s = sheratan_proto::data::BulkSelection {
            status: self.status,
            queue: self.queue,
            kind: self.narrow.kind,
            error: self.narrow.error,
            since: self.narrow.since,
            limit: self.limit,
            job_ids: None,
        };
        let named = [&s.status, &s.queue, &s.kind, &s.error, &s.since];
        if named.iter().all(|f| f.is_none()) {
            return Err(crate::usage(
                "name the jobs: --status, --queue, --kind, --error or --since (or, to requeue one, its id)".into(),
            ));
        }
        Ok(s)
    }
}

pub async fn jobs(cmd: JobsCommand) -> Result<(), Failure> {
    enum Act {
        Show,
        Cancel,
        Requeue,
    }
    let (client, job_id, json, act) = match cmd {
        JobsCommand::List {
            client,
            queue,
            status,
            limit,
            narrow,
            json,
        } => return list_jobs(&client, queue, status, limit, narrow, json).await,
        JobsCommand::Show {
            client,
            job_id,
            json,
        } => (client, job_id, json, Act::Show),
        JobsCommand::Cancel {
            client,
            job_id,
            json,
        } => (client, job_id, json, Act::Cancel),
        JobsCommand::Requeue {
            client,
            job_id: Some(job_id),
            json,
            ..
        } => (client, job_id, json, Act::Requeue),
        JobsCommand::Requeue {
            client,
            job_id: None,
            select,
            json,
        } => return bulk(&client, select.selection()?, false, json).await,
        JobsCommand::Delete {
            client,
            select,
            json,
        } => return bulk(&client, select.selection()?, true, json).await,
    };
    let data = client.data()?;
    let view = match act {
        Act::Show => data.job(&job_id).await,
        Act::Cancel => data.cancel(&job_id).await,
        Act::Requeue => data.requeue(&job_id).await,
    }
    .map_err(anyhow::Error::new)?;
    print_job(&view, json);
    Ok(())
}

/// `jobs requeue` without a job id, and `jobs delete`: the matching finished jobs, in bulk.
async fn bulk(
    client: &ClientArgs,
    req: sheratan_proto::data::BulkSelection,
    delete: bool,
    json: bool,
) -> Result<(), Failure> {
    let data = client.data()?;
    let done = if delete {
        data.delete_many(&req).await
    } else {
        data.requeue_many(&req).await
    }
    .map_err(anyhow::Error::new)?;
    if json {
        return print_json(&done);
    }
    let verb = if delete { "deleted" } else { "requeued" };
    println!("{verb} {} job(s)", done.count);
    for id in &done.job_ids {
        println!("{id}");
    }
    Ok(())
}

/// Narrower job lists: by kind, error text, and time.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Narrow {
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs whose error message contains this text (any case).
    #[arg(long)]
    error: Option<String>,
    /// Only jobs that changed since: 30m, 1h, 7d, or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
}

async fn list_jobs(
    client: &ClientArgs,
    queue: Option<String>,
    status: Option<String>,
    limit: u32,
    narrow: Narrow,
    json: bool,
) -> Result<(), Failure> {
    let status = status
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(crate::usage)?;
    let filter = JobFilter {
        queue,
        status,
        limit: Some(limit),
        cursor: None,
        kind: narrow.kind,
        error: narrow.error,
        since: narrow.since,
    };
    let list = client
        .data()?
        .jobs(&filter)
        .await
        .map_err(anyhow::Error::new)?;
    if json {
        println!("{}", serde_json::to_string(&list).expect("serializes"));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.queue.clone(),
                j.kind.clone(),
                shown_status(j).into(),
                j.attempt.to_string(),
                fmt_time(j.created_at),
            ]
        })
        .collect();
    print_table(
        &["JOB", "QUEUE", "KIND", "STATUS", "ATTEMPT", "CREATED"],
        &rows,
    );
    if list.jobs.is_empty() {
        println!("(no jobs)");
    }
    Ok(())
}

fn print_job(view: &JobView, json: bool) {
    if json {
        println!("{}", serde_json::to_string(view).expect("serializes"));
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "job       {}", view.job_id);
    let _ = writeln!(out, "queue     {}", view.queue);
    let _ = writeln!(out, "kind      {}", view.kind);
    let _ = writeln!(out, "status    {}", shown_status(view));
    if shown_status(view) == "delayed" {
        let _ = writeln!(out, "runs at   {}", fmt_time(view.run_at));
    }
    let _ = writeln!(out, "attempt   {} of {}", view.attempt, view.max_attempts);
    let _ = writeln!(out, "priority  {}", view.priority);
    let _ = writeln!(out, "created   {}", fmt_time(view.created_at));
    if let Some(l) = &view.lease {
        let _ = writeln!(
            out,
            "lease     held by {} until {}",
            l.node_id,
            fmt_time(l.expires_at)
        );
    }
    if let Some(f) = view.finished_at {
        let _ = writeln!(out, "finished  {}", fmt_time(f));
    }
    let _ = writeln!(out, "payload   {}", view.payload);
    if let Some(r) = &view.result {
        let _ = writeln!(out, "result    {r}");
    }
    if let Some(e) = &view.error {
        let _ = writeln!(out, "error     {} (retryable: {})", e.message, e.retryable);
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    #[command(subcommand)]
    pub command: Option<NodesCommand>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Removes a node from the registry (the hub's admin path: run it on the hub's machine).
    /// A node that heartbeats again simply comes back.
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        node_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn nodes(args: NodesArgs) -> Result<(), Failure> {
    if let Some(NodesCommand::Rm {
        client,
        node_id,
        json,
    }) = args.command
    {
        let removed = client
            .data()?
            .remove_node(&node_id)
            .await
            .map_err(anyhow::Error::new)?;
        if json {
            println!("{}", serde_json::to_string(&removed).expect("serializes"));
        } else {
            println!(
                "removed {} ({}, last seen {}); it comes back if it heartbeats again",
                removed.node_id,
                removed.status.as_str(),
                fmt_time(removed.last_seen)
            );
        }
        return Ok(());
    }
    let role = args
        .role
        .map(|r| r.parse::<Role>())
        .transpose()
        .map_err(crate::usage)?;
    let status = args
        .status
        .map(|s| s.parse::<NodeStatus>())
        .transpose()
        .map_err(crate::usage)?;
    let nodes = args
        .client
        .control()?
        .nodes(role, status)
        .await
        .map_err(anyhow::Error::new)?;
    if args.json {
        println!("{}", serde_json::json!({ "nodes": nodes }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes.iter().map(node_row).collect();
    print_table(
        &[
            "NODE",
            "ROLE",
            "STATUS",
            "HEALTH",
            "ATTESTATION",
            "LOAD",
            "LAST SEEN",
            "CAPABILITIES",
        ],
        &rows,
    );
    if nodes.is_empty() {
        println!("(no nodes have reported yet)");
    }
    Ok(())
}

fn node_row(n: &NodeView) -> Vec<String> {
    vec![
        n.node_id.clone(),
        n.role.as_str().into(),
        n.status.as_str().into(),
        format!("{:?}", n.health).to_uppercase(),
        n.attestation.as_str().into(),
        format!("{}/{}", n.load.inflight, n.load.capacity),
        fmt_time(n.last_seen),
        n.capabilities.join(","),
    ]
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Publish FILE as bundle NAME (admin path: run on the hub's machine).
    Publish {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Published bundles.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Download a bundle (to --out, default ./NAME); skipped when the local copy is current.
    Fetch {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn bundle(cmd: BundleCommand) -> Result<(), Failure> {
    match cmd {
        BundleCommand::Publish {
            client,
            name,
            file,
            json,
        } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let info = client
                .data()?
                .publish_bundle(&name, bytes)
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                println!("{}", serde_json::to_string(&info).expect("serializes"));
            } else {
                println!(
                    "published {} ({} bytes, sha256 {})",
                    info.name, info.size, info.sha256
                );
            }
            Ok(())
        }
        BundleCommand::List { client, json } => {
            let list = client
                .control()?
                .bundles()
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                println!("{}", serde_json::json!({ "bundles": list }));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| vec![b.name.clone(), b.size.to_string(), b.sha256.clone()])
                .collect();
            print_table(&["NAME", "BYTES", "SHA256"], &rows);
            Ok(())
        }
        BundleCommand::Fetch { client, name, out } => {
            let out = out.unwrap_or_else(|| PathBuf::from(&name));
            // If the local copy already has the published hash, the hub answers 304.
            let local = std::fs::read(&out).ok().map(|b| {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&b))
            });
            match client
                .control()?
                .bundle(&name, local.as_deref())
                .await
                .map_err(anyhow::Error::new)?
            {
                BundleFetch::NotModified => println!("{} is up to date", out.display()),
                BundleFetch::Body { sha256, bytes } => {
                    std::fs::write(&out, &bytes)
                        .with_context(|| format!("write {}", out.display()))?;
                    println!(
                        "fetched {} ({} bytes, sha256 {sha256})",
                        out.display(),
                        bytes.len()
                    );
                }
            }
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Start a rotation: both tokens work until --until, then only --next (admin path).
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        next: String,
        /// When the old token stops working: RFC 3339 (2026-12-01T00:00:00Z) or Unix seconds.
        #[arg(long, value_parser = crate::hub_args::parse_time)]
        until: time::OffsetDateTime,
        /// Send a next token shorter than 16 characters anyway: the hub accepts it only when
        /// it runs with SHERATAN_ALLOW_WEAK_TOKEN=1 (and reports WEAK_TOKEN), else answers 400.
        #[arg(long)]
        allow_weak: bool,
        /// Replace a rotation that is already running (its next token stops working at once).
        #[arg(long)]
        replace: bool,
    },
    /// Create a credential with a role and a name; prints its secret once (admin path).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// admin, node, submit or read.
        #[arg(long)]
        role: sheratan_proto::credentials::CredentialRole,
        /// Its name ([A-Za-z0-9._-]{1,64}); a node credential's is its node id.
        #[arg(long)]
        name: String,
        /// submit and node only: the queues it may use (comma-separated; default all). A host
        /// or broker names `auction` (only such hosts get execute grants), a relay `llm`.
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// How long it works: 90s, 30m, 12h, 30d (default: until revoked).
        #[arg(long, value_parser = parse_lifetime)]
        expires: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Every credential: names, roles, scopes, created/last used/expiry; never secrets.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential (admin path).
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// `90s`, `30m`, `12h`, `30d` as seconds.
pub(crate) fn parse_lifetime(text: &str) -> Result<u64, String> {
    sheratan_proto::data::duration_s(text)
        .ok_or_else(|| format!("{text:?}: give a positive number and s, m, h or d (30d)"))
}

pub async fn token(cmd: TokenCommand) -> Result<(), Failure> {
    match cmd {
        TokenCommand::Create {
            client,
            role,
            name,
            queues,
            expires,
            json,
        } => {
            let req = sheratan_proto::credentials::CreateCredential {
                name,
                role,
                queues,
                expires_in_s: expires,
            };
            let created = client
                .data()?
                .create_credential(&req)
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                print_json(&created)?;
            } else {
                let c = &created.credential;
                println!(
                    "created {} ({}); its secret, shown only now:",
                    c.name, c.role
                );
                println!("{}", created.secret);
            }
            Ok(())
        }
        TokenCommand::List { client, json } => {
            let list = client
                .data()?
                .credentials()
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                return print_json(&list);
            }
            let when =
                |t: Option<time::OffsetDateTime>| t.map(fmt_time).unwrap_or_else(|| "-".into());
            let rows: Vec<Vec<String>> = list
                .credentials
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.role.to_string(),
                        if c.queues.is_empty() {
                            "-".into()
                        } else {
                            c.queues.join(",")
                        },
                        fmt_time(c.created_at),
                        when(c.last_used_at),
                        when(c.expires_at),
                        when(c.revoked_at),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "ROLE",
                    "QUEUES",
                    "CREATED",
                    "LAST USED",
                    "EXPIRES",
                    "REVOKED",
                ],
                &rows,
            );
            Ok(())
        }
        TokenCommand::Revoke { client, name, json } => {
            let revoked = client
                .data()?
                .revoke_credential(&name)
                .await
                .map_err(anyhow::Error::new)?;
            if json {
                return print_json(&revoked);
            }
            println!("revoked {} ({})", revoked.name, revoked.role);
            Ok(())
        }
        TokenCommand::Rotate {
            client,
            next,
            until,
            allow_weak,
            replace,
        } => {
            sheratan_hub::auth::validate_token("--next", &next)
                .map_err(|e| crate::usage(e.to_string()))?;
            if sheratan_hub::auth::is_weak(&next) && !allow_weak {
                return Err(crate::usage(format!(
                    "the next token is easy to guess (shorter than {} characters, or the well-known default); pick one with `openssl rand -hex 32`, or pass --allow-weak",
                    sheratan_hub::auth::MIN_STRONG_TOKEN_LEN
                )));
            }
            // The data plane: the admin path needs it anyway, and a data-only hub has no other.
            let metrics = sheratan_client::ControlClient::new(&client.data_url, client.token())
                .map_err(anyhow::Error::new)?
                .metrics_json()
                .await
                .map_err(anyhow::Error::new)?;
            let Some(active) = metrics["token.rotation_active"].as_f64() else {
                return Err(anyhow::anyhow!(
                    "the hub's metrics do not say whether a rotation is running (token.rotation_active); is {} a Sheratan hub's data plane?",
                    client.data_url
                )
                .into());
            };
            let running = active == 1.0;
            if running && !replace {
                return Err(crate::usage(
                    "a token rotation is already running; wait for its deadline, or pass --replace to start this one instead (the running rotation's next token stops working at once)".into(),
                ));
            }
            let answer = client
                .data()?
                .rotate_token(&next, until)
                .await
                .map_err(anyhow::Error::new)?;
            println!(
                "rotation started: both tokens are accepted until {}; then only the new one",
                fmt_time(answer.until.unwrap_or(until))
            );
            Ok(())
        }
    }
}

/// A time in UTC, to the second (the `Z` is true whatever offset `t` carries).
fn fmt_time(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

impl JobsCommand {
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match self {
            JobsCommand::List { client, .. }
            | JobsCommand::Show { client, .. }
            | JobsCommand::Cancel { client, .. }
            | JobsCommand::Requeue { client, .. }
            | JobsCommand::Delete { client, .. } => client,
        }
    }
}

impl NodesArgs {
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match &mut self.command {
            Some(NodesCommand::Rm { client, .. }) => client,
            None => &mut self.client,
        }
    }
}

impl BundleCommand {
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match self {
            BundleCommand::Publish { client, .. }
            | BundleCommand::List { client, .. }
            | BundleCommand::Fetch { client, .. } => client,
        }
    }
}

impl TokenCommand {
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match self {
            TokenCommand::Rotate { client, .. }
            | TokenCommand::Create { client, .. }
            | TokenCommand::List { client, .. }
            | TokenCommand::Revoke { client, .. } => client,
        }
    }
}

/// One JSON line on standard output.
fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    println!(
        "{}",
        serde_json::to_string(value).map_err(anyhow::Error::new)?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_in_utc() {
        let t = time::macros::datetime!(2026-11-27 10:00 +02:00);
        assert_eq!(super::fmt_time(t), "2026-11-27 08:00:00Z");
    }
}
