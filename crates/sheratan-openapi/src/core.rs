//! Core API (docs/API.md, "Core API").

use serde_json::Value;
use sheratan_proto::auction::{AuctionList, AuctionRecord};
use sheratan_proto::control::{NodeList, NodeView};
use sheratan_proto::core_api::{CoreSubmit, CoreSubmitted, History, LimitQuery, LogTail, Overview};
use sheratan_proto::credentials::{
    CreateCredential, CreatedCredential, CredentialList, CredentialView, Whoami,
};
use sheratan_proto::data::{BulkOutcome, BulkSelection, JobList, JobView, JobsQuery, QueueList};
use sheratan_proto::event::{AlertRecord, AuditRecord};
use sheratan_proto::health::CoreHealth;
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_proto::relay::SessionList;
use sheratan_proto::schedules::{RunNowResponse, ScheduleList, SchedulePatch, ScheduleView};
use utoipa::PartialSchema;

use crate::{Api, Auth, Op, delete, document, get, patch, post, put};

const NOT_FOUND: &str = "NOT_FOUND: no such one (as the hub or broker answered)";
const LOCAL: &str = "LOCALHOST_ONLY: an admin action from a non-loopback caller without an \
    admin credential";

/// `LogTail<T>` under a name of its own per `T` (a generic type's schema name leaves `T` out,
/// so the two tails would take one name).
macro_rules! named_tail {
    ($name:ident, $t:ty) => {
        struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                LogTail::<$t>::schema()
            }
        }
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                schemas.push((<$t>::name().into_owned(), <$t>::schema()));
                <$t>::schemas(schemas);
            }
        }
    };
}
named_tail!(AlertTail, AlertRecord);
named_tail!(AuditTail, AuditRecord);

/// Core API (default 127.0.0.1:8001).
pub fn core() -> Value {
    let api = Api {
        title: "Sheratan Core API",
        description: "The operators' API the dashboard uses: jobs through the hub's data \
            plane, nodes from its control plane, auctions from the broker, relay sessions, \
            alerts and the audit tail. Core owns no state: a hub error passes through with its \
            code (429 keeps Retry-After); a hub, broker or relay that does not answer is 503 \
            UNAVAILABLE naming it. Any credential the hub knows works, with its role's rights. \
            The prose contract is docs/API.md."
            .to_string(),
        common: &[
            (500, "INTERNAL: Core's fault"),
            (
                503,
                "UNAVAILABLE: the hub, broker or relay did not answer (named)",
            ),
        ],
    };
    let mut ops = job_ops();
    ops.extend(mesh_ops());
    ops.extend(token_ops());
    document(api, ops)
}

