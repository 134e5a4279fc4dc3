//! Operator-declared `exec` handlers: a command run per job, payload on stdin, result on
//! stdout, killed with its whole process group at the timeout.

use sheratan_client::ProgressSink;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Outcome;

/// The only variables a command inherits from the node; its handler's `env` adds more.
pub const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// How much of stderr a failure message keeps (its end).
const STDERR_TAIL: usize = 2048;
/// At most this much stdout is read as the result.
const MAX_STDOUT: usize = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Program and arguments; no shell is involved.
    pub command: Vec<String>,
    /// Killed (with its process group) after this many seconds; also bounded by the lease.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Whether a non-zero exit is worth another attempt.
    #[serde(default = "yes")]
    pub retry_on_failure: bool,
}

fn default_timeout() -> u64 {
    300
}

fn yes() -> bool {
    true
}

impl ExecSpec {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("command must name a program".into());
        }
        if self.timeout_s == 0 {
            return Err("timeout_s must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) async fn run(
        &self,
        payload: &serde_json::Value,
        deadline: Duration,
        progress: &ProgressSink,
    ) -> Outcome {
        let timeout = Duration::from_secs(self.timeout_s).min(deadline);
        let mut child = match self.command().spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::Failure {
                    message: format!("cannot start {:?}: {e}", self.command[0]),
                    retryable: false,
                };
            }
        };
        // Whatever ends this run early (its timeout, or the future dropped: a cancel, a lost
        // lease) kills the command's whole process group, not only its first process.
        let mut group = Group(
            child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32)),
        );
        let (status, out, err) = match tokio::time::timeout(
            timeout,
            talk(&mut child, payload.to_string(), progress),
        )
        .await
        {
            Ok(done) => done,
            Err(_) => {
                return Outcome::Failure {
                    message: format!(
                        "TIMEOUT: {:?} ran longer than {timeout:?} and was killed with its process group",
                        self.command[0]
                    ),
                    retryable: true,
                };
            }
        };
        // Finished: its process group id may be reused from now on; kill nothing.
        group.0 = None;
        match status {
            Ok(status) => self.outcome(status, &out, &err),
            Err(e) => Outcome::Failure {
                message: format!("waiting for {:?} failed: {e}", self.command[0]),
                retryable: true,
            },
        }
    }

    /// The command, ready to spawn: an empty environment plus an allow-list (the node's own,
    /// with its mesh token and the API keys of the relay's backends, is none of a job
    /// command's business), piped standard streams, its own process group (so a timeout
    /// kills what it started too).
    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.env_clear();
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.args(&self.command[1..])
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }

    /// A finished command's outcome: its stdout as one JSON value, or the failure with the
    /// tail of its stderr.
    fn outcome(&self, status: std::process::ExitStatus, out: &[u8], err: &[u8]) -> Outcome {
        if !status.success() {
            let tail_start = err.len().saturating_sub(STDERR_TAIL);
            let tail = String::from_utf8_lossy(&err[tail_start..]);
            return Outcome::Failure {
                message: format!(
                    "{:?} exited with {status}; stderr: {}",
                    self.command[0],
                    tail.trim()
                ),
                retryable: self.retry_on_failure,
            };
        }
        match serde_json::from_slice(out) {
            Ok(value) => Outcome::Success(value),
            Err(e) => Outcome::Failure {
                message: format!(
                    "{:?} succeeded but its stdout is not one JSON value ({e}): {}",
                    self.command[0],
                    String::from_utf8_lossy(&out[..out.len().min(200)])
                ),
                retryable: false,
            },
        }
    }
}

/// Writes the input, reads stdout (up to its cap) and stderr at once, and waits for the
/// command to exit. Lines of stderr that start with a progress prefix are reported, not kept.
async fn talk(
    child: &mut tokio::process::Child,
    input: String,
    progress: &ProgressSink,
) -> (std::io::Result<std::process::ExitStatus>, Vec<u8>, Vec<u8>) {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let write = async {
        // A command that does not read its input must not fail the job.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read_out = async {
        let _ = (&mut stdout)
            .take(MAX_STDOUT as u64)
            .read_to_end(&mut out)
            .await;
    };
    let read_err = async {
        let mut lines = tokio::io::BufReader::new(&mut stderr);
        let mut line = Vec::new();
        // Whether the last piece read ended its line (the next one starts a line).
        let mut at_start = true;
        loop {
            line.clear();
            // A line longer than a protocol line can be is read in pieces, none of them taken
            // for protocol: memory stays bounded whatever the command writes.
            match (&mut lines)
                .take(MAX_STDERR_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let whole = at_start && line.ends_with(b"\n");
                    at_start = line.ends_with(b"\n");
                    if !(whole && report_line(&line, progress)) {
                        keep_tail(&mut err, &line);
                    }
                }
            }
        }
    };
    tokio::join!(write, read_out, read_err);
    (child.wait().await, out, err)
}

/// The longest stderr line read at once: a protocol line with a whole report's output.
const MAX_STDERR_LINE: usize = sheratan_proto::progress::MAX_OUTPUT + 64;

/// Keeps the end of what a command wrote on stderr (a failure shows its last
/// [`STDERR_TAIL`] bytes; nothing before them is needed).
fn keep_tail(err: &mut Vec<u8>, piece: &[u8]) {
    err.extend_from_slice(piece);
    if err.len() > 2 * STDERR_TAIL {
        err.drain(..err.len() - STDERR_TAIL);
    }
}

