//! One prompt through one tab: open a tab, load the profile's page, type the prompt, send it,
//! wait for the answer to settle, read it, close the tab (on every path).

use sheratan_client::ProgressSink;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cdp::{CdpError, Connection};
use crate::profiles::Profile;

/// Why a tab did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Cdp(#[from] CdpError),
    #[error("the page did not load: {0}")]
    Navigation(String),
    #[error("no element matches the input selector {0:?} (is the profile right for this page?)")]
    NoInput(String),
    #[error("no element matches the submit selector {0:?}")]
    NoSubmit(String),
    #[error("timeout: no settled answer within {0} s")]
    Timeout(u64),
    #[error("the page's script failed: {0}")]
    Script(String),
}

impl PageError {
    /// Whether trying again later may help (the browser or the site may be back; a wrong
    /// profile will not fix itself).
    pub fn retryable(&self) -> bool {
        !matches!(self, PageError::NoInput(_) | PageError::NoSubmit(_))
    }
}

/// An open tab, attached with a flattened session. Close it with [`Tab::close`]; if it is
/// dropped unclosed (the job was cancelled), it is closed in the background.
pub struct Tab {
    connection: Arc<Connection>,
    pub target_id: String,
    session_id: String,
    closed: bool,
}

impl Tab {
    pub async fn open(connection: Arc<Connection>) -> Result<Tab, CdpError> {
        let created = connection
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await?;
        let target_id = created["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = match connection
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                None,
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                let _ = connection
                    .call("Target.closeTarget", json!({"targetId": target_id}), None)
                    .await;
                return Err(e);
            }
        };
        Ok(Tab {
            session_id: attached["sessionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            connection,
            target_id,
            closed: false,
        })
    }

    /// Calls a CDP method on this tab.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.connection
            .call(method, params, Some(&self.session_id))
            .await
    }

    /// This tab's events (see [`Connection::events`]).
    pub fn events(&self) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
        self.connection.events(&self.session_id)
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&self, expression: &str) -> Result<Value, PageError> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = answer.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("exception");
            return Err(PageError::Script(text.to_owned()));
        }
        Ok(answer["result"]["value"].clone())
    }

    /// A PNG of the tab, for diagnosis.
    pub async fn screenshot(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await
            .ok()?;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str()?)
            .ok()
    }

    /// The page's HTML, for diagnosis.
    pub async fn html(&self) -> Option<String> {
        self.eval("document.documentElement ? document.documentElement.outerHTML : ''")
            .await
            .ok()?
            .as_str()
            .map(str::to_owned)
    }

    pub async fn close(mut self) {
        self.closed = true;
        let _ = self
            .connection
            .call(
                "Target.closeTarget",
                json!({"targetId": self.target_id}),
                None,
            )
            .await;
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        if !self.closed
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (connection, target_id) = (self.connection.clone(), self.target_id.clone());
            runtime.spawn(async move {
                let _ = connection
                    .call("Target.closeTarget", json!({"targetId": target_id}), None)
                    .await;
            });
        }
    }
}

/// How often the page is looked at while loading and while the answer comes.
const POLL: Duration = Duration::from_millis(20);

