//! `sheratan bench`: every workload runs end to end, on a hub it starts in a temp dir and
//! against a running hub, and prints JSON that holds together (ordered percentiles, counts that
//! add up, the hub's RSS). The figures themselves are reported in docs/PERFORMANCE.md, not
//! asserted here.

use std::process::Command;

use serde_json::Value;

use crate::common::*;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("SHERATAN_LOG", "warn")
        .env_remove("SHERATAN_HUB_TOKEN")
        .output()
        .expect("run sheratan bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bench {args:?} printed no JSON ({e}): {stdout}"));
    eprintln!("bench {args:?}: {report}");
    report
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// p50 ≤ p90 ≤ p99 ≤ max, all non-negative, under the given keys.
fn assert_ordered(v: &Value, keys: [&str; 4]) {
    let values: Vec<f64> = keys.iter().map(|k| f(v, &[k])).collect();
    assert!(values[0] >= 0.0, "{v}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "{keys:?} out of order in {v}"
    );
}

const PCT: [&str; 4] = ["p50_ms", "p90_ms", "p99_ms", "max_ms"];

#[test]
fn every_workload_runs_on_a_hub_of_its_own() {
    let jobs = bench(&[
        "jobs",
        "--n",
        "1000",
        "--warmup",
        "100",
        "--paced-n",
        "100",
        "--rate",
        "500",
    ]);
    for key in [
        "enqueue_jps",
        "enqueue_bulk100_jps",
        "drain_jps",
        "concurrent_jps",
    ] {
        assert!(f(&jobs, &[key]) > 0.0, "{key}: {jobs}");
    }
    assert_ordered(&jobs["concurrent_lat_ms"], ["p50", "p90", "p99", "max"]);
    assert_ordered(&jobs["paced"], PCT);
    assert_eq!(jobs["paced"]["n"], 100);
    assert!(f(&jobs, &["hub_rss_end_bytes"]) > 1e6, "{jobs}");

    // With a key limit: every job still runs (the keys cycle, so the limit binds briefly).
    let keyed = bench(&[
        "jobs",
        "--n",
        "1000",
        "--warmup",
        "100",
        "--paced-n",
        "100",
        "--keys",
        "50",
        "--key-concurrency",
        "1",
    ]);
    assert!(
        keyed["variant"]
            .as_str()
            .unwrap()
            .contains("key_concurrency 1, 50 keys"),
        "{keyed}"
    );
    assert!(f(&keyed, &["concurrent_jps"]) > 0.0, "{keyed}");

    let deep = bench(&["jobs", "--deep-queue", "3000"]);
    assert_eq!(deep["queued"], 3000);
    assert!(f(&deep, &["leases"]) > 0.0, "{deep}");
    assert_ordered(&deep["lease_latency"], PCT);
    assert!(f(&deep, &["hub_rss_bytes"]) > 1e6, "{deep}");

    let workers = bench(&["workers", "--n", "500", "--paced-s", "1", "--rate", "50"]);
    assert!(f(&workers, &["jobs_per_s"]) > 0.0, "{workers}");
    assert!(f(&workers, &["paced_jobs"]) >= 1.0, "{workers}");
    assert!(f(&workers, &["paced_achieved_jps"]) > 0.0, "{workers}");
    assert_ordered(&workers["paced_latency"], PCT);
    assert!(f(&workers, &["hub_rss_bytes"]) > 1e6, "{workers}");

    let beats = bench(&["heartbeat", "--nodes", "200", "--duration-s", "1"]);
    assert_eq!(beats["nodes"], 200);
    assert_eq!(beats["errors"], 0, "{beats}");
    assert!(f(&beats, &["heartbeats"]) >= 200.0, "{beats}");
    assert_ordered(&beats["latency"], PCT);
    assert!(f(&beats, &["rss_end_bytes"]) > 1e6, "{beats}");

    // Each round cancels a running job and waits for its command to be gone.
    let cancel = bench(&["cancel", "--n", "3"]);
    assert_eq!(cancel["n"], 3, "{cancel}");
    assert_ordered(&cancel["cancel_to_stop"], PCT);
    assert!(f(&cancel, &["cancel_to_stop", "p50_ms"]) > 0.0, "{cancel}");

    // Retention deletes every finished job while the paced loop runs.
    let purge = bench(&[
        "retention",
        "--finished",
        "3000",
        "--idle-s",
        "1",
        "--rate",
        "100",
    ]);
    assert_eq!(purge["finished"], 3000, "{purge}");
    assert!(f(&purge, &["purged_per_s"]) > 0.0, "{purge}");
    for phase in ["idle", "during_purge"] {
        assert!(f(&purge, &[phase, "rounds"]) >= 1.0, "{purge}");
        assert_ordered(&purge[phase]["lease"], PCT);
    }
    assert!(f(&purge, &["lease_p99_ratio"]) > 0.0, "{purge}");
}

#[test]
fn every_workload_runs_against_a_running_hub() {
    let hub = hub()
        .env("SHERATAN_MAX_QUEUE_DEPTH", "100000")
        .env("SHERATAN_MAX_INFLIGHT", "10000")
        .start();
    let token = hub.token();
    let pid = hub.pid().to_string();
    let (c, d) = (hub.control_url.as_str(), hub.data_url.as_str());

    let jobs = bench(&[
        "jobs",
        "--n",
        "1000",
        "--warmup",
        "100",
        "--paced-n",
        "100",
        "--rate",
        "500",
        "--data-url",
        d,
        "--token",
        &token,
        "--hub-pid",
        &pid,
    ]);
    assert!(f(&jobs, &["concurrent_jps"]) > 0.0, "{jobs}");
    assert_ordered(&jobs["paced"], PCT);
    assert!(f(&jobs, &["hub_rss_end_bytes"]) > 1e6, "{jobs}");

    let workers = bench(&[
        "workers",
        "--n",
        "300",
        "--paced-s",
        "1",
        "--rate",
        "50",
        "--control-url",
        c,
        "--data-url",
        d,
        "--token",
        &token,
        "--hub-pid",
        &pid,
    ]);
    assert!(f(&workers, &["paced_jobs"]) >= 1.0, "{workers}");
    assert!(f(&workers, &["paced_achieved_jps"]) > 0.0, "{workers}");
    assert_ordered(&workers["paced_latency"], PCT);
    assert!(f(&workers, &["hub_rss_bytes"]) > 1e6, "{workers}");

    let beats = bench(&[
        "heartbeat",
        "--nodes",
        "100",
        "--duration-s",
        "1",
        "--control-url",
        c,
        "--token",
        &token,
        "--hub-pid",
        &pid,
    ]);
    assert_eq!(beats["errors"], 0, "{beats}");
    assert_ordered(&beats["latency"], PCT);

    // The work went to this hub: its own counters show it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, metrics) = runtime.block_on(get(
        &format!("{d}/metrics?format=json"),
        Auth::Bearer(&token),
    ));
    assert_eq!(status, 200, "{metrics}");
    assert!(f(&metrics, &["jobs.completed"]) >= 1300.0, "{metrics}");
    assert!(f(&metrics, &["nodes.online"]) >= 100.0, "{metrics}");
}
