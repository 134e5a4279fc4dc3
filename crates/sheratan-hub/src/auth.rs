//! The mesh token: where it comes from, how a request's credential is checked, and dual-token
//! rotation (docs/API.md, "Settings"; docs/API.md, "Control plane").
//!
//! Tokens are compared as SHA-256 digests with a constant-time equality, so neither the
//! content nor the length of the hub's token leaks through response timing. Rotation state is
//! persisted in `$SHERATAN_HOME/token_rotation.json` (mode 0600) so a restart in the middle of
//! a rotation, or after it, keeps its outcome even when the environment still names the old
//! token.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::Clock;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Event};
use crate::metrics::MinuteWindow;
use crate::persist::write_atomic;

/// The token that is accepted only when set explicitly, and then with a WEAK_TOKEN warning.
pub const WEAK_DEFAULT_TOKEN: &str = "shared-secret";
/// Tokens shorter than this are reported as weak too.
pub const MIN_STRONG_TOKEN_LEN: usize = 16;
pub const TOKEN_FILE: &str = "hub_token";
pub const ROTATION_FILE: &str = "token_rotation.json";

/// A secret string whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn digest(&self) -> [u8; 32] {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Token settings as configured (flags and environment).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `SHERATAN_HUB_TOKEN`; `None` means read or generate `$SHERATAN_HOME/hub_token`.
    pub token: Option<Secret>,
    /// `SHERATAN_HUB_TOKEN_REQUIRED`.
    pub required: bool,
    pub next: Option<Secret>,
    pub rotation_until: Option<OffsetDateTime>,
    /// `SHERATAN_ALLOW_WEAK_TOKEN`: run with (and rotate to) a weak token anyway, reporting
    /// `WEAK_TOKEN`. Off: a weak token is a configuration error.
    pub allow_weak: bool,
}

/// Which credential a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Current,
    /// The rotation's next token, before the deadline.
    Next,
    /// Auth is disabled (`SHERATAN_HUB_TOKEN_REQUIRED=0`).
    Unchecked,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    /// A token retired by a finished rotation.
    OldToken,
    /// Two different tokens in one request (see `sheratan_runtime::edge::Presented`).
    Conflicting,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::OldToken => "old_token",
            AuthFailure::Conflicting => "conflicting",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Persisted rotation state. `from_sha256` ties it to the token that was current when the
/// rotation started, so a state file left over from another configuration is recognised.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RotationFile {
    from_sha256: String,
    next_token: String,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    finalized_at: Option<OffsetDateTime>,
    /// Digests of every token retired so far (this rotation's old token once it finalizes),
    /// so they keep counting as `old_token` after restarts and later rotations.
    #[serde(default)]
    retired_sha256: Vec<String>,
}

struct TokenState {
    current: Secret,
    current_digest: [u8; 32],
    next: Option<(Secret, [u8; 32])>,
    until: Option<OffsetDateTime>,
    /// Digests of tokens retired by rotations, to tell `old_token` from `invalid`.
    retired: Vec<[u8; 32]>,
    /// The rotation's persisted form, rewritten when it finalizes.
    rotation: Option<RotationFile>,
}

pub use sheratan_proto::data::RotationStatus;

/// The hub's token authority.
pub struct Tokens {
    required: bool,
    state: RwLock<TokenState>,
    allow_weak: bool,
    home: PathBuf,
    /// Set when the current token lives in `$SHERATAN_HOME/hub_token`; a finished rotation
    /// rewrites that file so local commands keep working.
    token_file: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    /// Wakes the finalization timer when a rotation starts.
    changed: tokio::sync::Notify,
    next_notices: Mutex<HashMap<IpAddr, Instant>>,
    failures_old: MinuteWindow,
    failures_invalid: MinuteWindow,
    /// The rotation file's (modified time, length) when last read, so a rotation started by
    /// another hub process on this home is picked up.
    rotation_seen: Mutex<Option<(std::time::SystemTime, u64)>>,
}

/// TOKEN_ACCEPTED_NEXT is reported at most this often per source.
const NEXT_NOTICE_INTERVAL: Duration = Duration::from_secs(60);

