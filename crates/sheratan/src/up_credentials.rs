//! The credentials `sheratan up` runs its members on (docs/SECURITY.md, "Roles"): a node
//! credential for each worker, host, the broker and the relay, an admin one for Core; made on
//! the first start, their secrets kept in `$SHERATAN_HOME/credentials/` (directory 0700, files
//! 0600), reused on every start after. A handler that leaks its process's token leaks one
//! node's credential, not the mesh token.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sheratan_hub::HubState;
use sheratan_hub::credentials::Lookup;
use sheratan_proto::credentials::{CreateCredential, CredentialRole};

use crate::{Failure, usage};

/// Where `up` keeps its members' secrets.
pub fn dir(home: &Path) -> PathBuf {
    home.join("credentials")
}

/// A member's credential: named after its node id, with its role and queues.
pub struct Member {
    pub name: String,
    pub role: CredentialRole,
    pub queues: Vec<String>,
}

/// The secret of each of `members`, made where missing.
pub async fn ensure(
    hub: &HubState,
    home: &Path,
    members: &[Member],
) -> Result<HashMap<String, String>, Failure> {
    let dir = dir(home);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| usage(format!("cannot make {}: {e}", dir.display())))?;
    let mut secrets = HashMap::new();
    for member in members {
        let name = &member.name;
        // A secret the store does not know (a new database) is replaced by a new credential.
        let kept = read(&dir.join(name))?.and_then(|secret| check(hub, member, secret));
        let secret = match kept {
            Some(secret) => secret,
            None => create(hub, member, &dir).await?,
        };
        secrets.insert(name.clone(), secret);
    }
    // The members' first requests must find the new credentials in memory.
    hub.credentials
        .refresh()
        .await
        .map_err(|e| usage(format!("cannot re-read the credentials: {e}")))?;
    Ok(secrets)
}

fn read(path: &Path) -> Result<Option<String>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(usage(format!("cannot read {}: {e}", path.display()))),
    }
}

/// A kept secret that is still the member's live credential, as it should be (role and
/// queues); `None` (said in the log) when it must be made anew: unknown to the store (a new
/// database), revoked, expired, or made for something else.
fn check(hub: &HubState, member: &Member, secret: String) -> Option<String> {
    let why = match hub.credentials.lookup(&secret, hub.clock.now()) {
        Lookup::Valid(r)
            if r.name == member.name && r.role == member.role && r.queues == member.queues =>
        {
            return Some(secret);
        }
        Lookup::Unknown => return None,
        Lookup::Valid(_) => "was made with another role or other queues".to_owned(),
        Lookup::Refused(reason) => format!("is {reason}"),
    };
    tracing::warn!(
        "the credential {:?} of `sheratan up` {why}: up gives it a new secret",
        member.name
    );
    None
}

async fn create(hub: &HubState, member: &Member, dir: &Path) -> Result<String, Failure> {
    let name = member.name.as_str();
    let req = CreateCredential {
        name: name.to_owned(),
        role: member.role,
        queues: member.queues.clone(),
        expires_in_s: None,
    };
    // up owns its members' names: a credential of the name whose secret is not here (revoked,
    // lost, or made elsewhere) is replaced, never left to block the member.
    let created = hub
        .credentials
        .reissue(req, hub.clock.now())
        .await
        .map_err(|e| {
            usage(format!(
                "`sheratan up` cannot make the credential {name:?} for its member in {}: {e} (run up with --member-credentials off to use the mesh token instead)",
                dir.display()
            ))
        })?;
    let path = dir.join(name);
    let write = || -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(created.secret.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(created.secret)
}
