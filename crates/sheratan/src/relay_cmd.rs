//! `sheratan relay`, and the relay settings `up` shares.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use sheratan_relay::cdp::{BrowserSource, SandboxMode};
use sheratan_relay::openai::OpenAiConfig;
use sheratan_relay::profiles::Profiles;
use sheratan_relay::{Backend, Relay, RelayConfig};

use crate::client_args::{ClientArgs, MemberAuthArgs};
use crate::hub_args::EdgeArgs;
use crate::mesh_cmd::{auth_banner, bind_error, limits, until_signal};
use crate::{BUILD_ID, Failure, VERSION, usage};

#[derive(Debug, Clone, Args)]
pub struct RelayOptions {
    /// A running Chrome's DevTools endpoint (ignored with --launch-chromium).
    #[arg(long, env = "SHERATAN_CDP_URL")]
    pub cdp_url: Option<String>,
    /// Launch a headless Chromium (on the first CDP job, and again if it dies).
    #[arg(long, env = "SHERATAN_LAUNCH_CHROMIUM", value_parser = crate::hub_args::parse_flag, default_value = "0", action = clap::ArgAction::Set)]
    pub launch_chromium: bool,
    /// The Chromium binary to launch (default: chromium on the PATH).
    #[arg(long, env = "SHERATAN_CHROMIUM")]
    pub chromium: Option<PathBuf>,
    /// The launched Chromium's sandbox: auto (on, except as root, where Chromium has none),
    /// on (as root the launch fails instead), off (--no-sandbox; logged).
    #[arg(long, env = "SHERATAN_CHROMIUM_SANDBOX", default_value = "auto", value_parser = parse_sandbox)]
    pub chromium_sandbox: SandboxMode,
    /// TOML file of site profiles ([profiles.NAME] url, input, submit, answer, busy, stable_ms, timeout_s).
    #[arg(long, env = "SHERATAN_RELAY_PROFILES")]
    pub relay_profiles: Option<PathBuf>,
    /// The page of the built-in `generic` profile.
    /// The chat page of the built-in `generic` profile [default: the relay's own demo page,
    /// /demo/chat].
    #[arg(long, env = "SHERATAN_RELAY_GENERIC_URL")]
    pub relay_generic_url: Option<String>,
    /// The backend of jobs that do not name one: cdp or openai.
    #[arg(long, env = "SHERATAN_RELAY_BACKEND", default_value = "cdp", value_parser = parse_backend)]
    pub relay_backend: Backend,
    /// Tabs (CDP jobs) at once.
    #[arg(long, env = "SHERATAN_RELAY_TABS", default_value_t = 4)]
    pub relay_tabs: u32,
    /// The job kinds the relay runs, comma-separated (a job goes only to a node that offers
    /// its kind).
    #[arg(
        long,
        env = "SHERATAN_RELAY_KINDS",
        value_delimiter = ',',
        default_value = "chat,llm"
    )]
    pub relay_kinds: Vec<String>,
    /// OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 (Ollama).
    #[arg(long, env = "SHERATAN_OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    #[arg(long, env = "SHERATAN_OPENAI_MODEL")]
    pub openai_model: Option<String>,
    #[arg(long, env = "SHERATAN_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Seconds one chat-completions call may take.
    #[arg(long, env = "SHERATAN_OPENAI_TIMEOUT_SEC", default_value_t = 120)]
    pub openai_timeout_sec: u64,
}

fn parse_sandbox(s: &str) -> Result<SandboxMode, String> {
    match s {
        "auto" => Ok(SandboxMode::Auto),
        "on" | "1" => Ok(SandboxMode::On),
        "off" | "0" => Ok(SandboxMode::Off),
        other => Err(format!("{other:?}: expected auto, on or off")),
    }
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "cdp" => Ok(Backend::Cdp),
        "openai" => Ok(Backend::Openai),
        other => Err(format!("{other:?} is not a backend: cdp or openai")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub auth: MemberAuthArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[arg(long, env = "SHERATAN_NODE_ID", default_value = "relay")]
    pub node_id: String,
    #[arg(long, env = "SHERATAN_RELAY_ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub options: RelayOptions,
}

/// Where a relay runs: its id and listener, the hub, its home, and whether to launch
/// Chromium when one is on the PATH and no DevTools URL was given (`up` does).
pub struct RelaySetup<'a> {
    pub node_id: &'a str,
    pub listen: SocketAddr,
    pub control_url: &'a str,
    pub data_url: &'a str,
    pub home: &'a Path,
    pub auto_launch: bool,
}

/// The relay's settings.
pub fn relay_config(
    setup: RelaySetup<'_>,
    token: impl Into<sheratan_client::MeshToken>,
    options: &RelayOptions,
) -> Result<RelayConfig, Failure> {
    let RelaySetup {
        node_id,
        listen,
        control_url,
        data_url,
        home,
        auto_launch,
    } = setup;
    sheratan_proto::ids::validate_node_id(node_id).map_err(|e| usage(format!("--node-id: {e}")))?;
    if options.relay_tabs == 0 || options.relay_tabs > 64 {
        return Err(usage("--relay-tabs must be between 1 and 64".into()));
    }
    let mut config = RelayConfig::new(listen, control_url, data_url, token, home.to_owned());
    config.node_id = node_id.into();
    config.tracer = sheratan_trace::Tracer::from_env("sheratan-relay").map_err(usage)?;
    config.profiles = Profiles::load(
        options.relay_profiles.as_deref(),
        options.relay_generic_url.as_deref(),
    )
    .map_err(usage)?;
    config.default_backend = options.relay_backend;
    config.tabs = options.relay_tabs;
    config.kinds = options.relay_kinds.clone();
    config.concurrency = options.relay_tabs * 2;
    config.build_id = BUILD_ID.into();
    set_browser(&mut config, options, home, auto_launch)?;
    config.openai = openai_config(options)?;
    Ok(config)
}

