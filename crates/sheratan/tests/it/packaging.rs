//! Packaging (docs/INSTALL.md): the systemd units in packaging/systemd/ are checked by
//! `systemd-analyze verify` (with `ExecStart` pointed at the binary under test, which verify
//! requires to exist), must carry the hardening the docs promise, and name settings the binary
//! knows.

use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .collect();
    units.sort();
    units
}

#[test]
fn the_systemd_units_verify_and_are_hardened() {
    let units = units();
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "sheratan-hub.service",
            "sheratan-up.service",
            "sheratan-worker.service"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sheratan");
    let mut copies = Vec::new();
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        for directive in [
            "DynamicUser=yes",
            "StateDirectory=",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "KillSignal=SIGTERM",
            "ExecStart=/usr/bin/sheratan ",
        ] {
            assert!(
                text.contains(directive),
                "{}: no {directive:?}",
                unit.display()
            );
        }
        // Every SHERATAN_ variable a unit sets is one the binary reads.
        for line in text.lines().filter(|l| l.starts_with("Environment=")) {
            let name = line["Environment=".len()..].split('=').next().unwrap();
            if name.starts_with("SHERATAN_") {
                assert!(
                    known_variable(bin, name),
                    "{}: {name} is not a setting",
                    unit.display()
                );
            }
        }
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(&copy, text.replace("/usr/bin/sheratan", bin)).unwrap();
        copies.push(copy);
    }
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
    else {
        eprintln!(
            "systemd-analyze is not installed here: the units were checked for their directives only"
        );
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt keys are only warnings to systemd: any output fails the check.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

/// A unit with a misspelt directive is caught (the check above can fail).
#[test]
fn a_misspelt_directive_is_caught_by_the_check() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("broken.service");
    let hub = std::fs::read_to_string(&units()[0]).unwrap();
    let broken = hub
        .replace("/usr/bin/sheratan", env!("CARGO_BIN_EXE_sheratan"))
        .replace("ProtectSystem=strict", "ProtectSytem=strict");
    std::fs::write(&unit, broken).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ProtectSytem"));
}

fn known_variable(bin: &str, name: &str) -> bool {
    // Read outside clap (logging) or by every command.
    if matches!(name, "SHERATAN_LOG" | "SHERATAN_LOG_FORMAT") {
        return true;
    }
    ["hub", "worker", "up"].iter().any(|cmd| {
        let out = Command::new(bin).args([cmd, "--help"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("[env: {name}"))
    })
}
