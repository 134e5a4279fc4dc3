//! Results: integrity (content hash and HMAC signature over the raw body, with the token the
//! request authenticated with), recording, the pending follow and acknowledgements.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sheratan_proto::data::{
    AckRequest, AckResponse, JobStatus, PendingQuery, PendingResult, PendingResults, ResultRequest,
    ResultResponse,
};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::jobs::parse_json;
use sheratan_store::{FinishOutcome, ResultReport};
use tokio_util::sync::CancellationToken;

use super::{JobsError, MAX_WAIT_MS, parse_id};
use crate::HubState;
use crate::audit::Event;
use crate::auth::{Credential, Secret};

/// Why a result's integrity check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityFailure {
    MissingHash,
    HashMismatch,
    MissingSignature,
    BadSignature,
}

impl IntegrityFailure {
    pub fn reason(self) -> &'static str {
        match self {
            IntegrityFailure::MissingHash => "missing X-Sheratan-Content-Sha256",
            IntegrityFailure::HashMismatch => "X-Sheratan-Content-Sha256 does not match the body",
            IntegrityFailure::MissingSignature => "missing X-Sheratan-Signature",
            IntegrityFailure::BadSignature => {
                "X-Sheratan-Signature does not match the body and token"
            }
        }
    }
}

/// Checks a result body against its content hash and its HMAC-SHA256 signature made with the
/// token that authenticated the request. With authentication disabled there is no shared
/// secret to check, so only the content hash is required.
pub fn verify_result(
    content_sha256: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    key: Option<&Secret>,
) -> Result<(), IntegrityFailure> {
    let claimed = content_sha256.ok_or(IntegrityFailure::MissingHash)?;
    let actual = hex::encode(Sha256::digest(body));
    if !claimed.trim().eq_ignore_ascii_case(&actual) {
        return Err(IntegrityFailure::HashMismatch);
    }
    let Some(key) = key else {
        return Ok(());
    };
    let signature = signature.ok_or(IntegrityFailure::MissingSignature)?;
    let hex_sig = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(IntegrityFailure::BadSignature)?;
    let bytes = hex::decode(hex_sig).map_err(|_| IntegrityFailure::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&bytes)
        .map_err(|_| IntegrityFailure::BadSignature)
}

/// The key a caller's result must be signed with: the token it authenticated with.
pub fn signing_key(hub: &HubState, credential: &Credential) -> Option<Secret> {
    match credential {
        Credential::Unchecked => None,
        // A credential's results are signed with the key derived from its secret.
        Credential::Named(record) => Some(Secret::new(record.signing_key.clone())),
        other => Some(hub.tokens.secret_for(other)),
    }
}

/// The integrity headers of a result request.
pub struct ResultHeaders<'a> {
    pub content_sha256: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks a result's integrity before anything reads it (a tampered body is not worth
/// parsing); a failure is audited and logged.
pub fn verify(
    hub: &HubState,
    credential: &Credential,
    headers: ResultHeaders<'_>,
    body: &[u8],
    caller_ip: IpAddr,
) -> Result<(), JobsError> {
    let key = signing_key(hub, credential);
    verify_result(
        headers.content_sha256,
        headers.signature,
        body,
        key.as_ref(),
    )
    .map_err(|failure| {
        hub.audit.emit(
            Event::new(EventKind::ResultIntegrityFail, Plane::Data)
                .remote(caller_ip)
                .by(credential)
                .detail(serde_json::json!({ "reason": failure.reason() })),
        );
        tracing::warn!(peer = %caller_ip, reason = failure.reason(), "RESULT_INTEGRITY_FAIL");
        JobsError::Integrity(failure)
    })
}

/// Records a verified result; counts it, and audits a lease that is not the job's.
pub async fn finish(
    hub: &HubState,
    req: ResultRequest,
    caller: (&Credential, IpAddr),
    traceparent: Option<&str>,
) -> Result<ResultResponse, JobsError> {
    // A child of the handler's span, when the node sent it; else of nothing (export on: its
    // own trace).
    let mut span =
        hub.config
            .tracer
            .start_from("sheratan.result", sheratan_trace::Kind::Server, traceparent);
    let answer = record(hub, req, caller).await;
    match &answer {
        Ok(r) => {
            // The id as the hub parsed it (the request's is whatever the body held).
            span.attr("sheratan.job_id", &r.job_id);
            span.attr("sheratan.status", r.status.as_str());
            span.attr("sheratan.duplicate", r.duplicate);
        }
        Err(e) => span.fail(e.message()),
    }
    answer
}