/// Where the CDP backend's browser comes from: a Chromium the relay launches (with
/// `--launch-chromium`, or under `up` when no `SHERATAN_CDP_URL` is set), or a running Chrome.
/// No Chromium to launch is an error only when asked for by name; under `up` the backend is
/// reported unavailable, with what to install.
fn set_browser(
    config: &mut RelayConfig,
    options: &RelayOptions,
    home: &Path,
    auto_launch: bool,
) -> Result<(), Failure> {
    let launch = options.launch_chromium || (auto_launch && options.cdp_url.is_none());
    if !launch {
        let url = options.cdp_url.clone();
        config.browser = Some(BrowserSource::Url(
            url.unwrap_or_else(|| "http://127.0.0.1:9222".into()),
        ));
        return Ok(());
    }
    let chromium = options
        .chromium
        .clone()
        .or_else(sheratan_relay::cdp::find_chromium);
    match chromium {
        Some(chromium) => {
            config.browser = Some(BrowserSource::Launch {
                chromium,
                dir: home.join("relay"),
                sandbox: options.chromium_sandbox,
            })
        }
        None if options.launch_chromium => {
            return Err(usage("--launch-chromium: no chromium on the PATH (apt-get install chromium, or set SHERATAN_CHROMIUM)".into()));
        }
        None => {
            config.cdp_unavailable =
                "no chromium on the PATH: install Debian's chromium, or set SHERATAN_CDP_URL to a running Chrome".into()
        }
    }
    Ok(())
}

/// The OpenAI-compatible backend, when both its URL and its model are set.
fn openai_config(options: &RelayOptions) -> Result<Option<OpenAiConfig>, Failure> {
    match (&options.openai_base_url, &options.openai_model) {
        (Some(base_url), Some(model)) => Ok(Some(OpenAiConfig {
            base_url: base_url.clone(),
            model: model.clone(),
            api_key: options.openai_api_key.clone().filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(options.openai_timeout_sec.max(1)),
            attempts: 3,
        })),
        (Some(_), None) | (None, Some(_)) => Err(usage(
            "the OpenAI backend needs both SHERATAN_OPENAI_BASE_URL and SHERATAN_OPENAI_MODEL"
                .into(),
        )),
        (None, None) => Ok(None),
    }
}

/// Says when jobs without a profile get the demo page's canned answers.
fn demo_note(config: &RelayConfig) -> &'static str {
    if config.profiles.generic_is_demo() {
        "; without a profile: the demo chat page, no model"
    } else {
        ""
    }
}

/// One line on how the CDP backend is set up, for banners.
pub fn describe_cdp(config: &RelayConfig) -> String {
    match &config.browser {
        Some(BrowserSource::Launch { chromium, .. }) => {
            format!("cdp: launches {} on the first job", chromium.display()) + demo_note(config)
        }
        Some(BrowserSource::Url(url)) => {
            format!("cdp: Chrome at {}", sheratan_proto::redact::url(url)) + demo_note(config)
        }
        None => format!("cdp: unavailable ({})", config.cdp_unavailable),
    }
}

pub async fn run_relay(args: RelayArgs) -> Result<(), Failure> {
    let token = args.client.member_token(&args.auth, "relay")?;
    let auth = auth_banner(&token);
    let mut config = relay_config(
        RelaySetup {
            node_id: &args.node_id,
            listen: args.listen,
            control_url: &args.client.control_url,
            data_url: &args.client.data_url,
            home: &args.client.home,
            auto_launch: false,
        },
        token,
        &args.options,
    )?;
    config.serve = limits(&args.edge)?;
    config.max_body_bytes = args.edge.max_body_bytes;
    config.tls =
        crate::mesh_cmd::member_tls(&args.edge, "the relay", args.listen, &args.client.home)?;
    let tls = config.tls.is_some();
    let cdp = describe_cdp(&config);
    let openai = config
        .openai
        .as_ref()
        .map_or("openai: not configured".into(), |o| {
            format!(
                "openai: {} ({})",
                sheratan_proto::redact::url(&o.base_url),
                o.model
            )
        });
    let relay = Relay::bind(config)
        .await
        .map_err(|e| bind_error("relay", args.listen, "SHERATAN_RELAY_ADDR", e))?;
    let addr = relay
        .local_addr()
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    println!("sheratan relay {VERSION}: {}, queue llm", args.node_id);
    println!(
        "  relay: {}  ({cdp}; {openai}; {auth})",
        sheratan_runtime::serve::local_url_tls(addr, tls)
    );
    args.client.print_hub();
    until_signal("the relay after running jobs finish", |stop| {
        relay.run(stop)
    })
    .await
}
