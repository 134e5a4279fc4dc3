//! Execute grants (docs/API.md, "Execute grants"): the holder of a job's lease (a broker) gets,
//! for each host it is about to auction the job to, a short-lived bearer token that host
//! accepts for that job only. Hosts never see a secret they could reuse.

use std::net::IpAddr;

use sheratan_proto::auction::{GrantRequest, GrantResponse, MAX_GRANT_HOSTS};
use sheratan_proto::data::JobStatus;

use super::{JobsError, parse_id};
use crate::HubState;
use crate::auth::Credential;

/// How long a grant opens a host: long enough for a round's bids and its award to travel
/// (the broker asks again each round), short enough that a copy is soon worth nothing.
pub const GRANT_TTL_S: i64 = 60;

pub async fn grants(
    hub: &HubState,
    req: GrantRequest,
    caller: (&Credential, IpAddr),
) -> Result<GrantResponse, JobsError> {
    let job_id = parse_id("job_id", &req.job_id)?;
    let lease_id = parse_id("lease_id", &req.lease_id)?;
    if req.hosts.len() > MAX_GRANT_HOSTS {
        return Err(JobsError::invalid(format!(
            "hosts: at most {MAX_GRANT_HOSTS}"
        )));
    }
    let job = hub.store.get(job_id).await?;
    let lease = job
        .as_ref()
        .filter(|j| j.status == JobStatus::InProgress)
        .and_then(|j| j.lease.as_ref())
        .filter(|l| l.lease_id == lease_id);
    let queue = job.as_ref().map(|j| j.queue.clone()).unwrap_or_default();
    let Some(lease) = lease else {
        super::lease::lease_mismatch(hub, caller, "grants");
        return Err(JobsError::LeaseNotHeld(
            "the lease is not the job's live one: grants are for the holder of a live lease".into(),
        ));
    };
    if let Some(rule) = hub.credentials.holder_rule(caller.0)
        && !rule.permits(&lease.node_id)
    {
        let action = "ask grants for its job";
        return Err(super::lease::wrong_holder(
            hub,
            caller,
            &lease.node_id,
            action,
        ));
    }
    let now = hub.clock.now();
    let expires_at = now + time::Duration::seconds(GRANT_TTL_S);
    let grants = req
        .hosts
        .iter()
        .filter_map(|host| {
            let key = hub.credentials.grant_key(host, &queue, now)?;
            let grant =
                sheratan_sign::mint_grant(&key, host, &req.job_id, expires_at.unix_timestamp());
            Some((host.clone(), grant))
        })
        .collect();
    Ok(GrantResponse {
        job_id: req.job_id,
        grants,
        expires_at,
    })
}
