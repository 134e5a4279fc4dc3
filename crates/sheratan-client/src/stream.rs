//! The worker stream's client (docs/API.md, "The worker stream"): one WebSocket to the hub's
//! data plane that brings leased jobs and the end of leases, and carries results, extensions
//! and progress, each answered after the hub committed it.
//!
//! [`DataClient::open_stream`] connects once and says so when the hub refuses the stream (an
//! older hub, a proxy that does not pass WebSockets): the caller then uses the request routes.
//! Once open, the stream reconnects on its own: it resumes the leases the node still runs
//! (before anything else), sends again every result not yet answered (a repeat is answered
//! `duplicate`), and tells the caller [`StreamEvent::Reconnected`] so it asks for jobs again
//! (credits are the connection's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sheratan_proto::data::{
    ExtendResponse, LeasedJob, ResultRequest, ResultResponse, WatchedLease,
};
use sheratan_proto::progress::{ProgressAck, ProgressReport};
use sheratan_proto::stream::{HubFrame, NodeFrame};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::{ClientError, DataClient};

/// Who leases over the stream, and how many jobs it may hold at once.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub node_id: String,
    pub queues: Vec<String>,
    pub capabilities: Vec<String>,
    /// 1 to 1,000; 0 for a stream that only submits ([`StreamSpec::producer`]).
    pub max_jobs: u32,
}

impl StreamSpec {
    /// A stream that only submits jobs (a producer's).
    pub fn producer() -> StreamSpec {
        StreamSpec {
            node_id: String::new(),
            queues: Vec::new(),
            capabilities: Vec::new(),
            max_jobs: 0,
        }
    }
}

/// What the hub pushes, and what happens to the connection.
#[derive(Debug)]
pub enum StreamEvent {
    Job(Box<LeasedJob>),
    /// The lease ended (cancelled, reaped, taken back): stop its handler, report nothing.
    Ended(String),
    /// The connection was lost; running jobs go on, the stream connects again.
    Lost(String),
    /// Connected again: leases resumed, unanswered results sent again. Ask for jobs again.
    Reconnected,
    /// The answer to [`WorkerStream::stop`]: every job the hub pushed came before it.
    Stopped,
}

/// The leases a node runs now, asked at each reconnect.
pub type RunningLeases = Arc<dyn Fn() -> Vec<WatchedLease> + Send + Sync>;

/// A handle on an open stream. Cheap to clone.
#[derive(Clone)]
pub struct WorkerStream {
    inner: Arc<Inner>,
}

struct Inner {
    data: DataClient,
    spec: StreamSpec,
    running: RunningLeases,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// The open connection; `None` while reconnecting.
    conn: Mutex<Option<Conn>>,
    /// `stop` was asked: sent again on every new connection (under the `conn` lock, so a stop
    /// asked while reconnecting reaches the next connection).
    stopping: AtomicBool,
    closed: CancellationToken,
}

#[derive(Clone)]
struct Conn {
    tx: mpsc::UnboundedSender<Message>,
    /// The key results are signed with: the token this connection authenticated with.
    key: Arc<String>,
}

struct Pending {
    /// A result to send again after a reconnect (other frames fail when the connection goes).
    replay: Option<Replay>,
    answer: oneshot::Sender<Result<HubFrame, ClientError>>,
}

/// A frame sent again after a reconnect until answered: a result, or a submit with an
/// idempotency key (a repeat of either is harmless).
#[derive(Clone)]
struct Replay {
    submit: bool,
    body: String,
    traceparent: Option<String>,
}

