//! Credentials with a role and a name (docs/API.md, "Credentials"): created, listed and
//! revoked on the admin path, kept in the job store's database with the secret only as its
//! SHA-256, so every hub on one PostgreSQL sees the same ones. The secret is shown once, in
//! the answer that creates it.
//!
//! This is the management half; requests authenticated by these credentials, and what each
//! role may do, come next (issue 18).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::Digest;
use sheratan_proto::credentials::{
    CreateCredential, CreatedCredential, CredentialList, CredentialRole, CredentialView,
    validate_credential_name,
};
use sheratan_store::{CredentialRecord, CredentialStore, StoreError};
use time::OffsetDateTime;

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

/// The hub's credentials: where they are stored.
#[derive(Default)]
pub struct Credentials {
    store: OnceLock<Arc<dyn CredentialStore>>,
}

impl Credentials {
    /// Where credentials are kept (the job store's database); set once, before serving.
    pub fn attach(&self, store: Arc<dyn CredentialStore>) {
        let _ = self.store.set(store);
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
        let store = self.store()?;
        check(&req)?;
        let secret = new_secret();
        let record = CredentialRecord {
            name: req.name.clone(),
            role: req.role,
            queues: req.queues,
            secret_sha256: digest(&secret),
            created_at: now,
            expires_at: req.expires_in_s.map(|s| now + Duration::from_secs(s)),
            revoked_at: None,
            last_used_at: None,
        };
        if !store.create_credential(record.clone()).await? {
            return Err(CredentialError::Exists(req.name));
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
    if !req.queues.is_empty() && req.role != CredentialRole::Submit {
        return invalid(format!(
            "queues limit submit credentials only; a {} credential has none",
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
    format!("shtc_{}", hex::encode(bytes))
}

/// SHA-256 of a secret, lowercase hex: how the store knows it.
pub fn digest(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}