/// Reports a stderr line written in the progress protocol (docs/API.md, "Progress"):
/// `sheratan:progress <0.0–1.0> [message]`, `sheratan:message <text>`,
/// `sheratan:output <text>` (appended with its newline). False for any other line.
fn report_line(line: &[u8], progress: &ProgressSink) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let Some(rest) = text.strip_prefix("sheratan:") else {
        return false;
    };
    let (verb, arg) = rest.split_once(' ').unwrap_or((rest.trim_end(), ""));
    match verb {
        "progress" => {
            let arg = arg.trim_end_matches(['\n', '\r']);
            let (value, message) = arg.split_once(' ').unwrap_or((arg, ""));
            let Ok(value) = value.trim().parse::<f64>() else {
                return false;
            };
            progress.fraction(value);
            if !message.trim().is_empty() {
                progress.message(message.trim());
            }
            true
        }
        "message" => {
            progress.message(arg.trim_end_matches(['\n', '\r']));
            true
        }
        "output" => {
            progress.output(arg);
            true
        }
        _ => false,
    }
}

/// A running command's process group, killed when dropped while set.
struct Group(Option<rustix::process::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use crate::{Handlers, Outcome};

    fn handlers(toml: &str) -> Handlers {
        Handlers::from_toml(toml).unwrap()
    }

    #[tokio::test]
    async fn a_script_gets_the_payload_on_stdin_and_answers_on_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("double.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nread line\necho \"{\\\"got\\\": $line, \\\"env\\\": \\\"$GREETING\\\"}\"\n",
        )
        .unwrap();
        let h = handlers(&format!(
            "[handlers.double]\ncommand = [\"/bin/sh\", \"{}\"]\nenv = {{ GREETING = \"hi\" }}\n",
            script.display()
        ));
        let out = h
            .run(
                "double",
                &serde_json::json!({"n": 2}),
                std::time::Duration::from_secs(5),
                &CancellationToken::new(),
                &sheratan_client::ProgressSink::disabled(),
            )
            .await;
        assert_eq!(
            out,
            Outcome::Success(serde_json::json!({"got": {"n": 2}, "env": "hi"}))
        );
    }

    /// Lines on stderr in the progress protocol are reported, not kept with the stderr a
    /// failure shows; other lines (and malformed protocol lines) stay there.
    #[tokio::test]
    async fn stderr_progress_lines_are_reported() {
        let h = handlers(
            r#"
            [handlers.talk]
            command = ["/bin/sh", "-c", "echo 'sheratan:progress 0.5 half way' >&2; echo 'sheratan:output Hello,' >&2; echo 'sheratan:output world' >&2; echo 'sheratan:progress lots' >&2; echo plain >&2; echo '{}'"]
            "#,
        );
        let sink = sheratan_client::ProgressSink::new();
        let out = h
            .run(
                "talk",
                &serde_json::Value::Null,
                std::time::Duration::from_secs(5),
                &CancellationToken::new(),
                &sink,
            )
            .await;
        assert_eq!(out, Outcome::Success(serde_json::json!({})));
        let (value, message, output) = sink.unsent();
        assert_eq!(value, Some(0.5));
        assert_eq!(message.as_deref(), Some("half way"));
        assert_eq!(output, "Hello,\nworld\n");
    }

    /// A line too long to be a report is not one (nor is its continuation), and however much
    /// a command writes on stderr, only its end is kept for the failure message.
    #[tokio::test]
    async fn long_stderr_lines_are_not_reports_and_stderr_is_kept_as_its_tail() {
        let h = handlers(
            r#"
            [handlers.noisy]
            command = ["/bin/sh", "-c", "printf 'sheratan:output %0200000d' 0 >&2; echo >&2; echo 'sheratan:output ok' >&2; yes x | head -c 3000000 >&2; echo ' the end' >&2; exit 3"]
            "#,
        );
        let sink = sheratan_client::ProgressSink::new();
        let out = h
            .run(
                "noisy",
                &serde_json::Value::Null,
                std::time::Duration::from_secs(10),
                &CancellationToken::new(),
                &sink,
            )
            .await;
        assert_eq!(sink.unsent().2, "ok\n");
        match out {
            Outcome::Failure { message, .. } => {
                assert!(
                    message.ends_with("the end"),
                    "{}",
                    &message[message.len() - 40..]
                );
                assert!(message.len() < 4096, "{} bytes", message.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn failures_carry_the_stderr_tail_and_timeouts_kill_the_group() {
        let h = handlers(concat!(
            "[handlers.fail]\ncommand = [\"/bin/sh\", \"-c\", \"echo broken >&2; exit 3\"]\n",
            "[handlers.hang]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 30 & sleep 30\"]\ntimeout_s = 1\n",
            "[handlers.text]\ncommand = [\"/bin/echo\", \"not json\"]\n",
            "[handlers.missing]\ncommand = [\"/nonexistent/program\"]\n",
        ));
        let d = std::time::Duration::from_secs(10);
        let never = CancellationToken::new();
        match h
            .run(
                "fail",
                &serde_json::Value::Null,
                d,
                &never,
                &sheratan_client::ProgressSink::disabled(),
            )
            .await
        {
            Outcome::Failure { message, retryable } => {
                assert!(
                    message.contains("broken") && message.contains('3'),
                    "{message}"
                );
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        let started = std::time::Instant::now();
        assert!(matches!(
            h.run(
                "hang",
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
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "killed at the timeout, not after the sleeps"
        );
        assert!(matches!(
            h.run(
                "text",
                &serde_json::Value::Null,
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
                "missing",
                &serde_json::Value::Null,
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
    }
}
