//! Credentials with a role and a name (docs/API.md, "Credentials"): created, listed and
//! revoked on the admin path, kept in the job store's database with the secret only as its
//! SHA-256, so every hub on one PostgreSQL sees the same ones. The secret is shown once, in
//! the answer that creates it.
//!
//! Requests present a credential's secret like the mesh token; the hub finds it by its
//! digest in an in-memory copy of the table, re-read every second (so a revocation on another
//! hub sharing the database takes effect within about a second), never on the request's path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use sha2::Digest;
use sheratan_proto::credentials::{
    CreateCredential, CreatedCredential, CredentialList, CredentialRole, CredentialView,
    validate_credential_name,
};
use sheratan_store::{CredentialRecord, CredentialStore, HolderRule, StoreError};
use time::OffsetDateTime;

/// What every credential's secret starts with (the mesh token may be anything else).
pub use sheratan_sign::CREDENTIAL_PREFIX as SECRET_PREFIX;

/// How old the copy of the credentials in memory may get before they fail closed.
const MAX_STALE: Duration = Duration::from_secs(10);

/// The longest a credential may live when it expires at all: ten years.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why a credential operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    Invalid(String),
    #[error("a credential named {0:?} exists (names are never reused, revoked ones included)")]
    Exists(String),
    #[error("no live credential named {0:?}")]
    NotFound(String),
    #[error("this hub keeps no credentials (no credential store is attached)")]
    NotConfigured,
    #[error("the credential store: {0}")]
    Store(#[from] StoreError),
}

/// The hub's credentials: where they are stored, and a copy by digest for requests.
#[derive(Default)]
pub struct Credentials {
    store: OnceLock<Arc<dyn CredentialStore>>,
    by_digest: RwLock<Arc<HashMap<String, Arc<CredentialRecord>>>>,
    /// The names of node credentials (revoked and expired ones too), derived at each re-read:
    /// every result asks whether its lease's holder is one.
    nodes: RwLock<Arc<std::collections::HashSet<String>>>,
    /// When the copy in memory was last read whole: past [`MAX_STALE`], credentials fail
    /// closed (a revocation elsewhere might be missing).
    refreshed: Mutex<Option<std::time::Instant>>,
    /// Last uses not yet written (name → when), flushed with each refresh.
    used: Mutex<HashMap<String, OffsetDateTime>>,
}

/// What a presented secret is.
#[derive(Debug)]
pub enum Lookup {
    /// No credential has this secret.
    Unknown,
    Valid(Arc<CredentialRecord>),
    /// Known, but no longer valid: why (for the audit line, never the answer).
    Refused(&'static str),
}

impl Credentials {
    /// Where credentials are kept (the job store's database); set once, before serving.
    pub fn attach(&self, store: Arc<dyn CredentialStore>) {
        let _ = self.store.set(store);
    }

    /// Re-reads every credential into memory, then writes pending last uses (a failing
    /// write never keeps a revocation out).
    pub async fn refresh(&self) -> Result<(), CredentialError> {
        let store = self.store()?;
        let records = store.credentials().await?;
        let nodes = records
            .iter()
            .filter(|r| r.role == CredentialRole::Node)
            .map(|r| r.name.clone())
            .collect();
        let map = records
            .into_iter()
            .map(|r| (r.secret_sha256.clone(), Arc::new(r)))
            .collect();
        *self.by_digest.write().expect("credential cache") = Arc::new(map);
        *self.nodes.write().expect("node names") = Arc::new(nodes);
        *self.refreshed.lock().expect("credential refresh") = Some(std::time::Instant::now());
        let used: Vec<(String, OffsetDateTime)> =
            self.used.lock().expect("credential uses").drain().collect();
        if !used.is_empty()
            && let Err(err) = store.touch_credentials(used).await
        {
            tracing::warn!("cannot record when credentials were last used: {err}");
        }
        Ok(())
    }

