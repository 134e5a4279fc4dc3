//! Result signing: what `POST /v1/results` must carry (docs/API.md, "Data plane").

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The two headers of a signed result body: `X-Sheratan-Content-Sha256` (hex SHA-256 of the
/// raw body) and `X-Sheratan-Signature` (`sha256=` + hex HMAC-SHA256 keyed with `token`, the
/// token the request authenticates with).
pub fn sign_result(body: &[u8], token: &str) -> (String, String) {
    let key = signing_key(token);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    (
        hex::encode(Sha256::digest(body)),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
    )
}

/// What a credential's secret starts with (a mesh token may be anything else).
pub const CREDENTIAL_PREFIX: &str = "shtc_";

/// The key results are signed with when authenticating with `token`: the mesh token itself,
/// or for a credential (`shtc_…`) the lowercase hex of HKDF-SHA256(IKM = the secret, no salt,
/// info = `sheratan result signing v1`, 32 bytes), so the hub can check a node's results
/// without holding its secret, and one node's key signs no other node's results.
pub fn signing_key(token: &str) -> String {
    if !token.starts_with(CREDENTIAL_PREFIX) {
        return token.to_owned();
    }
    // HKDF-Extract with no salt (a salt of zeros), then one block of HKDF-Expand (RFC 5869).
    let mut extract = Hmac::<Sha256>::new_from_slice(&[0u8; 32]).expect("any key length");
    extract.update(token.as_bytes());
    let prk = extract.finalize().into_bytes();
    let mut expand = Hmac::<Sha256>::new_from_slice(&prk).expect("any key length");
    expand.update(b"sheratan result signing v1");
    expand.update(&[1]);
    hex::encode(expand.finalize().into_bytes())
}

/// The `X-Sheratan-Probe` value of a `sheratan smoke` run (see
/// `sheratan_proto::headers::PROBE`): `nonce` names the run, `unix_s` is now.
pub fn probe_header(token: &str, nonce: &str, unix_s: i64) -> String {
    let claim = format!("smoke.{nonce}.{unix_s}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(claim.as_bytes());
    format!("{claim}.{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869 test case 3 (no salt, no info) checks the HKDF steps; the key of a mesh token
    /// is the token.
    #[test]
    fn credential_signing_keys_are_hkdf_and_mesh_tokens_sign_as_themselves() {
        assert_eq!(signing_key("a-mesh-token"), "a-mesh-token");
        let key = signing_key("shtc_0123");
        assert_eq!(key.len(), 64);
        assert_ne!(key, signing_key("shtc_0124"));
        // The same two steps as above, on RFC 5869's case 3 (IKM 22 × 0x0b, no salt, no info).
        let mut extract = Hmac::<Sha256>::new_from_slice(&[0u8; 32]).unwrap();
        extract.update(&[0x0b; 22]);
        let prk = extract.finalize().into_bytes();
        assert_eq!(
            hex::encode(prk),
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
        );
        let mut expand = Hmac::<Sha256>::new_from_slice(&prk).unwrap();
        expand.update(&[1]);
        assert!(
            hex::encode(expand.finalize().into_bytes())
                .starts_with("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d")
        );
    }
}
