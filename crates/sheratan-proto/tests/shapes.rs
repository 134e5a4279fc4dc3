//! The JSON shape of every body on the wire, checked against snapshots in `tests/snapshots/`
//! (as dropshot checks its OpenAPI output): a field renamed, dropped, added or retyped fails
//! here before any client notices. Review a changed shape with `cargo insta review`; a change
//! is a change of docs/API.md too.

use std::collections::BTreeMap;

use serde_json::json;
use sheratan_proto::auction::*;
use sheratan_proto::control::*;
use sheratan_proto::core_api::*;
use sheratan_proto::data::*;
use sheratan_proto::event::AlertRecord;
use sheratan_proto::health::*;
use sheratan_proto::relay::*;
use sheratan_proto::{AuditRecord, ErrorBody, ErrorCode, ErrorDetail, EventKind, Plane, Severity};
use time::OffsetDateTime;
use time::macros::datetime;

const T: OffsetDateTime = datetime!(2026-12-05 10:00:00 UTC);
const JOB: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const LEASE: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c";

fn load() -> Load {
    Load {
        inflight: 1,
        capacity: 4,
    }
}

fn job_error() -> JobError {
    JobError {
        message: "the command exited with 3".into(),
        retryable: true,
    }
}

fn node() -> NodeView {
    NodeView {
        node_id: "worker-1".into(),
        role: Role::Worker,
        addr: None,
        status: NodeStatus::Online,
        health: Health::Green,
        attestation: Attestation::Ok,
        first_seen: FirstSeen {
            at: T,
            build_id: "0.1.0+abc".into(),
            capability_hash: "h1".into(),
            runtime: json!({"os": "linux"}),
        },
        last_seen: T,
        capabilities: vec!["echo".into(), "sleep".into()],
        build_id: "0.1.0+abc".into(),
        capability_hash: "h1".into(),
        runtime: json!({"os": "linux"}),
        load: load(),
    }
}

fn job() -> JobView {
    JobView {
        job_id: JOB.into(),
        queue: "default".into(),
        kind: "echo".into(),
        payload: json!({"hello": "world"}),
        priority: 0,
        required_capabilities: vec!["echo".into()],
        idempotency_key: Some("order-7".into()),
        max_attempts: 3,
        timeout_s: 300,
        run_at: T,
        status: JobStatus::InProgress,
        attempt: 1,
        created_at: T,
        updated_at: T,
        finished_at: None,
        result: None,
        error: None,
        lease: Some(LeaseView {
            node_id: "worker-1".into(),
            expires_at: T,
        }),
        node_id: Some("worker-1".into()),
        concurrency_key: Some("account-7".into()),
        progress: Some(sheratan_proto::progress::JobProgress {
            value: Some(0.5),
            message: Some("writing".into()),
            output_tail: "Hello, wor".into(),
            output_bytes: 10,
            updated_at: T,
        }),
        result_acked: false,
    }
}

fn auction() -> AuctionRecord {
    AuctionRecord {
        job_id: JOB.into(),
        winner: Some("host-a".into()),
        rounds: vec![RoundRecord {
            round: 1,
            bids: vec![BidRecord {
                node_id: "host-a".into(),
                accept: true,
                price: 1.25,
                eta_ms: 100,
                reason: "ok".into(),
            }],
            winner: Some("host-a".into()),
            outcome: "completed".into(),
            started_at: T,
            elapsed_ms: 12,
            bid_ms: 1.5,
        }],
    }
}

fn point() -> HistoryPoint {
    HistoryPoint {
        t: 1_796_464_800_000,
        queue_depth: 3.0,
        inflight: 1.0,
        results_pending: 2.0,
        auth_failures_1m: 0.0,
    }
}

