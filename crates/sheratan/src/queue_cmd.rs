//! `sheratan queue show|set|pause|resume|list`: a queue's settings (docs/API.md, "Queue
//! settings") from the command line. Changing them is the admin path.

use std::io::Write;

use clap::Subcommand;
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch, Rate};

use crate::Failure;
use crate::client_args::ClientArgs;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue: depth, whether a node serves it, its settings.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// One queue's settings.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        queue: String,
        #[arg(long)]
        json: bool,
    },
    /// Change some of a queue's settings; the others keep their value. `none` removes a
    /// limit. Takes effect for the next lease; running jobs are left alone.
    Set {
        #[command(flatten)]
        client: ClientArgs,
        queue: String,
        #[command(flatten)]
        change: Box<SetArgs>,
        #[arg(long)]
        json: bool,
    },
    /// Stop leasing the queue's jobs (running ones finish).
    Pause {
        #[command(flatten)]
        client: ClientArgs,
        queue: String,
    },
    /// Lease the queue's jobs again.
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        queue: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Jobs of the queue running at once, across nodes and hubs (a number, or `none`).
    #[arg(long)]
    concurrency: Option<String>,
    /// Jobs of one concurrency_key running at once (a number, or `none`).
    #[arg(long)]
    key_concurrency: Option<String>,
    /// Jobs started per period: `5/s`, `60/m`, `1000/h`, `10/30s`, `LIMIT/PERIOD:BURST`, or `none`.
    #[arg(long)]
    rate: Option<String>,
    /// Per concurrency_key, like --rate.
    #[arg(long)]
    key_rate: Option<String>,
    /// Attempts of jobs submitted without max_attempts (a number, or `none`).
    #[arg(long)]
    max_attempts: Option<String>,
    /// Retry backoff base in ms of jobs submitted without one (or `none`).
    #[arg(long)]
    retry_base_ms: Option<String>,
    /// Retry backoff cap in ms of jobs submitted without one (or `none`).
    #[arg(long)]
    retry_max_ms: Option<String>,
    /// How long the queue's finished jobs are kept: 30s, 12h, 7d, `0` (keep them), or `none`
    /// (the hub's SHERATAN_RETENTION).
    #[arg(long)]
    retention: Option<String>,
    /// How long its failed jobs are kept, if not as long as the others (or `none`).
    #[arg(long)]
    failed_retention: Option<String>,
}

impl SetArgs {
    fn patch(&self) -> Result<QueueSettingsPatch, String> {
        fn num<T: std::str::FromStr>(
            flag: &str,
            v: &Option<String>,
        ) -> Result<Option<Option<T>>, String> {
            match v.as_deref() {
                None => Ok(None),
                Some("none") => Ok(Some(None)),
                Some(s) => s
                    .parse::<T>()
                    .map(|n| Some(Some(n)))
                    .map_err(|_| format!("--{flag}: expected a whole number or `none`, got {s:?}")),
            }
        }
        fn rate(flag: &str, v: &Option<String>) -> Result<Option<Option<Rate>>, String> {
            match v.as_deref() {
                None => Ok(None),
                Some("none") => Ok(Some(None)),
                Some(s) => parse_rate(s)
                    .map(|r| Some(Some(r)))
                    .map_err(|e| format!("--{flag}: {e}")),
            }
        }
        fn text(v: &Option<String>) -> Option<Option<String>> {
            v.as_ref().map(|s| (s != "none").then(|| s.clone()))
        }
        let patch = QueueSettingsPatch {
            paused: None,
            concurrency: num("concurrency", &self.concurrency)?,
            key_concurrency: num("key-concurrency", &self.key_concurrency)?,
            rate: rate("rate", &self.rate)?,
            key_rate: rate("key-rate", &self.key_rate)?,
            max_attempts: num("max-attempts", &self.max_attempts)?,
            retry_base_ms: num("retry-base-ms", &self.retry_base_ms)?,
            retry_max_ms: num("retry-max-ms", &self.retry_max_ms)?,
            retention: text(&self.retention),
            failed_retention: text(&self.failed_retention),
        };
        if patch == QueueSettingsPatch::default() {
            return Err(
                "name at least one setting to change (see sheratan queue set --help)".into(),
            );
        }
        Ok(patch)
    }
}

/// `LIMIT/PERIOD[:BURST]`, PERIOD one of `s`, `m`, `h`, `d` or a number of seconds with `s`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let expected =
        || format!("expected LIMIT/PERIOD[:BURST] such as 5/s, 60/m or 10/30s:20, got {text:?}");
    let (rate, burst) = match text.split_once(':') {
        Some((r, b)) => (r, Some(b.parse::<u32>().map_err(|_| expected())?)),
        None => (text, None),
    };
    let (limit, period) = rate.split_once('/').ok_or_else(expected)?;
    let limit = limit.trim().parse::<u32>().map_err(|_| expected())?;
    let period_s = match period.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        other => other
            .strip_suffix('s')
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(expected)?,
    };
    Ok(Rate {
        limit,
        period_s,
        burst,
    })
}

/// `5/s`, `60/m:120`: how a rate reads back.
pub fn fmt_rate(r: &Rate) -> String {
    let period = match r.period_s {
        1 => "s".to_owned(),
        60 => "m".to_owned(),
        3600 => "h".to_owned(),
        86_400 => "d".to_owned(),
        n => format!("{n}s"),
    };
    match r.burst {
        Some(b) => format!("{}/{period}:{b}", r.limit),
        None => format!("{}/{period}", r.limit),
    }
}

