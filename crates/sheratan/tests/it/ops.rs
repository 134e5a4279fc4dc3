//! Operations (issue 5): the smoke checklist, the diagnostics bundle, and the audit watcher
//! inside `sheratan up`.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sheratan_proto::EventKind;
use sheratan_testkit::{HubProcess, wait_for};

use crate::common::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sheratan"))
}

/// The path in diagnose's `wrote PATH (…)` line.
fn bundle_path(out: &str) -> &str {
    let line = out
        .trim()
        .strip_prefix("wrote ")
        .expect("diagnose says what it wrote");
    line.split(" (").next().unwrap()
}

fn run(hub: &HubProcess, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("SHERATAN_CONTROL_URL", &hub.control_url)
        .env("SHERATAN_DATA_URL", &hub.data_url)
        .env("SHERATAN_HOME", &hub.home)
        .env("SHERATAN_LOG", "warn")
        .env_remove("SHERATAN_HUB_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sheratan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn smoke_passes_on_a_healthy_hub() {
    // The data plane on every address, so the remote-peer check really talks to it.
    let hub = hub().data_addr("0.0.0.0:0").start();
    let port = hub.data_url.rsplit(':').next().unwrap().to_owned();
    let data_url = format!("http://127.0.0.1:{port}");
    let (code, out, err) = run(&hub, &["smoke", "--data-url", &data_url], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines().filter(|l| l.starts_with("PASS")).count() >= 10,
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("FAIL")), "{out}");
    assert!(
        out.contains("403 LOCALHOST_ONLY from"),
        "the remote-peer check talked to the plane: {out}"
    );
    let (code, out, _) = run(&hub, &["smoke", "--data-url", &data_url, "--json"], &[]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], true);
}

/// SHERATAN_TLS=off on a plane other machines reach: smoke fails that item (and only it).
#[test]
fn smoke_fails_the_tls_item_when_tls_is_off_on_the_network() {
    if sheratan_testkit::non_loopback_ipv4().is_none() {
        panic!("this test needs a non-loopback IPv4 address on the machine (none found)");
    }
    let hub = hub()
        .env("SHERATAN_TLS", "off")
        .data_addr("0.0.0.0:0")
        .start();
    let port = hub.data_url.rsplit(':').next().unwrap().to_owned();
    let data_url = format!("http://127.0.0.1:{port}");
    let (code, out, _) = run(&hub, &["smoke", "--data-url", &data_url], &[]);
    assert_eq!(code, 1, "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(
        failed[0].contains("listeners other machines reach speak TLS")
            && failed[0].contains("the data plane answers plain HTTP"),
        "{out}"
    );
    assert!(out.contains("remove SHERATAN_TLS=off"), "{out}");
}

