//! `sheratan bench flood --idle N`: one source address holds N idle connections (its cap,
//! `SHERATAN_MAX_CONN_PER_IP`) to the control plane and reopens each one the hub closes at
//! its header deadline, while another address asks `/health` at a steady rate. Reports the
//! `/health` latency alone and while the connections are held, what the hub refused beyond
//! the cap, and its memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::load::{Lane, connect_from};
use super::target::Target;
use super::{Percentiles, on_own_thread};

/// The address that holds the idle connections, and the one that asks `/health`: two
/// loopback addresses are two sources to the hub.
const HOLDER: [u8; 4] = [127, 0, 0, 3];
const PROBE: [u8; 4] = [127, 0, 0, 2];

/// What `bench flood --idle` was asked for.
pub struct IdleArgs {
    /// Idle connections one source holds (the hub's per-source cap is set to this).
    pub connections: usize,
    /// Seconds of `/health` alone.
    pub baseline_s: u64,
    /// Seconds the connections are held.
    pub hold_s: u64,
    /// `/health` requests a second.
    pub rate: u64,
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Held {
    /// Most idle connections open at once.
    max_open: usize,
    /// Connections beyond the cap that the hub closed at once (tried once, at the start).
    refused_beyond_cap: usize,
    /// Connections the hub closed at its header deadline, each reopened by the holder.
    closed_at_deadline: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    idle_connections: usize,
    health_unloaded: Percentiles,
    health_while_held: Percentiles,
    /// p99 while held over p99 alone (each /health on a new connection: connect and request).
    p99_ratio: f64,
    health_requests: u64,
    health_failures: u64,
    held: Held,
    rss_before_bytes: u64,
    rss_max_bytes: u64,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let n = args.connections;
    eprintln!("starting a hub in a temp dir (SHERATAN_MAX_CONN_PER_IP={n}) ...");
    let target = Target::spawn(&["--max-conn-per-ip".into(), n.to_string()])?;
    let control: SocketAddr = target
        .control_url
        .trim_start_matches("http://")
        .parse()
        .context("the control plane's address")?;
    let rss_before = target.rss_bytes().unwrap_or(0);

    eprintln!("/health alone for {} s ...", args.baseline_s);
    let (mut unloaded, failures_before) =
        probe_for(&target.control_url, args.rate, args.baseline_s).await?;

    eprintln!(
        "{n} idle connections from {} held for {} s, /health from {} meanwhile ...",
        IpAddr::from(HOLDER),
        args.hold_s,
        IpAddr::from(PROBE)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let holder = tokio::spawn(hold(control, n, stop.clone()));
    // Let the holder reach its cap before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probing = probe_for(&target.control_url, args.rate, args.hold_s);
    let mut rss_max = rss_before;
    let (mut loaded, failures_during) = {
        tokio::pin!(probing);
        loop {
            tokio::select! {
                done = &mut probing => break done?,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    rss_max = rss_max.max(target.rss_bytes().unwrap_or(0));
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    let held = holder.await??;
    let health_unloaded = Percentiles::from_micros(&mut unloaded);
    let health_while_held = Percentiles::from_micros(&mut loaded);
    let report = Report {
        idle_connections: n,
        p99_ratio: health_while_held.p99_ms / health_unloaded.p99_ms.max(0.001),
        health_requests: (unloaded.len() + loaded.len()) as u64,
        health_failures: failures_before + failures_during,
        health_unloaded,
        health_while_held,
        held,
        rss_before_bytes: rss_before,
        rss_max_bytes: rss_max,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let pct = |p: &Percentiles| {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        )
    };
    println!("idle connections against the control plane");
    println!("  /health alone                {}", pct(&r.health_unloaded));
    println!(
        "  /health while {} are held    {}  (p99 × {:.2})",
        r.idle_connections,
        pct(&r.health_while_held),
        r.p99_ratio
    );
    println!(
        "  /health requests {}, failed {}",
        r.health_requests, r.health_failures
    );
    println!(
        "  held at most {} open; beyond the cap {} closed at once; {} closed at the header deadline (and reopened)",
        r.held.max_open, r.held.refused_beyond_cap, r.held.closed_at_deadline
    );
    println!(
        "  hub RSS {:.1} MiB before, {:.1} MiB at most",
        r.rss_before_bytes as f64 / 1048576.0,
        r.rss_max_bytes as f64 / 1048576.0
    );
}

/// `/health` at `rate` a second for `seconds`, from [`PROBE`], each on a new connection (a
/// client arriving while the holder sits on its connections must get in), on its own thread:
/// latencies of connect and request (µs) and failures.
async fn probe_for(url: &str, rate: u64, seconds: u64) -> anyhow::Result<(Vec<u32>, u64)> {
    let url = url.to_owned();
    on_own_thread(move || async move {
        let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut next = tokio::time::Instant::now();
        let (mut latencies, mut failures) = (Vec::new(), 0u64);
        while next < end {
            tokio::time::sleep_until(next).await;
            next += period;
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                let mut lane = Lane::connect_from(&url, "", Some(IpAddr::from(PROBE))).await?;
                lane.get("/health").await
            })
            .await;
            match answer {
                Ok(Ok((200, _))) => {
                    latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX))
                }
                _ => failures += 1,
            }
        }
        Ok((latencies, failures))
    })
    .await?
}

/// Holds `n` idle connections from [`HOLDER`] until `stop`, reopening each one the hub
/// closes; first tries a quarter more than `n` once, to count what the cap refuses.
async fn hold(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> anyhow::Result<Held> {
    let source = Some(IpAddr::from(HOLDER));
    let mut held = Held::default();
    let mut open = Vec::with_capacity(n + n / 4);
    for _ in 0..(n + n / 4).max(n + 1) {
        open.push(connect_from(source, addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    open.retain(|c| !is_closed(c));
    held.refused_beyond_cap = (n + n / 4).max(n + 1) - open.len();
    held.max_open = open.len();
    while !stop.load(Ordering::Relaxed) {
        held.max_open = held.max_open.max(open.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = open.len();
        open.retain(|c| !is_closed(c));
        held.closed_at_deadline += (before - open.len()) as u64;
        while open.len() < n && !stop.load(Ordering::Relaxed) {
            open.push(connect_from(source, addr).await?);
        }
    }
    Ok(held)
}

/// Whether the peer closed `stream` (without waiting).
fn is_closed(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}