fn job_ops() -> Vec<Op> {
    vec![
        get("/health", "Core is up (public)")
            .auth(Auth::Public)
            .ok::<CoreHealth>(200, "up"),
        get("/openapi.json", "This document").ok_raw(200, "application/json", "the document"),
        post("/api/jobs", "Submit a job (queue, auction or llm dispatch)")
            .body::<CoreSubmit>()
            .header(crate::hub::TRACEPARENT, crate::hub::JOIN_TRACE, false)
            .ok::<CoreSubmitted>(202, "accepted and committed")
            .ok::<CoreSubmitted>(200, "an idempotent repeat: the existing job")
            .err(
                409,
                "IDEMPOTENCY_KEY_COLLISION: the key was used with another request",
            )
            .err(
                429,
                "BACKPRESSURE_DROP: the queue is full (the hub's Retry-After)",
            ),
        get("/api/jobs", "List jobs, as the data plane's GET /v1/jobs")
            .query::<JobsQuery>()
            .ok::<JobList>(200, "a page"),
        get("/api/jobs/{job_id}", "One job")
            .ok::<JobView>(200, "the job")
            .err(404, NOT_FOUND),
        post("/api/jobs/{job_id}/cancel", "Cancel a job")
            .ok::<JobView>(200, "the job as it is now")
            .err(404, NOT_FOUND),
        post(
            "/api/jobs/{job_id}/requeue",
            "Run a finished job again (admin path)",
        )
        .ok::<JobView>(200, "the job")
        .err(403, LOCAL)
        .err(404, NOT_FOUND),
        post(
            "/api/jobs/bulk/{action}",
            "Requeue or delete jobs in bulk (admin path)",
        )
        .body::<BulkSelection>()
        .ok::<BulkOutcome>(200, "what was done")
        .err(403, LOCAL),
        get("/api/schedules", "The hub's schedules").ok::<ScheduleList>(200, "the schedules"),
        patch("/api/schedules/{name}", "Change a schedule, as the caller")
            .body::<SchedulePatch>()
            .ok::<ScheduleView>(200, "the schedule now")
            .err(404, NOT_FOUND),
        post(
            "/api/schedules/{name}/run",
            "Submit a schedule's job now, as the caller",
        )
        .ok::<RunNowResponse>(202, "submitted")
        .err(404, NOT_FOUND),
        get("/api/queues", "The data plane's queues").ok::<QueueList>(200, "the queues"),
        put(
            "/api/queues/{queue}/settings",
            "Change a queue's settings (admin path)",
        )
        .body::<QueueSettingsPatch>()
        .ok::<QueueSettings>(200, "the settings now")
        .err(403, LOCAL),
    ]
}

fn mesh_ops() -> Vec<Op> {
    vec![
        get("/api/nodes", "The hub's nodes").ok::<NodeList>(200, "the nodes"),
        post(
            "/api/nodes/{node_id}/attestation/accept",
            "Accept a node's new build (admin path)",
        )
        .ok::<NodeView>(200, "the node")
        .err(403, LOCAL)
        .err(404, NOT_FOUND),
        delete("/api/nodes/{node_id}", "Forget a node (admin path)")
            .ok::<NodeView>(200, "the removed node")
            .err(403, LOCAL)
            .err(404, NOT_FOUND),
        get("/api/auctions", "The broker's recent auctions")
            .query::<LimitQuery>()
            .ok::<AuctionList>(200, "the auctions"),
        get("/api/auctions/{job_id}", "One auction")
            .ok::<AuctionRecord>(200, "the auction")
            .err(404, NOT_FOUND),
        get("/api/relay/sessions", "The relay's open tabs").ok::<SessionList>(200, "the tabs"),
        get("/api/alerts", "The newest alerts, oldest first")
            .query::<LimitQuery>()
            .ok::<AlertTail>(200, "the alert lines"),
        get("/api/audit", "The newest audit lines, oldest first")
            .query::<LimitQuery>()
            .ok::<AuditTail>(200, "the audit lines"),
        get(
            "/api/history",
            "The data plane's gauges every 10 s, the last hour",
        )
        .ok::<History>(200, "the samples"),
        get(
            "/api/overview",
            "Every component's state and the mesh in numbers",
        )
        .ok::<Overview>(200, "the overview"),
        get(
            "/api/events",
            "Server-sent events: jobs, progress, nodes, alerts, the hub",
        )
        .ok_raw(
            200,
            "text/event-stream",
            "the event stream (docs/API.md lists the events)",
        ),
    ]
}

fn token_ops() -> Vec<Op> {
    vec![
        get("/api/whoami", "Who the caller's token is").ok::<Whoami>(200, "the caller"),
        get("/api/tokens", "The credentials (admin path)")
            .ok::<CredentialList>(200, "the credentials")
            .err(403, LOCAL),
        post("/api/tokens", "Create a credential (admin path)")
            .body::<CreateCredential>()
            .ok::<CreatedCredential>(201, "created: the secret, shown this once")
            .err(403, LOCAL)
            .err(409, "CONFLICT: the name is taken"),
        delete("/api/tokens/{name}", "Revoke a credential (admin path)")
            .ok::<CredentialView>(200, "the revoked credential")
            .err(403, LOCAL)
            .err(404, NOT_FOUND),
    ]
}
