//! The mesh token: where it comes from, how a request's credential is checked, and dual-token
//! rotation (docs/API.md, "Settings"; docs/API.md, "Control plane").
//!
//! [`Tokens`] is the authority every request asks: it holds the [`rotation::Rotation`] state
//! machine behind a lock and adds what the state machine leaves out: the clock, the files
//! under `$SHERATAN_HOME` ([`files`]), the audit events, failure counts and the timer that
//! finalizes a rotation at its deadline. What a token may be is [`policy`].
//!
//! Tokens are compared as SHA-256 digests with a constant-time equality, so neither the
//! content nor the length of the hub's token leaks through response timing. Rotation state is
//! persisted in `$SHERATAN_HOME/token_rotation.json` (mode 0600) so a restart in the middle of
//! a rotation, or after it, keeps its outcome even when the environment still names the old
//! token.

mod files;
mod policy;
mod rotation;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sheratan_proto::{EventKind, Plane};
use sheratan_store::Clock;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub use files::{ROTATION_FILE, TOKEN_FILE, read_token_file};
pub use policy::{
    MIN_STRONG_TOKEN_LEN, Secret, TokenError, WEAK_DEFAULT_TOKEN, check_strength, is_weak,
    validate_token,
};
pub use sheratan_proto::data::RotationStatus;

use crate::audit::{AuditLog, Event};
use crate::metrics::MinuteWindow;
use crate::persist::write_atomic;
use files::{RotationFile, file_stamp, read_or_generate, read_rotation, write_rotation};
use policy::weak_reason;
use rotation::{Applied, Match, Rotation};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Current,
    /// The rotation's next token, before the deadline.
    Next,
    /// Auth is disabled (`SHERATAN_HUB_TOKEN_REQUIRED=0`).
    Unchecked,
    /// A credential with a role and a name (`/admin/tokens`).
    Named(std::sync::Arc<sheratan_store::CredentialRecord>),
}

impl Credential {
    /// The named credential's record, if it is one.
    pub fn named(&self) -> Option<&sheratan_store::CredentialRecord> {
        match self {
            Credential::Named(record) => Some(record),
            _ => None,
        }
    }

    /// How audit lines name the credential: `"w-gpu-1 (node)"`, `"the mesh token"`.
    pub fn label(&self) -> String {
        match self {
            Credential::Named(r) => format!("{} ({})", r.name, r.role),
            Credential::Current | Credential::Next => "the mesh token".into(),
            Credential::Unchecked => "none (authentication is off)".into(),
        }
    }

    /// The node credential's name, if this is one.
    pub fn node_name(&self) -> Option<&str> {
        self.named()
            .filter(|r| r.role == sheratan_proto::credentials::CredentialRole::Node)
            .map(|r| r.name.as_str())
    }
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
    /// A credential revoked on the admin path.
    Revoked,
    /// A credential past its expiry.
    Expired,
    /// Credentials could not be re-read for a while: none is trusted until they are.
    Stale,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::OldToken => "old_token",
            AuthFailure::Conflicting => "conflicting",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Expired => "expired",
            AuthFailure::Stale => "credentials_stale",
        }
    }
}

/// The hub's token authority.
pub struct Tokens {
    required: bool,
    state: RwLock<Rotation>,
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
        let rotation_path = home.join(ROTATION_FILE);
        let tokens = Tokens {
            required: config.required,
            state: RwLock::new(Rotation::new(configured)),
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
        tokens.apply_configured_rotation(config.next, config.rotation_until)?;
        tokens.report_weak_tokens();
        if !tokens.required {
            tracing::warn!(
                "SHERATAN_HUB_TOKEN_REQUIRED=0: authentication is DISABLED; anyone who can reach the hub can control it"
            );
        }
        Ok(tokens)
    }

