//! Stamps the binary with the git revision it was built from (`SHERATAN_GIT_REV`), so
//! `build_id` in heartbeats and `--version` tell builds apart.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SHERATAN_GIT_REV");
    let rev = std::env::var("SHERATAN_GIT_REV").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    // Re-run when HEAD moves; both paths are relative to this crate.
    for path in ["../../.git/HEAD", "../../.git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!(
        "cargo:rustc-env=SHERATAN_GIT_REV={}",
        rev.filter(|r| !r.is_empty())
            .unwrap_or_else(|| "unknown".into())
    );
}
