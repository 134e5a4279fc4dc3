//! Start-up, configuration errors and graceful shutdown of the binary.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_writes_the_registry_and_flushes_folded_events() {
    let mut hub = hub().start();
    let token = hub.token();
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("last"),
    )
    .await;
    // Five identical failures: one line now, four folded repeats pending in the window.
    for _ in 0..5 {
        get(
            &format!("{}/v1/nodes", hub.control_url),
            Auth::Bearer("nope"),
        )
        .await;
    }
    let status = hub.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit; stderr:\n{}",
        hub.stderr()
    );
    let registry = std::fs::read_to_string(hub.home.join("nodes_registry.json")).unwrap();
    assert!(registry.contains("\"last\""));
    assert_eq!(count_events(&hub.audit_records(), EventKind::AuthFail), 5);
    assert!(hub.stderr().contains("hub stopped"));
}

/// A SIGTERM right after the "ready" line is a clean shutdown: the handlers are installed
/// before readiness is announced (they were not, and a quick SIGTERM killed the hub).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_ready_is_a_clean_shutdown() {
    for _ in 0..5 {
        let mut hub = hub().start();
        let status = hub.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "clean exit; stderr:\n{}",
            hub.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_hub_and_says_where_everything_is() {
    let hub = hub().up().start();
    let out = hub.stdout();
    assert!(out.contains("control plane: http://127.0.0.1:"), "{out}");
    assert!(out.contains("token: "), "{out}");
    assert!(out.contains("Try (in another terminal"), "{out}");
    assert!(out.contains("worker: worker-1"), "{out}");
    assert!(out.contains("ready: Ctrl-C"), "{out}");
    let (status, _) = get(&format!("{}/health", hub.control_url), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
}

fn sheratan(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sheratan"));
    cmd.args(args)
        .env("SHERATAN_HOME", home.path())
        .env_remove("SHERATAN_HUB_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that should fail must not run on; give it a while, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn bad_configuration_exits_2_and_names_the_setting() {
    let out = sheratan(
        &[
            "hub",
            "--control-addr",
            "127.0.0.1:0",
            "--data-addr",
            "127.0.0.1:0",
        ],
        &[
            ("SHERATAN_NODE_TTL_SEC", "10"),
            ("SHERATAN_NODE_DEAD_SEC", "5"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHERATAN_NODE_DEAD_SEC"), "{err}");

    let out = sheratan(&["hub", "--control-addr", "not-an-address"], &[]);
    assert_eq!(out.status.code(), Some(2));

    let out = sheratan(
        &[
            "hub",
            "--control-addr",
            "127.0.0.1:0",
            "--data-addr",
            "127.0.0.1:0",
        ],
        &[("SHERATAN_HUB_TOKEN_NEXT", "only-half-of-a-rotation")],
    );
    // A configuration error like the others (it used to surface later, with exit 1).
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHERATAN_HUB_TOKEN_ROTATION_UNTIL"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sheratan(
        &["hub", "--control-addr", &addr, "--data-addr", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another hub") && err.contains("SHERATAN_CONTROL_ADDR"),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "the cause once: {err}");
    assert!(
        err.trim_end().ends_with("to move it"),
        "the advice comes last: {err}"
    );
}

#[test]
fn every_setting_is_a_flag_and_an_environment_variable() {
    let out = sheratan(
        &["hub", "--help"],
        &[("SHERATAN_HUB_TOKEN", "super-secret-value")],
    );
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "SHERATAN_HOME",
        "SHERATAN_HUB_TOKEN",
        "SHERATAN_HUB_TOKEN_REQUIRED",
        "SHERATAN_HUB_TOKEN_NEXT",
        "SHERATAN_HUB_TOKEN_ROTATION_UNTIL",
        "SHERATAN_NODE_TTL_SEC",
        "SHERATAN_NODE_DEAD_SEC",
        "SHERATAN_ATTESTATION_SPOOF_THRESHOLD",
        "SHERATAN_CONTROL_ADDR",
        "SHERATAN_DATA_ADDR",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from --help:\n{help}"
        );
    }
    assert!(
        !help.contains("super-secret-value"),
        "--help must not print secrets"
    );
    assert!(help.contains("[default: 120]") && help.contains("[default: 600]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_hub_cleanly_too() {
    let mut hub = hub().start();
    let token = hub.token();
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("int"),
    )
    .await;
    let status = hub.signal("INT");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", hub.stderr());
    let registry = std::fs::read_to_string(hub.home.join("nodes_registry.json")).unwrap();
    assert!(registry.contains("\"int\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plane_alone_serves_only_its_routes() {
    // The data address is only configured, never bound, by a control-only hub.
    let hub = hub()
        .data_addr("127.0.0.1:18999")
        .arg("--plane")
        .arg("control")
        .start();
    assert!(
        hub.data_url.is_empty(),
        "no data listener: {}",
        hub.stdout()
    );
    let token = hub.token();
    let (status, _) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The hint names the configured data port, served by another process.
    let (status, body) = post(&format!("{}/v1/jobs", hub.control_url), Auth::None, "{}").await;
    let (_, hint) = assert_error(status, &body, 421, "PORT_MISMATCH");
    assert!(hint.contains("port 18999"), "{hint}");

    let data_only = crate::common::hub().arg("--plane").arg("data").start();
    assert!(data_only.control_url.is_empty());
    let (status, _) = get(&format!("{}/health", data_only.data_url), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A command with no token anywhere says where it looked and what to do, before the hub's
/// AUTH_FAIL (or here, a connection error) arrives.
#[test]
fn a_command_without_a_token_says_where_it_looked() {
    let out = sheratan(&["nodes", "--control-url", "http://127.0.0.1:9"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("note: no token"), "{err}");
    assert!(err.contains("hub_token"), "{err}");
    assert!(err.contains("--home, --token-file or --token"), "{err}");
    assert_eq!(err.matches("note: no token").count(), 1, "said once: {err}");
}

/// A configuration the hub refuses leaves nothing behind: no home, token file or store.
#[test]
fn a_refused_configuration_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("never");
    let out = hub_command(&home)
        .env("SHERATAN_HUB_TOKEN_NEXT", "next-token-0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHERATAN_HUB_TOKEN_ROTATION_UNTIL"), "{err}");
    assert!(!home.exists(), "nothing was created");
}
