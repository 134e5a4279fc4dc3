use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use super::{APIS, render};

fn checked_in(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/openapi")
        .join(format!("{name}.json"))
}

/// The checked-in documents are what this crate generates. `SHERATAN_UPDATE_OPENAPI=1 cargo
/// test -p sheratan-openapi` rewrites them after a change to a type or a table.
#[test]
fn the_checked_in_documents_are_the_generated_ones() {
    let update = std::env::var_os("SHERATAN_UPDATE_OPENAPI").is_some();
    let mut stale = Vec::new();
    for (name, build) in APIS {
        let generated = render(&build());
        let path = checked_in(name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != generated {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from the generated documents: run \
         `SHERATAN_UPDATE_OPENAPI=1 cargo test -p sheratan-openapi` and review the diff"
    );
}

/// Every `$ref` in a document names a schema, header or scheme it holds.
#[test]
fn every_reference_resolves() {
    for (name, build) in APIS {
        let doc = build();
        let mut refs = BTreeSet::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local references only");
            assert!(
                doc.pointer(pointer).is_some(),
                "{name}: {r} does not resolve"
            );
        }
    }
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.insert(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Operation ids are unique, every operation answers a 2xx, and every route that takes a
/// token says what a refused token gets.
#[test]
fn operations_are_complete() {
    for (name, build) in APIS {
        let doc = build();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "{name}: {id} twice");
                let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
                // A WebSocket's success is its switch (101).
                let websocket = op.get("x-sheratan-frames").is_some();
                assert!(
                    statuses.iter().any(|s| s.starts_with('2'))
                        || (websocket && statuses.iter().any(|s| *s == "101")),
                    "{name}: {method} {path} has no 2xx answer"
                );
                let public = op.get("security") == Some(&serde_json::json!([]));
                assert!(
                    public || statuses.iter().any(|s| *s == "403"),
                    "{name}: {method} {path} takes a token but names no 403"
                );
            }
        }
    }
}

/// The signed routes name both signature headers as required.
#[test]
fn results_and_progress_require_the_signature_headers() {
    let doc = super::hub_data();
    for path in ["/v1/results", "/v1/leases/{lease_id}/progress"] {
        let params = doc["paths"][path]["post"]["parameters"].as_array().unwrap();
        for header in ["x-sheratan-content-sha256", "x-sheratan-signature"] {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == header && p["in"] == "header" && p["required"] == true),
                "{path} lacks {header}"
            );
        }
    }
}
