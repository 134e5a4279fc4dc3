//! The keys a credential derives, and execute grants (docs/API.md, "Result signing" and
//! "Execute grants"): what the hub, the nodes and the hosts must compute alike, in one place.
//! No I/O; any language can implement the same from the docs.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a credential's secret starts with (a mesh token may be anything else).
pub const CREDENTIAL_PREFIX: &str = "shtc_";

/// What an execute grant starts with (its version included).
pub const GRANT_PREFIX: &str = "shtg1.";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The key results are signed with when authenticating with `token`: the mesh token itself,
/// or for a credential (`shtc_…`) the lowercase hex of HKDF-SHA256(IKM = the secret, no salt,
/// info = `sheratan result signing v1`, 32 bytes), so the hub can check a node's results
/// without holding its secret, and one node's key signs no other node's results.
pub fn signing_key(token: &str) -> String {
    if !token.starts_with(CREDENTIAL_PREFIX) {
        return token.to_owned();
    }
    // HKDF-Extract with no salt (a salt of zeros), then one block of HKDF-Expand (RFC 5869).
    let prk = hmac(&[0u8; 32], &[token.as_bytes()]);
    hex::encode(hmac(&prk, &[b"sheratan result signing v1", &[1]]))
}

/// The key a host checks execute grants with, from its signing key: lowercase hex of
/// HMAC-SHA256(key = the signing key's hex text, `sheratan execute grant v1`). The hub, which
/// keeps every node credential's signing key, can mint grants; nobody else can.
pub fn grant_key(signing_key: &str) -> String {
    hex::encode(hmac(
        signing_key.as_bytes(),
        &[b"sheratan execute grant v1"],
    ))
}

/// An execute grant for `host` to run `job_id` until `expires_unix_s`:
/// `shtg1.<job_id>.<expires_unix_s>.<hex HMAC-SHA256(grant key, "<host>\n<job_id>\n<expires_unix_s>")>`.
pub fn mint_grant(grant_key: &str, host: &str, job_id: &str, expires_unix_s: i64) -> String {
    let mac = grant_mac(grant_key, host, job_id, expires_unix_s).finalize();
    format!(
        "{GRANT_PREFIX}{job_id}.{expires_unix_s}.{}",
        hex::encode(mac.into_bytes())
    )
}

fn grant_mac(grant_key: &str, host: &str, job_id: &str, expires_unix_s: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(grant_key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{host}\n{job_id}\n{expires_unix_s}").as_bytes());
    mac
}

/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRefusal {
    /// Not of the grant's form.
    Malformed,
    /// Not made for this host (or altered).
    BadSignature,
    Expired,
}

impl GrantRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            GrantRefusal::Malformed => "malformed execute grant",
            GrantRefusal::BadSignature => "execute grant not signed for this host",
            GrantRefusal::Expired => "expired execute grant",
        }
    }
}

/// Checks a grant presented to `host` (whose grant key is `grant_key`) at `now_unix_s`;
/// the job it grants. Constant-time in the signature.
pub fn verify_grant(
    grant_key: &str,
    host: &str,
    grant: &str,
    now_unix_s: i64,
) -> Result<String, GrantRefusal> {
    let rest = grant
        .strip_prefix(GRANT_PREFIX)
        .ok_or(GrantRefusal::Malformed)?;
    let mut parts = rest.rsplitn(3, '.');
    let (Some(sig), Some(expires), Some(job_id)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(GrantRefusal::Malformed);
    };
    let expires: i64 = expires.parse().map_err(|_| GrantRefusal::Malformed)?;
    let sig = hex::decode(sig).map_err(|_| GrantRefusal::Malformed)?;
    grant_mac(grant_key, host, job_id, expires)
        .verify_slice(&sig)
        .map_err(|_| GrantRefusal::BadSignature)?;
    if now_unix_s >= expires {
        return Err(GrantRefusal::Expired);
    }
    Ok(job_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "shtc_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_grant_opens_one_job_on_one_host_until_it_expires() {
        let key = grant_key(&signing_key(SECRET));
        let grant = mint_grant(&key, "h1", "job-1", 1_000);
        assert_eq!(verify_grant(&key, "h1", &grant, 999), Ok("job-1".into()));
        assert_eq!(
            verify_grant(&key, "h1", &grant, 1_000),
            Err(GrantRefusal::Expired)
        );
        // Another host, another host's key, a changed job, a moved expiry: refused.
        assert_eq!(
            verify_grant(&key, "h2", &grant, 0),
            Err(GrantRefusal::BadSignature)
        );
        let other = grant_key(&signing_key(&SECRET.replace("00", "01")));
        assert_eq!(
            verify_grant(&other, "h1", &grant, 0),
            Err(GrantRefusal::BadSignature)
        );
        for forged in [
            grant.replace("job-1", "job-2"),
            grant.replace(".1000.", ".9000."),
        ] {
            assert_eq!(
                verify_grant(&key, "h1", &forged, 0),
                Err(GrantRefusal::BadSignature)
            );
        }
        for junk in [
            "",
            "shtg1.",
            "shtg1.a.b",
            "shtg1.j.x.00",
            "shtg1.j.1.zz",
            SECRET,
        ] {
            assert_eq!(
                verify_grant(&key, "h1", junk, 0),
                Err(GrantRefusal::Malformed),
                "{junk}"
            );
        }
    }

    /// RFC 5869 test case 3 (no salt, no info) checks the HKDF steps; the key of a mesh token
    /// is the token.
    #[test]
    fn credential_signing_keys_are_hkdf_and_mesh_tokens_sign_as_themselves() {
        assert_eq!(signing_key("a-mesh-token"), "a-mesh-token");
        let key = signing_key("shtc_0123");
        assert_eq!(key.len(), 64);
        assert_ne!(key, signing_key("shtc_0124"));
        assert_ne!(grant_key(&key), key);
        // The same two steps as `signing_key`, on RFC 5869's case 3 (IKM 22 × 0x0b).
        let prk = hmac(&[0u8; 32], &[&[0x0b; 22]]);
        assert_eq!(
            hex::encode(prk),
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
        );
        assert!(
            hex::encode(hmac(&prk, &[&[1]]))
                .starts_with("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d")
        );
    }
}
