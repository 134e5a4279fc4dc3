//! `GET /v1/stream`: the worker stream's WebSocket (docs/API.md, "The worker stream"). The
//! upgrade request is checked like a lease call (credential, role, client certificate, node
//! identity, queues); then frames are carried between the socket and
//! [`crate::job_service::stream::Stream`], which does the work.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use sheratan_proto::stream::{HubFrame, StreamQuery};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::extract::{Caller, PeerCert, QueryParams};
use super::plane::PlaneState;
use crate::job_service::JobsError;
use crate::job_service::stream::{Stream, StreamCaller, stream_order};
use sheratan_proto::credentials::CredentialRole;
use sheratan_runtime::edge::ApiError;

/// Room for a frame's JSON line beside a body of the largest size a request may carry.
const LINE_ALLOWANCE: usize = 8 * 1024;

pub(super) async fn open(
    State(state): State<PlaneState>,
    caller: Caller,
    cert: PeerCert,
    QueryParams(q): QueryParams<StreamQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    if !state.hub.config.worker_stream {
        return Err(JobsError::NotFound(
            "this hub does not serve the worker stream (SHERATAN_NO_WORKER_STREAM): use POST /v1/leases and the other request routes".into(),
        )
        .into());
    }
    let order = stream_order(&q)?;
    let role = caller.credential.named().map(|r| r.role);
    if let Some(order) = &order {
        if role == Some(CredentialRole::Submit) {
            let record = caller.credential.named().expect("a named credential");
            return Err(super::roles::forbidden(
                record,
                "lease jobs (its stream only submits: leave out node_id, queues and max_jobs)",
            ));
        }
        cert.require_node(&order.node_id, caller.peer, &state)?;
        super::extract::require_identity(&caller, &order.node_id, &state)?;
        for queue in &order.queues {
            super::job_routes::queue_allowed(&caller, queue, "lease from")?;
        }
    }
    let accept = accept_key(req.headers())?;
    let recheck = Recheck {
        headers: credential_headers(req.headers()),
        peer: caller.peer,
        state: state.clone(),
    };
    let hub = state.hub.clone();
    let upgrade = hyper::upgrade::on(req);
    let who = StreamCaller {
        // The mesh token, an admin or a submit credential submits, as on POST /v1/jobs.
        may_submit: !matches!(role, Some(CredentialRole::Node | CredentialRole::Read)),
        queues: caller
            .credential
            .named()
            .map(|r| r.queues.clone())
            .unwrap_or_default(),
        ip: caller.peer.ip(),
        credential: caller.credential,
    };
    let (stream, frames) = Stream::open(hub.clone(), order, who);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let max_frame = hub.config.max_body_bytes + LINE_ALLOWANCE;
                let config = WebSocketConfig::default()
                    .max_message_size(Some(2 * max_frame))
                    .max_frame_size(Some(2 * max_frame));
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config))
                        .await;
                let idle = hub.config.serve.keepalive_timeout;
                hub.jobs.streams.fetch_add(1, Ordering::Relaxed);
                run(ws, stream, frames, (idle, max_frame), recheck).await;
                hub.jobs.streams.fetch_sub(1, Ordering::Relaxed);
            }
            Err(err) => tracing::debug!(%err, "the stream's upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, "websocket".to_owned()),
            (header::CONNECTION, "Upgrade".to_owned()),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response())
}

