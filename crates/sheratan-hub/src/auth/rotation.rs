//! Dual-token rotation as a state machine without I/O: which tokens are accepted, how a
//! rotation begins (its record is persisted before anything changes), how it switches to the
//! next token, and how a saved record is applied at start-up or when another hub process on
//! the same home wrote one. The caller ([`super::Tokens`]) owns the lock, the clock, the files
//! and the audit events.

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::files::RotationFile;
use super::policy::{Secret, TokenError, digest, is_weak, weak_reason};
use super::{Credential, RotationStatus};

/// Which of the known tokens a presented one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    Current,
    Next,
    /// Retired by an earlier rotation: refused as `old_token`, not `invalid`.
    Retired,
    Unknown,
}

/// What applying a saved record did, and what the caller still has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A rotation from the current token is running: wake the finalization timer.
    Pending,
    /// A rotation from the current token whose deadline has passed: finalize it now (with
    /// its events and files).
    Due,
    /// The record says the rotation was finalized (before a restart, or by another
    /// process): switched to the next token without events.
    Switched,
    /// The configured token is the record's next token: the operator already switched; the
    /// record's old token counts as retired.
    AlreadyCurrent,
    /// The record starts from a token this hub does not know: ignored.
    Foreign,
}

/// A finished switch: the record to save (when a rotation was recorded) and the new token.
pub(crate) struct Switched {
    pub record: Option<RotationFile>,
    pub new_token: Secret,
}

pub(crate) struct Rotation {
    current: Secret,
    current_digest: [u8; 32],
    next: Option<(Secret, [u8; 32])>,
    until: Option<OffsetDateTime>,
    /// Digests of tokens retired by rotations, to tell `old_token` from `invalid`.
    retired: Vec<[u8; 32]>,
    /// The rotation's persisted form, rewritten when it finalizes.
    record: Option<RotationFile>,
}

impl Rotation {
    pub fn new(current: Secret) -> Rotation {
        Rotation {
            current_digest: current.digest(),
            current,
            next: None,
            until: None,
            retired: Vec::new(),
            record: None,
        }
    }

    pub fn current(&self) -> &Secret {
        &self.current
    }

    pub fn next(&self) -> Option<&Secret> {
        self.next.as_ref().map(|(next, _)| next)
    }

    pub fn until(&self) -> Option<OffsetDateTime> {
        self.until
    }

    pub fn deadline_passed(&self, now: OffsetDateTime) -> bool {
        self.until.is_some_and(|until| now >= until)
    }

    /// The secret that matches `credential`, as the HMAC key of signed results.
    pub fn secret_for(&self, credential: &Credential) -> &Secret {
        match (credential, &self.next) {
            (Credential::Next, Some((next, _))) => next,
            _ => &self.current,
        }
    }

    /// Whether `token` is already the current or the next token (configuring the same
    /// rotation again is not a new rotation).
    pub fn knows_token(&self, token: &Secret) -> bool {
        let d = token.digest();
        d == self.current_digest || self.next.as_ref().is_some_and(|(_, n)| *n == d)
    }

    pub fn matches(&self, token: &str) -> Match {
        let d = digest(token);
        // Every comparison runs, so which token matched does not show in the time.
        let current = bool::from(d.ct_eq(&self.current_digest));
        let next = self
            .next
            .as_ref()
            .is_some_and(|(_, next)| bool::from(d.ct_eq(next)));
        let retired = self
            .retired
            .iter()
            .fold(false, |any, r| any | bool::from(d.ct_eq(r)));
        if current {
            Match::Current
        } else if next {
            Match::Next
        } else if retired {
            Match::Retired
        } else {
            Match::Unknown
        }
    }

    /// Starts (or replaces an unfinished) rotation to `next`. `persist` saves the record
    /// first: when it fails nothing changes, so a restart never forgets an accepted token.
    pub fn begin(
        &mut self,
        next: Secret,
        until: OffsetDateTime,
        persist: impl FnOnce(&RotationFile) -> Result<(), TokenError>,
    ) -> Result<(), TokenError> {
        let next_digest = next.digest();
        if next_digest == self.current_digest {
            return Err(TokenError::Invalid(
                "the next token equals the current token".into(),
            ));
        }
        let record = RotationFile {
            from_sha256: hex::encode(self.current_digest),
            next_token: next.expose().to_owned(),
            until,
            finalized_at: None,
            retired_sha256: self.retired.iter().map(hex::encode).collect(),
        };
        persist(&record)?;
        self.next = Some((next, next_digest));
        self.until = Some(until);
        self.record = Some(record);
        Ok(())
    }

