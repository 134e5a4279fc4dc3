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
