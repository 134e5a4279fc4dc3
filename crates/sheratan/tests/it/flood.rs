//! The flood: 50,000 requests with bad tokens and 50,000 malformed or oversized bodies against
//! a hub under normal load (`sheratan bench flood`, a real hub process). Every hostile request
//! gets the contract's refusal, no valid request fails, memory stays bounded, the audit log
//! stays small (folded) and the audit watcher raises the failed-auth alert. Latency under the
//! flood is reported by the bench (docs/RELIABILITY.md), not asserted here.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_flood_of_bad_tokens_and_bodies_is_refused_cheaply_and_alerts() {
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args([
            "bench",
            "flood",
            "--bad-tokens",
            "50000",
            "--malformed",
            "50000",
            "--baseline-s",
            "2",
            // Two flooding connections: the same requests, without starving the tests that
            // run beside this one.
            "--flooders",
            "2",
            "--json",
        ])
        .env("SHERATAN_LOG", "warn")
        .output()
        .expect("run sheratan bench flood");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bench failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    eprintln!("{r:#}");

    assert_eq!(r["valid_failures"], 0, "{r}");
    assert!(r["valid_requests"].as_u64().unwrap() > 100, "{r}");
    let b = &r["bad_token"];
    assert_eq!(b["other"], 0, "{r}");
    assert_eq!(
        b["s403"].as_u64().unwrap() + b["closed"].as_u64().unwrap(),
        50_000,
        "every bad token gets 403: {r}"
    );
    assert!(b["s403"].as_u64().unwrap() >= 49_000, "{r}");
    let m = &r["malformed"];
    assert_eq!(m["other"], 0, "{r}");
    assert_eq!(m["s400"], 49_500, "every malformed body gets 400: {r}");
    assert_eq!(
        m["s413"].as_u64().unwrap() + m["closed"].as_u64().unwrap(),
        500,
        "every oversized body gets 413, or its connection closed before the client read it: {r}"
    );

    // Whether the refusal pacer had to slow this flood depends on the build and the machine (a
    // debug build refuses fewer than 5,000 a second here); `control_auth.rs` tests the pacer.

    let growth = r["rss_max_bytes"]
        .as_u64()
        .unwrap()
        .saturating_sub(r["rss_before_bytes"].as_u64().unwrap());
    assert!(
        growth < 64 << 20,
        "memory stays bounded: grew {growth} bytes"
    );
    assert!(
        r["audit_log_bytes"].as_u64().unwrap() < 64 << 10,
        "100,000 refusals fold into a small audit log: {r}"
    );
    assert!(
        r["alerts"]["auth_fail_burst"].as_u64().unwrap_or(0) >= 1,
        "the failed-auth burst raises an alert: {r}"
    );
}

/// `bench flood --idle N`: one address holds its cap of idle connections (and reopens them
/// as the hub closes them at the header deadline) while another asks /health; no /health
/// fails, the cap holds exactly, and what goes beyond it is closed at once.
#[test]
fn one_address_holding_its_cap_of_idle_connections_starves_no_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args([
            "bench",
            "flood",
            "--idle",
            "64",
            "--baseline-s",
            "1",
            "--idle-s",
            "2",
            "--rate",
            "100",
            "--json",
        ])
        .env("SHERATAN_LOG", "warn")
        .env("SHERATAN_HEADER_TIMEOUT_MS", "1000")
        .output()
        .expect("run sheratan bench flood --idle");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bench failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    eprintln!("{r:#}");
    assert_eq!(r["health_failures"], 0, "{r}");
    assert!(r["health_requests"].as_u64().unwrap() >= 200, "{r}");
    assert_eq!(r["held"]["max_open"], 64, "{r}");
    assert_eq!(r["held"]["refused_beyond_cap"], 16, "{r}");
    // Held for 2 s past a 1 s deadline: the hub closed them at least once.
    assert!(
        r["held"]["closed_at_deadline"].as_u64().unwrap() >= 64,
        "{r}"
    );
    for phase in ["health_unloaded", "health_while_held"] {
        let p = &r[phase];
        let v: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "max_ms"]
            .iter()
            .map(|k| p[*k].as_f64().unwrap())
            .collect();
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{phase}: {p}");
    }
}
