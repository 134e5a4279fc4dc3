//! The fuzz targets' inputs kept as regression tests (`fuzz/regressions/<target>/`): every
//! input a fuzzer ever crashed on, plus hand-written hostile ones, run on stable in every test
//! run. A new crash input from `cargo fuzz` goes into its target's folder.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read an input");
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn decode_requests_regressions() {
    for (path, bytes) in inputs("decode_requests") {
        eprintln!("{}", path.display());
        sheratan_hub::fuzzing::decode_requests(&bytes);
    }
}

#[test]
fn canonical_json_regressions() {
    for (path, bytes) in inputs("canonical_json") {
        eprintln!("{}", path.display());
        sheratan_hub::fuzzing::canonical_json(&bytes);
    }
}

#[test]
fn signature_check_regressions() {
    for (path, bytes) in inputs("signature_check") {
        eprintln!("{}", path.display());
        sheratan_hub::fuzzing::signature_check(&bytes);
    }
}
