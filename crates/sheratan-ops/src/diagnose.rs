//! `sheratan diagnose`: one zip an operator can attach to a ticket, with the logs, both planes'
//! metrics and health, the registry, versions and the configuration. It works whether the hub
//! is up or down (and says which), and every secret is replaced by `<redacted>`: token values
//! wherever they appear, values of settings named like secrets, and passwords in URLs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sheratan_client::{ControlClient, DataClient};
use sheratan_proto::control::HealthResponse;
use sheratan_proto::event::{ALERTS_FILE, AUDIT_LOG_FILE};
use time::OffsetDateTime;

pub const REDACTED: &str = "<redacted>";

/// What to collect, and from where.
#[derive(Debug, Clone)]
pub struct DiagnoseInput {
    pub control_url: String,
    pub data_url: String,
    pub token: Option<String>,
    pub home: PathBuf,
    pub out_dir: PathBuf,
    /// `version (git revision)` of this binary.
    pub version: String,
}

/// Files that hold secrets themselves: never copied.
const SECRET_FILES: [&str; 2] = ["hub_token", "token_rotation.json"];

/// The bundle's files by name, before redaction.
type Files = BTreeMap<String, Vec<u8>>;

pub async fn run(input: DiagnoseInput) -> anyhow::Result<PathBuf> {
    let steps = 7;
    let step = |n: usize, what: &str| eprintln!("[{n}/{steps}] {what}");
    let mut files = Files::new();
    let secrets = collect_secrets(&input);

    step(1, "versions");
    files.insert(
        "versions.json".into(),
        json_bytes(&serde_json::json!({
            "sheratan": input.version,
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "collected_at": now_rfc3339(),
        })),
    );
    step(2, "health of both planes");
    let hub = Hub::new(&input)?;
    let hub_up = hub.health(&mut files).await;
    let state = if hub_up {
        "up"
    } else {
        "down: collecting what is on disk"
    };
    eprintln!("      the hub is {state}");
    step(3, "metrics");
    if hub_up {
        hub.metrics(&mut files).await;
    }
    step(4, "node registry");
    hub.registry(hub_up, &input.home, &mut files).await?;
    step(5, "logs");
    collect_logs(&input.home, &mut files);
    step(6, "configuration (secrets redacted)");
    files.insert("config.json".into(), json_bytes(&configuration(&input)));
    step(7, "writing the bundle");
    redact_all(&mut files, &secrets);
    write_zip(&input.out_dir, &files)
}

/// The hub's two planes, as far as they answer.
struct Hub {
    control: ControlClient,
    data: DataClient,
    /// The data plane's `/metrics` (the control client's calls work on either plane).
    data_metrics: ControlClient,
}

impl Hub {
    fn new(input: &DiagnoseInput) -> anyhow::Result<Hub> {
        Ok(Hub {
            control: ControlClient::new(&input.control_url, input.token.clone())?,
            data: DataClient::new(&input.data_url, input.token.clone())?
                .with_retry(sheratan_client::RetryPolicy::none()),
            data_metrics: ControlClient::new(&input.data_url, input.token.clone())?,
        })
    }

    /// `health.json`; whether either plane answered.
    async fn health(&self, files: &mut Files) -> bool {
        let control = self.control.health().await;
        let data = self.data.health().await;
        let hub_up = control.is_ok() || data.is_ok();
        let describe = |r: &Result<HealthResponse, sheratan_client::ClientError>| match r {
            Ok(h) => serde_json::to_value(h).unwrap_or_default(),
            Err(e) => serde_json::json!({ "unreachable": e.to_string() }),
        };
        files.insert(
            "health.json".into(),
            json_bytes(&serde_json::json!({
                "hub": if hub_up { "up" } else { "down" },
                "control": describe(&control),
                "data": describe(&data),
            })),
        );
        hub_up
    }