    /// Makes the next token the current one and retires the old, stamping the record
    /// finalized `at` when given. `None` when no rotation is pending (already switched).
    pub fn switch_to_next(&mut self, at: Option<OffsetDateTime>) -> Option<Switched> {
        let (next, next_digest) = self.next.take()?;
        let old = self.current_digest;
        self.current = next.clone();
        self.current_digest = next_digest;
        self.retire(old);
        self.until = None;
        let retired: Vec<String> = self.retired.iter().map(hex::encode).collect();
        let record = self.record.as_mut().map(|r| {
            if at.is_some() {
                r.finalized_at = at;
            }
            r.retired_sha256 = retired;
            r.clone()
        });
        Some(Switched {
            record,
            new_token: next,
        })
    }

    /// Applies a saved record: the current token may be its old token (the rotation is
    /// pending or finished), its new token (the operator already switched), or neither.
    pub fn apply_saved(&mut self, saved: RotationFile, now: OffsetDateTime) -> Applied {
        let from = hex_digest_bytes(&saved.from_sha256);
        let next = Secret::new(saved.next_token.clone());
        let next_digest = next.digest();
        for retired in saved
            .retired_sha256
            .iter()
            .filter_map(|h| hex_digest_bytes(h))
        {
            self.retire(retired);
        }
        if from == Some(self.current_digest) {
            let finalized_elsewhere = saved.finalized_at.is_some();
            let due = finalized_elsewhere || now >= saved.until;
            self.next = Some((next, next_digest));
            self.until = Some(saved.until);
            self.record = Some(saved);
            if finalized_elsewhere {
                self.switch_to_next(None);
                Applied::Switched
            } else if due {
                Applied::Due
            } else {
                Applied::Pending
            }
        } else if next_digest == self.current_digest {
            if let Some(from) = from {
                self.retire(from);
            }
            self.record = Some(saved);
            Applied::AlreadyCurrent
        } else {
            Applied::Foreign
        }
    }

    /// Whether `saved` is the record this state already reflects (same rotation, same
    /// finalized-or-not), so re-reading an unchanged file does nothing.
    pub fn knows(&self, saved: &RotationFile) -> bool {
        self.record.as_ref().is_some_and(|r| {
            r.from_sha256 == saved.from_sha256
                && r.next_token == saved.next_token
                && r.until == saved.until
                && r.finalized_at.is_some() == saved.finalized_at.is_some()
        })
    }

    /// The weak tokens in use: (`current` or `next`, why it is weak).
    pub fn weak(&self) -> Vec<(&'static str, &'static str)> {
        let mut weak = Vec::new();
        if is_weak(self.current.expose()) {
            weak.push(("current", weak_reason(self.current.expose())));
        }
        if let Some(next) = self.next()
            && is_weak(next.expose())
        {
            weak.push(("next", weak_reason(next.expose())));
        }
        weak
    }

    pub fn status(&self) -> RotationStatus {
        RotationStatus {
            active: self.next.is_some(),
            until: self.until,
            finalized_at: self.record.as_ref().and_then(|r| r.finalized_at),
        }
    }

    /// Retired digests never include the current token (a rotation back to an old token
    /// makes it current again).
    fn retire(&mut self, d: [u8; 32]) {
        if d != self.current_digest && !self.retired.contains(&d) {
            self.retired.push(d);
        }
    }
}