#[test]
fn smoke_fails_with_the_right_line_when_auth_is_off() {
    let hub = hub().env("SHERATAN_HUB_TOKEN_REQUIRED", "0").start();
    let (code, out, _) = run(&hub, &["smoke"], &[]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL control routes refuse requests without a token"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("GET /v1/nodes answered 200"), "{line}");
    assert!(out.contains("SHERATAN_HUB_TOKEN_REQUIRED=0"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("PASS control /health is public"))
    );
}

fn unzip(path: &Path) -> Vec<(String, String)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            (f.name().expect("a utf-8 name").to_string(), text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_bundles_every_part_and_no_secret() {
    let token = "diag-secret-token-0123456789";
    let next = "diag-next-token-9876543210";
    let hub = hub()
        .env("SHERATAN_HUB_TOKEN", token)
        .env("SHERATAN_HUB_TOKEN_NEXT", next)
        .env("SHERATAN_HUB_TOKEN_ROTATION_UNTIL", "2099-01-01T00:00:00Z")
        .start();
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(token),
        &heartbeat_body("diag-node"),
    )
    .await;
    // A URL with a password nobody configured on this machine (the hub refuses such a node
    // address now, but older registries and logs may carry one).
    let node_password = "node-pw-in-addr";
    get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer("guess"),
    )
    .await;
    // A leak planted in a log file: the bundle must not carry it.
    let log = hub.home.join("logs").join("alerts.jsonl");
    std::fs::write(
        &log,
        format!("{{\"leak\":\"{token}\",\"and\":\"{next}\",\"short\":\"k3Y\",\"addr\":\"http://relayuser:{node_password}@10.0.0.5:8081\"}}\n"),
    )
    .unwrap();
    // A binary file among the logs, carrying the token: it cannot be redacted, so it is left
    // out rather than copied raw.
    let mut binary = vec![0xff, 0xfe, 0x00];
    binary.extend_from_slice(token.as_bytes());
    std::fs::write(
        hub.home.join("logs").join("hub_security_audit.jsonl.9"),
        binary,
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let db_password = "pw-in-a-url-42";
    let short_key = "k3Y";
    let (code, out, err) = run(
        &hub,
        &["diagnose", "--out", out_dir.path().to_str().unwrap()],
        &[
            ("SHERATAN_HUB_TOKEN", token),
            ("SHERATAN_HUB_TOKEN_NEXT", next),
            (
                "SHERATAN_STORE",
                &format!("postgres://app:{db_password}@db.internal/sheratan"),
            ),
            ("SHERATAN_OPENAI_API_KEY", short_key),
            // Switches named like secrets are not secrets: the bundle stays readable.
            ("SHERATAN_HUB_TOKEN_REQUIRED", "1"),
            ("SHERATAN_ALLOW_WEAK_TOKEN", "1"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("[7/7]") && err.contains("the hub is up"),
        "progress is shown: {err}"
    );
    let path = Path::new(bundle_path(&out));
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with("diag_bundle_") && name.ends_with(".zip"),
        "{name}"
    );
    let files = unzip(path);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for part in [
        "diag/versions.json",
        "diag/health.json",
        "diag/metrics/control.prom",
        "diag/metrics/data.prom",
        "diag/metrics/control.json",
        "diag/registry.json",
        "diag/logs/hub_security_audit.jsonl",
        "diag/logs/alerts.jsonl",
        "diag/config.json",
    ] {
        assert!(names.contains(&part), "{part} missing from {names:?}");
    }
    for (name, text) in &files {
        for secret in [token, next, db_password, node_password, short_key] {
            assert!(!text.contains(secret), "{name} carries a secret");
        }
    }
    assert!(!names.contains(&"diag/logs/hub_security_audit.jsonl.9"));
    assert!(
        files
            .iter()
            .any(|(n, t)| n == "diag/left_out.txt" && t.contains("hub_security_audit.jsonl.9"))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the bundle is its owner's only");
    let get = |n: &str| &files.iter().find(|(name, _)| name == n).unwrap().1;
    assert!(get("diag/registry.json").contains("diag-node"));
    assert!(get("diag/logs/alerts.jsonl").contains("<redacted>"));
    let config: Value = serde_json::from_str(get("diag/config.json")).unwrap();
    assert_eq!(config["control_url"], hub.control_url.as_str(), "{config}");
    assert_eq!(config["environment"]["SHERATAN_HUB_TOKEN_REQUIRED"], "1");
    assert_eq!(config["environment"]["SHERATAN_HUB_TOKEN"], "<redacted>");
    assert_eq!(
        config["environment"]["SHERATAN_STORE"],
        "postgres://app:<redacted>@db.internal/sheratan"
    );
    assert!(get("diag/health.json").contains("\"hub\": \"up\""));

    // With the hub down, the bundle still comes, from what is on disk, and says so.
    let mut hub = hub;
    hub.terminate();
    // Without --out the bundle goes under the hub's home, never into the current directory.
    let (code, out, err) = run(&hub, &["diagnose"], &[("SHERATAN_HUB_TOKEN", token)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the hub is down"), "{err}");
    let path = Path::new(bundle_path(&out));
    assert!(path.starts_with(hub.home.join("diagnostics")), "{out}");
    let files = unzip(path);
    let health = &files
        .iter()
        .find(|(n, _)| n == "diag/health.json")
        .unwrap()
        .1;
    assert!(health.contains("\"hub\": \"down\""), "{health}");
    assert!(
        files
            .iter()
            .any(|(n, _)| n == "diag/registry_snapshot_on_disk.json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_in_up_alerts_once_per_burst_and_calls_the_webhook() {
    // A one-connection webhook receiver.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/alerts", listener.local_addr().unwrap());
    let received = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    let _ = stream
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return body.to_owned();
                }
            }
        }
    });
    let hub = hub()
        .up()
        .env("SHERATAN_UP_WORKERS", "0")
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1")
        .env("SHERATAN_ALERT_AUTH_FAIL_THRESHOLD", "5")
        .env("SHERATAN_ALERT_WEBHOOK", hook)
        .start();
    assert!(hub.stdout().contains("alerts: "), "{}", hub.stdout());
    for _ in 0..40 {
        get(
            &format!("{}/v1/nodes", hub.control_url),
            Auth::Bearer("intruder"),
        )
        .await;
    }
    let alerts_file = hub.home.join("logs").join("alerts.jsonl");
    let alerts = wait_for(Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&alerts_file).ok()?;
        (!text.is_empty()).then_some(text)
    })
    .expect("an alert is written");
    let body = tokio::time::timeout(Duration::from_secs(15), received)
        .await
        .expect("webhook called")
        .unwrap();
    let posted: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(posted["rule"], "auth_fail_burst");
    assert_eq!(posted["source"], "127.0.0.1");
    // Folded repeats keep arriving for a while; the cooldown keeps it at one alert.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = std::fs::read_to_string(&alerts_file).unwrap_or(alerts);
    let lines: Vec<Value> = alerts
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{alerts}");
    assert_eq!(lines[0]["event"], "AUTH_FAIL");
}