/// The headers that carry the stream's token, kept to check it again.
fn credential_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [
        header::AUTHORIZATION,
        header::HeaderName::from_static("x-sheratan-token"),
    ] {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The handshake's answer key; 400 for a request that is not a WebSocket upgrade.
fn accept_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    if !has(header::UPGRADE, "websocket")
        || !has(header::CONNECTION, "upgrade")
        || !has(header::SEC_WEBSOCKET_VERSION, "13")
        || key.is_none()
    {
        return Err(JobsError::invalid(
            "GET /v1/stream is a WebSocket: send Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
        )
        .into());
    }
    let key = key.map(|k| k.as_bytes()).unwrap_or_default();
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// Carries frames until the node closes, goes idle, its credential stops being valid, or the
/// hub stops.
async fn run<S>(
    ws: WebSocketStream<S>,
    stream: Arc<Stream>,
    frames: mpsc::Receiver<HubFrame>,
    limits: (Duration, usize),
    recheck: Recheck,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (idle, max_frame) = limits;
    let (mut sink, mut source) = ws.split();
    let welcome = serde_json::to_string(&stream.welcome(idle, max_frame)).unwrap_or_default();
    if sink.send(Message::text(welcome)).await.is_err() {
        return;
    }
    let pump = tokio::spawn(stream.clone().pump());
    let watch = tokio::spawn(stream.clone().watch());
    let checker = tokio::spawn(recheck.run(stream.clone()));
    let writer = tokio::spawn(write(sink, frames, stream.clone(), idle));
    read(&mut source, &stream, idle, max_frame).await;
    stream.close();
    watch.abort();
    checker.abort();
    // The pump ends at the close (a lease call under way finishes and its jobs are queued);
    // the writer then sends what is queued and the close frame.
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    let writer_ends = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if let Err(_elapsed) = writer_ends {
        tracing::debug!("a worker stream's writer did not finish; dropped");
    }
}

/// Sends the frames the stream queues; a write that does not finish within the idle timeout
/// (a node that stopped reading) ends the stream. At the close, what is still queued goes
/// first, then the close frame.
async fn write<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut frames: mpsc::Receiver<HubFrame>,
    stream: Arc<Stream>,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let closed = stream.closed().clone();
    loop {
        let frame = tokio::select! {
            biased;
            frame = frames.recv() => frame,
            () = closed.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        // Whatever else is queued goes in the same write (one send, not one per frame, when
        // many commits answer at once).
        let written = tokio::time::timeout(idle, write_queued(&mut sink, frame, &mut frames)).await;
        if !matches!(written, Ok(Ok(()))) {
            stream.close();
            return;
        }
    }
    // Closing: frames queued until now (jobs pushed, answers) still go out, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(frame) = frames.try_recv() {
            if write_queued(&mut sink, frame, &mut frames).await.is_err() {
                return;
            }
        }
    })
    .await;
    let close = sink.send(Message::Close(Some(closed_by_hub())));
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

/// Looks at the stream's credential again every few seconds, as each request would: a
/// credential revoked or expired, or a mesh token retired by a rotation, ends the stream.
struct Recheck {
    state: PlaneState,
    headers: HeaderMap,
    peer: std::net::SocketAddr,
}

impl Recheck {
    const EVERY: Duration = Duration::from_secs(2);

    async fn run(self, stream: Arc<Stream>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Self::EVERY) => {}
                () = stream.closed().cancelled() => return,
            }
            if super::extract::authenticate(&self.headers, self.peer, &self.state).is_err() {
                tracing::warn!(peer = %self.peer, "closing a worker stream: its credential is no longer valid");
                stream.close();
                return;
            }
        }
    }
}

/// Writes `first` and every frame queued behind it, then flushes once.
async fn write_queued<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    first: HubFrame,
    frames: &mut mpsc::Receiver<HubFrame>,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let text = |frame: &HubFrame| Message::text(serde_json::to_string(frame).unwrap_or_default());
    sink.feed(text(&first)).await?;
    while let Ok(frame) = frames.try_recv() {
        sink.feed(text(&frame)).await?;
    }
    sink.flush().await
}

/// Why the hub closed a stream it did not lose: idle, a credential no longer valid, a node
/// that stopped reading, or shutting down.
fn closed_by_hub() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "the hub closed the stream (idle, the credential no longer valid, or the hub stopping): connect again".into(),
    }
}

async fn read<S>(
    source: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
    stream: &Arc<Stream>,
    idle: Duration,
    max_frame: usize,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, source.next()) => next,
            () = stream.closed().cancelled() => return,
        };
        let message = match next {
            Err(_) => {
                tracing::debug!("closing an idle worker stream");
                return;
            }
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) if text.len() > max_frame => {
                let e = JobsError::TooLarge(format!(
                    "frame: {} bytes, more than the {max_frame} a frame may carry",
                    text.len()
                ));
                stream.refuse(None, e).await;
            }
            Message::Text(text) => stream.handle(text.as_str()).await,
            Message::Binary(_) => {
                let e = JobsError::invalid("frames are text (JSON lines), not binary");
                stream.refuse(None, e).await;
            }
            Message::Close(_) => return,
            // Pings are answered by the socket; any message counts as activity.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}
