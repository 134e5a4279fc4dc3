//! The accept loop every listener runs: HTTP/1.1 only, a deadline for every request head
//! (counted from the connection's start, or from the end of its previous response), a cap on
//! open connections per listener and a lower one per source address, and a bounded graceful
//! drain.
//!
//! Why not `axum::serve` or hyper-util's auto builder: `axum::serve` gives hyper no timer, and
//! the auto builder first reads the HTTP version from the connection with no deadline at all
//! (and then also serves HTTP/2 with prior knowledge, whose timers are not configured). A
//! client could hold connections open forever without sending a byte; a few thousand such
//! connections from one address used to make `/health` unreachable for everyone.
//!
//! The deadlines are kept by a watchdog per connection instead of hyper's
//! `header_read_timeout`, which has one value for the first request and for idle keep-alive
//! time alike: here the first request head must arrive within `header_timeout` (short), the
//! next one within `keepalive_timeout` of the previous response (longer, so clients' pooled
//! connections are not cut under them). The watchdog wakes once per timeout, not per request;
//! a request costs two atomic operations and a clock reading.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::tls::{ClientCert, TlsServer};

/// Transport limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections at once; `None` derives it from the open-files limit.
    pub max_connections: Option<usize>,
    /// Open connections from one source (an IPv4 address, or an IPv6 /64) at once.
    pub max_per_source: usize,
    /// A new connection's first request head must arrive within this.
    pub header_timeout: Duration,
    /// After a response, the next request head must arrive within this, or the connection
    /// is closed.
    pub keepalive_timeout: Duration,
    /// Shutdown waits at most this long for requests in flight.
    pub drain_timeout: Duration,
}

/// `SHERATAN_HEADER_TIMEOUT_MS`'s default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `SHERATAN_KEEPALIVE_TIMEOUT_MS`'s default: above what clients keep idle connections for
/// (`sheratan-client` 30 s), so a pooled connection is not closed as it is reused.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `SHERATAN_MAX_CONN_PER_IP`'s default.
pub const DEFAULT_MAX_PER_SOURCE: usize = 256;

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ServeLimits {
    /// Checks the limits an operator set; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_per_source == 0 {
            return Err("SHERATAN_MAX_CONN_PER_IP must be at least 1".into());
        }
        if self.max_connections == Some(0) {
            return Err("the connection cap must be at least 1".into());
        }
        for (name, value) in [
            ("SHERATAN_HEADER_TIMEOUT_MS", self.header_timeout),
            ("SHERATAN_KEEPALIVE_TIMEOUT_MS", self.keepalive_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(format!(
                    "{name} must be between 100 ms and one hour (milliseconds)"
                ));
            }
        }
        Ok(())
    }
}

/// What a listener refused or cut, for metrics and tests.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections closed at once because the listener's cap was reached.
    pub refused: AtomicU64,
    /// Connections closed at once because their source had its maximum open.
    pub refused_per_source: AtomicU64,
    /// Connections closed because no request head arrived in time.
    pub timed_out: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failed: AtomicU64,
    /// Plain-HTTP connections to a TLS port (answered 400 "use https://").
    pub plain_http: AtomicU64,
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and drains.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    stats: Arc<ServeStats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, limits, stats, shutdown, None).await
}

