//! `sheratan tls`: the mesh CA and the certificates it issues, through the binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

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
        err.contains("is not trusted (invalid peer certificate: UnknownIssuer)")
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
}

#[test]
fn a_hub_refuses_half_a_tls_setting_and_up_refuses_tls_for_now() {
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
    let out = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args(["up", "--home"])
        .arg(dir.path())
        .env("SHERATAN_TLS_CERT", dir.path().join("x.pem"))
        .env("SHERATAN_TLS_KEY", dir.path().join("x.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not serve TLS yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
