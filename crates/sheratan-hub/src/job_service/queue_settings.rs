//! Queue settings (docs/API.md, "Queue settings"): read and changed through the store, which
//! applies them at lease time; a copy in memory, re-read every second, gives submits their
//! queue's defaults (`max_attempts`, retry backoff) without a read per job, and `/v1/queues`
//! each queue's limits.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch, RetryPolicy};
use sheratan_store::{JobDefaults, Store};

use super::JobsError;
use crate::HubState;

/// Every queue with settings, as last read from the store (or changed on this hub).
#[derive(Default)]
pub struct SettingsCache {
    queues: RwLock<Arc<HashMap<String, QueueSettings>>>,
}

impl SettingsCache {
    /// Every queue with settings.
    pub fn all(&self) -> Arc<HashMap<String, QueueSettings>> {
        self.queues.read().expect("settings lock").clone()
    }

    /// The defaults of a job submitted to `queue`: the hub's, overridden by the queue's.
    pub fn defaults_for(&self, hub: JobDefaults, queue: &str) -> JobDefaults {
        let map = self.queues.read().expect("settings lock");
        let Some(s) = map.get(queue) else {
            return hub;
        };
        JobDefaults {
            max_attempts: s.max_attempts.unwrap_or(hub.max_attempts),
            timeout_s: hub.timeout_s,
            retry: RetryPolicy {
                base_ms: s.retry_base_ms,
                max_ms: s.retry_max_ms,
            },
        }
    }

    /// Re-reads every queue's settings (other hubs of one database change them too).
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), sheratan_store::StoreError> {
        let all = store.queue_settings().await?;
        *self.queues.write().expect("settings lock") = Arc::new(all.into_iter().collect());
        Ok(())
    }

    fn put(&self, queue: &str, settings: QueueSettings) {
        let mut map = self.queues.write().expect("settings lock");
        let mut next = (**map).clone();
        next.insert(queue.to_owned(), settings);
        *map = Arc::new(next);
    }
}

/// A queue's settings (a queue nobody configured has the defaults: no limits).
pub async fn get_settings(hub: &HubState, queue: &str) -> Result<QueueSettings, JobsError> {
    sheratan_proto::data::validate_queue(queue).map_err(JobsError::Invalid)?;
    let all = hub.store.queue_settings().await?;
    Ok(all
        .into_iter()
        .find(|(name, _)| name == queue)
        .map(|(_, s)| s)
        .unwrap_or_default())
}

/// Changes the fields a patch names; the answer is the queue's settings now. Takes effect
/// for the next lease; running jobs are left alone.
pub async fn put_settings(
    hub: &HubState,
    queue: &str,
    patch: QueueSettingsPatch,
) -> Result<QueueSettings, JobsError> {
    sheratan_proto::data::validate_queue(queue).map_err(JobsError::Invalid)?;
    let settings = hub
        .store
        .update_queue_settings(queue.to_owned(), patch.clone())
        .await?
        .map_err(JobsError::Invalid)?;
    hub.queue_settings.put(queue, settings.clone());
    tracing::info!(
        queue,
        change = %serde_json::to_string(&patch).unwrap_or_default(),
        "queue settings changed by an operator"
    );
    Ok(settings)
}