/// [`serve`], over TLS when `tls` is given: the handshake counts against the first request
/// head's deadline, and a plain-HTTP request gets a 400 saying to use https://.
pub async fn serve_with(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    stats: Arc<ServeStats>,
    shutdown: CancellationToken,
    tls: Option<TlsServer>,
) -> std::io::Result<()> {
    let max_connections = limits
        .max_connections
        .unwrap_or_else(|| default_max_connections(1));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No hyper timer: the watchdog below keeps the deadlines (see the module's comment).
    builder.keep_alive(true).header_read_timeout(None);
    // Connections still open hold a clone: shutdown waits until only this one is left.
    let open = Arc::new(());
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let sources = Arc::new(Sources::new(limits.max_per_source.min(max_connections)));
    // Refusals are logged at most once a minute, so a flood cannot fill the log.
    let mut warned: Option<Instant> = None;
    let mut warn = |what: std::fmt::Arguments<'_>| {
        if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            warned = Some(Instant::now());
            tracing::warn!("{what} (said at most once a minute)");
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(source) = sources.open(peer.ip()) else {
            stats.refused_per_source.fetch_add(1, Ordering::Relaxed);
            warn(format_args!(
                "closing a connection from {}: that address already holds {} (SHERATAN_MAX_CONN_PER_IP)",
                peer.ip(),
                sources.limit
            ));
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn(format_args!(
                "closing a connection from {}: the listener holds {max_connections} connections, its cap",
                peer.ip()
            ));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let stream = Lingering::new(stream, activity.clone(), (slot, source));
        // Set once the handshake has seen a client certificate (mutual TLS).
        let client_cert = Arc::new(std::sync::OnceLock::<ClientCert>::new());
        let service = {
            let router = router.clone();
            let activity = activity.clone();
            let client_cert = client_cert.clone();
            tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if let Some(cert) = client_cert.get() {
                    req.extensions_mut().insert(cert.clone());
                }
                let in_flight = activity.begin();
                let response = router.clone().oneshot(req);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| Guarded {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let service = TowerToHyperService::new(service);
        let (builder, watcher, tls, stats) = (
            builder.clone(),
            (shutdown.clone(), open.clone()),
            tls.clone(),
            stats.clone(),
        );
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    watch(conn, &watcher, &activity, &limits).await
                }
                Some(tls) => match handshake(stream, peer, &tls, limits.header_timeout).await {
                    Ok(Accepted::Tls(stream)) => {
                        // A certificate without a readable common name names no node: "" never
                        // equals a node id, so it can act as none.
                        if let Some(leaf) = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                        {
                            let name = crate::tls::common_name(leaf).unwrap_or_default();
                            let _ = client_cert.set(ClientCert(name));
                        }
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades();
                        watch(conn, &watcher, &activity, &limits).await
                    }
                    Ok(Accepted::Plain(stream)) => {
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades();
                        watch(conn, &watcher, &activity, &limits).await
                    }
                    Err(ended) => ended,
                },
            };
            let counter = match ended {
                Ended::TimedOut => Some(&stats.timed_out),
                Ended::TlsFailed => Some(&stats.tls_failed),
                Ended::PlainHttp => Some(&stats.plain_http),
                Ended::Closed => None,
            };
            if let Some(counter) = counter {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    drop(listener);
    let drained = async {
        while Arc::strong_count(&open) > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; closing them",
            limits.drain_timeout
        );
    }
    Ok(())
}

/// A connection to a TLS listener, once its first bytes are in.
enum Accepted {
    Tls(Box<tokio_rustls::server::TlsStream<Lingering>>),
    /// Plain HTTP from this machine, where the listener allows it (`SHERATAN_TLS=auto`).
    Plain(Lingering),
}

/// A TLS connection's handshake, within `limit`. A client that speaks plain HTTP to the port
/// gets a 400 that says so (rather than a failed handshake it cannot explain), unless it
/// connects from loopback to a listener that allows that.
async fn handshake(
    mut stream: Lingering,
    peer: SocketAddr,
    tls: &TlsServer,
    limit: Duration,
) -> Result<Accepted, Ended> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + limit;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.tcp().peek(&mut first)).await {
        Err(_) => return Err(Ended::TimedOut),
        Ok(Err(_) | Ok(0)) => return Err(Ended::Closed),
        Ok(Ok(_)) => {}
    }
    if crate::tls::looks_like_plain_http(&first) {
        if tls.plain_from_loopback() && peer.ip().to_canonical().is_loopback() {
            return Ok(Accepted::Plain(stream));
        }
        // Read what the client sent first, so closing does not reset the connection before
        // it reads the answer.
        let mut head = [0u8; 8192];
        let _ = tokio::time::timeout_at(deadline, stream.read(&mut head)).await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            stream.write_all(crate::tls::PLAIN_HTTP_ON_TLS_PORT),
        )
        .await;
        let _ = stream.shutdown().await;
        return Err(Ended::PlainHttp);
    }
    match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
        Err(_) => Err(Ended::TimedOut),
        Ok(Err(err)) => {
            tracing::debug!(%err, "TLS handshake failed");
            Err(Ended::TlsFailed)
        }
        Ok(Ok(stream)) => Ok(Accepted::Tls(Box::new(stream))),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The TLS handshake failed (a client that does not trust the certificate, a missing
    /// client certificate, garbage).
    TlsFailed,
    /// Plain HTTP on a TLS port, answered with the 400 that says so.
    PlainHttp,
    Closed,
    TimedOut,
}

/// A connection that can be asked to finish its request in flight and close (hyper's
/// `graceful_shutdown`; hyper-util's graceful helper does not take connections that may be
/// upgraded, as the worker stream's are).
trait Closable: Future {
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S, B> Closable for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Runs a connection until it ends, or closes it (by dropping it) when no request head
/// arrived in time; at shutdown it finishes the request in flight and closes. An upgraded
/// connection (the worker stream) leaves here at its upgrade, still holding its slot.
async fn watch<C: Closable>(
    conn: C,
    (shutdown, _open): &(CancellationToken, Arc<()>),
    activity: &Activity,
    limits: &ServeLimits,
) -> Ended {
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let Some(wait) = activity.time_left(limits) else {
            // Dropped for being idle: nothing is owed to the client, so no lingering close.
            activity.abandoned.store(true, Ordering::Release);
            return Ended::TimedOut;
        };
        tokio::select! {
            _ = &mut conn => return Ended::Closed,
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().close_gracefully();
            }
        }
    }
}