impl Tokens {
    /// Resolves the current token (configured, read from `hub_token`, or generated into it),
    /// applies persisted and configured rotation state, and emits WEAK_TOKEN where due.
    pub fn load(
        config: TokenConfig,
        home: &Path,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
    ) -> Result<Tokens, TokenError> {
        let token_path = home.join(TOKEN_FILE);
        let (configured, token_file) = match config.token {
            Some(token) => (token, None),
            None => (read_or_generate(&token_path)?, Some(token_path)),
        };
        let what = match &token_file {
            Some(path) => path.display().to_string(),
            None => "SHERATAN_HUB_TOKEN".into(),
        };
        validate_token(&what, configured.expose())?;
        check_strength(&what, configured.expose(), config.allow_weak)?;
        let state = TokenState {
            current_digest: configured.digest(),
            current: configured,
            next: None,
            until: None,
            retired: Vec::new(),
            rotation: None,
        };
        let rotation_path = home.join(ROTATION_FILE);
        let tokens = Tokens {
            required: config.required,
            state: RwLock::new(state),
            allow_weak: config.allow_weak,
            home: home.to_owned(),
            token_file,
            clock,
            audit,
            changed: tokio::sync::Notify::new(),
            next_notices: Mutex::new(HashMap::new()),
            failures_old: MinuteWindow::default(),
            failures_invalid: MinuteWindow::default(),
            rotation_seen: Mutex::new(file_stamp(&rotation_path)),
        };
        if let Some(saved) = read_rotation(&rotation_path)? {
            tokens.apply_saved(saved)?;
        }

        match (config.next, config.rotation_until) {
            (Some(next), Some(until)) => {
                let already = {
                    let state = tokens.read();
                    let d = next.digest();
                    d == state.current_digest || state.next.as_ref().is_some_and(|(_, n)| *n == d)
                };
                if !already {
                    // A deadline already past means the operator wants the rotation done:
                    // finalize at once rather than refuse to start.
                    tokens.begin_rotation(next, until)?;
                    tokens.finalize_if_due();
                }
            }
            (None, None) => {}
            _ => {
                return Err(TokenError::Invalid(
                    "SHERATAN_HUB_TOKEN_NEXT and SHERATAN_HUB_TOKEN_ROTATION_UNTIL must be set together"
                        .into(),
                ));
            }
        }
        tokens.report_weak_tokens();
        if !tokens.required {
            tracing::warn!(
                "SHERATAN_HUB_TOKEN_REQUIRED=0: authentication is DISABLED; anyone who can reach the hub can control it"
            );
        }
        Ok(tokens)
    }

    /// Applies a saved rotation: the configured token may be its old token (the rotation is
    /// pending or finished), its new token (the operator already switched), or neither (a
    /// file left from another configuration, ignored).
    fn apply_saved(&self, saved: RotationFile) -> Result<(), TokenError> {
        // A rotation saved while weak tokens were allowed (or by another hub that allows them)
        // does not bring a weak token in through the back door.
        check_strength(
            "the saved token rotation's next token",
            &saved.next_token,
            self.allow_weak,
        )?;
        let now = self.clock.now();
        let from = hex_digest_bytes(&saved.from_sha256);
        let next = Secret::new(saved.next_token.clone());
        let next_digest = next.digest();
        let mut state = self.write();
        for retired in saved
            .retired_sha256
            .iter()
            .filter_map(|h| hex_digest_bytes(h))
        {
            if !state.retired.contains(&retired) && retired != state.current_digest {
                state.retired.push(retired);
            }
        }
        if from == Some(state.current_digest) {
            if saved.finalized_at.is_some() || now >= saved.until {
                let finalized_elsewhere = saved.finalized_at.is_some();
                state.next = Some((next, next_digest));
                state.until = Some(saved.until);
                state.rotation = Some(saved);
                drop(state);
                if finalized_elsewhere {
                    // Already finalized (before a restart, or by another process): switch
                    // without emitting the events a second time.
                    self.switch_to_next(None);
                } else {
                    self.finalize();
                }
                return Ok(());
            }
            state.next = Some((next, next_digest));
            state.until = Some(saved.until);
            state.rotation = Some(saved);
            drop(state);
            self.changed.notify_one();
        } else if next_digest == state.current_digest {
            // The operator already configured the new token: the rotation is over, and its
            // old token still counts as old.
            if let Some(from) = from
                && !state.retired.contains(&from)
            {
                state.retired.push(from);
            }
            state.rotation = Some(saved);
        } else {
            tracing::warn!("the saved token rotation belongs to a different token; ignoring it");
        }
        Ok(())
    }