impl DataClient {
    /// Opens the worker stream. An `Err` is the hub's refusal (or no hub): fall back to the
    /// request routes when it is not `AUTH_FAIL`/`FORBIDDEN` (404 from an older hub, a proxy).
    pub async fn open_stream(
        &self,
        spec: StreamSpec,
        running: RunningLeases,
    ) -> Result<(WorkerStream, mpsc::Receiver<StreamEvent>), ClientError> {
        let inner = Arc::new(Inner {
            data: self.clone(),
            spec,
            running,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            conn: Mutex::new(None),
            stopping: AtomicBool::new(false),
            closed: CancellationToken::new(),
        });
        let connected = connect(&inner).await?;
        let (events, rx) = mpsc::channel(1024);
        tokio::spawn(session(inner.clone(), connected, events));
        Ok((WorkerStream { inner }, rx))
    }
}

type Socket = WebSocketStream<reqwest::Upgraded>;

/// An open connection: its socket, the frames to send on it, and the hub's idle timeout.
struct Connected {
    ws: Socket,
    queued: mpsc::UnboundedReceiver<Message>,
    idle: Duration,
}

/// One connection: the upgrade, the welcome frame.
async fn connect(inner: &Inner) -> Result<Connected, ClientError> {
    let base = inner.data.base();
    let token = base.token.load();
    let spec = &inner.spec;
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let mut request = base.request_as(&token, reqwest::Method::GET, "/v1/stream");
    if spec.max_jobs > 0 {
        request = request.query(&[
            ("node_id", spec.node_id.as_str()),
            ("queues", &spec.queues.join(",")),
            ("capabilities", &spec.capabilities.join(",")),
            ("max_jobs", &spec.max_jobs.to_string()),
        ]);
    }
    let request = request
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "websocket")
        .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
        .header(reqwest::header::SEC_WEBSOCKET_KEY, &key);
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::transport(&base.url, e))?;
    if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        // A refusal in the contract's shape, or whatever a proxy answered.
        return Err(match crate::check(response).await {
            Err(e) => e,
            Ok(r) => ClientError::UnexpectedStatus {
                status: r.status().as_u16(),
                body: "the hub did not switch to the worker stream".into(),
            },
        });
    }
    let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accepted = response
        .headers()
        .get(reqwest::header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !accepted {
        return Err(ClientError::Decode(
            "the stream's upgrade answer has no valid Sec-WebSocket-Accept".into(),
        ));
    }
    let io = response
        .upgrade()
        .await
        .map_err(|e| ClientError::transport(&base.url, e))?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
    let welcome = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    let idle = match welcome {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(text.as_str()) {
            Ok(HubFrame::Welcome {
                idle_timeout_ms,
                warning,
                ..
            }) => {
                if let Some(warning) = warning {
                    tracing::warn!("worker stream: {warning}");
                }
                Duration::from_millis(idle_timeout_ms.max(300))
            }
            _ => {
                return Err(ClientError::Decode(
                    "the stream's first frame is not its welcome".into(),
                ));
            }
        },
        _ => {
            return Err(ClientError::Decode(
                "the stream sent no welcome frame within 10 s".into(),
            ));
        }
    };
    let signing = crate::signing_key(token.send().unwrap_or(""));
    // Resumed leases first: their extensions must find them held.
    let leases = (inner.running)();
    let (tx, rx) = mpsc::unbounded_channel();
    if !leases.is_empty() {
        let _ = tx.send(text_frame(&NodeFrame::Resume { leases }, None));
    }
    let conn = Conn {
        tx,
        key: Arc::new(signing),
    };
    // Results not yet answered go again (after the resume), signed with this connection's key.
    // Under the pending lock, as `ask` registers under it: a frame is either among these
    // replays or sees the new connection, never neither.
    let pending = inner.pending.lock().expect("stream lock");
    for (id, p) in pending.iter() {
        if let Some(r) = &p.replay {
            let frame = match r.submit {
                true => submit_frame(*id, r),
                false => result_frame(*id, r, &conn.key),
            };
            let _ = conn.tx.send(frame);
        }
    }
    let mut installed = inner.conn.lock().expect("stream lock");
    if inner.stopping.load(Ordering::Relaxed) {
        let _ = conn.tx.send(text_frame(&NodeFrame::Stop, None));
    }
    *installed = Some(conn);
    drop(installed);
    drop(pending);
    Ok(Connected {
        ws,
        queued: rx,
        idle,
    })
}

