//! The worker stream (`GET /v1/stream`, a WebSocket on the data plane): one long-lived
//! connection per worker process over which the hub pushes leased jobs and the end of leases
//! (cancels), and the worker sends results, extensions and progress, each acknowledged after
//! it is committed. docs/API.md, "The worker stream", is the contract; these are its frames.
//!
//! Every frame is one WebSocket text message. A hub frame is one JSON object
//! ([`HubFrame`]). A node frame is one JSON line ([`NodeFrame`]); a `result` or `progress`
//! frame is followed by `\n` and the exact bytes that are signed — the body the request route
//! (`POST /v1/results`, `POST /v1/leases/{id}/progress`) would carry — so a result is signed
//! exactly as it is on the request route.

use serde::{Deserialize, Serialize};

use crate::ErrorDetail;
use crate::data::{ExtendResponse, LeasedJob, ResultResponse, SubmitResponse, WatchedLease};
use crate::progress::ProgressAck;

/// The query of the upgrade request: who leases, from where, and how many jobs it may hold;
/// a stream that only submits (`max_jobs` 0, the default) names none of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The node that leases (required with `max_jobs`).
    #[serde(default)]
    pub node_id: Option<String>,
    /// Queue names to lease from, comma-separated (1 to 64; required with `max_jobs`).
    #[serde(default)]
    pub queues: Option<String>,
    /// Capabilities (the kinds it runs first among them), comma-separated (at most 256).
    #[serde(default)]
    pub capabilities: String,
    /// The most leases the stream holds at once (1 to 1,000): jobs pushed and not yet
    /// reported. 0: the stream only submits.
    #[serde(default)]
    pub max_jobs: u32,
}

/// A frame from the node (the JSON line; see the module's comment for the body that follows
/// `result` and `progress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeFrame {
    /// Push up to `n` more jobs (the node has that many more free slots). Credits beyond
    /// `max_jobs` less the leases held are not kept.
    Want { n: u32 },
    /// After a reconnect: leases this node still runs, to be held by this stream (first, before
    /// their extensions). Each that is no longer live comes back as `ended`.
    Resume { leases: Vec<WatchedLease> },
    /// A result; the signed body (a `ResultRequest`) follows the line.
    Result {
        id: u64,
        content_sha256: String,
        #[serde(default)]
        signature: Option<String>,
        #[serde(default)]
        traceparent: Option<String>,
    },
    /// Extends a lease the stream holds (as `POST /v1/leases/{lease_id}/extend`).
    Extend {
        id: u64,
        lease_id: String,
        #[serde(default)]
        extend_s: Option<u32>,
    },
    /// Submits a job, as `POST /v1/jobs` would; the body (a `SubmitJob`) follows the line.
    /// Answered after the job is committed.
    Submit {
        id: u64,
        #[serde(default)]
        traceparent: Option<String>,
    },
    /// No more jobs: the hub stops pushing and answers `stopped` once the last job it pushed
    /// is on its way (a node that is stopping waits for it, so no job is pushed unseen).
    Stop,
    /// Progress of a lease the stream holds; the signed body (a `ProgressReport`) follows.
    Progress {
        id: u64,
        lease_id: String,
        content_sha256: String,
        #[serde(default)]
        signature: Option<String>,
    },
}

/// A frame from the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubFrame {
    /// The first frame: the stream is open with these limits.
    Welcome {
        max_jobs: u32,
        /// The stream closes after this long without a frame (or ping) from the node.
        idle_timeout_ms: u64,
        /// The largest node frame read; larger ones up to twice this get `PAYLOAD_TOO_LARGE`,
        /// beyond that the stream ends.
        max_frame_bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// A job leased to this stream.
    Job {
        job: LeasedJob,
    },
    /// A lease the stream held is no longer live (cancelled, reaped, taken back): stop its
    /// handler and report nothing.
    Ended {
        lease_id: String,
    },
    /// The answer to `stop`: no job follows.
    Stopped,
    /// A job was submitted (`created`: a new one, else an idempotent repeat's existing job).
    SubmitAck {
        id: u64,
        created: bool,
        answer: SubmitResponse,
    },
    /// A result was recorded (or was already: `duplicate`).
    ResultAck {
        id: u64,
        answer: ResultResponse,
    },
    ExtendAck {
        id: u64,
        answer: ExtendResponse,
    },
    ProgressAck {
        id: u64,
        answer: ProgressAck,
    },
    /// A frame was refused: the contract's code; `id` names the frame when it could be read.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        error: ErrorDetail,
    },
}

/// Splits a node frame into its JSON line and the body after the first `\n` (empty when
/// there is none).
pub fn split_frame(text: &str) -> (&str, &str) {
    match text.split_once('\n') {
        Some((line, body)) => (line, body),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_by_type() {
        let f: NodeFrame = serde_json::from_str(r#"{"type":"want","n":3}"#).unwrap();
        assert_eq!(f, NodeFrame::Want { n: 3 });
        assert!(serde_json::from_str::<NodeFrame>(r#"{"type":"want","n":3,"x":1}"#).is_err());
        assert!(serde_json::from_str::<NodeFrame>(r#"{"type":"lease"}"#).is_err());
        let ended = HubFrame::Ended {
            lease_id: "l".into(),
        };
        assert_eq!(
            serde_json::to_string(&ended).unwrap(),
            r#"{"type":"ended","lease_id":"l"}"#
        );
        assert_eq!(split_frame("a\nb\nc"), ("a", "b\nc"));
        assert_eq!(split_frame("a"), ("a", ""));
    }
}