/// When a connection last had nothing to do, and whether it has anything to do now.
struct Activity {
    start: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `start` when the last request in flight ended.
    idle_since_ms: AtomicU64,
    /// Whether a request was ever served: the next head gets the keep-alive allowance.
    served: AtomicBool,
    /// Closed by the watchdog for idling: the close needs no lingering.
    abandoned: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// How long the watchdog may sleep before looking again; `None` when the connection has
    /// been idle for longer than it may be.
    fn time_left(&self, limits: &ServeLimits) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Busy (a long poll, a stream, a slow handler): look again later.
            return Some(limits.keepalive_timeout.min(limits.header_timeout));
        }
        let allowed = if self.served.load(Ordering::Acquire) {
            limits.keepalive_timeout
        } else {
            limits.header_timeout
        };
        let idle_since =
            self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let deadline = idle_since + allowed;
        let now = Instant::now();
        (deadline > now).then(|| deadline - now)
    }
}

/// A request in flight; dropped when its response has been written (it rides in the body) or
/// abandoned.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let idle_ms = a.start.elapsed().as_millis() as u64;
        a.idle_since_ms.store(idle_ms, Ordering::Release);
        a.served.store(true, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is written.
struct Guarded {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Open connections per source. IPv6 sources count per /64 (what one host or customer
/// usually holds), IPv4-mapped IPv6 as the IPv4 address.
struct Sources {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn open(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }
}

struct SourceSlot {
    sources: Arc<Sources>,
    key: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The key a source's connections are counted under.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// `http://ip:port` of a bound address, as processes on this machine reach it: an
/// unspecified IP (0.0.0.0, ::) becomes loopback.
pub fn local_url(addr: std::net::SocketAddr) -> String {
    local_url_tls(addr, false)
}

/// [`local_url`] with `https://` when the listener serves TLS.
pub fn local_url_tls(addr: std::net::SocketAddr, tls: bool) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Raises the soft open-files limit to the hard limit (servers need descriptors) and returns
/// the resulting soft limit, if known.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
        && cur < max
    {
        limit.current = Some(max);
        if setrlimit(Resource::Nofile, limit).is_ok() {
            return Some(max);
        }
        return Some(cur);
    }
    limit.current
}

/// The default connection cap for this process: what the open-files limit allows, leaving
/// room for the store, logs and outgoing connections, at most 10,000 per listener.
pub fn default_max_connections(listeners: usize) -> usize {
    let nofile = raise_nofile_limit().unwrap_or(1024);
    let usable = nofile.saturating_sub(128) as usize / listeners.max(1);
    usable.clamp(64, 10_000)
}

/// How long, and for how many bytes, a connection that was answered is read from and discarded
/// after the answer before it is closed.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// The connection's socket, closed the way HTTP servers must close ("lingering close"): when
/// the server answers before reading the whole request (a 413 for a declared length over the
/// limit, an early 401), closing a socket with unread bytes makes the kernel send a reset,
/// and the client, still writing its body, sees `EPIPE`/`ECONNRESET` instead of the answer.
/// So when the connection is dropped after serving, the socket is half-closed and what the
/// client still sends is read and discarded for at most [`LINGER_TIME`] and
/// [`LINGER_BYTES`]. The connection keeps its slots until then, so lingering sockets count
/// against the caps. A connection dropped for idling (the watchdog) is closed at once.
struct Lingering {
    stream: Option<tokio::net::TcpStream>,
    activity: Arc<Activity>,
    held: Option<(tokio::sync::OwnedSemaphorePermit, SourceSlot)>,
}

impl Lingering {
    fn new(
        stream: tokio::net::TcpStream,
        activity: Arc<Activity>,
        held: (tokio::sync::OwnedSemaphorePermit, SourceSlot),
    ) -> Self {
        Self {
            stream: Some(stream),
            activity,
            held: Some(held),
        }
    }

    fn tcp(&mut self) -> &mut tokio::net::TcpStream {
        self.stream
            .as_mut()
            .expect("the stream is taken only when dropped")
    }

    fn io(self: Pin<&mut Self>) -> Pin<&mut tokio::net::TcpStream> {
        Pin::new(self.get_mut().tcp())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), held) = (self.stream.take(), self.held.take()) else {
            return;
        };
        let owed = self.activity.served.load(Ordering::Acquire)
            && !self.activity.abandoned.load(Ordering::Acquire);
        if !owed {
            return;
        }
        // Outside a runtime (shutting down) the socket simply closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, held));
        }
    }
}

async fn linger<H>(mut stream: tokio::net::TcpStream, _held: H) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + LINGER_TIME;
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
}

impl tokio::io::AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_source_gets_at_most_its_limit_and_slots_come_back() {
        let sources = Arc::new(Sources::new(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = sources.open(ip).unwrap();
        let _second = sources.open(ip).unwrap();
        assert!(sources.open(ip).is_none());
        assert!(sources.open(other).is_some());
        drop(first);
        assert!(sources.open(ip).is_some());
    }

    #[test]
    fn limits_are_validated() {
        assert!(ServeLimits::default().validate().is_ok());
        let mut l = ServeLimits {
            max_per_source: 0,
            ..Default::default()
        };
        assert!(l.validate().is_err());
        l.max_per_source = 1;
        l.header_timeout = Duration::ZERO;
        assert!(
            l.validate()
                .unwrap_err()
                .contains("SHERATAN_HEADER_TIMEOUT_MS")
        );
    }
}
