//! Hubs on one database share state beyond jobs through it (PostgreSQL's [`SharedState`]):
//! once a second each hub
//!
//! - publishes the registry entries it heard from (and the nodes an operator removed) and
//!   merges the ones other hubs published (a node may heartbeat to any hub and is seen by all;
//!   each hub still writes its own `nodes_registry.json`);
//! - mirrors the token rotation state (`token_rotation.json`): a rotation started or
//!   finalized on one hub is written to the database, and the others write it to their own
//!   file, which their token timer picks up within a second;
//! - mirrors bundles: a bundle published on one hub is stored in the database and fetched
//!   by the others.
//!
//! Heartbeats never wait on the database: they change memory only, as with one hub.

use std::sync::Arc;
use std::time::Duration;

use sheratan_store::SharedState;
use sheratan_store::registry::NodeExport;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::HubState;
use crate::auth::ROTATION_FILE;

const ROTATION_SETTING: &str = "token_rotation";

/// A row of the shared registry: a node's entry, or the record that an operator removed it
/// (it replaces the entry, being newer than its last heartbeat; a later heartbeat replaces it).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Shared {
    Removed {
        node_id: String,
        #[serde(with = "time::serde::rfc3339")]
        removed_at: OffsetDateTime,
    },
    Entry(Box<NodeExport>),
}

impl Shared {
    fn node_id(&self) -> &str {
        match self {
            Shared::Removed { node_id, .. } => node_id,
            Shared::Entry(entry) => &entry.node_id,
        }
    }
}
/// Every so often the whole registry is read again, in case an entry committed out of order
/// was skipped by the incremental cursor.
const FULL_RESYNC_EVERY: u32 = 30;

pub async fn run(
    state: Arc<HubState>,
    shared: Arc<dyn SharedState>,
    hub_id: String,
    shutdown: CancellationToken,
) {
    let mut pushed_until = OffsetDateTime::UNIX_EPOCH;
    let mut cursor = 0i64;
    let mut rotation_synced: Option<String> = None;
    let mut round = 0u32;
    loop {
        round += 1;
        if round.is_multiple_of(FULL_RESYNC_EVERY) {
            cursor = 0;
        }
        if state.config.planes.control() {
            match sync_nodes(&state, shared.as_ref(), &hub_id, pushed_until, cursor).await {
                Ok((until, next)) => {
                    pushed_until = until;
                    cursor = next;
                }
                Err(err) => tracing::warn!("shared registry: {err}"),
            }
        }
        if let Err(err) = sync_rotation(&state, shared.as_ref(), &mut rotation_synced).await {
            tracing::warn!("shared token rotation: {err}");
        }
        if let Err(err) = sync_bundles(&state, shared.as_ref()).await {
            tracing::warn!("shared bundles: {err}");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn sync_nodes(
    state: &HubState,
    shared: &dyn SharedState,
    hub_id: &str,
    pushed_until: OffsetDateTime,
    cursor: i64,
) -> Result<(OffsetDateTime, i64), String> {
    let now = state.clock.now();
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    let entries = state.registry.export_since(pushed_until).into_iter();
    let removals = state.registry.removed_since(pushed_until).into_iter();
    let fresh: Vec<(String, String, i64)> = entries
        .map(|e| (e.last_seen, Shared::Entry(Box::new(e))))
        .chain(removals.map(|(node_id, removed_at)| {
            (
                removed_at,
                Shared::Removed {
                    node_id,
                    removed_at,
                },
            )
        }))
        .filter_map(|(at, record)| {
            let json = serde_json::to_string(&record).ok()?;
            Some((record.node_id().to_owned(), json, ms(at)))
        })
        .collect();
    shared
        .publish_nodes(hub_id, fresh)
        .await
        .map_err(|e| e.to_string())?;
    let (records, next) = shared
        .nodes_since(hub_id, cursor)
        .await
        .map_err(|e| e.to_string())?;
    let mut entries: Vec<NodeExport> = Vec::new();
    for record in records.iter().filter_map(|r| serde_json::from_str(r).ok()) {
        match record {
            Shared::Entry(entry) => entries.push(*entry),
            Shared::Removed {
                node_id,
                removed_at,
            } => {
                state.registry.merge_removal(&node_id, removed_at);
            }
        }
    }
    let merged = state.registry.merge(&entries);
    if merged > 0 {
        tracing::debug!(merged, "shared registry: entries from other hubs");
    }
    Ok((now, next))
}

async fn sync_rotation(
    state: &HubState,
    shared: &dyn SharedState,
    synced: &mut Option<String>,
) -> Result<(), String> {
    let path = state.config.home.join(ROTATION_FILE);
    let local = match tokio::fs::read_to_string(&path).await {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(format!("{}: {err}", path.display())),
    };
    if let Some(text) = local.filter(|l| Some(l) != synced.as_ref()) {
        // This hub started or finalized a rotation: share it.
        shared
            .put_setting(ROTATION_SETTING, &text)
            .await
            .map_err(|e| e.to_string())?;
        *synced = Some(text);
        return Ok(());
    }
    let remote = shared
        .setting(ROTATION_SETTING)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(text) = remote.filter(|r| Some(r) != synced.as_ref()) {
        // Another hub did: take it; the token timer applies it within a second.
        let path2 = path.clone();
        let bytes = text.clone().into_bytes();
        tokio::task::spawn_blocking(move || crate::persist::write_atomic(&path2, &bytes, 0o600))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::info!("shared token rotation: applied the state another hub wrote");
        *synced = Some(text);
    }
    Ok(())
}

async fn sync_bundles(state: &HubState, shared: &dyn SharedState) -> Result<(), String> {
    let remote = shared.bundle_index().await.map_err(|e| e.to_string())?;
    let local = state.bundles.published();
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    // Published here and newer than the database's copy (or absent there): upload.
    for (name, sha, at) in &local {
        let newer = match remote.iter().find(|(n, _, _)| n == name) {
            Some((_, rsha, rat)) => rsha != sha && ms(*at) > *rat,
            None => true,
        };
        if newer && let Some((_, path)) = state.bundles.get(name) {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            shared
                .put_bundle(name, sha, &bytes, ms(*at))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // Newer in the database: download.
    for (name, sha, at) in remote {
        let stale = match local.iter().find(|(n, _, _)| *n == name) {
            Some((_, lsha, lat)) => *lsha != sha && at > ms(*lat),
            None => true,
        };
        if !stale {
            continue;
        }
        let Some((sha_now, bytes)) = shared
            .bundle_bytes(&name)
            .await
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let published_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
            .unwrap_or_else(|_| state.clock.now());
        let bundles = state.bundles.clone();
        let info =
            tokio::task::spawn_blocking(move || bundles.publish(&name, &bytes, published_at))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        if info.sha256 != sha_now {
            return Err(format!(
                "bundle {} arrived with sha256 {}, expected {sha_now}",
                info.name, info.sha256
            ));
        }
        tracing::info!(name = %info.name, "shared bundles: fetched a bundle another hub published");
    }
    Ok(())
}
