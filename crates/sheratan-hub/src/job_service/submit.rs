//! Submits: validation into job specs, one store call for a whole batch, and each outcome as
//! an answer (created, an idempotent repeat, or refused with its event).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use sheratan_proto::data::{BatchOutcome, JobStatus, SubmitJob, SubmitResponse};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::jobs::parse_json;
use sheratan_store::{JobSpec, SubmitOutcome};

use super::{JobsError, MAX_BATCH};
use crate::HubState;
use crate::audit::Event;

/// The answer to one submitted job.
pub enum Submitted {
    Created(SubmitResponse),
    Existing(SubmitResponse),
    Refused(JobsError),
}

impl Submitted {
    /// As one item of a batch answer.
    pub fn into_outcome(self) -> BatchOutcome {
        let (code, r) = match self {
            Submitted::Created(r) => (202, r),
            Submitted::Existing(r) => (200, r),
            Submitted::Refused(e) => return e.into_outcome(),
        };
        BatchOutcome {
            code,
            job_id: Some(r.job_id),
            status: Some(r.status),
            result: r.result,
            warning: r.warning,
            error: None,
        }
    }
}

/// A batch's items, each decoded on its own so one malformed item gets its own 400 and the
/// others go through.
pub fn decode_batch(
    items: Vec<serde_json::Value>,
) -> Result<Vec<Result<SubmitJob, JobsError>>, JobsError> {
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(JobsError::invalid(format!(
            "jobs: 1 to {MAX_BATCH} jobs per batch"
        )));
    }
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            serde_path_to_error::deserialize::<_, SubmitJob>(value).map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    JobsError::invalid(format!("jobs[{i}]: {inner}"))
                } else {
                    JobsError::invalid(format!("jobs[{i}].{path}: {inner}"))
                }
            })
        })
        .collect())
}

/// Where a submit comes from: the plane and address (for the audit line) and the trace the
/// submitter's `traceparent` header names.
pub struct Origin<'a> {
    pub plane: Plane,
    pub ip: IpAddr,
    pub traceparent: Option<&'a str>,
}

/// Validates and submits jobs; answers in order. Validation failures do not stop the others.
pub async fn submit(
    hub: &HubState,
    jobs: Vec<Result<SubmitJob, JobsError>>,
    from: Origin<'_>,
) -> Result<Vec<Submitted>, JobsError> {
    let (plane, caller_ip) = (from.plane, from.ip);
    // The jobs join the submitter's trace (or start one, when the hub exports spans) as
    // children of this span, which ends once they are committed.
    let mut span = hub.config.tracer.start_from(
        "sheratan.submit",
        sheratan_trace::Kind::Server,
        from.traceparent,
    );
    let traceparent = span.traceparent();
    span.attr("sheratan.jobs", jobs.len());
    let now = hub.clock.now();
    let mut answers: Vec<Option<Submitted>> = Vec::with_capacity(jobs.len());
    let mut specs = Vec::new();
    let mut slots = Vec::new();
    // A batch's jobs mostly share queue and requirements: their warning is worked out once.
    let mut last: Option<(String, Vec<String>, Option<String>)> = None;
    for (i, job) in jobs.into_iter().enumerate() {
        match job.and_then(|j| {
            let defaults = hub
                .queue_settings
                .defaults_for(hub.config.job_defaults, &j.queue);
            JobSpec::from_wire(j, defaults, now).map_err(JobsError::Invalid)
        }) {
            Ok(mut spec) => {
                super::waiting::require_kind(&mut spec);
                spec.traceparent.clone_from(&traceparent);
                if i == 0 {
                    span.attr("sheratan.job_id", spec.job_id);
                    span.attr("sheratan.queue", &spec.queue);
                }
                let warning = match &last {
                    Some((queue, required, warning))
                        if *queue == spec.queue && *required == spec.required_capabilities =>
                    {
                        warning.clone()
                    }
                    _ => {
                        let warning = super::waiting::warning(hub, &spec);
                        last = Some((
                            spec.queue.clone(),
                            spec.required_capabilities.clone(),
                            warning.clone(),
                        ));
                        warning
                    }
                };
                slots.push((i, spec.queue.clone(), warning));
                specs.push(spec);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Submitted::Refused(e))),
        }
    }
    if !specs.is_empty() {
        let outcomes = hub.store.submit(specs).await?;
        for ((i, queue, warning), outcome) in slots.into_iter().zip(outcomes) {
            let mut submitted = answer(hub, outcome, &queue, plane, caller_ip);
            if let Submitted::Created(r) | Submitted::Existing(r) = &mut submitted {
                r.warning = warning;
            }
            answers[i] = Some(submitted);
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every slot is answered"))
        .collect())
}

fn answer(
    hub: &HubState,
    outcome: SubmitOutcome,
    queue: &str,
    plane: Plane,
    caller_ip: IpAddr,
) -> Submitted {
    let refused = |event: EventKind, error: JobsError| {
        hub.audit.emit(
            Event::new(event, plane)
                .remote(caller_ip)
                .detail(serde_json::json!({ "queue": queue })),
        );
        Submitted::Refused(error)
    };
    match outcome {
        SubmitOutcome::Created { job_id } => {
            hub.jobs.submitted.fetch_add(1, Ordering::Relaxed);
            Submitted::Created(SubmitResponse {
                job_id: job_id.to_string(),
                status: JobStatus::Accepted,
                result: None,
                warning: None,
            })
        }
        SubmitOutcome::Existing {
            job_id,
            status,
            result,
        } => Submitted::Existing(SubmitResponse {
            job_id: job_id.to_string(),
            status,
            result: result.as_deref().map(parse_json),
            warning: None,
        }),
        SubmitOutcome::Collision { job_id } => refused(
            EventKind::IdempotencyKeyCollision,
            JobsError::Collision {
                job_id: job_id.to_string(),
            },
        ),
        SubmitOutcome::QueueFull { depth } => refused(
            EventKind::BackpressureDrop,
            JobsError::QueueFull {
                depth,
                retry_after_s: hub.config.backpressure_retry_after_s,
            },
        ),
    }
}