/// `up` runs the audit watcher; a second one on the same home (the README used to suggest
/// running one beside `up`) would write every alert twice: it says who holds the log and
/// exits 2, and `up`'s watcher goes on alone.
#[test]
fn a_second_audit_watcher_on_one_home_refuses_to_run() {
    let hub = hub().up().start();
    let (code, out, err) = run(&hub, &["audit-watch"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !out.contains("ready:"),
        "it never claimed to be ready: {out}"
    );
    assert!(
        err.contains("another audit watcher (pid ") && err.contains("sheratan up"),
        "{err}"
    );
}

/// `sheratan smoke` provokes refusals on purpose (AUTH_FAIL, PORT_MISMATCH): with the token it
/// signs its probes, the hub records the run in those audit lines, and the watcher `up` runs
/// raises no alert for them. A probe header made without the hub's token is ignored: the
/// same refusals then alert as usual (so the marking cannot hide an attack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_probes_are_audited_but_page_nobody_and_forged_probes_do_not_hide_a_burst() {
    let hub = hub()
        .up()
        .env("SHERATAN_UP_WORKERS", "0")
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1")
        .env("SHERATAN_ALERT_PORT_MISMATCH_THRESHOLD", "3")
        .start();
    let token = hub.token();
    let (code, out, err) = run(&hub, &["smoke"], &[("SHERATAN_HUB_TOKEN", &token)]);
    assert_eq!(code, 0, "{out}{err}");
    let records = hub.wait_audit(Duration::from_secs(10), |r| {
        r.iter()
            .filter(|x| x.probe.is_some())
            .map(|x| x.count)
            .sum::<u64>()
            >= 24
    });
    let probes: Vec<_> = records.iter().filter(|r| r.probe.is_some()).collect();
    for kind in [EventKind::AuthFail, EventKind::PortMismatch] {
        assert!(
            probes.iter().any(|r| r.event == kind),
            "{kind} from smoke: {records:?}"
        );
    }
    let nonce = probes[0].probe.clone().unwrap();
    assert!(
        probes
            .iter()
            .all(|r| r.probe.as_deref() == Some(nonce.as_str())),
        "one run, one nonce"
    );
    // Past the fold window and a watcher poll: no alert.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = sheratan_ops::watch::read_alerts(&hub.home.join("logs"));
    assert!(alerts.is_empty(), "smoke paged the operator: {alerts:?}");

    // The same probe header, made with another token: ignored, and the burst alerts.
    let forged = sheratan_client::probe_header(
        "not-the-hub-token-0123456789",
        &nonce,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
    let client = reqwest::Client::new();
    for _ in 0..6 {
        let r = client
            .post(format!("{}/v1/jobs", hub.control_url))
            .header(sheratan_proto::headers::PROBE, &forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 421);
    }
    let alert = wait_for(Duration::from_secs(10), || {
        sheratan_ops::watch::read_alerts(&hub.home.join("logs"))
            .into_iter()
            .find(|a| a.rule == "port_mismatch_burst")
    });
    assert!(alert.is_some(), "a forged probe header hid a burst");
}
