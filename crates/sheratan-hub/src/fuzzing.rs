//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and of their regression
//! tests (`crates/sheratan-hub/tests/fuzz_regressions.rs`, stable): each takes arbitrary bytes
//! and must never panic; where there is a property to hold, it asserts it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sheratan_proto::control::HeartbeatRequest;
use sheratan_proto::data::{
    AckRequest, ExtendRequest, LeaseRequest, ResultRequest, SubmitBatch, SubmitJob,
};
use sheratan_store::jobs::{JobDefaults, JobSpec, request_hash};

use crate::auth::Secret;
use crate::http::extract::parse_json;
use crate::job_service::verify_result;

/// Decodes `bytes` as every request body the hub accepts, the way its handlers do, and
/// validates what decodes (a job into a `JobSpec`, ids and names).
pub fn decode_requests(bytes: &[u8]) {
    let now = time::OffsetDateTime::UNIX_EPOCH;
    if let Ok(job) = parse_json::<SubmitJob>(bytes) {
        let _ = JobSpec::from_wire(job, JobDefaults::default(), now);
    }
    if let Ok(batch) = parse_json::<SubmitBatch>(bytes) {
        for job in batch.jobs {
            let _ = JobSpec::from_wire(job, JobDefaults::default(), now);
        }
    }
    if let Ok(lease) = parse_json::<LeaseRequest>(bytes) {
        let _ = sheratan_proto::ids::validate_node_id(&lease.node_id);
        for q in &lease.queues {
            let _ = sheratan_proto::data::validate_queue(q);
        }
    }
    let _ = parse_json::<ResultRequest>(bytes);
    let _ = parse_json::<ExtendRequest>(bytes);
    let _ = parse_json::<AckRequest>(bytes);
    if let Ok(beat) = parse_json::<HeartbeatRequest>(bytes) {
        let _ = sheratan_proto::ids::validate_node_id(&beat.node_id);
    }
}

/// The idempotency hash is canonical: a payload printed and parsed again (any key order,
/// any whitespace serde_json accepts) hashes the same.
pub fn canonical_json(bytes: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    // Bodies with the reserved key are refused with 400 before anything hashes them.
    if sheratan_proto::json::has_reserved_key(bytes) {
        assert!(
            crate::http::extract::parse_json::<serde_json::Value>(bytes).is_err(),
            "a body with the reserved key is refused"
        );
        return;
    }
    let hash = request_hash("q", "k", &value);
    let compact: serde_json::Value =
        serde_json::from_str(&value.to_string()).expect("printed JSON parses");
    assert_eq!(hash, request_hash("q", "k", &compact), "compact form");
    let pretty: serde_json::Value =
        serde_json::from_str(&serde_json::to_string_pretty(&value).expect("a value prints"))
            .expect("pretty JSON parses");
    assert_eq!(hash, request_hash("q", "k", &pretty), "pretty form");
}

/// The result signature check: arbitrary headers never panic it, and a body signed the way
/// executors sign it always passes, with its hash and signature as sent.
pub fn signature_check(bytes: &[u8]) {
    // The first byte splits the input into a key and a body; the rest of the key doubles as
    // arbitrary header text.
    let Some((&n, rest)) = bytes.split_first() else {
        return;
    };
    let (key, body) = rest.split_at(usize::from(n).min(rest.len()));
    let key = String::from_utf8_lossy(key).into_owned();
    let garbage = key.as_str();
    let secret = Secret::new(key.clone());
    let _ = verify_result(Some(garbage), Some(garbage), body, Some(&secret));
    let _ = verify_result(None, Some(garbage), body, Some(&secret));
    let _ = verify_result(Some(garbage), None, body, None);

    let hash = hex::encode(Sha256::digest(body));
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        verify_result(Some(&hash), Some(&signature), body, Some(&secret)),
        Ok(()),
        "a correctly signed body passes"
    );
    if !body.is_empty() {
        let mut tampered = body.to_vec();
        tampered[0] ^= 1;
        assert!(
            verify_result(Some(&hash), Some(&signature), &tampered, Some(&secret)).is_err(),
            "a tampered body fails"
        );
    }
}