fn hex_digest_bytes(hex_str: &str) -> Option<[u8; 32]> {
    hex::decode(hex_str).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;

    const A: &str = "token-a-0123456789";
    const B: &str = "token-b-0123456789";
    const C: &str = "token-c-0123456789";
    const NOW: OffsetDateTime = datetime!(2026-11-27 08:00 UTC);

    fn saved(from: &str, next: &str, until: OffsetDateTime) -> RotationFile {
        RotationFile {
            from_sha256: hex::encode(digest(from)),
            next_token: next.into(),
            until,
            finalized_at: None,
            retired_sha256: vec![],
        }
    }

    fn rotating(from: &str, to: &str) -> Rotation {
        let mut r = Rotation::new(Secret::new(from));
        r.begin(Secret::new(to), NOW + Duration::hours(1), |_| Ok(()))
            .unwrap();
        r
    }

    #[test]
    fn without_a_rotation_only_the_current_token_matches() {
        let r = Rotation::new(Secret::new(A));
        assert_eq!(r.matches(A), Match::Current);
        assert_eq!(r.matches(B), Match::Unknown);
        assert_eq!(r.matches(""), Match::Unknown);
        assert!(!r.status().active);
        assert!(!r.deadline_passed(NOW + Duration::days(999)));
        assert!(
            Rotation::new(Secret::new(A))
                .switch_to_next(Some(NOW))
                .is_none()
        );
    }

    #[test]
    fn begin_persists_its_record_before_anything_changes() {
        let mut r = Rotation::new(Secret::new(A));
        let until = NOW + Duration::hours(1);
        let failed = r.begin(Secret::new(B), until, |_| {
            Err(TokenError::Invalid("disk full".into()))
        });
        assert!(failed.is_err());
        assert_eq!(
            r.matches(B),
            Match::Unknown,
            "a failed save changes nothing"
        );
        assert!(!r.status().active);

        let mut written = None;
        r.begin(Secret::new(B), until, |file| {
            written = Some(file.clone());
            Ok(())
        })
        .unwrap();
        let written = written.unwrap();
        assert_eq!(written.from_sha256, hex::encode(digest(A)));
        assert_eq!(written.next_token, B);
        assert_eq!(written.until, until);
        assert!(r.knows(&written));
        assert_eq!(r.matches(A), Match::Current);
        assert_eq!(r.matches(B), Match::Next);
        assert_eq!(r.status().until, Some(until));
        assert!(!r.deadline_passed(NOW));
        assert!(r.deadline_passed(until));
    }

    #[test]
    fn begin_refuses_the_current_token_and_replaces_an_unfinished_rotation() {
        let mut r = rotating(A, B);
        let same = r.begin(Secret::new(A), NOW + Duration::hours(1), |_| Ok(()));
        assert!(same.is_err());
        r.begin(Secret::new(C), NOW + Duration::hours(2), |_| Ok(()))
            .unwrap();
        assert_eq!(r.matches(C), Match::Next);
        assert_eq!(
            r.matches(B),
            Match::Unknown,
            "the replaced next token is gone"
        );
        assert!(r.knows_token(&Secret::new(C)) && r.knows_token(&Secret::new(A)));
    }

    #[test]
    fn switching_retires_the_old_token_and_happens_once() {
        let mut r = rotating(A, B);
        let switched = r.switch_to_next(Some(NOW)).expect("a rotation was pending");
        assert_eq!(switched.new_token.expose(), B);
        let record = switched.record.unwrap();
        assert_eq!(record.finalized_at, Some(NOW));
        assert_eq!(record.retired_sha256, vec![hex::encode(digest(A))]);
        assert_eq!(r.matches(B), Match::Current);
        assert_eq!(r.matches(A), Match::Retired);
        assert_eq!(r.secret_for(&Credential::Next).expose(), B);
        assert!(r.switch_to_next(Some(NOW)).is_none(), "finalizes once");
        let status = r.status();
        assert!(!status.active);
        assert_eq!(status.finalized_at, Some(NOW));
    }

    #[test]
    fn retired_tokens_accumulate_over_rotations_and_a_token_can_come_back() {
        let mut r = rotating(A, B);
        r.switch_to_next(Some(NOW));
        r.begin(Secret::new(C), NOW + Duration::hours(1), |file| {
            assert_eq!(file.retired_sha256, vec![hex::encode(digest(A))]);
            Ok(())
        })
        .unwrap();
        r.switch_to_next(Some(NOW));
        assert_eq!(r.matches(A), Match::Retired);
        assert_eq!(r.matches(B), Match::Retired);
        r.begin(Secret::new(A), NOW + Duration::hours(1), |_| Ok(()))
            .unwrap();
        r.switch_to_next(Some(NOW));
        assert_eq!(r.matches(A), Match::Current, "current beats retired");
    }

    #[test]
    fn secret_for_next_is_the_next_token_only_while_rotating() {
        let r = rotating(A, B);
        assert_eq!(r.secret_for(&Credential::Next).expose(), B);
        assert_eq!(r.secret_for(&Credential::Current).expose(), A);
        assert_eq!(r.secret_for(&Credential::Unchecked).expose(), A);
        let idle = Rotation::new(Secret::new(A));
        assert_eq!(idle.secret_for(&Credential::Next).expose(), A);
    }

    #[test]
    fn a_saved_running_rotation_is_pending() {
        let mut r = Rotation::new(Secret::new(A));
        let file = saved(A, B, NOW + Duration::hours(1));
        assert_eq!(r.apply_saved(file.clone(), NOW), Applied::Pending);
        assert_eq!(r.matches(B), Match::Next);
        assert!(r.knows(&file));
    }

    #[test]
    fn a_saved_rotation_past_its_deadline_is_due() {
        let mut r = Rotation::new(Secret::new(A));
        let until = NOW - Duration::minutes(1);
        assert_eq!(r.apply_saved(saved(A, B, until), NOW), Applied::Due);
        assert!(r.deadline_passed(NOW));
        assert_eq!(r.matches(B), Match::Next, "the caller finalizes");
    }

    #[test]
    fn a_saved_finalized_rotation_switches_without_a_new_stamp() {
        let mut r = Rotation::new(Secret::new(A));
        let mut file = saved(A, B, NOW + Duration::hours(1));
        let earlier = NOW - Duration::hours(3);
        file.finalized_at = Some(earlier);
        assert_eq!(r.apply_saved(file.clone(), NOW), Applied::Switched);
        assert_eq!(r.matches(B), Match::Current);
        assert_eq!(r.matches(A), Match::Retired);
        assert_eq!(r.status().finalized_at, Some(earlier));
        assert!(r.knows(&file));
    }

    #[test]
    fn a_saved_rotation_to_the_configured_token_retires_its_old_token() {
        let mut r = Rotation::new(Secret::new(B));
        let mut file = saved(A, B, NOW - Duration::hours(1));
        file.retired_sha256 = vec![hex::encode(digest(C)), "not hex".into()];
        assert_eq!(r.apply_saved(file, NOW), Applied::AlreadyCurrent);
        assert_eq!(r.matches(B), Match::Current);
        assert_eq!(r.matches(A), Match::Retired);
        assert_eq!(r.matches(C), Match::Retired);
        assert!(!r.status().active);
    }

    #[test]
    fn a_saved_rotation_of_other_tokens_is_foreign() {
        let mut r = Rotation::new(Secret::new(C));
        assert_eq!(
            r.apply_saved(saved(A, B, NOW + Duration::hours(1)), NOW),
            Applied::Foreign
        );
        assert_eq!(r.matches(A), Match::Unknown);
        assert_eq!(r.matches(B), Match::Unknown);
        assert!(!r.status().active);
    }

    #[test]
    fn knows_tells_a_finalization_elsewhere_apart() {
        let r = rotating(A, B);
        let mut file = r.record.clone().unwrap();
        assert!(r.knows(&file));
        file.finalized_at = Some(NOW);
        assert!(!r.knows(&file), "finalized on disk is news");
        assert!(!Rotation::new(Secret::new(A)).knows(&file));
    }

    #[test]
    fn weak_lists_current_and_next() {
        let mut r = Rotation::new(Secret::new("shared-secret"));
        r.begin(Secret::new("short"), NOW + Duration::hours(1), |_| Ok(()))
            .unwrap();
        let weak = r.weak();
        assert_eq!(weak.len(), 2);
        assert_eq!(weak[0].0, "current");
        assert_eq!(weak[1], ("next", "shorter than 16 characters"));
        assert!(rotating(A, B).weak().is_empty());
    }
}
