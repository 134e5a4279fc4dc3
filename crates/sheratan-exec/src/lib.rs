//! Job handlers shared by workers and hosts: built-in `echo` and `sleep`, the built-in `http`
//! when the operator turns it on (see [`HttpSettings`]: it is a proxy into the node's
//! network, so it is off by default and refuses internal addresses unless allowed), and
//! `exec` handlers an operator declares in a TOML file. A handler gets the job's payload and
//! a deadline and answers success with a JSON result, or failure with a message and whether a
//! retry could help. No command runs unless the operator declared it.
//!
//! ```toml
//! [http]
//! enabled = true
//! allow_hosts = ["10.8.0.0/16"]
//!
//! [handlers.resize]
//! command = ["/usr/local/bin/resize-image", "--quality", "80"]
//! timeout_s = 60                 # killed (with its process group) after this
//! env = { MAGICK_THREADS = "1" }   # with PATH, HOME, LANG, TZ: all it inherits
//! cwd = "/var/lib/resize"
//! retry_on_failure = true        # a non-zero exit is worth another attempt (default)
//! ```
//! The payload arrives on stdin as JSON; stdout must be one JSON value (the result). A non-zero
//! exit is a failure whose message ends with the tail of stderr.

mod exec;
mod http;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sheratan_client::ProgressSink;
use tokio_util::sync::CancellationToken;

pub use exec::ExecSpec;
pub use http::{HttpSettings, is_internal};

/// What running a job produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(serde_json::Value),
    Failure { message: String, retryable: bool },
}

impl Outcome {
    fn fail(message: impl Into<String>, retryable: bool) -> Self {
        Outcome::Failure {
            message: message.into(),
            retryable,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerFileError {
    #[error("cannot read the handlers file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the handlers file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerFile {
    #[serde(default)]
    http: HttpSettings,
    #[serde(default)]
    handlers: BTreeMap<String, ExecSpec>,
}

/// The handlers a node offers. Their names are its capabilities.
#[derive(Debug, Clone)]
pub struct Handlers {
    exec: BTreeMap<String, ExecSpec>,
    /// `None` unless `[http] enabled = true`.
    http: Option<http::HttpHandler>,
}

/// Names of the built-in handlers (`http` only where enabled); `exec` handlers cannot take them.
pub const BUILTINS: [&str; 3] = ["echo", "http", "sleep"];

impl Handlers {
    /// The built-in handlers only: `echo` and `sleep` (`http` is off).
    pub fn builtin() -> Self {
        Self {
            exec: BTreeMap::new(),
            http: None,
        }
    }

    /// The built-ins with the `http` handler set up as `settings` say.
    pub fn with_http(mut self, settings: &HttpSettings) -> Result<Self, String> {
        self.http = http::HttpHandler::new(settings)?;
        Ok(self)
    }

    /// Built-ins plus the `exec` handlers declared in a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, HandlerFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| HandlerFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| HandlerFileError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: HandlerFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, spec) in &file.handlers {
            if BUILTINS.contains(&name.as_str()) {
                return Err(format!(
                    "handlers.{name}: {name} is a built-in handler; pick another name"
                ));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(format!(
                    "handlers.{name}: names may use letters, digits, '.', '_' and '-'"
                ));
            }
            spec.validate()
                .map_err(|e| format!("handlers.{name}: {e}"))?;
        }
        Self {
            exec: file.handlers,
            http: None,
        }
        .with_http(&file.http)
    }

    /// Every handler name, sorted: the node's capabilities.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTINS
            .iter()
            .filter(|name| **name != "http" || self.http.is_some())
            .map(|s| s.to_string())
            .collect();
        names.extend(self.exec.keys().cloned());
        names.sort();
        names
    }

    pub fn has(&self, kind: &str) -> bool {
        match kind {
            "echo" | "sleep" => true,
            "http" => self.http.is_some(),
            other => self.exec.contains_key(other),
        }
    }

    /// Runs the handler for `kind`, which reports its progress to `progress`. Never panics on
    /// a payload; a handler that outlives `deadline` or sees `cancel` stops and fails
    /// retryably.
    pub async fn run(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        deadline: Duration,
        cancel: &CancellationToken,
        progress: &ProgressSink,
    ) -> Outcome {
        let work = async {
            match (kind, &self.http, self.exec.get(kind)) {
                ("echo", ..) => Outcome::Success(payload.clone()),
                ("sleep", ..) => sleep(payload, progress).await,
                ("http", Some(http), _) => http.run(payload, deadline).await,
                (_, _, Some(spec)) => spec.run(payload, deadline, progress).await,
                // Another node may have it: worth another attempt elsewhere.
                (other, ..) => Outcome::fail(
                    format!(
                        "this node has no handler for kind {other:?} (it has: {})",
                        self.names().join(", ")
                    ),
                    true,
                ),
            }
        };
        tokio::select! {
            outcome = work => outcome,
            () = tokio::time::sleep(deadline) => Outcome::fail(format!("TIMEOUT: the job ran past its timeout of {deadline:?} and was stopped"), true),
            () = cancel.cancelled() => Outcome::fail("the node stopped before the job finished", true),
        }
    }
}

