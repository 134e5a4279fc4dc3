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
    /// The mesh token. Discouraged: a flag is visible to every user of this machine in
    /// `ps` and /proc/PID/cmdline; prefer --token-file or SHERATAN_HUB_TOKEN.
    #[arg(long, env = "SHERATAN_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the mesh token (e.g. one only this user can read).
    #[arg(long, env = "SHERATAN_HUB_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// State directory of a local hub: without --token or --token-file, its hub_token is used.
    #[arg(long, env = "SHERATAN_HOME", default_value = "./.sheratan")]
    pub home: PathBuf,
    /// Join a hub with the string `sheratan join-string` printed on it: its URLs, its CA
    /// (pinned, kept in $SHERATAN_HOME/tls/ca.pem) and the token, in one. Overrides the
    /// URL and token settings.
    #[arg(long, env = "SHERATAN_JOIN", hide_env_values = true)]
    pub join: Option<String>,
}

/// How a mesh member (worker, host, broker, relay, Core) authenticates, and whether it may
/// run without: never unless the operator says so.
#[derive(Debug, Clone, Args)]
pub struct MemberAuthArgs {
    /// 0 runs this component WITHOUT authentication: anyone who reaches its port may use
    /// it. Only for a hub that runs with SHERATAN_HUB_TOKEN_REQUIRED=0 too.
    #[arg(long, env = "SHERATAN_HUB_TOKEN_REQUIRED", default_value = "1", value_parser = crate::hub_args::parse_flag, action = clap::ArgAction::Set)]
    pub token_required: bool,
}

/// Where a token was looked for, for the message that says none was found.
#[derive(Debug)]
pub struct NoToken(String);

impl std::fmt::Display for NoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ClientArgs {
    /// The banner's line naming the hub a member talks to.
    pub fn print_hub(&self) {
        println!(
            "  hub: {} (control), {} (data)",
            self.control_url, self.data_url
        );
    }

    /// The token: --token / SHERATAN_HUB_TOKEN, else --token-file / SHERATAN_HUB_TOKEN_FILE,
    /// else the local hub's $SHERATAN_HOME/hub_token. `Err` names every place looked at.
    pub fn find_token(&self) -> Result<String, NoToken> {
        if let Some(token) = self.token.clone().filter(|t| !t.is_empty()) {
            return Ok(token);
        }
        if let Some(path) = &self.token_file {
            return match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
                Ok(_) => Err(NoToken(format!(
                    "the token file {} is empty",
                    path.display()
                ))),
                Err(e) => Err(NoToken(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))),
            };
        }
        let home_file = self.home.join(sheratan_hub::auth::TOKEN_FILE);
        match sheratan_hub::auth::read_token_file(&self.home) {
            Ok(token) if !token.is_empty() => Ok(token),
            _ => Err(NoToken(format!(
                "no token: --token and SHERATAN_HUB_TOKEN are unset or empty, --token-file and SHERATAN_HUB_TOKEN_FILE are unset, and {} is missing or empty",
                home_file.display()
            ))),
        }
    }

    /// The token for a client command, if one is found; otherwise a note (once) and none:
    /// the hub's AUTH_FAIL follows unless it runs without authentication.
    pub fn token(&self) -> Option<String> {
        match self.find_token() {
            Ok(token) => Some(token),
            Err(why) => {
                // Said once per command: the hub's AUTH_FAIL cannot know where this looked.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "note: {why}; run this in the hub's directory, or pass --home, --token-file or --token; the hub will answer AUTH_FAIL unless it runs without authentication"
                    );
                });
                None
            }
        }
    }

    /// The token a mesh member runs with: it refuses to start without one (exit 2) unless
    /// authentication is disabled on purpose, which is then logged.
    pub fn member_token(
        &self,
        auth: &MemberAuthArgs,
        what: &str,
    ) -> Result<Option<String>, crate::Failure> {
        if !auth.token_required {
            tracing::warn!(
                "SHERATAN_HUB_TOKEN_REQUIRED=0: the {what} runs WITHOUT authentication; anyone who reaches it can use it"
            );
            return Ok(None);
        }
        self.find_token().map(Some).map_err(|why| {
            crate::usage(format!(
                "the {what} needs the mesh token: {why}. Pass --token-file FILE (or set SHERATAN_HUB_TOKEN), run it in the hub's directory, or set SHERATAN_HUB_TOKEN_REQUIRED=0 to run without authentication on purpose"
            ))
        })
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
