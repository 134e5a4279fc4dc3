//! Result signing: what `POST /v1/results` must carry (docs/API.md, "Data plane").

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The two headers of a signed result body: `X-Sheratan-Content-Sha256` (hex SHA-256 of the
/// raw body) and `X-Sheratan-Signature` (`sha256=` + hex HMAC-SHA256 keyed with `token`, the
/// token the request authenticates with).
pub fn sign_result(body: &[u8], token: &str) -> (String, String) {
    sign_with_key(body, &signing_key(token))
}

/// [`sign_result`] with the key already derived from the token ([`signing_key`]): a worker
/// stream derives it once per connection, not per result.
pub fn sign_with_key(body: &[u8], key: &str) -> (String, String) {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    (
        hex::encode(Sha256::digest(body)),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
    )
}

pub use sheratan_sign::{CREDENTIAL_PREFIX, signing_key};

/// The `X-Sheratan-Probe` value of a `sheratan smoke` run (see
/// `sheratan_proto::headers::PROBE`): `nonce` names the run, `unix_s` is now.
pub fn probe_header(token: &str, nonce: &str, unix_s: i64) -> String {
    let claim = format!("smoke.{nonce}.{unix_s}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(claim.as_bytes());
    format!("{claim}.{}", hex::encode(mac.finalize().into_bytes()))
}
