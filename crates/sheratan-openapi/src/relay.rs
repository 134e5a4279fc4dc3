//! The WebRelay (docs/API.md, "WebRelay").

use serde_json::Value;
use sheratan_proto::health::RelayHealth;
use sheratan_proto::relay::{RelayRequest, RelayResult, SessionList};

use crate::{Api, Auth, document, get, post};

/// The relay (default 127.0.0.1:3000).
pub fn relay() -> Value {
    let api = Api {
        title: "Sheratan WebRelay",
        description: "LLM completions through a chat page in Chromium (CDP) or an \
            OpenAI-compatible server. The relay also takes llm jobs from the hub; \
            /v1/complete answers one request synchronously. The prose contract is docs/API.md."
            .to_string(),
        common: &[(500, "INTERNAL: the relay's fault")],
    };
    let ops = vec![
        get("/health", "The relay and its backends (public)")
            .auth(Auth::Public)
            .ok::<RelayHealth>(200, "up"),
        get("/openapi.json", "This document").ok_raw(200, "application/json", "the document"),
        get("/metrics", "Prometheus metrics").ok_raw(
            200,
            "text/plain",
            "Prometheus text exposition",
        ),
        post("/v1/complete", "One completion, synchronously")
            .body::<RelayRequest>()
            .ok::<RelayResult>(200, "the answer")
            .err(
                503,
                "UNAVAILABLE: the backend failed (the message says why)",
            ),
        get("/v1/sessions", "The tabs open now").ok::<SessionList>(200, "the tabs"),
        get("/demo/chat", "The demo chat page (public)")
            .auth(Auth::Public)
            .ok_raw(200, "text/html", "the page"),
        get("/demo/chat.js", "The demo chat page's script (public)")
            .auth(Auth::Public)
            .ok_raw(200, "text/javascript", "the script"),
        get("/demo/chat.css", "The demo chat page's style (public)")
            .auth(Auth::Public)
            .ok_raw(200, "text/css", "the style"),
    ];
    document(api, ops)
}
