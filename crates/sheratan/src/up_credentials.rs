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

/// The secret of each of `members` (credentials named after the nodes, with their role), made
/// where missing.
pub async fn ensure(
    hub: &HubState,
    home: &Path,
    members: &[(String, CredentialRole)],
) -> Result<HashMap<String, String>, Failure> {
    let dir = dir(home);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| usage(format!("cannot make {}: {e}", dir.display())))?;
    let mut secrets = HashMap::new();
    for (name, role) in members {
        // A secret the store does not know (a new database) is replaced by a new credential.
        let kept = match read(&dir.join(name))? {
            Some(secret) => check(hub, (name, *role), secret, &dir)?,
            None => None,
        };
        let secret = match kept {
            Some(secret) => secret,
            None => create(hub, (name, *role), &dir).await?,
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

/// A kept secret must still be `name`'s live node credential; `None` when the store does not
/// know it at all.
fn check(
    hub: &HubState,
    (name, role): (&str, CredentialRole),
    secret: String,
    dir: &Path,
) -> Result<Option<String>, Failure> {
    let why = match hub.credentials.lookup(&secret, hub.clock.now()) {
        Lookup::Valid(r) if r.name == name && r.role == role => {
            return Ok(Some(secret));
        }
        Lookup::Unknown => return Ok(None),
        Lookup::Valid(_) => "belongs to another credential".to_owned(),
        Lookup::Refused(reason) => format!("is {reason}"),
    };
    Err(usage(format!(
        "the credential {name:?} of `sheratan up` (its secret in {}) {why}, and names are never reused: run up under another SHERATAN_HOME, or with --member-credentials off (its members then use the mesh token)",
        dir.join(name).display()
    )))
}

async fn create(
    hub: &HubState,
    (name, role): (&str, CredentialRole),
    dir: &Path,
) -> Result<String, Failure> {
    let req = CreateCredential {
        name: name.to_owned(),
        role,
        queues: Vec::new(),
        expires_in_s: None,
    };
    let created = hub
        .credentials
        .create(req, hub.clock.now())
        .await
        .map_err(|e| {
            usage(format!(
                "`sheratan up` cannot make the credential {name:?} for its member: {e} (its secret is not in {}; run up with --member-credentials off, or under another SHERATAN_HOME)",
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
