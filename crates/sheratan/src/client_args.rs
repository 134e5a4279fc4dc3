//! Where local commands find the hub and its token.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Hub Control plane.
    #[arg(
        long,
        env = "SHERATAN_CONTROL_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    pub control_url: String,
    /// Hub Data plane.
    #[arg(
        long,
        env = "SHERATAN_DATA_URL",
        default_value = "http://127.0.0.1:8788"
    )]
    pub data_url: String,
    /// The mesh token. Unset: read $SHERATAN_HOME/hub_token (the hub's machine).
    #[arg(long, env = "SHERATAN_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// State directory of a local hub, for its token file.
    #[arg(long, env = "SHERATAN_HOME", default_value = "./.sheratan")]
    pub home: PathBuf,
}

impl ClientArgs {
    /// The token: the flag or environment, else the local hub's token file.
    pub fn token(&self) -> Option<String> {
        let token = self
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| sheratan_hub::auth::read_token_file(&self.home).ok())
            .filter(|t| !t.is_empty());
        if token.is_none() {
            // Said once per command: a hub that requires a token will answer AUTH_FAIL, and
            // its message cannot know where this command looked.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "note: no token: --token and SHERATAN_HUB_TOKEN are unset or empty, and {} is missing or empty; run this in the hub's directory, or pass --home or --token; the hub will answer AUTH_FAIL unless it runs without authentication",
                    self.home.join(sheratan_hub::auth::TOKEN_FILE).display()
                );
            });
        }
        token
    }

    pub fn control(&self) -> anyhow::Result<sheratan_client::ControlClient> {
        Ok(sheratan_client::ControlClient::new(
            &self.control_url,
            self.token(),
        )?)
    }

    pub fn data(&self) -> anyhow::Result<sheratan_client::DataClient> {
        Ok(sheratan_client::DataClient::new(
            &self.data_url,
            self.token(),
        )?)
    }
}

/// This machine's name, for default node ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && sheratan_proto::ids::validate_node_id(h).is_ok())
        .unwrap_or_else(|| "localhost".into())
}