    /// Picks up a rotation file written by another hub process on this home.
    fn reload_if_changed(&self) {
        let path = self.home.join(ROTATION_FILE);
        let stamp = file_stamp(&path);
        {
            let mut seen = self.rotation_seen.lock().expect("rotation stamp lock");
            if *seen == stamp {
                return;
            }
            *seen = stamp;
        }
        match read_rotation(&path) {
            Ok(Some(saved)) => {
                let known = self.read().rotation.as_ref().is_some_and(|r| {
                    r.from_sha256 == saved.from_sha256
                        && r.next_token == saved.next_token
                        && r.until == saved.until
                        && r.finalized_at.is_some() == saved.finalized_at.is_some()
                });
                if !known {
                    tracing::info!("token rotation state changed on disk; applying it");
                    if let Err(err) = self.apply_saved(saved) {
                        tracing::error!(%err, "ignoring the token rotation written on disk");
                    }
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "cannot re-read the token rotation state"),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TokenState> {
        self.state
            .read()
            .expect("token state lock is never poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TokenState> {
        self.state
            .write()
            .expect("token state lock is never poisoned")
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Where local commands find the token, when it lives in a file.
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }

    /// The current token, e.g. to sign requests of an embedded client.
    pub fn current(&self) -> Secret {
        self.read().current.clone()
    }

    /// The current token and, while a rotation runs, the next one, read together (a
    /// finalization between two separate reads would pair the old token with no next one).
    pub fn current_and_next(&self) -> (Secret, Option<Secret>) {
        let state = self.read();
        (
            state.current.clone(),
            state.next.as_ref().map(|(next, _)| next.clone()),
        )
    }

    /// The secret that matches `credential`, as the HMAC key of signed results.
    pub fn secret_for(&self, credential: Credential) -> Secret {
        let state = self.read();
        match (credential, &state.next) {
            (Credential::Next, Some((next, _))) => next.clone(),
            _ => state.current.clone(),
        }
    }

    /// Checks the presented token (one, from either header; a request with two different
    /// tokens is refused before it gets here).
    pub fn check(
        &self,
        presented: Option<&str>,
        remote: IpAddr,
        plane: Plane,
    ) -> Result<Credential, AuthFailure> {
        if !self.required {
            return Ok(Credential::Unchecked);
        }
        let Some(token) = presented else {
            return Err(self.fail(AuthFailure::Missing));
        };
        if self.deadline_passed() {
            self.finalize();
        }
        let d = digest(token);
        let state = self.read();
        // Every comparison runs, so which token matched does not show in the time.
        let current = bool::from(d.ct_eq(&state.current_digest));
        let next = state
            .next
            .as_ref()
            .is_some_and(|(_, next)| bool::from(d.ct_eq(next)));
        let retired = state.retired.iter().any(|r| bool::from(d.ct_eq(r)));
        drop(state);
        if current {
            Ok(Credential::Current)
        } else if next {
            self.notice_next(remote, plane);
            Ok(Credential::Next)
        } else if retired {
            Err(self.fail(AuthFailure::OldToken))
        } else {
            Err(self.fail(AuthFailure::Invalid))
        }
    }

    /// A request that presented two different tokens: refused and counted as invalid.
    pub fn refuse_conflicting(&self) -> AuthFailure {
        self.fail(AuthFailure::Conflicting)
    }

    fn fail(&self, failure: AuthFailure) -> AuthFailure {
        match failure {
            AuthFailure::OldToken => self.failures_old.record(),
            AuthFailure::Missing | AuthFailure::Invalid | AuthFailure::Conflicting => {
                self.failures_invalid.record()
            }
        }
        failure
    }

    /// Failed authentications in the last minute: (old_token, invalid or missing).
    pub fn failures_last_minute(&self) -> (u64, u64) {
        (self.failures_old.total(), self.failures_invalid.total())
    }

    fn notice_next(&self, remote: IpAddr, plane: Plane) {
        let mut notices = self
            .next_notices
            .lock()
            .expect("notice lock is never poisoned");
        let now = Instant::now();
        if notices
            .get(&remote)
            .is_some_and(|last| now.duration_since(*last) < NEXT_NOTICE_INTERVAL)
        {
            return;
        }
        if notices.len() > 10_000 {
            notices.retain(|_, last| now.duration_since(*last) < NEXT_NOTICE_INTERVAL);
        }
        notices.insert(remote, now);
        drop(notices);
        self.audit
            .emit(Event::new(EventKind::TokenAcceptedNext, plane).remote(remote));
    }

    fn deadline_passed(&self) -> bool {
        self.read()
            .until
            .is_some_and(|until| self.clock.now() >= until)
    }

    /// Starts (or replaces an unfinished) rotation to `next`, finalized at `until`.
    pub fn start_rotation(&self, next: Secret, until: OffsetDateTime) -> Result<(), TokenError> {
        if until <= self.clock.now() {
            return Err(TokenError::Invalid(format!(
                "the rotation deadline {} is not in the future",
                fmt_time(until)
            )));
        }
        self.begin_rotation(next, until)
    }

    fn begin_rotation(&self, next: Secret, until: OffsetDateTime) -> Result<(), TokenError> {
        validate_token("the next token", next.expose())?;
        check_strength("the next token", next.expose(), self.allow_weak)?;
        let next_digest = next.digest();
        let mut state = self.write();
        if next_digest == state.current_digest {
            return Err(TokenError::Invalid(
                "the next token equals the current token".into(),
            ));
        }
        let file = RotationFile {
            from_sha256: hex::encode(state.current_digest),
            next_token: next.expose().to_owned(),
            until,
            finalized_at: None,
            retired_sha256: state.retired.iter().map(hex::encode).collect(),
        };
        write_rotation(&self.home.join(ROTATION_FILE), &file)?;
        state.next = Some((next.clone(), next_digest));
        state.until = Some(until);
        state.rotation = Some(file);
        drop(state);
        if is_weak(next.expose()) {
            self.audit
                .emit(Event::new(EventKind::WeakToken, Plane::Control).detail(
                    serde_json::json!({"which": "next", "reason": weak_reason(next.expose())}),
                ));
        }
        tracing::info!(%until, "token rotation started: both tokens are accepted until the deadline");
        self.changed.notify_one();
        Ok(())
    }

    /// Makes the next token the only one if the deadline has passed. Returns whether this
    /// call finalized it; the events are emitted exactly once.
    pub fn finalize_if_due(&self) -> bool {
        self.deadline_passed() && self.finalize()
    }

    fn finalize(&self) -> bool {
        let now = self.clock.now();
        let Some((file, next)) = self.switch_to_next(Some(now)) else {
            // Already finalized by the timer or by a concurrent request.
            return false;
        };
        if let Some(file) = file {
            self.persist_finalized(&file, &next);
        }
        true
    }

    /// Makes the next token the current one and retires the old. Returns the rotation's
    /// record (stamped finalized at `at` when given) and the new token; `None` when no
    /// rotation is pending.
    fn switch_to_next(&self, at: Option<OffsetDateTime>) -> Option<(Option<RotationFile>, Secret)> {
        let mut state = self.write();
        let (next, next_digest) = state.next.take()?;
        let old = state.current_digest;
        if !state.retired.contains(&old) {
            state.retired.push(old);
        }
        state.current = next.clone();
        state.current_digest = next_digest;
        state.until = None;
        let retired: Vec<String> = state.retired.iter().map(hex::encode).collect();
        let file = state.rotation.as_mut().map(|r| {
            if let Some(at) = at {
                r.finalized_at = Some(at);
            }
            r.retired_sha256 = retired;
            r.clone()
        });
        Some((file, next))
    }

    fn persist_finalized(&self, file: &RotationFile, new_token: &Secret) {
        if let Err(err) = write_rotation(&self.home.join(ROTATION_FILE), file) {
            tracing::error!(%err, "cannot save the finished token rotation; after a restart the old token may be accepted again until the next token is configured");
        }
        if let Some(path) = &self.token_file
            && let Err(err) =
                write_atomic(path, format!("{}\n", new_token.expose()).as_bytes(), 0o600)
        {
            tracing::error!(%err, path = %path.display(), "cannot write the new token to the token file; local commands will fail with AUTH_FAIL until it is updated");
        }
        // No digest of the old token here: the log is readable by more people than the
        // token file, and a digest lets anyone test guesses of a weak token offline.
        let detail = serde_json::json!({ "reason": "rotation finalized" });
        self.audit
            .emit(Event::new(EventKind::TokenRetired, Plane::Control).detail(detail));
        self.audit.emit(
            Event::new(EventKind::TokenRotationFinalized, Plane::Control)
                .detail(serde_json::json!({ "finalized_at": file.finalized_at.map(fmt_time) })),
        );
        tracing::info!("token rotation finalized: only the new token is accepted now");
    }

    pub fn rotation_status(&self) -> RotationStatus {
        let state = self.read();
        RotationStatus {
            active: state.next.is_some(),
            until: state.until,
            finalized_at: state.rotation.as_ref().and_then(|r| r.finalized_at),
        }
    }

    fn report_weak_tokens(&self) {
        let state = self.read();
        let mut weak = Vec::new();
        if is_weak(state.current.expose()) {
            weak.push(("current", weak_reason(state.current.expose())));
        }
        if let Some((next, _)) = &state.next
            && is_weak(next.expose())
        {
            weak.push(("next", weak_reason(next.expose())));
        }
        drop(state);
        for (which, reason) in weak {
            tracing::warn!(
                which,
                reason,
                "WEAK_TOKEN: the hub token is easy to guess; set SHERATAN_HUB_TOKEN to a long random value (or unset it to have one generated)"
            );
            self.audit.emit(
                Event::new(EventKind::WeakToken, Plane::Control)
                    .detail(serde_json::json!({"which": which, "reason": reason})),
            );
        }
    }

    /// Finalizes the rotation when its deadline passes, whether or not requests arrive.
    pub async fn run_rotation_timer(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let until = self.read().until;
            let sleep = match until {
                Some(until) => {
                    let left = until - self.clock.now();
                    Duration::try_from(left).unwrap_or(Duration::ZERO)
                }
                None => Duration::from_secs(3600),
            };
            // Wake at least once a second: clock steps are noticed soon, and so is a rotation
            // another hub process on this home wrote to the shared state file.
            let sleep = sleep.min(Duration::from_secs(1));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(sleep) => {
                    self.reload_if_changed();
                    self.finalize_if_due();
                }
            }
        }
    }
}

/// Tokens travel in HTTP headers and live in a file read back with whitespace trimmed: only
/// visible ASCII (no spaces, no control characters) survives both unchanged.
pub fn validate_token(what: &str, token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Invalid(format!(
            "{what} is empty; unset it to use a generated token, or set a long random value"
        )));
    }
    if token.len() > 512 {
        return Err(TokenError::Invalid(format!(
            "{what} is longer than 512 bytes"
        )));
    }
    if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(TokenError::Invalid(format!(
            "{what} may contain only visible ASCII characters (no spaces or control characters)"
        )));
    }
    Ok(())
}