/// Carries the stream's connections until it is closed: each one until it is lost, then
/// connects again with backoff.
async fn session(inner: Arc<Inner>, first: Connected, events: mpsc::Sender<StreamEvent>) {
    let mut connected = first;
    loop {
        let why = carry(&inner, connected, &events).await;
        *inner.conn.lock().expect("stream lock") = None;
        if inner.closed.is_cancelled() || events.is_closed() {
            // Closed for good: every answer still awaited fails (a result then goes by
            // request, see `Link`).
            inner.closed.cancel();
            fail_pending(&inner, &why, |_| true);
            return;
        }
        fail_pending(&inner, &why, |p| p.replay.is_none());
        tracing::warn!("worker stream lost ({why}); connecting again");
        let _ = events.send(StreamEvent::Lost(why)).await;
        let mut wait = Duration::from_millis(100);
        connected = loop {
            tokio::select! {
                () = inner.closed.cancelled() => {
                    fail_pending(&inner, "the stream closed", |_| true);
                    return;
                }
                () = tokio::time::sleep(wait.mul_f64(0.8 + 0.4 * rand::random::<f64>())) => {}
            }
            match connect(&inner).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!("worker stream: connecting again failed: {e}");
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        let _ = events.send(StreamEvent::Reconnected).await;
    }
}

/// Fails the awaited answers `which` picks: at a loss those not sent again (extensions,
/// progress), at the close all.
fn fail_pending(inner: &Inner, why: &str, which: impl Fn(&Pending) -> bool) {
    let mut pending = inner.pending.lock().expect("stream lock");
    let lost: Vec<u64> = pending
        .iter()
        .filter(|(_, p)| which(p))
        .map(|(id, _)| *id)
        .collect();
    for id in lost {
        if let Some(p) = pending.remove(&id) {
            let _ = p.answer.send(Err(lost_error(&inner.data, why)));
        }
    }
}

fn lost_error(data: &DataClient, why: &str) -> ClientError {
    ClientError::Transport {
        url: data.url().to_owned(),
        message: format!("the worker stream was lost: {why}"),
    }
}

/// One connection, until it is lost or the stream closed; says why it ended.
async fn carry(inner: &Inner, c: Connected, events: &mpsc::Sender<StreamEvent>) -> String {
    let Connected {
        ws,
        mut queued,
        idle,
    } = c;
    let (mut sink, mut source) = ws.split();
    // Pings keep an otherwise quiet stream from the hub's idle timeout.
    let mut ping = tokio::time::interval(idle / 3);
    ping.tick().await;
    // A hub that answers nothing (not even the pings) for the idle timeout is gone, even if
    // the connection is not known to be closed (a half-open one).
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(heard + idle) => {
                return "the hub answered nothing, not even pings, for the idle timeout".into();
            }
            () = inner.closed.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return "closed".into();
            }
            frame = queued.recv() => {
                let Some(frame) = frame else { return "closed".into() };
                // Everything queued goes in one write.
                let mut sent = sink.feed(frame).await;
                while sent.is_ok()
                    && let Ok(frame) = queued.try_recv()
                {
                    sent = sink.feed(frame).await;
                }
                if let Err(e) = sent.and(sink.flush().await) {
                    return e.to_string();
                }
            }
            _ = ping.tick() => {
                if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                    return e.to_string();
                }
            }
            message = source.next() => {
                heard = tokio::time::Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        if !deliver(inner, text.as_str(), events).await {
                            return "closed".into();
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "the hub closed it".into());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e.to_string(),
                    None => return "the connection ended".into(),
                }
            }
        }
    }
}