    /// Whether the copy in memory is recent enough to trust.
    fn fresh(&self) -> bool {
        self.refreshed
            .lock()
            .expect("credential refresh")
            .is_some_and(|at| at.elapsed() <= MAX_STALE)
    }

    /// Whether any live node credential exists (results then check who holds the lease).
    pub fn has_nodes(&self) -> bool {
        !self.nodes.read().expect("node names").is_empty()
    }

    /// What the store checks a lease's holder against for a request made with `credential`;
    /// `None` (nothing to check) while no node credential exists.
    pub fn holder_rule(&self, credential: &crate::auth::Credential) -> Option<HolderRule> {
        let bound = self.nodes.read().expect("node names").clone();
        (!bound.is_empty()).then(|| HolderRule {
            reporter: credential.node_name().map(str::to_owned),
            bound,
        })
    }

    /// Whether `node_id` has (or had: revoked and expired ones count, so their leases take
    /// results from no one else until they end) a node credential.
    pub fn is_node(&self, node_id: &str) -> bool {
        self.nodes.read().expect("node names").contains(node_id)
    }

    /// The key `host`'s execute grants for a job of `queue` are made with: only a valid node
    /// credential that names the queue among its own (a host says which auctioned queues it
    /// takes; a node credential without queues is a worker's, and gets no grants).
    pub fn grant_key(&self, host: &str, queue: &str, now: OffsetDateTime) -> Option<String> {
        if !self.fresh() {
            return None;
        }
        let cache = self.by_digest.read().expect("credential cache").clone();
        cache
            .values()
            .find(|r| {
                r.name == host
                    && r.role == CredentialRole::Node
                    && r.queues.iter().any(|q| q == queue)
                    && r.revoked_at.is_none()
                    && r.expires_at.is_none_or(|at| at > now)
            })
            .map(|r| sheratan_sign::grant_key(&r.signing_key))
    }

    /// The credential whose secret `presented` is, from memory: one SHA-256 and a map lookup.
    pub fn lookup(&self, presented: &str, now: OffsetDateTime) -> Lookup {
        let cache = self.by_digest.read().expect("credential cache").clone();
        if cache.is_empty() {
            return Lookup::Unknown;
        }
        let Some(record) = cache.get(&digest(presented)) else {
            return Lookup::Unknown;
        };
        if !self.fresh() {
            return Lookup::Refused("stale");
        }
        if record.revoked_at.is_some() {
            return Lookup::Refused("revoked");
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Lookup::Refused("expired");
        }
        self.used
            .lock()
            .expect("credential uses")
            .insert(record.name.clone(), now);
        Lookup::Valid(record.clone())
    }

    fn store(&self) -> Result<&Arc<dyn CredentialStore>, CredentialError> {
        self.store.get().ok_or(CredentialError::NotConfigured)
    }

    /// Creates a credential; the answer carries its secret, which is stored nowhere.
    pub async fn create(
        &self,
        req: CreateCredential,
        now: OffsetDateTime,
    ) -> Result<CreatedCredential, CredentialError> {
        self.make(req, now, false).await
    }

    /// Like [`Credentials::create`], but an existing credential of the name (revoked, expired,
    /// its secret lost) is replaced by the new one. For the process that owns the name only
    /// (`sheratan up` healing its members); no route reaches it.
    pub async fn reissue(
        &self,
        req: CreateCredential,
        now: OffsetDateTime,
    ) -> Result<CreatedCredential, CredentialError> {
        self.make(req, now, true).await
    }

