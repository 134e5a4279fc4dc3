//! The WebRelay's wire types: an `llm` job's payload and result (also the body and answer of
//! `POST /v1/complete`), its open tabs, and the chat-completions request it sends to an
//! OpenAI-compatible server.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Which backend runs a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cdp,
    Openai,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cdp => "cdp",
            Backend::Openai => "openai",
        }
    }
}

/// An `llm` job's payload, and the body of `POST /v1/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayRequest {
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub backend: Option<Backend>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// An `llm` job's result, and the answer of `POST /v1/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RelayResult {
    pub text: String,
    pub backend: Backend,
    pub elapsed_ms: u64,
    /// The answer came from the relay's own demo page, which has no model behind it (a job
    /// without a profile on a relay with no chat site configured).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
}

/// An open tab, as `GET /v1/sessions` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    pub target_id: String,
    pub job_id: Option<String>,
    pub profile: String,
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `POST {base_url}/chat/completions` of an OpenAI-compatible server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    /// Some servers leave it out of answers.
    #[serde(default)]
    pub role: String,
    pub content: String,
}

/// The part of a chat-completions answer the relay reads: the first choice's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatResponse {
    pub choices: Vec<ChatChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatChoice {
    pub message: ChatMessage,
}

/// One `data:` event of a streamed chat-completions answer (`stream: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatChunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkChoice {
    #[serde(default)]
    pub delta: ChunkDelta,
}

/// The piece of the answer a chunk adds (a role-only first chunk has no content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}