#[test]
fn hub_control_plane() {
    insta::assert_json_snapshot!(
        "health_control",
        HealthResponse {
            status: "ok".into(),
            plane: Plane::Control,
            version: "0.1.0".into(),
            queue_depth: None,
            inflight: None,
        }
    );
    insta::assert_json_snapshot!(
        "health_data",
        HealthResponse {
            status: "ok".into(),
            plane: Plane::Data,
            version: "0.1.0".into(),
            queue_depth: Some(3),
            inflight: Some(1),
        }
    );
    insta::assert_json_snapshot!(
        "heartbeat_request",
        HeartbeatRequest {
            node_id: "host-a".into(),
            role: Role::Host,
            addr: Some("http://10.0.0.5:8081".into()),
            capabilities: vec!["echo".into()],
            build_id: "0.1.0+abc".into(),
            capability_hash: "h1".into(),
            runtime: json!({"os": "linux"}).as_object().unwrap().clone(),
            load: load(),
        }
    );
    insta::assert_json_snapshot!(
        "heartbeat_response",
        HeartbeatResponse {
            node_id: "host-a".into(),
            status: NodeStatus::Online,
            health: Health::Green,
            attestation: Attestation::Drift,
            heartbeat_interval_s: 12,
        }
    );
    insta::assert_json_snapshot!(
        "node_list",
        NodeList {
            nodes: vec![node()]
        }
    );
    insta::assert_json_snapshot!(
        "bundle_list",
        BundleList {
            bundles: vec![BundleInfo {
                name: "tool.sh".into(),
                sha256: "ab".repeat(32),
                size: 42,
            }],
        }
    );
    insta::assert_json_snapshot!(
        "nodes_query",
        NodesQuery {
            role: Some("host".into()),
            status: Some("ONLINE".into()),
        }
    );
    insta::assert_json_snapshot!(
        "metrics_query",
        MetricsQuery {
            format: Some("json".into()),
        }
    );
}

#[test]
fn hub_data_plane_jobs() {
    insta::assert_json_snapshot!(
        "submit_job",
        SubmitJob {
            queue: "default".into(),
            kind: "echo".into(),
            payload: json!({"hello": "world"}),
            priority: 5,
            required_capabilities: vec!["echo".into()],
            idempotency_key: Some("order-7".into()),
            max_attempts: Some(3),
            timeout_s: Some(60),
            run_at: Some(T),
            follow_result: Some(false),
            concurrency_key: None,
            retry: None,
        }
    );
    insta::assert_json_snapshot!(
        "submit_response",
        SubmitResponse {
            job_id: JOB.into(),
            status: JobStatus::Completed,
            result: Some(json!({"hello": "world"})),
            warning: None,
        }
    );
    insta::assert_json_snapshot!(
        "submit_response_with_a_warning",
        SubmitResponse {
            job_id: JOB.into(),
            status: JobStatus::Accepted,
            result: None,
            warning: Some("no ONLINE node offers kind \"resize\" with every required capability (resize): the job waits in queue \"default\" until one does".into()),
        }
    );
    insta::assert_json_snapshot!(
        "queue_list",
        QueueList {
            queues: vec![
                QueueView {
                    queue: "default".into(),
                    depth: 3,
                    served: true,
                    last_asked_s: Some(2),
                    running: 4,
                    settings: Some(sheratan_proto::queues::QueueSettings {
                        key_concurrency: Some(1),
                        rate: Some(sheratan_proto::queues::Rate {
                            limit: 5,
                            period_s: 1,
                            burst: Some(10),
                        }),
                        ..Default::default()
                    }),
                },
                QueueView {
                    queue: "nobody".into(),
                    depth: 1,
                    served: false,
                    last_asked_s: None,
                    running: 0,
                    settings: None,
                },
            ],
        }
    );
    insta::assert_json_snapshot!(
        "batch_response",
        BatchResponse {
            jobs: vec![
                BatchOutcome {
                    code: 202,
                    job_id: Some(JOB.into()),
                    status: Some(JobStatus::Accepted),
                    result: None,
                    warning: None,
                    error: None,
                },
                BatchOutcome {
                    code: 400,
                    job_id: None,
                    status: None,
                    result: None,
                    warning: None,
                    error: Some(ErrorDetail {
                        code: ErrorCode::InvalidRequest,
                        message: "kind: missing field".into(),
                        hint: "fix the request".into(),
                    }),
                },
            ],
        }
    );
    insta::assert_json_snapshot!(
        "job_list",
        JobList {
            jobs: vec![job()],
            next_cursor: Some(JOB.into()),
        }
    );
    insta::assert_json_snapshot!(
        "jobs_query",
        JobsQuery {
            queue: Some("default".into()),
            status: Some("accepted".into()),
            limit: Some(50),
            cursor: None,
            kind: Some("email.send".into()),
            error: Some("timeout".into()),
            since: Some("1h".into()),
        }
    );
}