async fn record(
    hub: &HubState,
    req: ResultRequest,
    caller: (&Credential, IpAddr),
) -> Result<ResultResponse, JobsError> {
    let credential = caller.0;
    let mut report = report(req)?;
    report.holder = hub.credentials.holder_rule(credential).map(Box::new);
    let job_id = report.job_id;
    let lease_id = report.lease_id;
    // Output reported just before the result is written first: a finished job's stored
    // progress is complete (and only jobs that report progress pay this write).
    if let Some(unwritten) = hub.progress.take_unwritten(lease_id) {
        hub.store.record_progress(vec![unwritten]).await?;
    }
    let finished = hub.store.finish(report).await?;
    hub.progress.forget(lease_id);
    let (status, duplicate) = match finished {
        FinishOutcome::Recorded { status } => {
            let counter = match status {
                JobStatus::Completed => &hub.jobs.completed,
                JobStatus::Failed => &hub.jobs.failed,
                _ => &hub.jobs.retried,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            (status, false)
        }
        FinishOutcome::Duplicate { status } => {
            hub.jobs.duplicates.fetch_add(1, Ordering::Relaxed);
            (status, true)
        }
        FinishOutcome::LeaseNotHeld { status } => {
            super::lease::lease_mismatch(hub, caller, "results");
            return Err(JobsError::LeaseNotHeld(format!(
                "the lease is no longer held; the job is {}",
                status.as_str()
            )));
        }
        FinishOutcome::UnknownJob => {
            return Err(JobsError::NotFound(format!("no job {job_id}")));
        }
        FinishOutcome::WrongHolder { holder } => {
            let action = "report its result";
            return Err(super::lease::wrong_holder(hub, caller, &holder, action));
        }
    };
    Ok(ResultResponse {
        job_id: job_id.to_string(),
        status,
        duplicate,
    })
}

fn report(req: ResultRequest) -> Result<ResultReport, JobsError> {
    let job_id = parse_id("job_id", &req.job_id)?;
    let lease_id = parse_id("lease_id", &req.lease_id)?;
    if let Some(error) = &req.error
        && error.message.len() > 64 * 1024
    {
        return Err(JobsError::invalid("error.message: at most 64 KiB"));
    }
    Ok(ResultReport {
        job_id,
        lease_id,
        outcome: req.outcome,
        result: req.result.to_string(),
        error: req.error,
        holder: None,
    })
}

/// Finished, unacknowledged results; with `wait_ms`, waits for one (woken by the store).
pub async fn pending(
    hub: &HubState,
    q: PendingQuery,
    stopping: &CancellationToken,
) -> Result<PendingResults, JobsError> {
    match q.pending.as_deref() {
        None | Some("1") | Some("true") => {}
        Some(other) => {
            return Err(JobsError::invalid(format!(
                "query parameter pending: {other:?}; only pending=1 is supported (finished, unacknowledged results)"
            )));
        }
    }
    let wait_ms = q.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(JobsError::invalid(format!(
            "query parameter wait_ms: at most {MAX_WAIT_MS}"
        )));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(JobsError::invalid("query parameter limit: 1 to 1000"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut finished = hub.store.finished_signal();
    let none = || PendingResults {
        results: Vec::new(),
    };
    loop {
        finished.borrow_and_update();
        let records = hub.store.pending_results(limit).await?;
        if !records.is_empty() || wait_ms == 0 {
            let results = records
                .into_iter()
                .map(|r| PendingResult {
                    job_id: r.job_id.to_string(),
                    queue: r.queue,
                    kind: r.kind,
                    status: r.status,
                    result: r.result.as_deref().map(parse_json),
                    error: r.error,
                    finished_at: r.finished_at.unwrap_or(r.updated_at),
                })
                .collect();
            return Ok(PendingResults { results });
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(none()),
            () = stopping.cancelled() => return Ok(none()),
            changed = finished.changed() => {
                if changed.is_err() {
                    return Ok(none());
                }
            }
        }
    }
}

/// Acknowledges results: they stop being pending.
pub async fn ack(hub: &HubState, req: AckRequest) -> Result<AckResponse, JobsError> {
    if req.job_ids.len() > 1000 {
        return Err(JobsError::invalid("job_ids: at most 1000 per call"));
    }
    let ids = req
        .job_ids
        .iter()
        .enumerate()
        .map(|(i, id)| parse_id(&format!("job_ids[{i}]"), id))
        .collect::<Result<Vec<_>, _>>()?;
    let acked = hub.store.ack_results(ids).await?;
    Ok(AckResponse { acked })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_detect_tampering() {
        use sheratan_client::sign_result as sign;
        let body = br#"{"job_id":"x","lease_id":"y","outcome":"success","result":1}"#;
        let (hash, sig) = sign(body, "tok-0123456789abcdef");
        let key = Secret::new("tok-0123456789abcdef");
        assert_eq!(
            verify_result(Some(&hash), Some(&sig), body, Some(&key)),
            Ok(())
        );
        assert_eq!(
            verify_result(Some(&hash.to_uppercase()), Some(&sig), body, Some(&key)),
            Ok(())
        );
        assert_eq!(
            verify_result(None, Some(&sig), body, Some(&key)),
            Err(IntegrityFailure::MissingHash)
        );
        assert_eq!(
            verify_result(Some(&hash), None, body, Some(&key)),
            Err(IntegrityFailure::MissingSignature)
        );
        assert_eq!(
            verify_result(Some(&hash), Some(&sig), b"tampered", Some(&key)),
            Err(IntegrityFailure::HashMismatch)
        );
        let other = Secret::new("another-token-0123456789");
        assert_eq!(
            verify_result(Some(&hash), Some(&sig), body, Some(&other)),
            Err(IntegrityFailure::BadSignature)
        );
        assert_eq!(
            verify_result(Some(&hash), Some("sha256=zz"), body, Some(&key)),
            Err(IntegrityFailure::BadSignature)
        );
        assert_eq!(
            verify_result(Some(&hash), Some(&sig[7..]), body, Some(&key)),
            Err(IntegrityFailure::BadSignature)
        );
        // Without auth only the hash is checked.
        assert_eq!(verify_result(Some(&hash), None, body, None), Ok(()));
    }
}
