//! The hub's two planes (docs/API.md, "Control plane" and "Data plane").

use serde_json::Value;
use sheratan_proto::auction::{GrantRequest, GrantResponse};
use sheratan_proto::control::{
    BundleInfo, BundleList, HealthResponse, HeartbeatRequest, HeartbeatResponse, MetricsQuery,
    NodeList, NodeView, NodesQuery,
};
use sheratan_proto::credentials::{
    CreateCredential, CreatedCredential, CredentialList, CredentialView, Whoami,
};
use sheratan_proto::data::{
    AckRequest, AckResponse, BatchResponse, BulkOutcome, BulkSelection, ExtendRequest,
    ExtendResponse, JobList, JobView, JobsQuery, LeaseRequest, LeaseResponse, PendingQuery,
    PendingResults, QueueAdminResponse, QueueList, ResultRequest, ResultResponse, RotationRequest,
    RotationStatus, SubmitBatch, SubmitJob, SubmitResponse, WatchRequest, WatchResponse,
};
use sheratan_proto::progress::{ProgressAck, ProgressReport};
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_proto::schedules::{
    RunNowResponse, ScheduleList, SchedulePatch, ScheduleSpec, ScheduleView,
};
use sheratan_proto::stream::{HubFrame, NodeFrame, StreamQuery};

use crate::{Api, Auth, Op, delete, document, get, patch, post, put};

const PLANES: &str = "Every route of one plane on the other plane's port is 421 PORT_MISMATCH \
    (the hint names the right port); a known route with another method is 405 \
    METHOD_NOT_ALLOWED; an unknown route is 404 NOT_FOUND after the token is checked. Refusals \
    (400, 403, 405, 413, 421) beyond SHERATAN_REFUSALS_PER_SEC a second are answered after a \
    wait of up to 1 s. The prose contract is docs/API.md.";

const NOT_FOUND: &str = "NOT_FOUND: no such one";

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const JOIN_TRACE: &str = "W3C trace context: the job joins this trace (docs/API.md, \
    \"Traces\"); a malformed value is ignored";

/// The control plane (default port 8787).
pub fn hub_control() -> Value {
    let api = Api {
        title: "Sheratan hub, control plane",
        description: format!(
            "Heartbeats, the node registry, bundles and the mesh CA (default port 8787). {PLANES}"
        ),
        common: &[(500, "INTERNAL: the hub's fault")],
    };
    document(api, control_ops())
}

fn control_ops() -> Vec<Op> {
    vec![
        get("/health", "The plane is up (public)")
            .auth(Auth::Public)
            .ok::<HealthResponse>(200, "up"),
        metrics(),
        openapi(),
        post(
            "/v1/heartbeat",
            "A node says it is alive and what it offers",
        )
        .body::<HeartbeatRequest>()
        .ok::<HeartbeatResponse>(200, "recorded"),
        get("/v1/nodes", "The nodes the hub knows")
            .query::<NodesQuery>()
            .ok::<NodeList>(200, "the nodes"),
        get("/v1/nodes/{id}", "One node")
            .ok::<NodeView>(200, "the node")
            .err(404, NOT_FOUND),
        get("/v1/bundles", "The published bundles").ok::<BundleList>(200, "the bundles"),
        get("/v1/bundles/{name}", "A bundle's bytes")
            .header(
                "If-None-Match",
                "the ETag (sha256) held: 304 when it is current",
                false,
            )
            .ok_raw(
                200,
                "application/octet-stream",
                "the bytes; ETag is the sha256",
            )
            .ok_empty(304, "not modified")
            .err(404, NOT_FOUND),
        get(
            "/v1/tls/ca",
            "The mesh CA certificate, for a joining node to check against its pin (public)",
        )
        .auth(Auth::Public)
        .ok_raw(200, "application/x-pem-file", "the PEM certificate")
        .err(
            404,
            "NOT_FOUND: the hub's certificate does not come from the mesh CA",
        ),
    ]
}

fn metrics() -> Op {
    get("/metrics", "Prometheus metrics")
        .query::<MetricsQuery>()
        .ok_raw(
            200,
            "text/plain",
            "Prometheus text exposition (JSON with format=json)",
        )
}

fn openapi() -> Op {
    get("/openapi.json", "This document").ok_raw(200, "application/json", "the OpenAPI document")
}

