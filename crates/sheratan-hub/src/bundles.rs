//! Bundles: named, content-addressed files the hub hands out to nodes (scripts, configs,
//! tool archives). Objects live in `$SHERATAN_HOME/bundles/sha256/<hex>`, written once and
//! never modified; `bundles/index.json` maps each name to its current object. Publishing
//! writes the object first and swaps the index atomically after, so a reader sees the old or
//! the new version of a bundle, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sheratan_proto::control::{BundleInfo, validate_bundle_name};
use time::OffsetDateTime;

use crate::persist::write_atomic;

const INDEX_FILE: &str = "index.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    sha256: String,
    size: u64,
    #[serde(with = "time::serde::rfc3339")]
    published_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    InvalidName(String),
    /// Nothing to publish: almost always a file that was not there (`curl --data-binary
    /// @FILE` sends an empty body when FILE is missing, and `-s` hides its warning).
    #[error("the bundle is empty")]
    Empty,
    #[error("bundle storage failed: {0}")]
    Io(#[from] io::Error),
}

pub struct Bundles {
    dir: PathBuf,
    index: RwLock<BTreeMap<String, IndexEntry>>,
}

impl Bundles {
    /// Opens `home/bundles`, creating it. An unreadable index is an error: serving a wrong
    /// bundle is worse than not starting.
    pub fn open(home: &Path) -> io::Result<Bundles> {
        let dir = home.join("bundles");
        fs::create_dir_all(dir.join("sha256"))?;
        let index = match fs::read(dir.join(INDEX_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {err}", dir.join(INDEX_FILE).display()),
                )
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(err),
        };
        Ok(Bundles {
            dir,
            index: RwLock::new(index),
        })
    }

    pub fn list(&self) -> Vec<BundleInfo> {
        let index = self.index.read().expect("bundle index lock");
        index
            .iter()
            .map(|(name, e)| BundleInfo {
                name: name.clone(),
                sha256: e.sha256.clone(),
                size: e.size,
            })
            .collect()
    }

    /// Every bundle with its digest and publication time (for hubs that share a database).
    pub fn published(&self) -> Vec<(String, String, OffsetDateTime)> {
        let index = self.index.read().expect("bundle index lock");
        index
            .iter()
            .map(|(name, e)| (name.clone(), e.sha256.clone(), e.published_at))
            .collect()
    }

    /// The bundle's description and the path of its bytes.
    pub fn get(&self, name: &str) -> Option<(BundleInfo, PathBuf)> {
        let index = self.index.read().expect("bundle index lock");
        let e = index.get(name)?;
        Some((
            BundleInfo {
                name: name.to_owned(),
                sha256: e.sha256.clone(),
                size: e.size,
            },
            self.dir.join("sha256").join(&e.sha256),
        ))
    }

    /// Publishes `bytes` under `name`, replacing an earlier version. Blocking.
    pub fn publish(
        &self,
        name: &str,
        bytes: &[u8],
        now: OffsetDateTime,
    ) -> Result<BundleInfo, BundleError> {
        validate_bundle_name(name).map_err(BundleError::InvalidName)?;
        if bytes.is_empty() {
            return Err(BundleError::Empty);
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let object = self.dir.join("sha256").join(&sha256);
        if !object.exists() {
            write_atomic(&object, bytes, 0o644)?;
        }
        let mut index = self.index.write().expect("bundle index lock");
        let mut next = index.clone();
        next.insert(
            name.to_owned(),
            IndexEntry {
                sha256: sha256.clone(),
                size: bytes.len() as u64,
                published_at: now,
            },
        );
        let encoded = serde_json::to_vec_pretty(&next).expect("the index always serializes");
        write_atomic(&self.dir.join(INDEX_FILE), &encoded, 0o644)?;
        *index = next;
        Ok(BundleInfo {
            name: name.to_owned(),
            sha256,
            size: bytes.len() as u64,
        })
    }
}

/// Whether an `If-None-Match` header value matches the entity tag `sha256`. Accepts `*`,
/// lists, weak tags and unquoted values (clients that echo the bare hash).
pub fn if_none_match_hits(header: &str, sha256: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.trim_matches('"') == sha256
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_list_get_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bundles::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let info = b.publish("tool.sh", b"echo hi\n", now).unwrap();
        assert_eq!(info.size, 8);
        let (got, path) = b.get("tool.sh").unwrap();
        assert_eq!(got, info);
        assert_eq!(fs::read(path).unwrap(), b"echo hi\n");
        b.publish("tool.sh", b"echo v2\n", now).unwrap();
        let reopened = Bundles::open(dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 1);
        assert_ne!(reopened.get("tool.sh").unwrap().0.sha256, info.sha256);
        assert!(matches!(
            b.publish("../x", b"", now),
            Err(BundleError::InvalidName(_))
        ));
    }

    #[test]
    fn if_none_match_forms() {
        assert!(if_none_match_hits("\"abc\"", "abc"));
        assert!(if_none_match_hits("W/\"abc\"", "abc"));
        assert!(if_none_match_hits("\"x\", \"abc\"", "abc"));
        assert!(if_none_match_hits("*", "abc"));
        assert!(if_none_match_hits("abc", "abc"));
        assert!(!if_none_match_hits("\"abd\"", "abc"));
    }
}