/// `sleep`: `{"ms": N}` (or `{"seconds": S}`); answers `{"slept_ms": N}`. Reports the fraction
/// slept in tenths (sleeps of a second or more).
async fn sleep(payload: &serde_json::Value, progress: &ProgressSink) -> Outcome {
    let ms = payload["ms"]
        .as_u64()
        .or_else(|| payload["seconds"].as_f64().map(|s| (s * 1000.0) as u64));
    let Some(ms) = ms else {
        return Outcome::fail("sleep needs {\"ms\": N} or {\"seconds\": S}", false);
    };
    let steps = if ms >= 1000 { 10 } else { 1 };
    for step in 1..=steps {
        tokio::time::sleep(Duration::from_millis(ms / steps)).await;
        if steps > 1 {
            progress.fraction(step as f64 / steps as f64);
        }
    }
    Outcome::Success(serde_json::json!({ "slept_ms": ms }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handlers file the README shows (`examples/handlers.toml`) loads, and its handlers
    /// do what its comments say.
    #[tokio::test]
    async fn the_example_handlers_file_works() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/handlers.toml");
        let h = Handlers::from_file(&path).unwrap();
        assert_eq!(h.names(), ["echo", "sleep", "upper", "wordcount"]);
        let never = CancellationToken::new();
        let d = Duration::from_secs(10);
        let text = serde_json::json!({"text": "hi there"});
        assert_eq!(
            h.run(
                "upper",
                &text,
                d,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Success(serde_json::json!({"TEXT": "HI THERE"}))
        );
        assert_eq!(
            h.run(
                "wordcount",
                &text,
                d,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Success(serde_json::json!({"words": 2}))
        );
    }

    #[tokio::test]
    async fn builtins() {
        let h = Handlers::builtin();
        let never = CancellationToken::new();
        let d = Duration::from_secs(5);
        assert_eq!(
            h.run(
                "echo",
                &serde_json::json!({"a": 1}),
                d,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Success(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            h.run(
                "sleep",
                &serde_json::json!({"ms": 10}),
                d,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Success(serde_json::json!({"slept_ms": 10}))
        );
        assert!(matches!(
            h.run(
                "sleep",
                &serde_json::json!({}),
                d,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Failure {
                retryable: false,
                ..
            }
        ));
        assert!(matches!(
            h.run(
                "nope",
                &serde_json::Value::Null,
                d,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Failure {
                retryable: true,
                ..
            }
        ));
        // Deadline and cancellation both stop a long job.
        let short = Duration::from_millis(50);
        assert!(matches!(
            h.run(
                "sleep",
                &serde_json::json!({"ms": 10_000}),
                short,
                &never,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Failure {
                retryable: true,
                ..
            }
        ));
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(matches!(
            h.run(
                "sleep",
                &serde_json::json!({"ms": 10_000}),
                d,
                &cancel,
                &sheratan_client::ProgressSink::disabled()
            )
            .await,
            Outcome::Failure {
                retryable: true,
                ..
            }
        ));
        assert_eq!(h.names(), vec!["echo", "sleep"], "http is off by default");
        assert!(!h.has("http"));
        assert!(matches!(
            h.run(
                "http",
                &serde_json::json!({"url": "http://1.1.1.1/"}),
                d,
                &never,
                &sheratan_client::ProgressSink::disabled(),
            )
            .await,
            Outcome::Failure { .. }
        ));
    }

    #[test]
    fn handler_files_are_validated() {
        assert!(Handlers::from_toml("[handlers.echo]\ncommand = [\"/bin/true\"]").is_err());
        assert!(Handlers::from_toml("[handlers.x]\ncommand = []").is_err());
        assert!(Handlers::from_toml("[handlers.x]\ncommand = [\"/bin/true\"]\nbogus = 1").is_err());
        let h = Handlers::from_toml("[handlers.resize]\ncommand = [\"/bin/cat\"]\ntimeout_s = 5")
            .unwrap();
        assert_eq!(h.names(), vec!["echo", "resize", "sleep"]);
        let h = Handlers::from_toml("[http]\nenabled = true\n").unwrap();
        assert_eq!(h.names(), vec!["echo", "http", "sleep"]);
        assert!(Handlers::from_toml("[http]\nenabled = true\nbogus = 1\n").is_err());
        assert!(Handlers::from_toml("[http]\nenabled = true\nallow_hosts = [\"a b\"]\n").is_err());
    }
}