    /// `SHERATAN_HUB_TOKEN_NEXT` with `SHERATAN_HUB_TOKEN_ROTATION_UNTIL`: starts that
    /// rotation unless it is already the one running (or done).
    fn apply_configured_rotation(
        &self,
        next: Option<Secret>,
        until: Option<OffsetDateTime>,
    ) -> Result<(), TokenError> {
        match (next, until) {
            (Some(next), Some(until)) => {
                if !self.read().knows_token(&next) {
                    // A deadline already past means the operator wants the rotation done:
                    // finalize at once rather than refuse to start.
                    self.begin_rotation(next, until)?;
                    self.finalize_if_due();
                }
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err(TokenError::Invalid(
                "SHERATAN_HUB_TOKEN_NEXT and SHERATAN_HUB_TOKEN_ROTATION_UNTIL must be set together"
                    .into(),
            )),
        }
    }

    fn apply_saved(&self, saved: RotationFile) -> Result<(), TokenError> {
        // A rotation saved while weak tokens were allowed (or by another hub that allows them)
        // does not bring a weak token in through the back door.
        check_strength(
            "the saved token rotation's next token",
            &saved.next_token,
            self.allow_weak,
        )?;
        let now = self.clock.now();
        let applied = self.write().apply_saved(saved, now);
        match applied {
            Applied::Pending => self.changed.notify_one(),
            Applied::Due => {
                self.finalize();
            }
            Applied::Switched | Applied::AlreadyCurrent => {}
            Applied::Foreign => {
                tracing::warn!("the saved token rotation belongs to a different token; ignoring it")
            }
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
            Ok(Some(saved)) if !self.read().knows(&saved) => {
                tracing::info!("token rotation state changed on disk; applying it");
                if let Err(err) = self.apply_saved(saved) {
                    tracing::error!(%err, "ignoring the token rotation written on disk");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "cannot re-read the token rotation state"),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rotation> {
        self.state
            .read()
            .expect("token state lock is never poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rotation> {
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
        self.read().current().clone()
    }

    /// The current token and, while a rotation runs, the next one, read together (a
    /// finalization between two separate reads would pair the old token with no next one).
    pub fn current_and_next(&self) -> (Secret, Option<Secret>) {
        let state = self.read();
        (state.current().clone(), state.next().cloned())
    }

    /// The secret that matches `credential`, as the HMAC key of signed results.
    pub fn secret_for(&self, credential: &Credential) -> Secret {
        self.read().secret_for(credential).clone()
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
        let matched = self.read().matches(token);
        match matched {
            Match::Current => Ok(Credential::Current),
            Match::Next => {
                self.notice_next(remote, plane);
                Ok(Credential::Next)
            }
            Match::Retired => Err(self.fail(AuthFailure::OldToken)),
            Match::Unknown => Err(self.fail(AuthFailure::Invalid)),
        }
    }

    /// The run nonce of a `sheratan smoke` probe header (`X-Sheratan-Probe`), if the header
    /// was made with one of this hub's tokens within five minutes of now; `None` otherwise,
    /// so a request without the token cannot pass itself off as a probe.
    pub fn verify_probe(&self, value: &str) -> Option<String> {
        use hmac::{Hmac, Mac};
        let (claim, mac) = value.rsplit_once('.')?;
        let mut parts = claim.splitn(3, '.');
        let (kind, nonce, unix_s) = (parts.next()?, parts.next()?, parts.next()?);
        let fresh = unix_s
            .parse::<i64>()
            .is_ok_and(|t| self.clock.now().unix_timestamp().abs_diff(t) <= 300);
        let plain_nonce =
            (1..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric());
        if kind != "smoke" || !fresh || !plain_nonce {
            return None;
        }
        let mac = hex::decode(mac).ok()?;
        let (current, next) = self.current_and_next();
        let matches = |secret: &Secret| {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC takes keys of any length");
            m.update(claim.as_bytes());
            m.verify_slice(&mac).is_ok()
        };
        (matches(&current) || next.as_ref().is_some_and(matches)).then(|| nonce.to_owned())
    }

    /// A request that presented two different tokens: refused and counted as invalid.
    pub fn refuse_conflicting(&self) -> AuthFailure {
        self.fail(AuthFailure::Conflicting)
    }

    /// Whether `token` is the mesh token (current or next), without counting anything.
    pub fn is_mesh_token(&self, token: &str) -> bool {
        matches!(self.read().matches(token), Match::Current | Match::Next)
    }

    /// Counts a refusal decided elsewhere (a revoked or expired credential).
    pub fn refuse(&self, failure: AuthFailure) -> AuthFailure {
        self.fail(failure)
    }

    fn fail(&self, failure: AuthFailure) -> AuthFailure {
        match failure {
            AuthFailure::OldToken => self.failures_old.record(),
            AuthFailure::Missing
            | AuthFailure::Invalid
            | AuthFailure::Conflicting
            | AuthFailure::Revoked
            | AuthFailure::Expired
            | AuthFailure::Stale => self.failures_invalid.record(),
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
        self.read().deadline_passed(self.clock.now())
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
        let path = self.home.join(ROTATION_FILE);
        self.write()
            .begin(next.clone(), until, |file| write_rotation(&path, file))?;
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
        let Some(switched) = self.write().switch_to_next(Some(now)) else {
            // Already finalized by the timer or by a concurrent request.
            return false;
        };
        if let Some(record) = switched.record {
            self.persist_finalized(&record, &switched.new_token);
        }
        true
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
        self.read().status()
    }

    fn report_weak_tokens(&self) {
        let weak = self.read().weak();
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
            let sleep = match self.read().until() {
                Some(until) => {
                    Duration::try_from(until - self.clock.now()).unwrap_or(Duration::ZERO)
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

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use sheratan_store::ManualClock;

    use std::fs;

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

    impl Fixture {
        fn load(&self, config: TokenConfig) -> Result<Tokens, TokenError> {
            Tokens::load(
                config,
                self.dir.path(),
                self.clock.clone(),
                self.audit.clone(),
            )
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

    /// A probe header counts only when made with the token, recently; extreme or forged
    /// values are refused, never a panic.
    #[test]
    fn probe_headers_need_the_token_and_a_recent_time() {
        let f = fixture();
        let token = "probe-test-token-0123456789";
        let tokens = f.load(config(token)).unwrap();
        let now = f.clock.now().unix_timestamp();
        let header = |key: &str, t: i64| sheratan_client::probe_header(key, "run1", t);
        assert_eq!(
            tokens.verify_probe(&header(token, now)),
            Some("run1".into())
        );
        assert_eq!(
            tokens.verify_probe(&header(token, now - 290)),
            Some("run1".into())
        );
        assert_eq!(tokens.verify_probe(&header(token, now - 301)), None);
        assert_eq!(
            tokens.verify_probe(&header("another-token-0123456789", now)),
            None
        );
        for t in [i64::MIN, i64::MAX, -1] {
            assert_eq!(tokens.verify_probe(&header(token, t)), None);
        }
        for junk in ["", "smoke", "smoke.run1", "smoke.run1.x.zz", "x.run1.1.00"] {
            assert_eq!(tokens.verify_probe(junk), None, "{junk}");
        }
    }

    #[test]
    fn generated_token_is_written_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let f = fixture();
        let mut cfg = config("x");
        cfg.token = None;
        let a = f.load(cfg.clone()).unwrap();
        let b = f.load(cfg).unwrap();
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
        let t = f.load(config(old)).unwrap();
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
        let t2 = f.load(config(old)).unwrap();
        assert_eq!(
            t2.check(Some(new), IP, Plane::Control),
            Ok(Credential::Current)
        );
        assert_eq!(
            t2.check(Some(old), IP, Plane::Control),
            Err(AuthFailure::OldToken)
        );
        // And so does one configured with the new token.
        let t3 = f.load(config(new)).unwrap();
        assert_eq!(
            t3.check(Some(old), IP, Plane::Control),
            Err(AuthFailure::OldToken)
        );
        assert_eq!(f.audit.count(EventKind::TokenRotationFinalized), 1);
    }

    #[test]
    fn restart_mid_rotation_keeps_both_tokens() {
        let f = fixture();
        let t = f.load(config("a-0123456789abcdef")).unwrap();
        t.start_rotation(
            Secret::new("b-0123456789abcdef"),
            f.clock.now() + time::Duration::hours(1),
        )
        .unwrap();
        drop(t);
        let t = f.load(config("a-0123456789abcdef")).unwrap();
        assert_eq!(
            t.check(Some("b-0123456789abcdef"), IP, Plane::Data),
            Ok(Credential::Next)
        );
        assert!(t.rotation_status().active);
    }

    #[test]
    fn next_token_notices_are_rate_limited_per_source() {
        let f = fixture();
        let t = f.load(config("a-0123456789abcdef")).unwrap();
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
            let err = f.load(config(weak)).err().expect("a weak token is refused");
            assert!(
                err.to_string().contains("SHERATAN_ALLOW_WEAK_TOKEN"),
                "{err}"
            );
        }
        let mut allowed = config(WEAK_DEFAULT_TOKEN);
        allowed.allow_weak = true;
        f.load(allowed).unwrap();
        assert_eq!(f.audit.count(EventKind::WeakToken), 1);

        // A rotation saved while weak tokens were allowed is refused at a start without.
        let mut allowed = config("a-0123456789abcdef");
        allowed.allow_weak = true;
        let t = f.load(allowed).unwrap();
        t.start_rotation(Secret::new("w"), f.clock.now() + time::Duration::hours(1))
            .unwrap();
        drop(t);
        let err = f
            .load(config("a-0123456789abcdef"))
            .err()
            .expect("the saved weak rotation is refused");
        assert!(err.to_string().contains("saved token rotation"), "{err}");
        std::fs::remove_file(f.dir.path().join(ROTATION_FILE)).unwrap();

        // A rotation to a weak next token is refused the same way.
        let t = f.load(config("a-0123456789abcdef")).unwrap();
        let until = f.clock.now() + time::Duration::hours(1);
        assert!(t.start_rotation(Secret::new("x"), until).is_err());
        assert!(!t.rotation_status().active);
    }

    #[test]
    fn disabled_auth_accepts_anything() {
        let f = fixture();
        let mut cfg = config("a-0123456789abcdef");
        cfg.required = false;
        let t = f.load(cfg).unwrap();
        assert_eq!(t.check(None, IP, Plane::Control), Ok(Credential::Unchecked));
    }

    #[test]
    fn rotation_needs_both_settings() {
        let f = fixture();
        let mut cfg = config("a-0123456789abcdef");
        cfg.next = Some(Secret::new("b-0123456789abcdef"));
        assert!(f.load(cfg).is_err());
    }
}