    /// Both planes' metrics, as text and JSON; an error in place of text that failed.
    async fn metrics(&self, files: &mut Files) {
        for (name, client) in [("control", &self.control), ("data", &self.data_metrics)] {
            match client.metrics_text().await {
                Ok(text) => files.insert(format!("metrics/{name}.prom"), text.into_bytes()),
                Err(e) => files.insert(format!("metrics/{name}.error.txt"), e.to_string().into()),
            };
            if let Ok(json) = client.metrics_json().await {
                files.insert(format!("metrics/{name}.json"), json_bytes(&json));
            }
        }
    }

    /// The registry from the hub, or its last snapshot on disk when the hub is down.
    async fn registry(&self, hub_up: bool, home: &Path, files: &mut Files) -> anyhow::Result<()> {
        let live = if hub_up {
            self.data.registry().await.ok()
        } else {
            None
        };
        match live {
            Some(list) => {
                let list = json_bytes(&serde_json::to_value(list)?);
                files.insert("registry.json".into(), list);
            }
            None => {
                if let Ok(bytes) = std::fs::read(home.join("nodes_registry.json")) {
                    files.insert("registry_snapshot_on_disk.json".into(), bytes);
                }
            }
        }
        Ok(())
    }
}

/// The audit log (with its rotated files), the alerts and the watcher's state.
fn collect_logs(home: &Path, files: &mut Files) {
    let Ok(entries) = std::fs::read_dir(home.join("logs")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with(AUDIT_LOG_FILE) || name == ALERTS_FILE || name == "audit-watch.state")
            && let Ok(bytes) = std::fs::read(entry.path())
        {
            files.insert(format!("logs/{name}"), bytes);
        }
    }
}

/// Redacts every file; binary files cannot be redacted with confidence: they are left out,
/// and listed in `left_out.txt`.
fn redact_all(files: &mut Files, secrets: &[String]) {
    let mut left_out = Vec::new();
    files.retain(|name, bytes| match redact(bytes, secrets) {
        Some(clean) => {
            *bytes = clean;
            true
        }
        None => {
            left_out.push(name.clone());
            false
        }
    });
    if !left_out.is_empty() {
        let list = format!(
            "not valid UTF-8, so not redactable; left out:\n{}\n",
            left_out.join("\n")
        );
        files.insert("left_out.txt".into(), list.into_bytes());
    }
}

/// `diag_bundle_<time>.zip` in `out_dir`, mode 0600: redacted, but still the mesh's inner
/// workings, for its owner only.
fn write_zip(out_dir: &Path, files: &Files) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let stamp = OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let path = out_dir.join(format!("diag_bundle_{stamp}.zip"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(format!("diag/{name}"), options)?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(path)
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// Every secret value this machine knows: the tokens (configured, from the token file, the
/// rotation's next token) and the values of secret-named settings.
fn collect_secrets(input: &DiagnoseInput) -> Vec<String> {
    let mut secrets = Vec::new();
    secrets.extend(input.token.clone());
    if let Ok(t) = std::fs::read_to_string(input.home.join("hub_token")) {
        secrets.push(t.trim().to_owned());
    }
    if let Ok(bytes) = std::fs::read(input.home.join("token_rotation.json"))
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(next) = v["next_token"].as_str()
    {
        secrets.push(next.to_owned());
    }
    for (key, value) in std::env::vars() {
        if let Some(password) = url_password(&value) {
            secrets.push(password);
        }
        if is_secret_name(&key) && holds_a_secret(&key, &value) {
            secrets.push(value);
        }
    }
    // Every secret, however short (a short one makes the bundle hard to read, but a secret
    // left in it is worse); only the empty string is not one.
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn is_secret_name(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "SIGNATURE",
        "HMAC",
        "PRIVATE",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Whether a secret-named setting's value is a secret: `SHERATAN_HUB_TOKEN_REQUIRED=1`,
/// `SHERATAN_ALLOW_WEAK_TOKEN=1`, `SHERATAN_HUB_TOKEN_FILE=/path` and the rotation's deadline
/// are switches, paths and times (replacing every `1` in the bundle would make it unreadable).
fn holds_a_secret(key: &str, value: &str) -> bool {
    let k = key.to_ascii_uppercase();
    let setting = k.ends_with("_REQUIRED")
        || k.ends_with("_FILE")
        || k.ends_with("_UNTIL")
        || k.contains("ALLOW_");
    let switch = matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
    );
    !setting && !switch
}

/// The password of `scheme://user:password@host…`, if any.
pub fn url_password(value: &str) -> Option<String> {
    let rest = value.split_once("://")?.1;
    let userinfo = rest.split(['/', '?', '#']).next()?.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}

/// The settings that matter, from the environment, with secrets replaced.
fn configuration(input: &DiagnoseInput) -> serde_json::Value {
    let mut env = BTreeMap::new();
    for (key, value) in std::env::vars() {
        if !key.starts_with("SHERATAN_") {
            continue;
        }
        let shown = if is_secret_name(&key) && holds_a_secret(&key, &value) {
            REDACTED.to_owned()
        } else {
            redact_url_password(&value)
        };
        env.insert(key, shown);
    }
    let mut home_files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&input.home) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let note = if SECRET_FILES.contains(&name.as_str()) {
                " (secret; not included)"
            } else {
                ""
            };
            home_files.push(format!("{name} ({size} bytes){note}"));
        }
    }
    home_files.sort();
    serde_json::json!({
        "control_url": redact_url_password(&input.control_url),
        "data_url": redact_url_password(&input.data_url),
        "token": if input.token.is_some() { REDACTED } else { "(none)" },
        "home": input.home.display().to_string(),
        "home_files": home_files,
        "environment": env,
    })
}