#[test]
fn hub_data_plane_leases_and_results() {
    insta::assert_json_snapshot!(
        "lease_request",
        LeaseRequest {
            node_id: "worker-1".into(),
            queues: vec!["default".into()],
            capabilities: vec!["echo".into()],
            max_jobs: 8,
            wait_ms: 5000,
        }
    );
    insta::assert_json_snapshot!(
        "lease_response",
        LeaseResponse {
            jobs: vec![LeasedJob {
                job_id: JOB.into(),
                lease_id: LEASE.into(),
                queue: "default".into(),
                kind: "echo".into(),
                payload: json!({}),
                attempt: 1,
                lease_expires_at: T,
                timeout_s: Some(300),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),),
            }],
            defer_ms: 0,
            warning: None,
        }
    );
    insta::assert_json_snapshot!("extend_request", ExtendRequest { extend_s: Some(60) });
    insta::assert_json_snapshot!(
        "grant_request",
        GrantRequest {
            job_id: JOB.into(),
            lease_id: LEASE.into(),
            hosts: vec!["host-a".into(), "host-b".into()],
        }
    );
    insta::assert_json_snapshot!(
        "grant_response",
        GrantResponse {
            job_id: JOB.into(),
            grants: [("host-a".to_owned(), format!("shtg1.{JOB}.1796000000.00ff"))].into(),
            expires_at: T,
        }
    );
    insta::assert_json_snapshot!(
        "extend_response",
        ExtendResponse {
            lease_id: LEASE.into(),
            job_id: JOB.into(),
            lease_expires_at: T,
        }
    );
    insta::assert_json_snapshot!(
        "result_request",
        ResultRequest {
            job_id: JOB.into(),
            lease_id: LEASE.into(),
            outcome: Outcome::Failure,
            result: serde_json::Value::Null,
            error: Some(job_error()),
        }
    );
    insta::assert_json_snapshot!(
        "result_response",
        ResultResponse {
            job_id: JOB.into(),
            status: JobStatus::Accepted,
            duplicate: false,
        }
    );
    insta::assert_json_snapshot!(
        "pending_results",
        PendingResults {
            results: vec![PendingResult {
                job_id: JOB.into(),
                queue: "default".into(),
                kind: "echo".into(),
                status: JobStatus::Failed,
                result: None,
                error: Some(job_error()),
                finished_at: T,
            }],
        }
    );
    insta::assert_json_snapshot!(
        "pending_query",
        PendingQuery {
            pending: Some("1".into()),
            wait_ms: Some(10_000),
            limit: Some(100),
        }
    );
    insta::assert_json_snapshot!(
        "ack",
        (
            AckRequest {
                job_ids: vec![JOB.into()]
            },
            AckResponse { acked: 1 }
        )
    );
}

#[test]
fn hub_admin_path() {
    insta::assert_json_snapshot!(
        "queue_admin_response",
        QueueAdminResponse {
            queue: "default".into(),
            paused: true,
            purged: Some(12),
        }
    );
    insta::assert_json_snapshot!(
        "rotation",
        (
            RotationRequest {
                next_token: "next-token-0123456789abcdef".into(),
                until: T,
            },
            RotationStatus {
                active: true,
                until: Some(T),
                finalized_at: None,
            }
        )
    );
}

#[test]
fn errors_events_and_alerts() {
    insta::assert_json_snapshot!(
        "error_body",
        ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::LeaseExpired,
                message: "the lease is no longer held; the job is completed".into(),
                hint: "stop working on this job".into(),
            },
        }
    );
    insta::assert_json_snapshot!(
        "audit_record",
        AuditRecord {
            ts: T,
            event: EventKind::AuthFail,
            severity: Severity::Warning,
            plane: Plane::Control,
            remote_addr: Some("10.0.0.9".into()),
            node_id: None,
            detail: json!({"reason": "invalid"}),
            count: 12,
            first_ts: Some(T),
            probe: None,
            credential: None,
        }
    );
    insta::assert_json_snapshot!(
        "audit_record_of_a_probe",
        AuditRecord {
            ts: T,
            event: EventKind::PortMismatch,
            severity: Severity::Warning,
            plane: Plane::Data,
            remote_addr: Some("127.0.0.1".into()),
            node_id: None,
            detail: json!({"route": "/v1/heartbeat", "right_plane": "control", "right_port": 8787}),
            count: 1,
            first_ts: None,
            probe: Some("6f1c0e2a9b7d4c3e".into()),
            credential: Some("w-gpu-1 (node)".into()),
        }
    );
    insta::assert_json_snapshot!(
        "alert_record",
        AlertRecord {
            ts: T,
            rule: "auth_fail_burst".into(),
            event: EventKind::AuthFail,
            severity: Severity::Warning,
            source: "10.0.0.9".into(),
            count: 12,
            window_s: 60,
            message: "12 × AUTH_FAIL from 10.0.0.9 within 60 s".into(),
            detail: json!({"reason": "invalid"}),
            credential: None,
        }
    );
}