/// A weak token is refused unless the operator allowed it (`SHERATAN_ALLOW_WEAK_TOKEN=1`):
/// a 6-character token falls to a brute force in minutes, however the hub paces refusals.
pub fn check_strength(what: &str, token: &str, allow_weak: bool) -> Result<(), TokenError> {
    if allow_weak || !is_weak(token) {
        return Ok(());
    }
    Err(TokenError::Invalid(format!(
        "{what} is weak ({}): use a random value of at least {MIN_STRONG_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`), or unset SHERATAN_HUB_TOKEN to have one generated; SHERATAN_ALLOW_WEAK_TOKEN=1 accepts it anyway (then WEAK_TOKEN is logged)",
        weak_reason(token)
    )))
}

/// The literal default or shorter than [`MIN_STRONG_TOKEN_LEN`]: reported as `WEAK_TOKEN`.
pub fn is_weak(token: &str) -> bool {
    token == WEAK_DEFAULT_TOKEN || token.len() < MIN_STRONG_TOKEN_LEN
}

fn weak_reason(token: &str) -> &'static str {
    if token == WEAK_DEFAULT_TOKEN {
        "the well-known default token"
    } else {
        "shorter than 16 characters"
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// (modified time, length) of a file, to notice that another process rewrote it.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn hex_digest_bytes(hex_str: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_str).ok()?;
    bytes.try_into().ok()
}