pub async fn run(cmd: QueueCommand) -> Result<(), Failure> {
    match cmd {
        QueueCommand::List { client, json } => {
            let list = client.data()?.queues().await.map_err(anyhow::Error::new)?;
            if json {
                println!("{}", serde_json::to_string(&list).expect("serializes"));
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<24} {:>8}  {:<7} SETTINGS",
                "QUEUE", "DEPTH", "SERVED"
            );
            for q in &list.queues {
                let settings = q.settings.as_ref().map(summary).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:<24} {:>8}  {:<7} {settings}",
                    q.queue,
                    q.depth,
                    if q.served { "yes" } else { "no" }
                );
            }
            Ok(())
        }
        QueueCommand::Show {
            client,
            queue,
            json,
        } => {
            let s = client
                .data()?
                .queue_settings(&queue)
                .await
                .map_err(anyhow::Error::new)?;
            print(&queue, &s, json);
            Ok(())
        }
        QueueCommand::Set {
            client,
            queue,
            change,
            json,
        } => {
            let patch = change.patch().map_err(crate::usage)?;
            let s = client
                .data()?
                .put_queue_settings(&queue, &patch)
                .await
                .map_err(anyhow::Error::new)?;
            print(&queue, &s, json);
            Ok(())
        }
        QueueCommand::Pause { client, queue } => pause(client, queue, true).await,
        QueueCommand::Resume { client, queue } => pause(client, queue, false).await,
    }
}

async fn pause(client: ClientArgs, queue: String, paused: bool) -> Result<(), Failure> {
    let patch = QueueSettingsPatch {
        paused: Some(paused),
        ..Default::default()
    };
    client
        .data()?
        .put_queue_settings(&queue, &patch)
        .await
        .map_err(anyhow::Error::new)?;
    println!(
        "queue {queue} {}",
        if paused {
            "paused: no new leases (running jobs finish)"
        } else {
            "resumed"
        }
    );
    Ok(())
}

fn print(queue: &str, s: &QueueSettings, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("serializes"));
        return;
    }
    let none = || "none".to_owned();
    let num = |v: Option<u32>| v.map_or_else(none, |n| n.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "queue            {queue}");
    let _ = writeln!(
        out,
        "paused           {}",
        if s.paused { "yes" } else { "no" }
    );
    let _ = writeln!(out, "concurrency      {}", num(s.concurrency));
    let _ = writeln!(out, "key_concurrency  {}", num(s.key_concurrency));
    let _ = writeln!(
        out,
        "rate             {}",
        s.rate.as_ref().map_or_else(none, fmt_rate)
    );
    let _ = writeln!(
        out,
        "key_rate         {}",
        s.key_rate.as_ref().map_or_else(none, fmt_rate)
    );
    let _ = writeln!(
        out,
        "max_attempts     {}",
        s.max_attempts
            .map_or_else(|| "hub default".into(), |n| n.to_string())
    );
    let _ = writeln!(
        out,
        "retry_base_ms    {}",
        s.retry_base_ms
            .map_or_else(|| "hub default".into(), |n| n.to_string())
    );
    let _ = writeln!(
        out,
        "retry_max_ms     {}",
        s.retry_max_ms
            .map_or_else(|| "hub default".into(), |n| n.to_string())
    );
    let retention = |v: &Option<String>| match v.as_deref() {
        None => "hub default".to_owned(),
        Some("0") => "keep".to_owned(),
        Some(d) => d.to_owned(),
    };
    let _ = writeln!(out, "retention        {}", retention(&s.retention));
    let _ = writeln!(
        out,
        "failed_retention {}",
        match &s.failed_retention {
            None => "as retention".to_owned(),
            some => retention(some),
        }
    );
}

/// One line: the settings that are set.
fn summary(s: &QueueSettings) -> String {
    let mut parts = Vec::new();
    if s.paused {
        parts.push("paused".to_owned());
    }
    if let Some(n) = s.concurrency {
        parts.push(format!("concurrency={n}"));
    }
    if let Some(n) = s.key_concurrency {
        parts.push(format!("key_concurrency={n}"));
    }
    if let Some(r) = &s.rate {
        parts.push(format!("rate={}", fmt_rate(r)));
    }
    if let Some(r) = &s.key_rate {
        parts.push(format!("key_rate={}", fmt_rate(r)));
    }
    if let Some(r) = &s.retention {
        parts.push(format!("retention={r}"));
    }
    if let Some(r) = &s.failed_retention {
        parts.push(format!("failed_retention={r}"));
    }
    parts.join(" ")
}

impl QueueCommand {
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match self {
            QueueCommand::List { client, .. }
            | QueueCommand::Show { client, .. }
            | QueueCommand::Set { client, .. }
            | QueueCommand::Pause { client, .. }
            | QueueCommand::Resume { client, .. } => client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_back() {
        for text in ["5/s", "60/m", "1000/h", "10/30s:20", "1/d"] {
            assert_eq!(fmt_rate(&parse_rate(text).unwrap()), text);
        }
        assert_eq!(parse_rate("60/min").unwrap().period_s, 60);
        for bad in ["5", "x/s", "5/fortnight", "5/s:x", "/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