#[test]
fn hosts_and_broker() {
    insta::assert_json_snapshot!(
        "bid",
        (
            BidRequest {
                job_id: JOB.into(),
                kind: "echo".into(),
                required_capabilities: vec![],
                payload_bytes: 17,
            },
            BidResponse {
                node_id: "host-a".into(),
                accept: true,
                price: 1.25,
                eta_ms: 100,
                reason: "ok".into(),
            }
        )
    );
    insta::assert_json_snapshot!(
        "execute",
        (
            ExecuteRequest {
                job_id: JOB.into(),
                kind: "echo".into(),
                payload: json!({"x": 1}),
                deadline_ms: 300_000,
            },
            ExecuteResponse {
                job_id: JOB.into(),
                node_id: "host-a".into(),
                outcome: Outcome::Success,
                result: json!({"x": 1}),
                error: None,
                elapsed_ms: 3,
            }
        )
    );
    insta::assert_json_snapshot!(
        "auction_list",
        AuctionList {
            auctions: vec![auction()],
        }
    );
    insta::assert_json_snapshot!(
        "health_host",
        HostHealth {
            status: "ok".into(),
            role: "host".into(),
            node_id: "host-a".into(),
            inflight: 1,
            capacity: 4,
            auth: AuthMode::Required,
        }
    );
    insta::assert_json_snapshot!(
        "health_broker",
        BrokerHealth {
            status: "ok".into(),
            role: "broker".into(),
            node_id: "broker".into(),
            queue: "auction".into(),
            inflight: 0,
            concurrency: 16,
            auth: AuthMode::Disabled,
        }
    );
}

#[test]
fn relay() {
    insta::assert_json_snapshot!(
        "relay_complete",
        (
            RelayRequest {
                prompt: "Hi".into(),
                system: Some("Be brief".into()),
                backend: Some(Backend::Cdp),
                profile: Some("local-chat".into()),
            },
            RelayResult {
                text: "Hello".into(),
                backend: Backend::Cdp,
                elapsed_ms: 950,
                demo: false,
            }
        )
    );
    insta::assert_json_snapshot!(
        "session_list",
        SessionList {
            sessions: vec![SessionView {
                target_id: "T1".into(),
                job_id: Some(JOB.into()),
                profile: "local-chat".into(),
                url: "http://127.0.0.1:8000/chat.html".into(),
                started_at: T,
            }],
        }
    );
    let launched = CdpHealth {
        state: CdpState::Connected,
        detail: None,
        version: Some("Chrome/156".into()),
        source: Some(CdpSource {
            url: None,
            launch: Some("/usr/bin/chromium".into()),
            transport: Some("pipe".into()),
            sandbox: Some(SandboxState {
                on: false,
                why: Some("the relay runs as root".into()),
            }),
        }),
        launches: Some(1),
        pid: Some(4242),
    };
    insta::assert_json_snapshot!(
        "health_relay",
        RelayHealth {
            status: "ok".into(),
            role: "relay".into(),
            node_id: "relay".into(),
            default_backend: Backend::Cdp,
            backends: RelayBackends {
                cdp: launched,
                openai: OpenAiHealth {
                    state: OpenAiState::Configured,
                    detail: None,
                    base_url: Some("http://***@127.0.0.1:11434/v1".into()),
                    model: Some("llama3".into()),
                },
            },
            profiles: vec!["generic".into(), "local-chat".into()],
            tabs: TabCount { open: 1, limit: 4 },
            inflight: 1,
            auth: AuthMode::Required,
        }
    );
    insta::assert_json_snapshot!(
        "health_relay_cdp_unavailable",
        CdpHealth {
            state: CdpState::Unavailable,
            detail: Some("no chromium on the PATH".into()),
            version: None,
            source: None,
            launches: None,
            pid: None,
        }
    );
    insta::assert_json_snapshot!(
        "openai_chat",
        (
            ChatRequest {
                model: "llama3".into(),
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "Hi".into(),
                }],
                stream: false,
            },
            ChatResponse {
                choices: vec![ChatChoice {
                    message: ChatMessage {
                        role: "assistant".into(),
                        content: "Hello".into(),
                    },
                }],
            }
        )
    );
}