/// Hands one hub frame to whoever waits for it; `false` when nobody listens any more.
async fn deliver(inner: &Inner, text: &str, events: &mpsc::Sender<StreamEvent>) -> bool {
    let frame: HubFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::warn!("worker stream: a frame this client cannot read ({e})");
            return true;
        }
    };
    let id = match &frame {
        HubFrame::Job { .. }
        | HubFrame::Ended { .. }
        | HubFrame::Welcome { .. }
        | HubFrame::Stopped => None,
        HubFrame::ResultAck { id, .. }
        | HubFrame::SubmitAck { id, .. }
        | HubFrame::ExtendAck { id, .. }
        | HubFrame::ProgressAck { id, .. } => Some(*id),
        HubFrame::Error { id, error } => {
            if id.is_none() {
                tracing::warn!(
                    "worker stream: the hub refused a frame: {}: {}",
                    error.code,
                    error.message
                );
            }
            *id
        }
    };
    if let Some(id) = id {
        let waiting = inner.pending.lock().expect("stream lock").remove(&id);
        if let Some(p) = waiting {
            let _ = p.answer.send(Ok(frame));
        }
        return true;
    }
    let event = match frame {
        HubFrame::Job { job } => StreamEvent::Job(Box::new(job)),
        HubFrame::Ended { lease_id } => StreamEvent::Ended(lease_id),
        HubFrame::Stopped => StreamEvent::Stopped,
        _ => return true,
    };
    events.send(event).await.is_ok()
}

fn text_frame(frame: &NodeFrame, body: Option<&str>) -> Message {
    let mut text = serde_json::to_string(frame).unwrap_or_default();
    if let Some(body) = body {
        text.push('\n');
        text.push_str(body);
    }
    Message::text(text)
}

fn submit_frame(id: u64, r: &Replay) -> Message {
    let frame = NodeFrame::Submit {
        id,
        traceparent: r.traceparent.clone(),
    };
    text_frame(&frame, Some(&r.body))
}

fn result_frame(id: u64, r: &Replay, key: &str) -> Message {
    let (content_sha256, signature) = crate::sign_with_key(r.body.as_bytes(), key);
    let frame = NodeFrame::Result {
        id,
        content_sha256,
        signature: Some(signature),
        traceparent: r.traceparent.clone(),
    };
    text_frame(&frame, Some(&r.body))
}

impl WorkerStream {
    /// Asks the hub for up to `n` more jobs. Lost with its connection: after
    /// [`StreamEvent::Reconnected`] ask again for every free slot.
    pub fn want(&self, n: u32) {
        if n == 0 {
            return;
        }
        if let Some(conn) = self.conn() {
            let _ = conn.tx.send(text_frame(&NodeFrame::Want { n }, None));
        }
    }

    /// Reports a result; answered after the hub committed it. Sent again after a reconnect
    /// until answered (a repeat is answered `duplicate`).
    pub async fn report(
        &self,
        result: &ResultRequest,
        traceparent: Option<&str>,
    ) -> Result<ResultResponse, ClientError> {
        let sent = self.send_result(result, traceparent);
        self.answer_of(sent).await
    }

    /// Queues a result frame now; [`WorkerStream::answer_of`] waits for its answer.
    pub fn send_result(
        &self,
        result: &ResultRequest,
        traceparent: Option<&str>,
    ) -> Result<SentResult, ClientError> {
        let body = serde_json::to_string(result).map_err(|e| ClientError::Decode(e.to_string()))?;
        let replay = Replay {
            submit: false,
            body,
            traceparent: traceparent.map(str::to_owned),
        };
        let answer = self.ask(Some(replay.clone()), |id, key| {
            result_frame(id, &replay, key)
        })?;
        Ok(SentResult(answer))
    }