fn read_or_generate(path: &Path) -> Result<Secret, TokenError> {
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
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            let dir = path.parent().unwrap_or_else(|| Path::new("."));
            fs::create_dir_all(dir).map_err(io_err)?;
            // Written whole under a temporary name, then linked into place only if no other
            // process created the file meanwhile: two hubs starting on one home agree.
            let tmp = dir.join(format!(".{TOKEN_FILE}.new-{}", std::process::id()));
            write_atomic(&tmp, format!("{token}\n").as_bytes(), 0o600).map_err(io_err)?;
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "generated a new hub token");
                    Ok(Secret::new(token))
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_or_generate(path),
                Err(err) => Err(io_err(err)),
            }
        }
        Err(err) => Err(io_err(err)),
    }
}

/// Reads the hub token the way every local command does: `SHERATAN_HUB_TOKEN` first, then
/// `$SHERATAN_HOME/hub_token`.
pub fn read_token_file(home: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(home.join(TOKEN_FILE))?.trim().to_owned())
}

fn read_rotation(path: &Path) -> Result<Option<RotationFile>, TokenError> {
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

fn write_rotation(path: &Path, file: &RotationFile) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec_pretty(file).expect("rotation state always serializes");
    write_atomic(path, &bytes, 0o600).map_err(|source| TokenError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use sheratan_store::ManualClock;

    use super::*;
    use crate::audit::AuditConfig;

    struct Fixture {
        dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        audit: AuditLog,
        _writer: crate::audit::AuditWriter,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            time::macros::datetime!(2026-11-27 08:00 UTC),
        ));
        let (audit, writer) =
            AuditLog::start(AuditConfig::new(dir.path().join("logs")), clock.clone()).unwrap();
        Fixture {
            dir,
            clock,
            audit,
            _writer: writer,
        }
    }

    fn config(token: &str) -> TokenConfig {
        TokenConfig {
            token: Some(Secret::new(token)),
            required: true,
            next: None,
            rotation_until: None,
            allow_weak: false,
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn generated_token_is_written_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let f = fixture();
        let mut cfg = config("x");
        cfg.token = None;
        let a = Tokens::load(cfg.clone(), f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        let b = Tokens::load(cfg, f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        assert_eq!(a.current(), b.current());
        assert_eq!(a.current().expose().len(), 64);
        let mode = fs::metadata(f.dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rotation_accepts_both_then_only_next_and_survives_restart() {
        let f = fixture();
        let old = "old-token-0123456789";
        let new = "new-token-0123456789";
        let t = Tokens::load(config(old), f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        t.start_rotation(Secret::new(new), f.clock.now() + time::Duration::minutes(5))
            .unwrap();
        assert_eq!(
            t.check(Some(old), IP, Plane::Control),
            Ok(Credential::Current)
        );
        assert_eq!(t.check(Some(new), IP, Plane::Control), Ok(Credential::Next));
        assert!(!t.finalize_if_due());
        f.clock.advance(time::Duration::minutes(5));
        assert!(t.finalize_if_due());
        assert!(!t.finalize_if_due(), "finalizes once");
        assert_eq!(
            t.check(Some(new), IP, Plane::Control),
            Ok(Credential::Current)
        );
        assert_eq!(
            t.check(Some(old), IP, Plane::Control),
            Err(AuthFailure::OldToken)
        );
        assert_eq!(
            t.check(Some("nope"), IP, Plane::Control),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(t.check(None, IP, Plane::Control), Err(AuthFailure::Missing));
        assert_eq!(t.failures_last_minute(), (1, 2));
        f.audit.flush();
        assert_eq!(f.audit.count(EventKind::TokenRetired), 1);
        assert_eq!(f.audit.count(EventKind::TokenRotationFinalized), 1);

        // A restart still configured with the old token keeps the outcome, without new events.
        let t2 = Tokens::load(config(old), f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        assert_eq!(
            t2.check(Some(new), IP, Plane::Control),
            Ok(Credential::Current)
        );
        assert_eq!(
            t2.check(Some(old), IP, Plane::Control),
            Err(AuthFailure::OldToken)
        );
        // And so does one configured with the new token.
        let t3 = Tokens::load(config(new), f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        assert_eq!(
            t3.check(Some(old), IP, Plane::Control),
            Err(AuthFailure::OldToken)
        );
        assert_eq!(f.audit.count(EventKind::TokenRotationFinalized), 1);
    }

    #[test]
    fn restart_mid_rotation_keeps_both_tokens() {
        let f = fixture();
        let t = Tokens::load(
            config("a-0123456789abcdef"),
            f.dir.path(),
            f.clock.clone(),
            f.audit.clone(),
        )
        .unwrap();
        t.start_rotation(
            Secret::new("b-0123456789abcdef"),
            f.clock.now() + time::Duration::hours(1),
        )
        .unwrap();
        drop(t);
        let t = Tokens::load(
            config("a-0123456789abcdef"),
            f.dir.path(),
            f.clock.clone(),
            f.audit.clone(),
        )
        .unwrap();
        assert_eq!(
            t.check(Some("b-0123456789abcdef"), IP, Plane::Data),
            Ok(Credential::Next)
        );
        assert!(t.rotation_status().active);
    }

    #[test]
    fn next_token_notices_are_rate_limited_per_source() {
        let f = fixture();
        let t = Tokens::load(
            config("a-0123456789abcdef"),
            f.dir.path(),
            f.clock.clone(),
            f.audit.clone(),
        )
        .unwrap();
        t.start_rotation(
            Secret::new("b-0123456789abcdef"),
            f.clock.now() + time::Duration::hours(1),
        )
        .unwrap();
        for _ in 0..100 {
            t.check(Some("b-0123456789abcdef"), IP, Plane::Control)
                .unwrap();
        }
        t.check(
            Some("b-0123456789abcdef"),
            "10.1.1.1".parse().unwrap(),
            Plane::Control,
        )
        .unwrap();
        assert_eq!(f.audit.count(EventKind::TokenAcceptedNext), 2);
    }

    #[test]
    fn weak_tokens_are_refused_unless_allowed_and_then_reported() {
        let f = fixture();
        for weak in [WEAK_DEFAULT_TOKEN, "abc", "fifteen-chars-x"] {
            let err = Tokens::load(config(weak), f.dir.path(), f.clock.clone(), f.audit.clone())
                .err()
                .expect("a weak token is refused");
            assert!(
                err.to_string().contains("SHERATAN_ALLOW_WEAK_TOKEN"),
                "{err}"
            );
        }
        let mut allowed = config(WEAK_DEFAULT_TOKEN);
        allowed.allow_weak = true;
        Tokens::load(allowed, f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        assert_eq!(f.audit.count(EventKind::WeakToken), 1);

        // A rotation saved while weak tokens were allowed is refused at a start without.
        let mut allowed = config("a-0123456789abcdef");
        allowed.allow_weak = true;
        let t = Tokens::load(allowed, f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        t.start_rotation(Secret::new("w"), f.clock.now() + time::Duration::hours(1))
            .unwrap();
        drop(t);
        let err = Tokens::load(
            config("a-0123456789abcdef"),
            f.dir.path(),
            f.clock.clone(),
            f.audit.clone(),
        )
        .err()
        .expect("the saved weak rotation is refused");
        assert!(err.to_string().contains("saved token rotation"), "{err}");
        std::fs::remove_file(f.dir.path().join(ROTATION_FILE)).unwrap();

        // A rotation to a weak next token is refused the same way.
        let t = Tokens::load(
            config("a-0123456789abcdef"),
            f.dir.path(),
            f.clock.clone(),
            f.audit.clone(),
        )
        .unwrap();
        let until = f.clock.now() + time::Duration::hours(1);
        assert!(t.start_rotation(Secret::new("x"), until).is_err());
        assert!(!t.rotation_status().active);
    }

    #[test]
    fn disabled_auth_accepts_anything() {
        let f = fixture();
        let mut cfg = config("a-0123456789abcdef");
        cfg.required = false;
        let t = Tokens::load(cfg, f.dir.path(), f.clock.clone(), f.audit.clone()).unwrap();
        assert_eq!(t.check(None, IP, Plane::Control), Ok(Credential::Unchecked));
    }

    #[test]
    fn rotation_needs_both_settings() {
        let f = fixture();
        let mut cfg = config("a-0123456789abcdef");
        cfg.next = Some(Secret::new("b-0123456789abcdef"));
        assert!(Tokens::load(cfg, f.dir.path(), f.clock.clone(), f.audit.clone()).is_err());
    }
}
