//! The Dashboard (3001): serves the operator's web UI — a small single-page app with no build
//! step, embedded in the binary — and `/config.json` telling it where Core is. All data flows
//! between the browser and the Core API directly (Core allows this origin through CORS); the
//! dashboard server never sees the token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    /// The Core API as the browser reaches it.
    pub core_url: String,
    pub version: String,
    /// The listener's connection caps and deadlines.
    pub serve: sheratan_runtime::serve::ServeLimits,
}

struct DashboardState {
    config: DashboardConfig,
    /// Scripts from this server only, data from this server and Core only, no framing.
    csp: HeaderValue,
}

pub struct Dashboard {
    listener: TcpListener,
    state: Arc<DashboardState>,
}

/// The origin (`scheme://host:port`) of a URL, for the CSP.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

impl Dashboard {
    pub async fn bind(config: DashboardConfig) -> std::io::Result<Dashboard> {
        let core = origin(&config.core_url);
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self' {core}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        let csp = HeaderValue::from_str(&csp)
            .map_err(|_| std::io::Error::other("the Core URL cannot go into a header"))?;
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Dashboard {
            listener,
            state: Arc::new(DashboardState { config, csp }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let limits = self.state.config.serve;
        sheratan_runtime::serve::serve(
            self.listener,
            router(self.state),
            limits,
            Default::default(),
            shutdown,
        )
        .await
    }
}

fn router(state: Arc<DashboardState>) -> Router {
    let routes =
        Router::new()
            .route("/", get(index))
            .route("/index.html", get(index))
            .route(
                "/app.js",
                get(|s: State<Arc<DashboardState>>| async move {
                    asset(&s, "text/javascript; charset=utf-8", APP_JS)
                }),
            )
            .route(
                "/app.css",
                get(|s: State<Arc<DashboardState>>| async move {
                    asset(&s, "text/css; charset=utf-8", APP_CSS)
                }),
            )
            .route(
                "/favicon.svg",
                get(|s: State<Arc<DashboardState>>| async move {
                    asset(&s, "image/svg+xml", FAVICON_SVG)
                }),
            )
            .route("/config.json", get(config))
            .route(
                "/health",
                get(|| async {
                    axum::Json(sheratan_proto::health::DashboardHealth {
                        status: "ok".into(),
                        role: "dashboard".into(),
                    })
                }),
            );
    sheratan_runtime::edge::with_fallbacks(
        routes,
        "the dashboard",
        "/, /app.js, /app.css, /favicon.svg, /config.json and /health (its pages live under /#/…)",
    )
    .with_state(state)
}

fn asset(s: &DashboardState, content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CONTENT_SECURITY_POLICY, s.csp.clone()),
        ],
        body,
    )
        .into_response()
}

async fn index(State(s): State<Arc<DashboardState>>) -> Response {
    let mut response = asset(&s, "text/html; charset=utf-8", INDEX_HTML);
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn config(State(s): State<Arc<DashboardState>>) -> Response {
    let mut response = axum::Json(sheratan_proto::core_api::DashboardConfig {
        core_url: s.config.core_url.clone(),
        version: s.config.version.clone(),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_of_a_url() {
        assert_eq!(
            super::origin("http://127.0.0.1:8001/"),
            "http://127.0.0.1:8001"
        );
        assert_eq!(
            super::origin("https://core.example:8443/api"),
            "https://core.example:8443"
        );
    }
}