    /// Submits a job, answered after it is committed. One with an idempotency key is sent
    /// again after a reconnect until answered; one without fails if its connection is lost
    /// before the answer (it may or may not be committed, as with a request).
    pub async fn submit(
        &self,
        job: &sheratan_proto::data::SubmitJob,
        traceparent: Option<&str>,
    ) -> Result<crate::Submitted, ClientError> {
        let body = serde_json::to_string(job).map_err(|e| ClientError::Decode(e.to_string()))?;
        let replay = Replay {
            submit: true,
            body,
            traceparent: traceparent.map(str::to_owned),
        };
        let keep = job.idempotency_key.is_some().then(|| replay.clone());
        let answer = self.ask(keep, |id, _| submit_frame(id, &replay))?;
        match self.answer(answer).await? {
            HubFrame::SubmitAck {
                created: true,
                answer,
                ..
            } => Ok(crate::Submitted::Created(answer)),
            HubFrame::SubmitAck { answer, .. } => Ok(crate::Submitted::Existing(answer)),
            other => Err(refusal(other)),
        }
    }

    /// The hub's answer to a result sent with [`WorkerStream::send_result`].
    pub async fn answer_of(
        &self,
        sent: Result<SentResult, ClientError>,
    ) -> Result<ResultResponse, ClientError> {
        match self.answer(sent?.0).await? {
            HubFrame::ResultAck { answer, .. } => Ok(answer),
            other => Err(refusal(other)),
        }
    }

    /// Extends a lease this stream holds.
    pub async fn extend(
        &self,
        lease_id: &str,
        extend_s: Option<u32>,
    ) -> Result<ExtendResponse, ClientError> {
        let lease_id = lease_id.to_owned();
        let frame = self.ask(None, |id, _| {
            text_frame(
                &NodeFrame::Extend {
                    id,
                    lease_id,
                    extend_s,
                },
                None,
            )
        })?;
        match self.answer(frame).await? {
            HubFrame::ExtendAck { answer, .. } => Ok(answer),
            other => Err(refusal(other)),
        }
    }

    /// Reports progress of a lease this stream holds, signed like a result. Not sent again.
    pub async fn progress(
        &self,
        lease_id: &str,
        report: &ProgressReport,
    ) -> Result<ProgressAck, ClientError> {
        let body = serde_json::to_string(report).map_err(|e| ClientError::Decode(e.to_string()))?;
        let lease_id = lease_id.to_owned();
        let frame = self.ask(None, |id, key| {
            let (content_sha256, signature) = crate::sign_with_key(body.as_bytes(), key);
            let frame = NodeFrame::Progress {
                id,
                lease_id,
                content_sha256,
                signature: Some(signature),
            };
            text_frame(&frame, Some(&body))
        })?;
        match self.answer(frame).await? {
            HubFrame::ProgressAck { answer, .. } => Ok(answer),
            other => Err(refusal(other)),
        }
    }

    /// Asks the hub to push no more jobs; [`StreamEvent::Stopped`] follows the last one it
    /// pushed. Results, extensions and progress still go over the stream.
    /// Asked while reconnecting, it goes on the next connection.
    pub fn stop(&self) {
        let conn = self.inner.conn.lock().expect("stream lock");
        self.inner.stopping.store(true, Ordering::Relaxed);
        if let Some(conn) = conn.as_ref() {
            let _ = conn.tx.send(text_frame(&NodeFrame::Stop, None));
        }
    }

    /// Closes the stream: no reconnect; answers still awaited fail.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    fn conn(&self) -> Option<Conn> {
        self.inner.conn.lock().expect("stream lock").clone()
    }

    /// Sends the frame `build` makes under a new id and returns its answer to come. A result
    /// waits for a connection if there is none; anything else fails at once.
    fn ask(
        &self,
        replay: Option<Replay>,
        build: impl FnOnce(u64, &str) -> Message,
    ) -> Result<Answer, ClientError> {
        if self.inner.closed.is_cancelled() {
            return Err(lost_error(&self.inner.data, "the stream is closed"));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        // The pending lock first, then the connection (as a reconnect takes them).
        let mut pending = self.inner.pending.lock().expect("stream lock");
        let conn = self.conn();
        if conn.is_none() && replay.is_none() {
            return Err(lost_error(&self.inner.data, "reconnecting"));
        }
        let keep = replay.is_some();
        pending.insert(id, Pending { replay, answer });
        if let Some(conn) = conn
            && conn.tx.send(build(id, &conn.key)).is_err()
            && !keep
        {
            pending.remove(&id);
            return Err(lost_error(&self.inner.data, "reconnecting"));
        }
        Ok(rx)
    }

    async fn answer(&self, rx: Answer) -> Result<HubFrame, ClientError> {
        rx.await
            .unwrap_or_else(|_| Err(lost_error(&self.inner.data, "the stream closed")))
    }
}