#[test]
fn core_api() {
    insta::assert_json_snapshot!(
        "core_submit",
        (
            CoreSubmit {
                kind: "echo".into(),
                payload: json!({"x": 1}),
                dispatch: Dispatch::Auction,
                queue: None,
                priority: 0,
                required_capabilities: vec![],
                idempotency_key: None,
                max_attempts: None,
                timeout_s: None,
            },
            CoreSubmitted {
                job_id: JOB.into(),
                status: JobStatus::Accepted,
                queue: "auction".into(),
                warning: Some("no node has asked queue \"auction\" for jobs in the last 60 s: the job waits until one does (e.g. sheratan worker --queues auction)".into()),
            }
        )
    );
    insta::assert_json_snapshot!(
        "core_history",
        History {
            interval_s: 10.0,
            points: vec![point()],
        }
    );
    insta::assert_json_snapshot!("limit_query", LimitQuery { limit: Some(50) });
    insta::assert_json_snapshot!(
        "core_log_tail",
        LogTail {
            entries: vec![json!({"event": "AUTH_FAIL"})],
        }
    );
    let up = ComponentState {
        status: UpDown::Up,
        latency_ms: Some(1.5),
        detail: Some(json!({"status": "ok"})),
        error: None,
    };
    insta::assert_json_snapshot!(
        "core_overview",
        Overview {
            components: Components {
                core: ComponentState {
                    status: UpDown::Up,
                    latency_ms: None,
                    detail: Some(json!({"version": "0.1.0+abc"})),
                    error: None,
                },
                control: up.clone(),
                data: up.clone(),
                broker: up,
                relay: ComponentState {
                    status: UpDown::Down,
                    latency_ms: Some(1500.0),
                    detail: None,
                    error: Some("relay did not answer within 1.5 s".into()),
                },
            },
            nodes: Some(NodeCounts {
                total: 2,
                by_status: BTreeMap::from([("ONLINE".into(), 2), ("STALE".into(), 0)]),
                by_role: BTreeMap::from([("worker".into(), 1), ("host".into(), 1)]),
            }),
            jobs: Some(point()),
            events_subscribers: 1,
        }
    );
    insta::assert_json_snapshot!(
        "core_events",
        (
            ReadyEvent {
                poll_interval_ms: 500
            },
            JobEvent {
                job_id: JOB.into(),
                queue: "default".into(),
                kind: "echo".into(),
                status: JobStatus::Failed,
                attempt: 3,
                updated_at: 1_796_464_800_000,
                error: Some(job_error()),
                node_id: Some("worker-1".into()),
                run_at: None,
            },
            NodeEvent {
                node_id: "worker-1".into(),
                role: Role::Worker,
                status: NodeStatus::Stale,
                health: Health::Yellow,
                attestation: Attestation::Ok,
                load: load(),
            },
            HubEvent { reachable: false },
            LaggedEvent { missed: 7 },
        )
    );
    insta::assert_json_snapshot!(
        "health_core_and_dashboard",
        (
            CoreHealth {
                status: "ok".into(),
                role: "core".into(),
                version: "0.1.0+abc".into(),
                auth: AuthMode::Required,
            },
            DashboardHealth {
                status: "ok".into(),
                role: "dashboard".into(),
            },
            DashboardConfig {
                core_url: "http://127.0.0.1:8001".into(),
                version: "0.1.0+abc".into(),
            }
        )
    );
}

#[test]
fn schedules() {
    use sheratan_proto::schedules::*;
    let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
        "name": "nightly-report",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "job": {"kind": "report", "queue": "reports", "payload": {"day": "yesterday"}},
        "overlap": "skip",
        "catch_up": "last",
        "jitter_s": 60
    }))
    .unwrap();
    insta::assert_json_snapshot!("schedule_spec", spec);
    insta::assert_json_snapshot!(
        "schedule_patch",
        SchedulePatch {
            paused: Some(true),
            ..SchedulePatch::default()
        }
    );
    let view = ScheduleView {
        name: spec.name.clone(),
        cron: spec.cron.clone(),
        timezone: spec.timezone.clone(),
        job: spec.job.clone(),
        paused: false,
        overlap: spec.overlap,
        catch_up: spec.catch_up,
        jitter_s: spec.jitter_s,
        next_runs: vec![T, T + time::Duration::days(1)],
        last_run: Some(ScheduleRun {
            tick: T,
            outcome: RunOutcome::Skipped,
            job_id: None,
            reason: Some("overlap skip: the previous job 0190… has not finished".into()),
        }),
        last_job: Some(LastJob {
            job_id: "01900000-0000-7000-8000-000000000001".into(),
            status: Some(JobStatus::InProgress),
        }),
        runs: 41,
        skipped: 1,
        missed: 0,
        created_at: T,
        updated_at: T,
    };
    insta::assert_json_snapshot!(
        "schedule_view",
        ScheduleList {
            schedules: vec![view]
        }
    );
    insta::assert_json_snapshot!(
        "schedule_run_now",
        RunNowResponse {
            job_id: "01900000-0000-7000-8000-000000000002".into()
        }
    );
}
