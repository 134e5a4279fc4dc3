//! The token's files under `$SHERATAN_HOME`: `hub_token` (read, or generated once) and
//! `token_rotation.json` (the rotation's saved state), both mode 0600 and written whole.

use std::fs;
use std::io;
use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::policy::{Secret, TokenError, validate_token};
use crate::persist::write_atomic;

pub const TOKEN_FILE: &str = "hub_token";
pub const ROTATION_FILE: &str = "token_rotation.json";

/// Persisted rotation state. `from_sha256` ties it to the token that was current when the
/// rotation started, so a state file left over from another configuration is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RotationFile {
    pub from_sha256: String,
    pub next_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finalized_at: Option<OffsetDateTime>,
    /// Digests of every token retired so far (this rotation's old token once it finalizes),
    /// so they keep counting as `old_token` after restarts and later rotations.
    #[serde(default)]
    pub retired_sha256: Vec<String>,
}

/// (modified time, length) of a file, to notice that another process rewrote it.
pub(crate) fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The token in `path`, or a new random one written there if the file does not exist.
pub(crate) fn read_or_generate(path: &Path) -> Result<Secret, TokenError> {
    let io_err = |source| TokenError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                return Err(TokenError::Invalid(format!(
                    "{} is empty; delete it to have a new token generated",
                    path.display()
                )));
            }
            validate_token(&path.display().to_string(), token)?;
            Ok(Secret::new(token))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => match generate(path) {
            Ok(token) => Ok(token),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_or_generate(path),
            Err(err) => Err(io_err(err)),
        },
        Err(err) => Err(io_err(err)),
    }
}

fn generate(path: &Path) -> io::Result<Secret> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    // Written whole under a temporary name, then linked into place only if no other process
    // created the file meanwhile: two hubs starting on one home agree.
    let tmp = dir.join(format!(".{TOKEN_FILE}.new-{}", std::process::id()));
    write_atomic(&tmp, format!("{token}\n").as_bytes(), 0o600)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    tracing::info!(path = %path.display(), "generated a new hub token");
    Ok(Secret::new(token))
}

/// Reads `$SHERATAN_HOME/hub_token` the way every local command does (after
/// `SHERATAN_HUB_TOKEN`, which the caller checks first).
pub fn read_token_file(home: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(home.join(TOKEN_FILE))?.trim().to_owned())
}

/// The saved rotation; an unreadable file is logged and ignored, as if there were none.
pub(crate) fn read_rotation(path: &Path) -> Result<Option<RotationFile>, TokenError> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(file) => Ok(Some(file)),
            Err(err) => {
                tracing::error!(%err, path = %path.display(), "the saved token rotation is unreadable; ignoring it");
                Ok(None)
            }
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(crate) fn write_rotation(path: &Path, file: &RotationFile) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec_pretty(file).expect("rotation state always serializes");
    write_atomic(path, &bytes, 0o600).map_err(|source| TokenError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_generated_token_is_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(TOKEN_FILE);
        let a = read_or_generate(&path).unwrap();
        let b = read_or_generate(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert_eq!(
            read_token_file(&dir.path().join("sub")).unwrap(),
            a.expose()
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_empty_token_file_is_an_error_not_a_new_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        fs::write(&path, "\n").unwrap();
        let err = read_or_generate(&path).unwrap_err();
        assert!(err.to_string().contains("delete it"), "{err}");
    }

    #[test]
    fn rotation_state_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROTATION_FILE);
        assert_eq!(read_rotation(&path).unwrap(), None);
        let file = RotationFile {
            from_sha256: "ab".repeat(32),
            next_token: "next-0123456789abcdef".into(),
            until: time::macros::datetime!(2026-11-27 08:00 UTC),
            finalized_at: None,
            retired_sha256: vec![],
        };
        write_rotation(&path, &file).unwrap();
        assert_eq!(read_rotation(&path).unwrap(), Some(file));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(&path, "{not json").unwrap();
        assert_eq!(read_rotation(&path).unwrap(), None);
    }
}