type Answer = oneshot::Receiver<Result<HubFrame, ClientError>>;

/// A result frame on its way.
pub struct SentResult(Answer);

/// An error frame as the client's error.
fn refusal(frame: HubFrame) -> ClientError {
    match frame {
        HubFrame::Error { error, .. } => ClientError::Api {
            status: error.code.http_status(),
            code: error.code,
            message: error.message,
            hint: error.hint,
            retry_after_s: None,
        },
        other => ClientError::Decode(format!("an answer of the wrong kind: {other:?}")),
    }
}

/// Where a running job's extensions, progress and result go: the worker stream when it is
/// open, else the request routes. What the stream cannot carry (it closed, or is between
/// connections) goes by request instead: extensions and results are safe to repeat, and a
/// progress report that failed on the stream was not applied.
#[derive(Clone)]
pub enum Link {
    Requests(DataClient),
    Stream(WorkerStream),
}

impl Link {
    pub fn data(&self) -> &DataClient {
        match self {
            Link::Requests(data) => data,
            Link::Stream(s) => &s.inner.data,
        }
    }

    /// Extends the lease (by request when the stream is gone or reconnecting: the hub
    /// extends a lease its holder names either way).
    pub async fn extend(&self, lease_id: &str) -> Result<ExtendResponse, ClientError> {
        match self {
            Link::Requests(data) => data.extend(lease_id, None).await,
            Link::Stream(s) => match s.extend(lease_id, None).await {
                Err(ClientError::Transport { .. }) => s.inner.data.extend(lease_id, None).await,
                answer => answer,
            },
        }
    }

    pub async fn progress(
        &self,
        lease_id: &str,
        report: &ProgressReport,
    ) -> Result<ProgressAck, ClientError> {
        match self {
            Link::Requests(data) => data.progress(lease_id, report).await,
            Link::Stream(s) => match s.progress(lease_id, report).await {
                Err(ClientError::Transport { .. }) => s.inner.data.progress(lease_id, report).await,
                answer => answer,
            },
        }
    }

    /// Reports a result; `queued` runs once it is on its way (on the stream: its frame is
    /// queued, so a `want` sent after it reaches the hub after it).
    pub async fn report(
        &self,
        result: &ResultRequest,
        traceparent: Option<&str>,
        queued: impl FnOnce(),
    ) -> Result<ResultResponse, ClientError> {
        match self {
            Link::Requests(data) => {
                queued();
                data.report_traced(result, traceparent).await
            }
            Link::Stream(s) => {
                let sent = s.send_result(result, traceparent);
                queued();
                match s.answer_of(sent).await {
                    Err(ClientError::Transport { .. }) => {
                        s.inner.data.report_traced(result, traceparent).await
                    }
                    answer => answer,
                }
            }
        }
    }
}

/// Whether a refused stream should make the caller use the request routes: the hub (or
/// something in between) does not serve it. A hub that is down, a wrong token, or a busy hub
/// is retried as a lease call would be.
pub fn falls_back(err: &ClientError) -> bool {
    use sheratan_proto::ErrorCode;
    match err {
        ClientError::Api { code, .. } => matches!(
            code,
            ErrorCode::NotFound | ErrorCode::MethodNotAllowed | ErrorCode::InvalidRequest
        ),
        ClientError::UnexpectedStatus { .. } | ClientError::Decode(_) => true,
        _ => false,
    }
}
