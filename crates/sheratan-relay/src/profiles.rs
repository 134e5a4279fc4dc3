//! Site profiles: how to drive one chat page (docs/API.md, "Hosts, broker, relay, Core"), from the TOML file
//! `SHERATAN_RELAY_PROFILES`, plus the built-ins: `demo` (the relay's own demo chat page)
//! and `generic` (a plain chat page at `SHERATAN_RELAY_GENERIC_URL`, else the demo page).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// How to drive one chat page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: String,
    /// CSS selector of the prompt box.
    pub input: String,
    /// CSS selector of the send button, or `Enter`.
    #[serde(default = "enter")]
    pub submit: String,
    /// The last element matching it holds the answer.
    pub answer: String,
    /// While an element matches it, the answer is not final.
    #[serde(default)]
    pub busy: Option<String>,
    /// The answer text must stay unchanged this long.
    #[serde(default = "stable_ms")]
    pub stable_ms: u64,
    #[serde(default = "timeout_s")]
    pub timeout_s: u64,
    /// The relay's own demo page (no model behind it): its answers are marked `demo`.
    #[serde(skip)]
    pub demo: bool,
}

fn enter() -> String {
    "Enter".into()
}

fn stable_ms() -> u64 {
    800
}

fn timeout_s() -> u64 {
    120
}

/// Stands for the relay's own demo page (`/demo/chat`) until the relay knows its address.
pub const OWN_DEMO_PAGE: &str = "relay:/demo/chat";
/// The path of the demo page on the relay's listener.
pub const DEMO_PATH: &str = "/demo/chat";

/// The built-in profile: a plain chat page (a text area, Enter to send, answers as the last
/// bot/assistant message, a typing indicator while it writes).
pub fn generic(url: &str) -> Profile {
    Profile {
        url: url.into(),
        input: "textarea, [contenteditable=\"true\"], input[type=\"text\"]".into(),
        submit: "Enter".into(),
        answer: ".msg.bot, .message.assistant, [data-role=\"assistant\"], .assistant, .bot".into(),
        busy: Some(".typing, [aria-busy=\"true\"]".into()),
        stable_ms: 800,
        timeout_s: 120,
        demo: url == OWN_DEMO_PAGE,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// Every profile by name; `generic` is always there (a file may redefine it).
#[derive(Debug, Clone)]
pub struct Profiles(BTreeMap<String, Profile>);

impl Profiles {
    /// `demo` (the relay's own demo chat page) and `generic` (`generic_url`, or the demo page
    /// when `None`).
    pub fn builtin(generic_url: Option<&str>) -> Self {
        Self(BTreeMap::from([
            ("demo".to_owned(), generic(OWN_DEMO_PAGE)),
            (
                "generic".to_owned(),
                generic(generic_url.unwrap_or(OWN_DEMO_PAGE)),
            ),
        ]))
    }

    /// Points the profiles of the relay's own demo page at `url` (its address is known once
    /// its listener is bound).
    pub fn resolve_demo_page(&mut self, url: &str) {
        for profile in self.0.values_mut() {
            if profile.url == OWN_DEMO_PAGE {
                profile.url = url.to_owned();
            }
        }
    }

    /// The built-ins plus the file's profiles; errors name the file and the problem.
    pub fn load(path: Option<&Path>, generic_url: Option<&str>) -> Result<Self, String> {
        let mut all = Self::builtin(generic_url);
        let Some(path) = path else { return Ok(all) };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: ProfilesFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (name, profile) in file.profiles {
            if !(profile.url.starts_with("http://")
                || profile.url.starts_with("https://")
                || profile.url.starts_with("file://"))
            {
                return Err(format!(
                    "{}: profile {name}: url must be http(s):// or file://",
                    path.display()
                ));
            }
            if profile.timeout_s == 0 || profile.timeout_s > 3600 {
                return Err(format!(
                    "{}: profile {name}: timeout_s must be 1..3600",
                    path.display()
                ));
            }
            all.0.insert(name, profile);
        }
        Ok(all)
    }

    /// Whether a job without a profile (`generic`) is answered by the demo page.
    pub fn generic_is_demo(&self) -> bool {
        self.get("generic").is_some_and(|p| p.demo)
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_adds_profiles_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[profiles.local-chat]\nurl = \"http://127.0.0.1:8000/chat.html\"\ninput = \"textarea\"\nsubmit = \"button#send\"\nanswer = \".msg.bot\"\nbusy = \".typing\"\nstable_ms = 500\ntimeout_s = 60\n\n[profiles.min]\nurl = \"http://x/\"\ninput = \"#q\"\nanswer = \".a\"\n",
        )
        .unwrap();
        let p = Profiles::load(Some(&path), None).unwrap();
        assert_eq!(p.names(), vec!["demo", "generic", "local-chat", "min"]);
        assert_eq!(p.get("local-chat").unwrap().submit, "button#send");
        let min = p.get("min").unwrap();
        assert_eq!(
            (
                min.submit.as_str(),
                min.stable_ms,
                min.timeout_s,
                min.busy.clone()
            ),
            ("Enter", 800, 120, None)
        );

        std::fs::write(
            &path,
            "[profiles.bad]\nurl = \"javascript:alert(1)\"\ninput = \"a\"\nanswer = \"b\"\n",
        )
        .unwrap();
        assert!(
            Profiles::load(Some(&path), None)
                .unwrap_err()
                .contains("url must be")
        );
        std::fs::write(
            &path,
            "[profiles.typo]\nurl = \"http://x/\"\ninput = \"a\"\nanswr = \"b\"\n",
        )
        .unwrap();
        assert!(Profiles::load(Some(&path), None).is_err());
    }
}