    async fn make(
        &self,
        req: CreateCredential,
        now: OffsetDateTime,
        replace: bool,
    ) -> Result<CreatedCredential, CredentialError> {
        let store = self.store()?;
        check(&req)?;
        let secret = new_secret();
        let record = CredentialRecord {
            name: req.name.clone(),
            role: req.role,
            queues: req.queues,
            secret_sha256: digest(&secret),
            signing_key: sheratan_sign::signing_key(&secret),
            created_at: now,
            expires_at: req.expires_in_s.map(|s| now + Duration::from_secs(s)),
            revoked_at: None,
            last_used_at: None,
        };
        if replace {
            store.put_credential(record.clone()).await?;
        } else if !store.create_credential(record.clone()).await? {
            return Err(CredentialError::Exists(req.name));
        }
        // Stored: the answer must carry the secret whatever happens next (the periodic
        // re-read picks the credential up if this one fails).
        if let Err(err) = self.refresh().await {
            tracing::warn!(
                "credential {} stored, not yet in memory: {err}",
                record.name
            );
        }
        Ok(CreatedCredential {
            credential: view(&record),
            secret,
        })
    }

    /// Every credential (revoked ones too), without secrets.
    pub async fn list(&self) -> Result<CredentialList, CredentialError> {
        let records = self.store()?.credentials().await?;
        Ok(CredentialList {
            credentials: records.iter().map(view).collect(),
        })
    }

    /// Revokes a live credential; the answer is how it looks now.
    pub async fn revoke(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<CredentialView, CredentialError> {
        validate_credential_name(name).map_err(CredentialError::Invalid)?;
        let store = self.store()?;
        if !store.revoke_credential(name, now).await? {
            return Err(CredentialError::NotFound(name.to_owned()));
        }
        if let Err(err) = self.refresh().await {
            tracing::warn!("credential {name} revoked, the copy in memory not yet: {err}");
        }
        let records = store.credentials().await?;
        records
            .iter()
            .find(|r| r.name == name)
            .map(view)
            .ok_or_else(|| CredentialError::NotFound(name.to_owned()))
    }
}

/// What a create asks for, checked.
fn check(req: &CreateCredential) -> Result<(), CredentialError> {
    let invalid = |m: String| Err(CredentialError::Invalid(m));
    validate_credential_name(&req.name).map_err(CredentialError::Invalid)?;
    if !req.queues.is_empty() && !matches!(req.role, CredentialRole::Submit | CredentialRole::Node)
    {
        return invalid(format!(
            "queues limit submit and node credentials only; a {} credential has none",
            req.role
        ));
    }
    for queue in &req.queues {
        sheratan_proto::ids::validate_name("queues[]", queue, 64)
            .map_err(CredentialError::Invalid)?;
    }
    match req.expires_in_s {
        Some(0) => invalid("expires_in_s must be at least 1 (or left out: no expiry)".into()),
        Some(s) if Duration::from_secs(s) > MAX_LIFETIME => {
            invalid("expires_in_s is more than ten years; leave it out for no expiry".into())
        }
        _ => Ok(()),
    }
}

/// A credential as it may be shown: never its secret or digest.
pub fn view(record: &CredentialRecord) -> CredentialView {
    CredentialView {
        name: record.name.clone(),
        role: record.role,
        queues: record.queues.clone(),
        created_at: record.created_at,
        expires_at: record.expires_at,
        revoked_at: record.revoked_at,
        last_used_at: record.last_used_at,
    }
}

/// A new secret: 32 random bytes, hex, after a prefix that says what it is.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// SHA-256 of a secret, lowercase hex: how the store knows it.
pub fn digest(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Requests refused 403 `FORBIDDEN` by role (`sheratan_forbidden_total{role}`).
#[derive(Debug, Default)]
pub struct RoleRefusals([std::sync::atomic::AtomicU64; 4]);

impl RoleRefusals {
    pub const ROLES: [CredentialRole; 4] = [
        CredentialRole::Admin,
        CredentialRole::Node,
        CredentialRole::Submit,
        CredentialRole::Read,
    ];

    pub fn count(&self, role: CredentialRole) {
        let i = Self::ROLES.iter().position(|r| *r == role).unwrap_or(0);
        self.0[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, role: CredentialRole) -> u64 {
        let i = Self::ROLES.iter().position(|r| *r == role).unwrap_or(0);
        self.0[i].load(std::sync::atomic::Ordering::Relaxed)
    }
}
