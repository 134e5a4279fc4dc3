//! The OpenAI-compatible backend: `POST {base_url}/chat/completions` (Ollama, llama.cpp
//! server, vLLM and OpenAI itself speak it), with a timeout and retries on 429 and 5xx.

use std::time::Duration;

use sheratan_client::ProgressSink;
use sheratan_proto::relay::{ChatMessage, ChatRequest, ChatResponse};

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// E.g. `http://127.0.0.1:11434/v1` (Ollama) or `http://127.0.0.1:8080/v1` (llama.cpp).
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Tries in all for 429, 5xx and connection failures.
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error(
        "the OpenAI backend is not configured (set SHERATAN_OPENAI_BASE_URL and SHERATAN_OPENAI_MODEL)"
    )]
    NotConfigured,
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: the answer has no choices[0].message.content: {detail}")]
    Malformed { url: String, detail: String },
}

impl OpenAiError {
    /// Whether a later attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            OpenAiError::NotConfigured | OpenAiError::Malformed { .. } => false,
            OpenAiError::Transport { .. } => true,
            OpenAiError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

pub struct OpenAi {
    config: OpenAiConfig,
    http: reqwest::Client,
}

impl OpenAi {
    /// Verifies `https://` servers against the system's roots and the mesh CA
    /// (`SHERATAN_CA_FILE`); fails only when that file cannot be read.
    pub fn new(config: OpenAiConfig) -> Result<Self, sheratan_client::ClientError> {
        let http = sheratan_client::http_client_builder()?
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.timeout)
            .build()
            .map_err(|e| sheratan_client::ClientError::Config(e.to_string()))?;
        Ok(Self { config, http })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The assistant's answer to `prompt` (with an optional system message), asked with
    /// `stream: true`: each piece goes to `progress` as it arrives. A server that answers in
    /// one JSON body instead is read that way.
    pub async fn complete(
        &self,
        prompt: &str,
        system: Option<&str>,
        progress: &ProgressSink,
    ) -> Result<String, OpenAiError> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        // Errors (which end up in job results and logs) name the URL without its user-info.
        let shown = sheratan_proto::redact::url(&url);
        let message = |role: &str, content: &str| ChatMessage {
            role: role.into(),
            content: content.into(),
        };
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(message("system", system));
        }
        messages.push(message("user", prompt));
        let body = ChatRequest {
            model: self.config.model.clone(),
            messages,
            stream: true,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http.post(&url).json(&body);
            if let Some(key) = &self.config.api_key {
                request = request.bearer_auth(key);
            }
            let (err, retry_after) = match request.send().await {
                Err(e) => (
                    OpenAiError::Transport {
                        url: shown.clone(),
                        message: transport_failure(&e),
                    },
                    None,
                ),
                Ok(response) if response.status().is_success() && is_event_stream(&response) => {
                    match read_stream(response, progress).await {
                        Ok(text) => return Ok(text),
                        Err(message) => (
                            OpenAiError::Transport {
                                url: shown.clone(),
                                message,
                            },
                            None,
                        ),
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    match response.text().await {
                        Err(e) => (
                            OpenAiError::Transport {
                                url: shown.clone(),
                                message: e.without_url().to_string(),
                            },
                            None,
                        ),
                        Ok(text) if !(200..300).contains(&status) => (
                            OpenAiError::Status {
                                url: shown.clone(),
                                status,
                                body: text.chars().take(300).collect(),
                            },
                            retry_after,
                        ),
                        Ok(text) => return content(&shown, &text),
                    }
                }
            };
            if !err.retryable() || attempt >= self.config.attempts.max(1) {
                return Err(err);
            }
            let wait = retry_after
                .map(Duration::from_secs)
                .unwrap_or_else(|| Duration::from_millis(500) * 2u32.pow(attempt - 1))
                .min(Duration::from_secs(30));
            tracing::warn!(attempt, "relay: {err}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }
}

/// What went wrong on the way to the server, in the words an operator acts on ("connection
/// refused", not reqwest's outer "error sending request").
fn transport_failure(e: &reqwest::Error) -> String {
    let mut innermost: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    if let Some(io) = innermost.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                return "connection refused: is the server running at this address?".into();
            }
            std::io::ErrorKind::TimedOut => return "the connection timed out".into(),
            _ => {}
        }
    }
    if e.is_timeout() {
        return "no answer within the timeout".into();
    }
    let text = innermost.to_string();
    if e.is_connect() {
        format!("cannot connect: {text}")
    } else {
        text
    }
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Reads a streamed answer (server-sent events, `data: {chunk}` … `data: [DONE]`): the whole
/// text, each piece also reported to `progress` as it arrives.
async fn read_stream(
    mut response: reqwest::Response,
    progress: &ProgressSink,
) -> Result<String, String> {
    let mut answer = String::new();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| format!("the streamed answer broke off: {}", e.without_url()))?;
        let Some(chunk) = chunk else {
            return Ok(answer);
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                return Ok(answer);
            }
            let piece: sheratan_proto::relay::ChatChunk =
                serde_json::from_str(data).map_err(|e| {
                    format!("a streamed chunk is not chat-completions JSON ({e}): {data:.200}")
                })?;
            if let Some(text) = piece
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.delta.content)
            {
                progress.output(&text);
                answer.push_str(&text);
            }
        }
    }
}

fn content(url: &str, text: &str) -> Result<String, OpenAiError> {
    let malformed = |detail: String| OpenAiError::Malformed {
        url: url.to_owned(),
        detail,
    };
    let answer: ChatResponse = serde_json::from_str(text).map_err(|e| {
        malformed(format!(
            "{e}: {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    answer
        .choices
        .into_iter()
        .next()
        .map(|choice| choice.message.content)
        .ok_or_else(|| malformed(text.chars().take(200).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that is not there: the error says "connection refused" and names the URL
    /// (without its password), not reqwest's "error sending request".
    #[tokio::test]
    async fn a_refused_connection_says_so_and_names_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let openai = OpenAi::new(OpenAiConfig {
            base_url: format!("http://user:secret-pw@127.0.0.1:{port}/v1"),
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(5),
            attempts: 1,
        })
        .unwrap();
        let err = openai
            .complete("hi", None, &ProgressSink::disabled())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection refused"), "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{port}/v1/chat/completions")),
            "{err}"
        );
        assert!(!err.contains("secret-pw"), "{err}");
    }
}
