//! Client of the Hub Data plane (8788): jobs, leases, signed results, and the admin path.

use reqwest::Method;
use sheratan_proto::control::BundleInfo;
use sheratan_proto::data::{
    AckRequest, AckResponse, BatchOutcome, BatchResponse, ExtendRequest, ExtendResponse, JobList,
    JobStatus, JobView, LeaseRequest, LeaseResponse, PendingResults, QueueAdminResponse,
    ResultRequest, ResultResponse, SubmitBatch, SubmitJob, SubmitResponse,
};
use sheratan_proto::schedules::{
    RunNowResponse, ScheduleList, SchedulePatch, ScheduleSpec, ScheduleView,
};

use crate::{Base, ClientError, Retry, RetryPolicy, json, sign_result};

/// The most jobs the hub takes in one batch request.
pub const MAX_BATCH: usize = 1000;

/// What a submit did.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// A new job (202).
    Created(SubmitResponse),
    /// The idempotency key matched an existing job (200).
    Existing(SubmitResponse),
}

impl Submitted {
    pub fn response(&self) -> &SubmitResponse {
        match self {
            Submitted::Created(r) | Submitted::Existing(r) => r,
        }
    }
}

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub status: Option<JobStatus>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub kind: Option<String>,
    /// Text the error message contains (any case).
    pub error: Option<String>,
    /// RFC 3339, or a duration back from now (`1h`).
    pub since: Option<String>,
}

/// A typed client of the data plane. Cheap to clone.
#[derive(Clone)]
pub struct DataClient {
    base: Base,
}

impl DataClient {
    /// `token`: an `Option<String>`, or a [`crate::MeshToken`] that may change while this runs.
    pub fn new(url: &str, token: impl Into<crate::MeshToken>) -> Result<Self, ClientError> {
        Ok(Self {
            base: Base::new(url, token.into())?,
        })
    }