/// The data plane (default 127.0.0.1:8788).
pub fn hub_data() -> Value {
    let api = Api {
        title: "Sheratan hub, data plane",
        description: format!(
            "Durable queues: jobs, leases, results, schedules, credentials and the admin path \
             (default 127.0.0.1:8788). {PLANES}"
        ),
        common: &[
            (500, "INTERNAL: the hub's fault"),
            (503, "UNAVAILABLE: the job store is unreachable; retry"),
        ],
    };
    let mut ops = data_ops();
    ops.extend(job_ops());
    ops.extend(lease_ops());
    ops.extend(schedule_ops());
    ops.extend(admin_ops());
    document(api, ops)
}

fn data_ops() -> Vec<Op> {
    vec![
        get(
            "/health",
            "The plane is up, with its queue depth (loopback peers only)",
        )
        .auth(Auth::Loopback)
        .ok::<HealthResponse>(200, "up"),
        metrics(),
        openapi(),
        get("/v1/whoami", "Who the caller's token is").ok::<Whoami>(200, "the caller"),
        get(
            "/v1/queues",
            "Every queue with jobs, settings or a recent consumer",
        )
        .ok::<QueueList>(200, "the queues"),
    ]
}

fn job_ops() -> Vec<Op> {
    vec![
        post("/v1/jobs", "Submit a job")
            .body::<SubmitJob>()
            .header(TRACEPARENT, JOIN_TRACE, false)
            .ok::<SubmitResponse>(202, "accepted and committed")
            .ok::<SubmitResponse>(200, "an idempotent repeat: the existing job")
            .err(
                409,
                "IDEMPOTENCY_KEY_COLLISION: the key was used with another request",
            )
            .err(
                429,
                "BACKPRESSURE_DROP: the queue is full; Retry-After says when to retry",
            ),
        get("/v1/jobs", "List jobs, newest first, a page at a time")
            .query::<JobsQuery>()
            .ok::<JobList>(200, "a page"),
        post("/v1/jobs/batch", "Submit several jobs, one outcome each")
            .body::<SubmitBatch>()
            .header(TRACEPARENT, JOIN_TRACE, false)
            .ok::<BatchResponse>(200, "one outcome per item, in order")
            .err(
                429,
                "BACKPRESSURE_DROP: the queue is full; Retry-After says when to retry",
            ),
        get("/v1/jobs/{id}", "One job")
            .ok::<JobView>(200, "the job")
            .err(404, NOT_FOUND),
        post("/v1/jobs/{id}/cancel", "Cancel a job")
            .ok::<JobView>(200, "the job as it is now")
            .err(404, NOT_FOUND),
        get(
            "/v1/results",
            "Finished jobs not yet acknowledged (long poll)",
        )
        .query::<PendingQuery>()
        .ok::<PendingResults>(200, "the results"),
        post("/v1/results/ack", "Acknowledge results")
            .body::<AckRequest>()
            .ok::<AckResponse>(200, "how many were acknowledged"),
    ]
}

fn lease_ops() -> Vec<Op> {
    const EXPIRED: &str = "LEASE_EXPIRED: not the job's current lease";
    const UNSIGNED: &str = "RESULT_INTEGRITY_FAIL: the hash or signature is missing or wrong";
    vec![
        post("/v1/leases", "Lease jobs (long poll)")
            .body::<LeaseRequest>()
            .ok::<LeaseResponse>(200, "the leased jobs, maybe none"),
        post("/v1/leases/{lease_id}/extend", "Extend a lease")
            .body::<ExtendRequest>()
            .ok::<ExtendResponse>(200, "the new expiry")
            .err(409, EXPIRED),
        post(
            "/v1/leases/{lease_id}/progress",
            "Report a running job's progress",
        )
        .body::<ProgressReport>()
        .signed()
        .ok::<ProgressAck>(200, "recorded")
        .err(409, EXPIRED)
        .err(422, UNSIGNED),
        get(
            "/v1/stream",
            "Open the worker stream: a WebSocket that pushes leased jobs and ended leases, and takes results, extensions and progress",
        )
        .query::<StreamQuery>()
        .frames::<NodeFrame, HubFrame>()
        .ok_empty(
            101,
            "switched to the WebSocket; its frames are x-sheratan-frames (docs/API.md, \"The worker stream\")",
        )
        .err(
            404,
            "NOT_FOUND: the hub does not serve the stream (SHERATAN_NO_WORKER_STREAM): use the request routes",
        ),
        post(
            "/v1/leases/watch",
            "Wait for any of these leases to end (long poll)",
        )
        .body::<WatchRequest>()
        .ok::<WatchResponse>(200, "the leases that ended, maybe none"),
        post("/v1/results", "Report a job's result")
            .body::<ResultRequest>()
            .signed()
            .header(
                TRACEPARENT,
                "W3C trace context of the handler's span: the hub's result span is its child",
                false,
            )
            .ok::<ResultResponse>(200, "recorded, or a duplicate of a recorded one")
            .err(404, NOT_FOUND)
            .err(409, EXPIRED)
            .err(422, UNSIGNED),
        post(
            "/v1/grants",
            "Execute grants for hosts (the broker, for a job it holds)",
        )
        .body::<GrantRequest>()
        .ok::<GrantResponse>(200, "the grants")
        .err(409, EXPIRED),
    ]
}