fn redact_url_password(value: &str) -> String {
    match url_password(value) {
        Some(p) => value.replacen(&format!(":{p}@"), &format!(":{REDACTED}@"), 1),
        None => value.to_owned(),
    }
}

/// `bytes` with every occurrence of every secret replaced, and the user-info of every URL
/// (a node's `addr` may carry a password nobody configured here). `None` for bytes that are
/// not UTF-8: they cannot be redacted with confidence.
pub fn redact(bytes: &[u8], secrets: &[String]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut text = sheratan_proto::redact::urls_in(text);
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), REDACTED);
        }
    }
    Some(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_found_and_redacted() {
        assert_eq!(
            url_password("postgres://app:s3cr3t@db:5432/x").as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(url_password("postgres://app@db/x"), None);
        assert_eq!(url_password("http://127.0.0.1:8787"), None);
        assert_eq!(
            redact_url_password("postgres://app:s3cr3t@db/x"),
            "postgres://app:<redacted>@db/x"
        );
        assert!(is_secret_name("SHERATAN_HUB_TOKEN_NEXT"));
        assert!(holds_a_secret("SHERATAN_HUB_TOKEN", "k3Y"));
        assert!(!holds_a_secret("SHERATAN_HUB_TOKEN_REQUIRED", "1"));
        assert!(!holds_a_secret("SHERATAN_ALLOW_WEAK_TOKEN", "1"));
        assert!(!holds_a_secret(
            "SHERATAN_HUB_TOKEN_FILE",
            "/etc/sheratan/token"
        ));
        assert!(!holds_a_secret("SHERATAN_OPENAI_API_KEY", "true"));
        assert!(is_secret_name("SHERATAN_OPENAI_API_KEY"));
        assert!(!is_secret_name("SHERATAN_HOME"));
        assert_eq!(
            redact(b"a tok-123456 b tok-123456", &["tok-123456".into()]).unwrap(),
            b"a <redacted> b <redacted>"
        );
        assert_eq!(
            redact(b"short xy secret", &["xy".into()]).unwrap(),
            b"short <redacted> secret"
        );
        assert_eq!(
            redact(br#"{"addr":"http://u:p@h:1"}"#, &[]).unwrap(),
            br#"{"addr":"http://***@h:1"}"#
        );
        assert_eq!(redact(b"\xff\xfe binary", &[]), None);
    }
}