    /// Replaces the retry policy (the default retries 5 times over about 5 s).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.base.retry = retry;
        self
    }

    pub fn url(&self) -> &str {
        &self.base.url
    }

    pub(crate) fn base(&self) -> &crate::Base {
        &self.base
    }

    /// Submits a job. Retried when the hub refused it (429, 503); also after a connection
    /// failure when the job carries an idempotency key (the key makes a repeat harmless).
    pub async fn submit(&self, job: &SubmitJob) -> Result<Submitted, ClientError> {
        self.submit_traced(job, None).await
    }

    /// [`DataClient::submit`] inside the caller's trace (a W3C `traceparent`, docs/API.md,
    /// "Traces").
    pub async fn submit_traced(
        &self,
        job: &SubmitJob,
        traceparent: Option<&str>,
    ) -> Result<Submitted, ClientError> {
        let retry = if job.idempotency_key.is_some() {
            Retry::Safe
        } else {
            Retry::Refused
        };
        let response = self
            .base
            .send_retrying(retry, || {
                traced(
                    self.base.request(Method::POST, "/v1/jobs").json(job),
                    traceparent,
                )
            })
            .await?;
        let created = response.status() == reqwest::StatusCode::ACCEPTED;
        let body: SubmitResponse = json(response).await?;
        Ok(if created {
            Submitted::Created(body)
        } else {
            Submitted::Existing(body)
        })
    }

    /// Submits up to 1,000 jobs; one outcome per job, in order.
    pub async fn submit_batch(&self, jobs: Vec<SubmitJob>) -> Result<BatchResponse, ClientError> {
        let batch = SubmitBatch { jobs };
        let response = self
            .base
            .send_retrying(Retry::Refused, || {
                self.base
                    .request(Method::POST, "/v1/jobs/batch")
                    .json(&batch)
            })
            .await?;
        json(response).await
    }

    /// Submits any number of jobs without a round trip per job: batches of `batch_size`
    /// (1–1,000) over `POST /v1/jobs/batch`, `in_flight` requests at once on the client's
    /// keep-alive connections. One outcome per job, in order (`code` 202 or 200 with the job,
    /// or the refusal it would have had alone), so one bad job stops no other; an error of a
    /// whole request (the token, the hub down) is returned.
    pub async fn submit_many(
        &self,
        jobs: Vec<SubmitJob>,
        batch_size: usize,
        in_flight: usize,
    ) -> Result<Vec<BatchOutcome>, ClientError> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        let size = batch_size.clamp(1, MAX_BATCH);
        let mut jobs = jobs.into_iter().peekable();
        let mut batches = Vec::new();
        while jobs.peek().is_some() {
            batches.push(jobs.by_ref().take(size).collect::<Vec<_>>());
        }
        let answers: Vec<BatchResponse> = stream::iter(batches)
            .map(|batch| self.submit_batch(batch))
            .buffered(in_flight.max(1))
            .try_collect()
            .await?;
        Ok(answers.into_iter().flat_map(|a| a.jobs).collect())
    }

    pub async fn job(&self, job_id: &str) -> Result<JobView, ClientError> {
        let path = format!("/v1/jobs/{job_id}");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::GET, &path))
                .await?,
        )
        .await
    }

    /// Every queue with jobs or a recent consumer, and whether a node serves it.
    pub async fn queues(&self) -> Result<sheratan_proto::data::QueueList, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::GET, "/v1/queues"))
                .await?,
        )
        .await
    }

    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobList, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(q) = &filter.queue {
            query.push(("queue", q.clone()));
        }
        if let Some(s) = filter.status {
            query.push(("status", s.as_str().to_owned()));
        }
        if let Some(l) = filter.limit {
            query.push(("limit", l.to_string()));
        }
        for (name, value) in [
            ("kind", &filter.kind),
            ("error", &filter.error),
            ("since", &filter.since),
        ] {
            if let Some(v) = value {
                query.push((name, v.clone()));
            }
        }
        if let Some(c) = &filter.cursor {
            query.push(("cursor", c.clone()));
        }
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::GET, "/v1/jobs").query(&query)
                })
                .await?,
        )
        .await
    }

    pub async fn cancel(&self, job_id: &str) -> Result<JobView, ClientError> {
        let path = format!("/v1/jobs/{job_id}/cancel");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::POST, &path))
                .await?,
        )
        .await
    }

    /// Leases jobs. Not retried after a connection failure: a lease granted but not received
    /// would sit until the reaper takes it back; the caller's loop asks again anyway.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseResponse, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Refused, || {
                    self.base.request(Method::POST, "/v1/leases").json(req)
                })
                .await?,
        )
        .await
    }

    pub async fn extend(
        &self,
        lease_id: &str,
        extend_s: Option<u32>,
    ) -> Result<ExtendResponse, ClientError> {
        let path = format!("/v1/leases/{lease_id}/extend");
        let body = ExtendRequest { extend_s };
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::POST, &path).json(&body)
                })
                .await?,
        )
        .await
    }

    /// Waits (up to the request's `wait_ms`) until one of a node's running leases ended: the
    /// job was cancelled or the lease taken back. Not retried (the caller polls again).
    pub async fn watch(
        &self,
        req: &sheratan_proto::data::WatchRequest,
    ) -> Result<sheratan_proto::data::WatchResponse, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Refused, || {
                    self.base
                        .request(Method::POST, "/v1/leases/watch")
                        .json(req)
                })
                .await?,
        )
        .await
    }

    /// Execute grants for `hosts` to run a job whose lease this client holds (a broker's
    /// hosts): only hosts with a node credential get one. Safe to repeat.
    pub async fn grants(
        &self,
        req: &sheratan_proto::auction::GrantRequest,
    ) -> Result<sheratan_proto::auction::GrantResponse, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::POST, "/v1/grants").json(req)
                })
                .await?,
        )
        .await
    }

    /// Reports a result, signed with this client's token (content SHA-256 and HMAC-SHA256).
    /// Safe to repeat: the hub counts a repeated result once.
    pub async fn report(&self, result: &ResultRequest) -> Result<ResultResponse, ClientError> {
        self.report_traced(result, None).await
    }

    /// [`DataClient::report`] with the handler span's W3C `traceparent` (docs/API.md, "Traces").
    pub async fn report_traced(
        &self,
        result: &ResultRequest,
        traceparent: Option<&str>,
    ) -> Result<ResultResponse, ClientError> {
        self.signed_post("/v1/results", result, Retry::Safe, traceparent)
            .await
    }

    /// Reports a running job's progress (docs/API.md, "Progress"), signed like a result. Not
    /// repeated after a failure once sent: its output would be appended twice.
    pub async fn progress(
        &self,
        lease_id: &str,
        report: &sheratan_proto::progress::ProgressReport,
    ) -> Result<sheratan_proto::progress::ProgressAck, ClientError> {
        let path = format!("/v1/leases/{lease_id}/progress");
        self.signed_post(&path, report, Retry::Refused, None).await
    }

    /// POSTs `body` with its content SHA-256 and HMAC-SHA256 signature.
    async fn signed_post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        retry: Retry,
        traceparent: Option<&str>,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        // One reading of the token for the signature and the request: the hub checks the HMAC
        // with the token that authenticated the request.
        let token = self.base.token.load();
        let (hash, signature) = sign_result(&body, token.send().unwrap_or(""));
        json(
            self.base
                .send_retrying(retry, || {
                    let request = self
                        .base
                        .request_as(&token, Method::POST, path)
                        .header(sheratan_proto::headers::CONTENT_SHA256, &hash)
                        .header(sheratan_proto::headers::SIGNATURE, &signature)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                    traced(request, traceparent)
                })
                .await?,
        )
        .await
    }

    /// Finished, unacknowledged results; waits up to `wait_ms` for one.
    pub async fn pending(&self, wait_ms: u64, limit: u32) -> Result<PendingResults, ClientError> {
        let query = [
            ("pending", "1".to_owned()),
            ("wait_ms", wait_ms.to_string()),
            ("limit", limit.to_string()),
        ];
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::GET, "/v1/results").query(&query)
                })
                .await?,
        )
        .await
    }

    pub async fn ack(&self, job_ids: Vec<String>) -> Result<AckResponse, ClientError> {
        let body = AckRequest { job_ids };
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base
                        .request(Method::POST, "/v1/results/ack")
                        .json(&body)
                })
                .await?,
        )
        .await
    }

    /// Admin path (from the hub's machine): puts a job back to accepted.
    pub async fn requeue(&self, job_id: &str) -> Result<JobView, ClientError> {
        let path = format!("/admin/jobs/{job_id}/requeue");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::POST, &path))
                .await?,
        )
        .await
    }

    /// Admin path: finished jobs matching `req` back to `accepted`, in bulk.
    pub async fn requeue_many(
        &self,
        req: &sheratan_proto::data::BulkSelection,
    ) -> Result<sheratan_proto::data::BulkOutcome, ClientError> {
        self.bulk("/admin/jobs/requeue", req).await
    }

    /// Admin path: finished jobs matching `req` deleted, in bulk.
    pub async fn delete_many(
        &self,
        req: &sheratan_proto::data::BulkSelection,
    ) -> Result<sheratan_proto::data::BulkOutcome, ClientError> {
        self.bulk("/admin/jobs/delete", req).await
    }

    async fn bulk(
        &self,
        path: &str,
        req: &sheratan_proto::data::BulkSelection,
    ) -> Result<sheratan_proto::data::BulkOutcome, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Refused, || {
                    self.base.request(Method::POST, path).json(req)
                })
                .await?,
        )
        .await
    }

    /// Admin path: `pause`, `resume` or `purge` a queue.
    pub async fn queue_action(
        &self,
        queue: &str,
        action: &str,
    ) -> Result<QueueAdminResponse, ClientError> {
        let path = format!("/admin/queues/{queue}/{action}");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::POST, &path))
                .await?,
        )
        .await
    }

    /// Admin path: a queue's settings.
    pub async fn queue_settings(
        &self,
        queue: &str,
    ) -> Result<sheratan_proto::queues::QueueSettings, ClientError> {
        let path = format!("/admin/queues/{queue}/settings");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::GET, &path))
                .await?,
        )
        .await
    }

    /// Admin path: changes the settings `patch` names; the answer is the queue's settings now.
    pub async fn put_queue_settings(
        &self,
        queue: &str,
        patch: &sheratan_proto::queues::QueueSettingsPatch,
    ) -> Result<sheratan_proto::queues::QueueSettings, ClientError> {
        let path = format!("/admin/queues/{queue}/settings");
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::PUT, &path).json(patch)
                })
                .await?,
        )
        .await
    }

    /// Every schedule, with its next runs and last run.
    pub async fn schedules(&self) -> Result<ScheduleList, ClientError> {
        self.schedule_call(Method::GET, "/v1/schedules", None::<&()>, Retry::Safe)
            .await
    }

    /// One schedule.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView, ClientError> {
        let path = format!("/v1/schedules/{name}");
        self.schedule_call(Method::GET, &path, None::<&()>, Retry::Safe)
            .await
    }

    /// Creates a schedule. Not retried on a lost connection (the second try would find the
    /// name taken).
    pub async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<ScheduleView, ClientError> {
        self.schedule_call(Method::POST, "/v1/schedules", Some(spec), Retry::Refused)
            .await
    }

    /// Changes the fields `patch` names (pause and resume are `paused`).
    pub async fn patch_schedule(
        &self,
        name: &str,
        patch: &SchedulePatch,
    ) -> Result<ScheduleView, ClientError> {
        let path = format!("/v1/schedules/{name}");
        self.schedule_call(Method::PATCH, &path, Some(patch), Retry::Safe)
            .await
    }

    /// Removes a schedule (its jobs stay); the answer is the schedule as it was.
    pub async fn delete_schedule(&self, name: &str) -> Result<ScheduleView, ClientError> {
        let path = format!("/v1/schedules/{name}");
        self.schedule_call(Method::DELETE, &path, None::<&()>, Retry::Refused)
            .await
    }

    /// Submits the schedule's job now, outside its ticks. Not retried on a lost connection
    /// (a second try would submit a second job).
    pub async fn run_schedule(&self, name: &str) -> Result<RunNowResponse, ClientError> {
        let path = format!("/v1/schedules/{name}/run");
        self.schedule_call(Method::POST, &path, None::<&()>, Retry::Refused)
            .await
    }

    async fn schedule_call<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        retry: Retry,
    ) -> Result<T, ClientError> {
        json(
            self.base
                .send_retrying(retry, || {
                    let request = self.base.request(method.clone(), path);
                    match body {
                        Some(body) => request.json(body),
                        None => request,
                    }
                })
                .await?,
        )
        .await
    }

    /// Admin path: starts a token rotation to `next_token`, finalized at `until`.
    pub async fn rotate_token(
        &self,
        next_token: &str,
        until: time::OffsetDateTime,
    ) -> Result<sheratan_proto::data::RotationStatus, ClientError> {
        let body = sheratan_proto::data::RotationRequest {
            next_token: next_token.to_owned(),
            until,
        };
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base
                        .request(Method::POST, "/admin/token-rotation")
                        .json(&body)
                })
                .await?,
        )
        .await
    }

    /// Admin path: publishes a bundle.
    pub async fn publish_bundle(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<BundleInfo, ClientError> {
        let path = format!("/admin/bundles/{name}");
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::PUT, &path).body(bytes.clone())
                })
                .await?,
        )
        .await
    }

    /// Admin path: accepts a node's current attestation signals as its new baseline.
    pub async fn accept_attestation(
        &self,
        node_id: &str,
    ) -> Result<sheratan_proto::control::NodeView, ClientError> {
        let path = format!("/admin/nodes/{node_id}/attestation/accept");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::POST, &path))
                .await?,
        )
        .await
    }

    /// Admin path: removes a node from the registry (it comes back if it heartbeats again).
    pub async fn remove_node(
        &self,
        node_id: &str,
    ) -> Result<sheratan_proto::control::NodeView, ClientError> {
        let path = format!("/admin/nodes/{node_id}");
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::DELETE, &path))
                .await?,
        )
        .await
    }

    /// Admin path: creates a credential; the answer holds its secret, shown this once. Not
    /// retried on a lost connection (the second try would find the name taken).
    pub async fn create_credential(
        &self,
        req: &sheratan_proto::credentials::CreateCredential,
    ) -> Result<sheratan_proto::credentials::CreatedCredential, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Refused, || {
                    self.base.request(Method::POST, "/admin/tokens").json(req)
                })
                .await?,
        )
        .await
    }

    /// The same client sending `token` instead (sharing its connections): a service acting for
    /// its caller, with the caller's rights.
    pub fn with_token(&self, token: String) -> DataClient {
        let mut base = self.base.clone();
        base.token = crate::MeshToken::new(Some(token));
        DataClient { base }
    }

    /// What this client's token is and may do.
    pub async fn whoami(&self) -> Result<sheratan_proto::credentials::Whoami, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Safe, || self.base.request(Method::GET, "/v1/whoami"))
                .await?,
        )
        .await
    }

    /// Admin path: every credential, without secrets.
    pub async fn credentials(
        &self,
    ) -> Result<sheratan_proto::credentials::CredentialList, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::GET, "/admin/tokens")
                })
                .await?,
        )
        .await
    }

    /// Admin path: revokes a credential.
    pub async fn revoke_credential(
        &self,
        name: &str,
    ) -> Result<sheratan_proto::credentials::CredentialView, ClientError> {
        let path = format!("/admin/tokens/{name}");
        json(
            self.base
                .send_retrying(Retry::Refused, || self.base.request(Method::DELETE, &path))
                .await?,
        )
        .await
    }

    /// Prometheus text of the data plane.
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let response = self
            .base
            .send(self.base.request(Method::GET, "/metrics"))
            .await?;
        response
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Admin path: the whole node registry.
    pub async fn registry(&self) -> Result<sheratan_proto::control::NodeList, ClientError> {
        json(
            self.base
                .send_retrying(Retry::Safe, || {
                    self.base.request(Method::GET, "/admin/registry")
                })
                .await?,
        )
        .await
    }

    /// `/health` of the data plane (loopback only).
    pub async fn health(&self) -> Result<sheratan_proto::control::HealthResponse, ClientError> {
        json(
            self.base
                .send(self.base.request(Method::GET, "/health"))
                .await?,
        )
        .await
    }
}

/// The request with the W3C `traceparent` header, when there is one.
fn traced(request: reqwest::RequestBuilder, traceparent: Option<&str>) -> reqwest::RequestBuilder {
    match traceparent {
        Some(t) => request.header(sheratan_proto::headers::TRACEPARENT, t),
        None => request,
    }
}