fn schedule_ops() -> Vec<Op> {
    vec![
        post("/v1/schedules", "Create a schedule")
            .body::<ScheduleSpec>()
            .ok::<ScheduleView>(201, "created")
            .err(409, "CONFLICT: the name is taken"),
        get("/v1/schedules", "The schedules, by name").ok::<ScheduleList>(200, "the schedules"),
        get("/v1/schedules/{name}", "One schedule")
            .ok::<ScheduleView>(200, "the schedule")
            .err(404, NOT_FOUND),
        patch("/v1/schedules/{name}", "Change a schedule")
            .body::<SchedulePatch>()
            .ok::<ScheduleView>(200, "the schedule now")
            .err(404, NOT_FOUND),
        delete("/v1/schedules/{name}", "Delete a schedule (its jobs stay)")
            .ok::<ScheduleView>(200, "the schedule as it was")
            .err(404, NOT_FOUND),
        post("/v1/schedules/{name}/run", "Submit the schedule's job now")
            .ok::<RunNowResponse>(202, "submitted")
            .err(404, NOT_FOUND),
    ]
}

fn admin_ops() -> Vec<Op> {
    vec![
        get("/admin/registry", "The whole registry")
            .auth(Auth::Admin)
            .ok::<NodeList>(200, "every node"),
        post("/admin/token-rotation", "Rotate the mesh token")
            .auth(Auth::Admin)
            .body::<RotationRequest>()
            .ok::<RotationStatus>(200, "the rotation now"),
        put("/admin/bundles/{name}", "Publish a bundle")
            .auth(Auth::Admin)
            .raw_body("application/octet-stream")
            .ok::<BundleInfo>(201, "published")
            .err(413, "PAYLOAD_TOO_LARGE: over the bundle limit (64 MiB)"),
        post(
            "/admin/nodes/{id}/attestation/accept",
            "Accept a node's new build",
        )
        .auth(Auth::Admin)
        .ok::<NodeView>(200, "the node")
        .err(404, NOT_FOUND),
        delete("/admin/nodes/{id}", "Forget a node")
            .auth(Auth::Admin)
            .ok::<NodeView>(200, "the removed node")
            .err(404, NOT_FOUND),
        post("/admin/tokens", "Create a credential")
            .auth(Auth::Admin)
            .body::<CreateCredential>()
            .ok::<CreatedCredential>(201, "created: the secret, shown this once")
            .err(409, "CONFLICT: the name is taken"),
        get("/admin/tokens", "The credentials (without secrets)")
            .auth(Auth::Admin)
            .ok::<CredentialList>(200, "the credentials"),
        delete("/admin/tokens/{name}", "Revoke a credential")
            .auth(Auth::Admin)
            .ok::<CredentialView>(200, "the revoked credential")
            .err(404, NOT_FOUND),
        post("/admin/jobs/{id}/requeue", "Run a finished job again")
            .auth(Auth::Admin)
            .ok::<JobView>(200, "the job")
            .err(404, NOT_FOUND),
        post(
            "/admin/jobs/{action}",
            "Requeue or delete jobs in bulk (action: requeue, delete)",
        )
        .auth(Auth::Admin)
        .body::<BulkSelection>()
        .ok::<BulkOutcome>(200, "what was done"),
        get("/admin/queues/{queue}/settings", "A queue's settings")
            .auth(Auth::Admin)
            .ok::<QueueSettings>(200, "the settings"),
        put(
            "/admin/queues/{queue}/settings",
            "Change a queue's settings",
        )
        .auth(Auth::Admin)
        .body::<QueueSettingsPatch>()
        .ok::<QueueSettings>(200, "the settings now"),
        post(
            "/admin/queues/{queue}/{action}",
            "Pause, resume or purge a queue (action: pause, resume, purge)",
        )
        .auth(Auth::Admin)
        .ok::<QueueAdminResponse>(200, "done"),
    ]
}
