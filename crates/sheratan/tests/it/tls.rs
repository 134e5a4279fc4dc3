//! `sheratan tls`: the mesh CA and the certificates it issues, through the binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::metrics_text_via;

/// Asserts a 403 whose message says `why`; its body.
async fn refused(r: reqwest::Response, why: &str) -> serde_json::Value {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{body}");
    body
}

fn tls(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .arg("tls")
        .args(args)
        .arg("--home")
        .arg(home)
        .env_remove("SHERATAN_HOME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_makes_the_ca_once_and_issues_certificates_from_it() {
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = tls(home.path(), &["ca"]);
    assert_eq!(code, 0, "{err}");
    let ca_pem = std::fs::read_to_string(home.path().join("tls/ca.pem")).unwrap();
    let sha = sheratan_runtime::ca::fingerprint(&ca_pem).unwrap();
    assert!(out.contains(&format!("sha256: {sha}")), "{out}");
    let (_, again, _) = tls(home.path(), &["ca"]);
    assert_eq!(again, out, "the same CA the second time");

    let (code, out, err) = tls(
        home.path(),
        &[
            "cert",
            "--name",
            "host-a",
            "--san",
            "127.0.0.1,host-a.example",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let issued = home.path().join("tls/issued");
    let mode = std::fs::metadata(issued.join("host-a.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(out.contains(&sha), "{out}");
    let (_, names) = sheratan_runtime::ca::validity_and_names(
        &std::fs::read(issued.join("host-a.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(names, ["127.0.0.1", "host-a.example"]);
    let (code, _, err) = tls(home.path(), &["cert", "--name", "worker-1", "--client"]);
    assert_eq!(code, 0, "{err}");
    assert!(issued.join("worker-1.pem").exists());

    // Usage errors exit 2 and say what to do.
    let (code, _, err) = tls(home.path(), &["cert", "--name", "host-b"]);
    assert_eq!(code, 2);
    assert!(err.contains("at least one --san"), "{err}");
    let (code, _, err) = tls(
        home.path(),
        &["cert", "--name", "h", "--san", "not a name!"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("neither an IP address nor a DNS name"),
        "{err}"
    );
    let (code, _, err) = tls(home.path(), &["cert", "--name", "../escape", "--san", "a"]);
    assert_eq!(code, 2, "{err}");
    assert!(!home.path().join("tls/escape.pem").exists());
}

/// A hub given a certificate serves both planes over TLS: the CLI reaches them with the mesh
/// CA (`SHERATAN_CA_FILE`), refuses them without it, and plain HTTP to the port gets a clear
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_serves_tls_that_clients_verify_against_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (code, _, err) = tls(&home, &["cert", "--name", "hub", "--san", "127.0.0.1"]);
    assert_eq!(code, 0, "{err}");
    let issued = home.join("tls/issued");
    let hub = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .home(&home)
        .env(
            "SHERATAN_TLS_CERT",
            issued.join("hub.pem").display().to_string(),
        )
        .env(
            "SHERATAN_TLS_KEY",
            issued.join("hub.key").display().to_string(),
        )
        .start();
    assert!(
        hub.control_url.starts_with("https://"),
        "{}",
        hub.control_url
    );
    assert!(hub.data_url.starts_with("https://"), "{}", hub.data_url);
    let cli = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sheratan"));
        cmd.args(args)
            .args([
                "--control-url",
                &hub.control_url,
                "--data-url",
                &hub.data_url,
            ])
            .env("SHERATAN_HUB_TOKEN", hub.token())
            .env_remove("SHERATAN_CA_FILE");
        if let Some(ca) = ca {
            cmd.env("SHERATAN_CA_FILE", ca);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca = home.join("tls/ca.pem");
    let (code, out, err) = cli(&["submit", "--kind", "echo"], Some(&ca));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("submitted"), "{out}");
    let (code, out, err) = cli(&["jobs", "list"], Some(&ca));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted"), "{out}");
    // Without the CA the certificate is not trusted: nothing is sent.
    let (code, _, err) = cli(&["jobs", "list"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not trusted (invalid peer certificate: UnknownIssuer; the server presents subject CN=hub, issued by CN=Sheratan mesh CA")
            && err.contains("SHERATAN_CA_FILE"),
        "{err}"
    );
    // Once: a certificate that is not trusted is not retried.
    assert_eq!(
        err.matches("failed to verify TLS certificate").count(),
        1,
        "{err}"
    );
    // Plain HTTP on the TLS port: a clear 400, not a hang.
    let plain = hub.data_url.replace("https://", "http://");
    let r = reqwest::get(format!("{plain}/health")).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("use https://"));
    // Both refusals are counted where the operator looks.
    let ca_cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_merge([ca_cert])
        .build()
        .unwrap();
    let metrics = metrics_text_via(&trusting, &hub.data_url, &hub.token()).await;
    assert!(
        metrics
            .contains(r#"sheratan_connections_closed_total{plane="data",reason="plain_http"} 1"#),
        "{metrics}"
    );
    let failed = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"sheratan_connections_closed_total{plane="data",reason="tls_handshake"}"#,
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        failed >= 1.0,
        "the untrusting client's handshake: {metrics}"
    );
}

#[test]
fn a_hub_refuses_half_a_tls_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args(["hub", "--home"])
        .arg(dir.path())
        .env("SHERATAN_TLS_CERT", dir.path().join("x.pem"))
        .env_remove("SHERATAN_TLS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give both or neither"));
}

/// `up` on its default control address (every address) makes the mesh CA, serves the control
/// plane over TLS, and what it runs inside trusts it: its worker heartbeats and runs a job.
/// Other machines must speak TLS (plain HTTP from a non-loopback source gets 400); this
/// machine's loopback may still speak plain HTTP (SHERATAN_TLS=auto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_its_control_plane_over_tls_with_a_ca_of_its_own() {
    let hub = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .up()
        .control_addr("0.0.0.0:0")
        .start();
    assert!(
        hub.control_url.starts_with("https://0.0.0.0:"),
        "{}",
        hub.control_url
    );
    assert!(
        hub.data_url.starts_with("http://127.0.0.1:"),
        "loopback stays plain"
    );
    let tls = hub.home.join("tls");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tls), 0o700);
    assert_eq!(mode(&tls.join("ca.key")), 0o600);
    let (_, names) =
        sheratan_runtime::ca::validity_and_names(&std::fs::read(tls.join("server.pem")).unwrap())
            .unwrap();
    assert!(names.iter().any(|n| n == "127.0.0.1"), "{names:?}");
    assert!(names.iter().any(|n| n == "localhost"), "{names:?}");

    // The worker `up` runs reaches the TLS control plane and takes a job.
    let token = hub.token();
    let (code, out, err) = crate::common::cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"a\":1}",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"a\": 1"), "the echo job's result: {out}");
    let port = hub.control_url.rsplit(':').next().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.pem")).unwrap()).unwrap();
    let verified = reqwest::Client::builder()
        .tls_certs_merge([ca])
        .build()
        .unwrap();
    let nodes: serde_json::Value = verified
        .get(format!("https://127.0.0.1:{port}/v1/nodes"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(nodes.to_string().contains("worker-1"), "{nodes}");
    // Plain HTTP from this machine's loopback is still answered (auto) ...
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 200);
    // ... but not from an address other machines use.
    if let Some(ip) = sheratan_testkit::non_loopback_ipv4() {
        let remote = reqwest::Client::builder()
            .local_address(std::net::IpAddr::V4(ip))
            .build()
            .unwrap();
        let r = remote
            .get(format!("http://{ip}:{port}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r.text().await.unwrap().contains("use https://"));
        let r = verified
            .get(format!("https://{ip}:{port}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "the certificate names {ip}");
    }
}

/// SHERATAN_TLS=on: every listener serves TLS, loopback included, and plain HTTP gets 400
/// from anywhere; SHERATAN_TLS=off on an address other machines reach warns at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_means_everywhere_and_off_is_said_out_loud() {
    let hub = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .env("SHERATAN_TLS", "on")
        .start();
    assert!(
        hub.data_url.starts_with("https://127.0.0.1:"),
        "{}",
        hub.data_url
    );
    let plain = hub.data_url.replace("https://", "http://");
    let r = reqwest::get(format!("{plain}/health")).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let off = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .env("SHERATAN_TLS", "off")
        .control_addr("0.0.0.0:0")
        .start();
    assert!(
        off.control_url.starts_with("http://"),
        "{}",
        off.control_url
    );
    assert!(
        off.stderr()
            .contains("serves plain HTTP to the network (SHERATAN_TLS=off)"),
        "{}",
        off.stderr()
    );
    assert!(!off.home.join("tls").exists(), "no CA without TLS");
    // https:// to a plain port: said plainly, at once.
    let wrong = off.data_url.replace("http://", "https://");
    let (code, _, err) = run_cli(
        &["jobs", "list", "--data-url", &wrong],
        &[("SHERATAN_HUB_TOKEN", off.token().as_str())],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("does not speak TLS (a plain HTTP port?)"),
        "{err}"
    );
}

/// A component away from the hub's machine (no CA key in its home) that must serve TLS and
/// has no certificate refuses to start, saying what to do.
#[test]
fn a_component_without_a_certificate_on_a_network_address_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args(["host", "--listen", "0.0.0.0:0", "--home"])
        .arg(dir.path())
        .env(
            "SHERATAN_HUB_TOKEN",
            "a-token-long-enough-for-the-hub-0123456789",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("so it serves TLS") && err.contains("sheratan tls cert --name"),
        "{err}"
    );
}

#[test]
fn issuing_never_overwrites_without_force_nor_writes_into_the_cas_directory() {
    let home = tempfile::tempdir().unwrap();
    let args = ["cert", "--name", "host-a", "--san", "127.0.0.1"];
    assert_eq!(tls(home.path(), &args).0, 0);
    let (code, _, err) = tls(home.path(), &args);
    assert_eq!(code, 2);
    assert!(err.contains("--force replaces it"), "{err}");
    let mut forced = args.to_vec();
    forced.push("--force");
    assert_eq!(tls(home.path(), &forced).0, 0);
    let ca_key = std::fs::read(home.path().join("tls/ca.key")).unwrap();
    let out = home.path().join("tls").display().to_string();
    let (code, _, err) = tls(
        home.path(),
        &[
            "cert",
            "--name",
            "ca",
            "--san",
            "x.example",
            "--out",
            &out,
            "--force",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("the CA's own directory"), "{err}");
    assert_eq!(
        std::fs::read(home.path().join("tls/ca.key")).unwrap(),
        ca_key
    );
}

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sheratan"));
    cmd.args(args)
        .env_remove("SHERATAN_HUB_TOKEN")
        .env_remove("SHERATAN_CA_FILE")
        .env_remove("SHERATAN_HOME")
        .env("SHERATAN_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The join string: a worker and the CLI with nothing but the string (no token, no CA, no
/// URLs) fetch the hub's CA, pin it, keep it under their home and run a job over verified
/// TLS. A wrong pin exits 2 saying what was expected and found; an impostor with a CA of its
/// own, pinned against, gets no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_one_string_and_a_wrong_pin_sends_no_token() {
    let hub = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .env("SHERATAN_TLS", "on")
        .start();
    let hub_home = hub.home.display().to_string();
    let (code, out, err) = run_cli(
        &[
            "join-string",
            "--home",
            &hub_home,
            "--host",
            "127.0.0.1",
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let join = out.trim().to_owned();
    let ca_sha = sheratan_runtime::ca::fingerprint(
        &std::fs::read_to_string(hub.home.join("tls/ca.pem")).unwrap(),
    )
    .unwrap();
    assert!(join.starts_with(&format!("sht1:{ca_sha}:")), "{join}");
    assert!(err.contains("holds the mesh token"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let node_home = dir.path().join("node");
    let node_home_s = node_home.display().to_string();
    let worker = sheratan_testkit::Proc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &["worker", "--node-id", "joined-1", "--home", &node_home_s],
        &[("SHERATAN_JOIN", &join), ("SHERATAN_HUB_TOKEN", "")],
        true,
    );
    assert!(
        worker.stdout().contains("https://127.0.0.1:"),
        "{}",
        worker.stdout()
    );
    let kept = std::fs::read_to_string(node_home.join("tls/ca.pem")).unwrap();
    assert_eq!(sheratan_runtime::ca::fingerprint(&kept).unwrap(), ca_sha);
    let client_home = dir.path().join("cli").display().to_string();
    let (code, out, err) = run_cli(
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"j\":1}",
            "--wait",
            "--home",
            &client_home,
        ],
        &[("SHERATAN_JOIN", &join)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"j\": 1"), "{out}");
    let (code, out, err) = run_cli(
        &["nodes", "--home", &client_home],
        &[("SHERATAN_JOIN", &join)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("joined-1"), "{out}");

    // A wrong pin: refused before anything is sent, exit 2, both hashes named.
    let wrong_sha = "0".repeat(64);
    let wrong = join.replacen(&ca_sha, &wrong_sha, 1);
    let other_home = dir.path().join("other").display().to_string();
    let (code, _, err) = run_cli(
        &["worker", "--node-id", "w-wrong", "--home", &other_home],
        &[("SHERATAN_JOIN", &wrong)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("expected sha256 {wrong_sha}, found {ca_sha}")),
        "{err}"
    );
    assert!(!dir.path().join("other/tls/ca.pem").exists());

    // An impostor at the hub's address with a CA of its own, answering the CA request with
    // the hub's real (public) CA followed by its own: the pin matches the first certificate,
    // yet the answer is refused whole, and the impostor sees no token, ever.
    let (_, impostor_tls) = crate::outbound_tls::test_ca(&dir.path().join("impostor"), "127.0.0.1");
    let impostor_pem = format!(
        "{}{}",
        std::fs::read_to_string(hub.home.join("tls/ca.pem")).unwrap(),
        std::fs::read_to_string(dir.path().join("impostor/tls/ca.pem")).unwrap()
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let impostor = crate::outbound_tls::https_server("127.0.0.1", impostor_tls, move |head, _| {
        log.lock().unwrap().push(head.to_owned());
        impostor_pem.clone()
    })
    .await;
    let aimed = sheratan_testkit_join(&join, &impostor.to_string());
    let (code, _, err) = run_cli(
        &["jobs", "list", "--home", &other_home],
        &[("SHERATAN_JOIN", &aimed)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not match the join string")
            && err.contains("found 2 certificates where exactly one CA certificate belongs"),
        "{err}"
    );
    assert!(
        !dir.path().join("other/tls/ca.pem").exists(),
        "nothing kept"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "only the CA was fetched: {seen:?}");
    assert!(seen[0].starts_with("GET /v1/tls/ca "), "{seen:?}");
    assert!(
        !seen[0].to_ascii_lowercase().contains("authorization"),
        "no token to an unverified server: {seen:?}"
    );
}

/// The join string `join` aimed at `addr` (host:port) instead of the hub.
fn sheratan_testkit_join(join: &str, addr: &str) -> String {
    let (head, _) = join.rsplit_once('@').unwrap();
    format!("{head}@{addr}")
}

/// A certificate for a hub with a test CA of its own: `names`, valid `from`..`to`, signed by
/// `ca` (or self-signed); written to `dir/NAME.pem` and `.key` (0600).
fn test_cert(
    dir: &std::path::Path,
    name: &str,
    names: &[&str],
    (from, to): (time::OffsetDateTime, time::OffsetDateTime),
    ca: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = from;
    params.not_after = to;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => params.signed_by(&key, ca).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

/// Expired, not-yet-valid, wrong-name and self-signed (unpinned) certificates are refused by
/// clients with a message that names the certificate's subject and the reason.
#[test]
fn bad_server_certificates_are_refused_naming_the_subject_and_the_reason() {
    use time::{Duration, OffsetDateTime};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let now = OffsetDateTime::now_utc();
    let day = Duration::days(1);
    let cases = [
        (
            "expired-hub",
            vec!["127.0.0.1"],
            (now - 10 * day, now - day),
            true,
            "certificate expired",
        ),
        (
            "future-hub",
            vec!["127.0.0.1"],
            (now + day, now + 10 * day),
            true,
            "not valid yet",
        ),
        (
            "wrong-name-hub",
            vec!["hub.example"],
            (now - day, now + day),
            true,
            "not valid for name",
        ),
        (
            "lonely-hub",
            vec!["127.0.0.1"],
            (now - day, now + day),
            false,
            "UnknownIssuer",
        ),
    ];
    for (name, names, validity, signed, reason) in cases {
        let (cert, key) = test_cert(dir.path(), name, &names, validity, signed.then_some(&ca));
        let hub = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
            .env("SHERATAN_TLS_CERT", cert)
            .env("SHERATAN_TLS_KEY", key)
            .start();
        let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
            .args(["jobs", "list", "--data-url", &hub.data_url])
            .env("SHERATAN_HUB_TOKEN", hub.token())
            .env("SHERATAN_CA_FILE", &ca_file)
            .env("SHERATAN_HOME", dir.path().join("nowhere"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("is not trusted"), "{name}: {err}");
        assert!(err.contains(reason), "{name}: expected {reason:?} in {err}");
        assert!(
            err.contains(&format!("the server presents subject CN={name}")),
            "{name}: {err}"
        );
    }
}

/// Mutual TLS: with SHERATAN_TLS_CLIENT_CA the hub takes only connections with a client
/// certificate from that CA, and a certificate's name is the one node id its holder may
/// heartbeat and lease as (another: 403 FORBIDDEN and a CLIENT_CERT_MISMATCH audit event),
/// token or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_a_certificate_is_one_node_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hub");
    let (code, _, err) = tls(&home, &["cert", "--client", "--name", "w-good"]);
    assert_eq!(code, 0, "{err}");
    let ca = home.join("tls/ca.pem");
    let issued = home.join("tls/issued");
    let hub = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .home(&home)
        .env("SHERATAN_TLS", "on")
        .env("SHERATAN_TLS_CLIENT_CA", ca.display().to_string())
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "0.1")
        .start();
    let token = hub.token();
    let cert = issued.join("w-good.pem").display().to_string();
    let key = issued.join("w-good.key").display().to_string();
    let ca_s = ca.display().to_string();
    let _worker = sheratan_testkit::Proc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &[
            "worker",
            "--node-id",
            "w-good",
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
        ],
        &[
            ("SHERATAN_HUB_TOKEN", &token),
            ("SHERATAN_CA_FILE", &ca_s),
            ("SHERATAN_TLS_CLIENT_CERT", &cert),
            ("SHERATAN_TLS_CLIENT_KEY", &key),
        ],
        true,
    );
    let with_cert = [
        ("SHERATAN_HUB_TOKEN", token.as_str()),
        ("SHERATAN_CA_FILE", &ca_s),
        ("SHERATAN_TLS_CLIENT_CERT", &cert),
        ("SHERATAN_TLS_CLIENT_KEY", &key),
    ];
    let urls = [
        "--control-url",
        &hub.control_url,
        "--data-url",
        &hub.data_url,
    ];
    let mut args = vec![
        "submit",
        "--kind",
        "echo",
        "--payload",
        "{\"m\":1}",
        "--wait",
    ];
    args.extend(urls);
    let (code, out, err) = run_cli(&args, &with_cert);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"m\": 1"), "the job ran on w-good: {out}");

    // No client certificate: the handshake is refused, the token never reaches a handler.
    let mut args = vec!["jobs", "list"];
    args.extend(urls);
    let (code, _, err) = run_cli(
        &args,
        &[
            ("SHERATAN_HUB_TOKEN", token.as_str()),
            ("SHERATAN_CA_FILE", &ca_s),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("requires a client certificate") && err.contains("SHERATAN_TLS_CLIENT_CERT"),
        "{err}"
    );

    // w-good's certificate claiming another node: refused and audited, token or not.
    let pem = [
        std::fs::read(issued.join("w-good.key")).unwrap(),
        std::fs::read(issued.join("w-good.pem")).unwrap(),
    ]
    .concat();
    let client = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    for (url, body) in [
        (
            format!("{}/v1/heartbeat", hub.control_url),
            serde_json::json!({"node_id": "w-evil", "role": "worker"}),
        ),
        (
            format!("{}/v1/leases", hub.data_url),
            serde_json::json!({"node_id": "w-evil", "queues": ["default"], "wait_ms": 0}),
        ),
    ] {
        let r = client
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let body = refused(r, "names node \"w-good\", not \"w-evil\"").await;
        assert_eq!(body["error"]["code"], "FORBIDDEN", "{url}: {body}");
    }
    // The worker stream's upgrade is checked the same way (w-good's own worker uses it, over
    // this TLS with its certificate: the job above ran on it).
    let r = client
        .get(format!(
            "{}/v1/stream?node_id=w-evil&queues=default&capabilities=echo&max_jobs=1",
            hub.data_url
        ))
        .bearer_auth(&token)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    // The stream as w-evil.
    refused(r, "names node \"w-good\", not \"w-evil\"").await;
    let metrics = metrics_text_via(&client, &hub.data_url, &token).await;
    assert!(
        metrics.contains("sheratan_worker_streams 1"),
        "w-good's worker leases over the stream, through mutual TLS: {metrics}"
    );
    let records = hub.wait_audit(std::time::Duration::from_secs(5), |records| {
        sheratan_testkit::count_events(records, sheratan_proto::EventKind::ClientCertMismatch) >= 3
    });
    assert!(
        sheratan_testkit::count_events(&records, sheratan_proto::EventKind::ClientCertMismatch)
            >= 3,
        "three CLIENT_CERT_MISMATCH events"
    );
    // The same certificate as itself is fine.
    let r = client
        .post(format!("{}/v1/heartbeat", hub.control_url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"node_id": "w-good", "role": "worker"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A certificate from the CA without a common name (SANs only) names no node at all.
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(&ca).unwrap(),
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(home.join("tls/ca.key")).unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["victim-node".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let san_key = rcgen::KeyPair::generate().unwrap();
    let san_cert = params.signed_by(&san_key, &issuer).unwrap();
    let san_only = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", san_key.serialize_pem(), san_cert.pem()).as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let r = san_only
        .post(format!("{}/v1/heartbeat", hub.control_url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"node_id": "victim-node", "role": "worker"}))
        .send()
        .await
        .unwrap();
    refused(r, "names no node").await;
    // Under auto, a hub requiring client certificates answers no plain HTTP, loopback included.
    let auto = sheratan_testkit::HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
        .home(dir.path().join("auto"))
        .control_addr("0.0.0.0:0")
        .data_addr("0.0.0.0:0")
        .env("SHERATAN_TLS_CLIENT_CA", ca.display().to_string())
        .start();
    let port = auto.control_url.rsplit(':').next().unwrap().to_owned();
    let r = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "no plain HTTP beside mutual TLS");
    // `up` refuses mutual TLS (its members have no client certificates).
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args(["up", "--home"])
        .arg(dir.path().join("up"))
        .env("SHERATAN_TLS_CLIENT_CA", &ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The token stays on this machine unless it is encrypted: a client refuses to send it over
/// plain HTTP to anything but loopback, unless told so by name (SHERATAN_ALLOW_PLAIN_HTTP=1).
#[test]
fn the_token_is_never_sent_in_clear_across_a_network() {
    use std::io::Read;
    let ip = sheratan_testkit::non_loopback_ipv4()
        .expect("this test needs a non-loopback IPv4 address on this machine");
    // A listener on this machine's network address, keeping what arrives.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
            let mut buf = [0u8; 4096];
            if let Ok(n) = stream.read(&mut buf) {
                keep.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().display().to_string();
    let url = format!("http://{ip}:{port}");
    let args = ["jobs", "list", "--data-url", &url, "--home", &home];
    let token = "a-token-that-stays-home-123";
    let (code, _, err) = run_cli(&args, &[("SHERATAN_HUB_TOKEN", token)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "refusing to send the mesh token over plain HTTP to {url}/"
        )),
        "{err}"
    );
    assert!(err.contains("SHERATAN_ALLOW_PLAIN_HTTP=1"), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(received.lock().unwrap().is_empty(), "nothing was sent");
    // Nor do the other clients that carry the token: the smoke checklist, and a proxy from
    // the environment never sees a request meant for loopback.
    let (code, _, err) = run_cli(
        &[
            "smoke",
            "--control-url",
            &url,
            "--data-url",
            &url,
            "--home",
            &home,
        ],
        &[("SHERATAN_HUB_TOKEN", token)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("refusing to send the mesh token"), "{err}");
    let (_, _, _) = run_cli(
        &[
            "nodes",
            "--control-url",
            "http://127.0.0.1:9",
            "--home",
            &home,
        ],
        &[
            ("SHERATAN_HUB_TOKEN", token),
            ("HTTP_PROXY", &url),
            ("http_proxy", &url),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        received.lock().unwrap().is_empty(),
        "nothing was sent: {:?}",
        received.lock().unwrap()
    );
    // The named opt-out sends it, and says so.
    let (_, _, err) = run_cli(
        &args,
        &[
            ("SHERATAN_HUB_TOKEN", token),
            ("SHERATAN_ALLOW_PLAIN_HTTP", "1"),
        ],
    );
    assert!(
        err.contains("in clear text"),
        "the opt-out is logged: {err}"
    );
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(seen.contains(token), "{seen}");
}
