//! `sheratan hub` and `sheratan up`: open the store, build the hub, bind what `up` runs
//! beside it, print the banner, and hand every task to the supervisor.

use std::sync::Arc;

use sheratan_hub::Hub;

use crate::banner::Banner;
use crate::hub_args::{HubArgs, StoreUrl};
use crate::supervisor::Supervisor;
use crate::up_cmd::{Members, UpArgs};
use crate::{Failure, usage};

/// `sheratan hub`.
pub async fn run_hub(args: HubArgs) -> Result<(), Failure> {
    start(&args, None).await
}

/// `sheratan up`: the hub and every component beside it.
pub async fn run_up(args: UpArgs) -> Result<(), Failure> {
    start(&args.hub, Some(&args)).await
}

async fn start(args: &HubArgs, up: Option<&UpArgs>) -> Result<(), Failure> {
    if up.is_some() && args.tls_client_ca.is_some() {
        // What `up` runs beside the hub has no client certificates to present.
        return Err(usage(
            "SHERATAN_TLS_CLIENT_CA (mutual TLS) is for a hub whose nodes run elsewhere: run `sheratan hub` with it".into(),
        ));
    }
    let mut config = args.to_config().map_err(usage)?;
    config.tracer = sheratan_trace::Tracer::from_env("sheratan-hub").map_err(usage)?;
    let home = config.home.clone();
    if up.is_some() {
        // Everything `up` runs talks to this machine only: plain HTTP to its own addresses
        // (a hub on a specific address with SHERATAN_TLS=off) never crosses a network.
        for ip in sheratan_runtime::tls::local_addresses() {
            sheratan_client::own_address(ip);
        }
    }
    // What `up` runs beside the hub trusts the mesh CA the hub's certificate comes from.
    let ca = home.join("tls/ca.pem");
    if up.is_some() && config.tls.iter().any(Option::is_some) && ca.exists() {
        sheratan_client::trust_ca_file(ca);
    }
    let clock: Arc<dyn sheratan_store::Clock> = Arc::new(sheratan_store::SystemClock);
    let opened = crate::store_open::open(args, &home, clock.clone()).await?;
    let (store_url, store) = (opened.url, opened.store);
    let mut banner = Banner::hub(&config);
    let mut hub = Hub::build_with_clock(config, store, clock)
        .await
        .map_err(hub_error)?;
    hub.state().credentials.attach(opened.credentials);
    hub.state().schedules.attach(opened.schedules);
    refresh_credentials(hub.state().clone()).await?;
    if let StoreUrl::Postgres { url, schema } = &store_url {
        crate::store_open::share_state(&mut hub, url, schema.clone()).await?;
    }
    // Everything `up` runs beside the hub shares one token that follows the hub's rotations.
    let mesh_token = sheratan_client::MeshToken::default();
    let in_use = crate::supervisor::tokens_to_use(&hub.state().tokens);
    mesh_token.set(in_use.0.clone(), in_use.1.clone());
    let members = match up {
        Some(up) => {
            let own = member_credentials(up, &hub, &home).await?;
            crate::up_cmd::bind(up, &hub, &mesh_token, &own, &home).await?
        }
        None => Members::default(),
    };
    // The watcher takes its log's lock before the ready line: a watcher started after it
    // (the README's readers try `sheratan audit-watch`) finds it taken.
    let watcher = match up {
        Some(up) => open_watcher(up)?,
        None => None,
    };
    banner.listeners(&hub, &members);
    banner.state(&hub, &home, &store_url, up.is_some() && watcher.is_some());
    let signals = sheratan_runtime::shutdown_on_signals();
    banner.print(up.is_some());
    Supervisor::new(signals)
        .run(
            hub,
            members,
            watcher,
            up.is_some().then_some((mesh_token, in_use)),
        )
        .await
}

/// The secrets of the members `up` runs on node credentials (none with authentication off or
/// `--member-credentials off`, which is said).
async fn member_credentials(
    up: &UpArgs,
    hub: &Hub,
    home: &std::path::Path,
) -> Result<std::collections::HashMap<String, String>, Failure> {
    if !hub.state().tokens.required() {
        return Ok(Default::default());
    }
    if up.member_credentials == crate::up_cmd::OnOff::Off {
        tracing::warn!(
            "--member-credentials off: up's members run on the mesh token (a handler that leaks it leaks the whole mesh)"
        );
        return Ok(Default::default());
    }
    crate::up_credentials::ensure(hub.state(), home, &up.credentialed_members()).await
}

/// `up`'s audit watcher; none (with a warning) when another watcher follows these logs.
fn open_watcher(up: &UpArgs) -> Result<Option<sheratan_ops::watch::Watcher>, Failure> {
    match sheratan_ops::watch::Watcher::open(up.watch_config()) {
        Ok(watcher) => Ok(Some(watcher)),
        Err(err) => match err.downcast_ref::<sheratan_ops::watch::AlreadyWatched>() {
            Some(already) => {
                tracing::warn!(
                    "another audit watcher ({}) follows {}: it raises the alerts, and up starts none",
                    already.holder,
                    already.dir
                );
                Ok(None)
            }
            None => Err(Failure::from(err.context("start the audit watcher"))),
        },
    }
}

/// A hub that cannot be built: a configuration error (exit 2) or a failure (exit 1).
fn hub_error(e: sheratan_hub::HubError) -> Failure {
    match e {
        sheratan_hub::HubError::Config(msg) => usage(msg),
        sheratan_hub::HubError::Token(sheratan_hub::auth::TokenError::Invalid(msg)) => usage(msg),
        other => Failure::from(anyhow::Error::new(other)),
    }
}

/// Credentials into memory now, and again twice a second: a revocation on another hub sharing
/// the database takes effect here within about half a second.
async fn refresh_credentials(state: Arc<sheratan_hub::HubState>) -> Result<(), Failure> {
    state
        .credentials
        .refresh()
        .await
        .map_err(|e| Failure::from(anyhow::anyhow!("loading the credentials: {e}")))?;
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            match state.credentials.refresh().await {
                Ok(()) => failing = false,
                // Said once per outage: the copy in memory stays in force meanwhile.
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(
                        "cannot re-read the credentials (the last copy stays in force): {err}"
                    );
                }
                Err(_) => {}
            }
        }
    });
    Ok(())
}
