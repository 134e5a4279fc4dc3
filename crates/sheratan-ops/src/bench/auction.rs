//! `sheratan bench auction`: what an auction costs. N real hosts (the production host code,
//! echo handler, serving HTTP on loopback in this process, capacity high enough never to
//! decline) and the broker's auctioneer (the production bid/award/forward code):
//!
//! - **added latency**: one auction at a time; the time from the first bid request to the
//!   award, which is what the auction adds in front of forwarding the job;
//! - **throughput**: `--concurrency` auctions at once, each one bid round plus the forward of
//!   an echo job to the winner: auctions per second, and the bid round's percentiles under load.
//!
//! The hub is not involved (leasing and reporting cost what `sheratan bench jobs` measures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sheratan_auction::broker::{Auctioneer, Bidder};
use sheratan_auction::host::{Host, HostConfig};
use sheratan_proto::auction::{BidRequest, ExecuteRequest};
use tokio_util::sync::CancellationToken;

use super::Percentiles;

#[derive(Debug, Clone, Args)]
pub struct AuctionArgs {
    /// Host counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,10,50")]
    pub hosts: Vec<u32>,
    /// Auctions per measurement.
    #[arg(long, default_value_t = 2000)]
    pub auctions: u32,
    /// Auctions at once in the throughput measurement.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    hosts: u32,
    auctions: u32,
    /// One auction at a time: bid round (ask all, award).
    added_latency: Percentiles,
    /// One auction at a time: forwarding the echo job to the winner, for scale.
    forward_latency: Percentiles,
    concurrency: u32,
    auctions_per_s: f64,
    /// Under `concurrency` auctions at once.
    bid_round_under_load: Percentiles,
}

pub async fn run(args: AuctionArgs) -> anyhow::Result<()> {
    if args.hosts.is_empty()
        || args.hosts.contains(&0)
        || args.auctions == 0
        || args.concurrency == 0
    {
        bail!("--hosts, --auctions and --concurrency must be at least 1");
    }
    for &n in &args.hosts {
        let report = measure(n, &args).await?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{:>3} hosts: auction adds p50 {:.2} ms, p99 {:.2} ms (forward p50 {:.2} ms); \
                 {:.0} auctions/s at {} concurrent (bid round p99 {:.2} ms)",
                n,
                report.added_latency.p50_ms,
                report.added_latency.p99_ms,
                report.forward_latency.p50_ms,
                report.auctions_per_s,
                args.concurrency,
                report.bid_round_under_load.p99_ms
            );
        }
    }
    Ok(())
}

async fn measure(n: u32, args: &AuctionArgs) -> anyhow::Result<Report> {
    eprintln!("starting {n} hosts ...");
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let token = "bench-token".to_owned();
    let hosts = Arc::new(start_hosts(n, &token, &stop).await?);
    let auctioneer = Auctioneer::new(Some(token), Duration::from_millis(300))?;
    // Warm the connection pools.
    for i in 0..20 {
        auctioneer.collect_bids(&hosts, &ask(i)).await;
    }

    eprintln!("{n} hosts: {} auctions, one at a time ...", args.auctions);
    let mut bid_us = Vec::with_capacity(args.auctions as usize);
    let mut forward_us = Vec::with_capacity(args.auctions as usize);
    for i in 0..args.auctions {
        let (bid, forward) = one_auction(&auctioneer, &hosts, i).await?;
        bid_us.push(bid);
        forward_us.push(forward);
    }

    eprintln!(
        "{n} hosts: {} auctions, {} at once ...",
        args.auctions, args.concurrency
    );
    let started = Instant::now();
    let mut under_load = concurrently(&auctioneer, &hosts, args).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        bench: "auction",
        hosts: n,
        auctions: args.auctions,
        added_latency: Percentiles::from_micros(&mut bid_us),
        forward_latency: Percentiles::from_micros(&mut forward_us),
        concurrency: args.concurrency,
        auctions_per_s: f64::from(args.auctions) / seconds,
        bid_round_under_load: Percentiles::from_micros(&mut under_load),
    })
}

/// `n` production hosts serving on loopback until `stop`, as the broker would see them.
async fn start_hosts(n: u32, token: &str, stop: &CancellationToken) -> anyhow::Result<Vec<Bidder>> {
    let mut hosts = Vec::new();
    for i in 0..n {
        let node_id = format!("bench-host-{i:03}");
        let mut config = HostConfig::new(
            &node_id,
            "127.0.0.1:0".parse()?,
            "http://127.0.0.1:1",
            Some(token.to_owned()),
        );
        config.capacity = 100_000;
        // Distinct prices, so every auction has one clear winner, as in a real fleet.
        config.base_price = 1.0 + f64::from(i) / 100.0;
        let host = Host::bind(config).await.context("binding a bench host")?;
        hosts.push(Bidder {
            node_id,
            url: host.url(),
            capabilities: vec!["echo".into()],
            grant: None,
        });
        tokio::spawn(host.serve(stop.clone()));
    }
    Ok(hosts)
}

fn ask(i: u32) -> BidRequest {
    BidRequest {
        job_id: format!("job-{i}"),
        kind: "echo".into(),
        required_capabilities: vec!["echo".into()],
        payload_bytes: 32,
    }
}

fn forward(i: u32) -> ExecuteRequest {
    ExecuteRequest {
        job_id: format!("job-{i}"),
        kind: "echo".into(),
        payload: serde_json::json!({"i": i}),
        deadline_ms: 10_000,
    }
}

/// One bid round and the forward to its winner: their durations in µs.
async fn one_auction(
    auctioneer: &Auctioneer,
    hosts: &[Bidder],
    i: u32,
) -> anyhow::Result<(u32, u32)> {
    let t = Instant::now();
    let bids = auctioneer.collect_bids(hosts, &ask(i)).await;
    let winner = &Auctioneer::award(&bids).context("no host bid")?.node_id;
    let bid_us = t.elapsed().as_micros() as u32;
    let host = hosts.iter().find(|h| &h.node_id == winner).expect("a host");
    let t = Instant::now();
    auctioneer
        .execute(host, &forward(i))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((bid_us, t.elapsed().as_micros() as u32))
}

/// `--auctions` auctions, `--concurrency` at once: every bid round's duration in µs.
async fn concurrently(
    auctioneer: &Auctioneer,
    hosts: &Arc<Vec<Bidder>>,
    args: &AuctionArgs,
) -> anyhow::Result<Vec<u32>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (next, hosts, auctioneer) = (next.clone(), hosts.clone(), auctioneer.clone());
        let total = u64::from(args.auctions);
        tasks.spawn(async move {
            let mut rounds = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(rounds);
                }
                let (bid_us, _) = one_auction(&auctioneer, &hosts, i as u32).await?;
                rounds.push(bid_us);
            }
        });
    }
    let mut under_load = Vec::new();
    while let Some(done) = tasks.join_next().await {
        under_load.extend(done??);
    }
    Ok(under_load)
}