/// A JavaScript string literal for `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Runs `prompt` through the page of `profile` in `tab`; the answer's text. While the answer
/// grows on the page, what is new goes to `progress` at every look.
pub async fn ask(
    tab: &Tab,
    profile: &Profile,
    prompt: &str,
    progress: &ProgressSink,
) -> Result<String, PageError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(profile.timeout_s);
    load(tab, profile, deadline).await?;
    let state_js = watch_answers(tab, profile).await?;
    // Answers already on the page (a greeting, history) are not ours.
    let before = tab.eval(&state_js).await?["count"].as_u64().unwrap_or(0);
    let loaded_ms = started.elapsed().as_millis();
    send(tab, profile, prompt).await?;
    let sent_ms = started.elapsed().as_millis();
    // Settled: a new answer element, not busy, its text unchanged for stable_ms.
    let mut shown = String::new();
    loop {
        let state = tab.eval(&state_js).await?;
        let count = state["count"].as_u64().unwrap_or(0);
        let text = state["text"].as_str().unwrap_or_default().trim();
        // Streamed as it grows; a page that rewrites what it showed streams no more (the
        // result still has the whole answer).
        if count > before && text.len() > shown.len() && text.starts_with(shown.as_str()) {
            progress.output(&text[shown.len()..]);
            shown = text.to_owned();
        }
        let busy = state["busy"].as_bool().unwrap_or(false);
        let quiet_ms = state["quiet_ms"].as_f64().unwrap_or(0.0);
        if count > before && !busy && !text.is_empty() && quiet_ms >= profile.stable_ms as f64 {
            tracing::debug!(
                loaded_ms,
                sent_ms,
                settled_ms = started.elapsed().as_millis(),
                "relay: answer settled"
            );
            return Ok(text.to_owned());
        }
        if Instant::now() >= deadline {
            return Err(PageError::Timeout(profile.timeout_s));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Opens the profile's page and waits until it is loaded with the prompt box there (pages
/// that build their UI in script need a moment).
async fn load(tab: &Tab, profile: &Profile, deadline: Instant) -> Result<(), PageError> {
    let navigated = tab
        .call("Page.navigate", json!({"url": profile.url}))
        .await?;
    if let Some(error) = navigated.get("errorText").and_then(Value::as_str)
        && !error.is_empty()
    {
        return Err(PageError::Navigation(format!("{}: {error}", profile.url)));
    }
    let ready = format!(
        "document.readyState === 'complete' && !!document.querySelector({})",
        js(&profile.input)
    );
    let load_deadline =
        (Instant::now() + Duration::from_secs(profile.timeout_s.min(30))).min(deadline);
    loop {
        if tab.eval(&ready).await? == Value::Bool(true) {
            return Ok(());
        }
        if Instant::now() >= load_deadline {
            return Err(PageError::NoInput(profile.input.clone()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Installs a watcher in the page that notes when the last answer's text last changed, by
/// the page's own clock: the quiet period is measured exactly, not to the nearest poll.
/// Returns the script that reads the state: `{count, text, busy, quiet_ms}`.
async fn watch_answers(tab: &Tab, profile: &Profile) -> Result<String, PageError> {
    let answers = format!(
        "(() => {{ const all = document.querySelectorAll({}); const last = all.length ? all[all.length - 1] : null; \
         return [all.length, last ? (last.innerText || last.textContent || '') : '']; }})",
        js(&profile.answer)
    );
    tab.eval(&format!(
        "(() => {{ const read = {answers}; const key = () => JSON.stringify(read()); \
         window.__sheratan = {{ read, seen: key(), at: performance.now() }}; \
         new MutationObserver(() => {{ const now = key(); if (now !== window.__sheratan.seen) {{ window.__sheratan.seen = now; window.__sheratan.at = performance.now(); }} }}) \
           .observe(document, {{ subtree: true, childList: true, characterData: true }}); return true; }})()"
    ))
    .await?;
    let busy = match &profile.busy {
        Some(b) => format!("!!document.querySelector({})", js(b)),
        None => "false".into(),
    };
    Ok(format!(
        "(() => {{ const [count, text] = window.__sheratan.read(); \
         return {{ count, text, busy: {busy}, quiet_ms: performance.now() - window.__sheratan.at }}; }})()"
    ))
}

/// Puts the prompt in the input and submits it: the Enter key, or a click on the submit
/// element.
async fn send(tab: &Tab, profile: &Profile, prompt: &str) -> Result<(), PageError> {
    let on_element = |selector: &str, action: &str| {
        format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.{action}(); return true; }})()",
            js(selector)
        )
    };
    if tab.eval(&on_element(&profile.input, "focus")).await? != Value::Bool(true) {
        return Err(PageError::NoInput(profile.input.clone()));
    }
    // One insertText: near-instant for long prompts (typing key by key costs ~4 ms a character).
    tab.call("Input.insertText", json!({"text": prompt}))
        .await?;
    if profile.submit.eq_ignore_ascii_case("enter") {
        for kind in ["keyDown", "keyUp"] {
            tab.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13, "text": if kind == "keyDown" { "\r" } else { "" }}),
            )
            .await?;
        }
    } else if tab.eval(&on_element(&profile.submit, "click")).await? != Value::Bool(true) {
        return Err(PageError::NoSubmit(profile.submit.clone()));
    }
    Ok(())
}
