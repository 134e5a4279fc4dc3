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

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the UI besides the page: (path, content type, contents). The scripts are ES
/// modules, one per concern and one per view, loaded by `app.js`; no build step.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/app.js", JS, include_str!("../assets/app.js")),
    ("/js/html.js", JS, include_str!("../assets/js/html.js")),
    ("/js/core.js", JS, include_str!("../assets/js/core.js")),
    (
        "/js/widgets.js",
        JS,
        include_str!("../assets/js/widgets.js"),
    ),
    ("/js/live.js", JS, include_str!("../assets/js/live.js")),
    ("/js/login.js", JS, include_str!("../assets/js/login.js")),
    (
        "/js/views/overview.js",
        JS,
        include_str!("../assets/js/views/overview.js"),
    ),
    (
        "/js/views/nodes.js",
        JS,
        include_str!("../assets/js/views/nodes.js"),
    ),
    (
        "/js/views/jobs.js",
        JS,
        include_str!("../assets/js/views/jobs.js"),
    ),
    (
        "/js/views/auctions.js",
        JS,
        include_str!("../assets/js/views/auctions.js"),
    ),
    (
        "/js/views/security.js",
        JS,
        include_str!("../assets/js/views/security.js"),
    ),
    (
        "/js/views/relay.js",
        JS,
        include_str!("../assets/js/views/relay.js"),
    ),
    (
        "/js/views/queues.js",
        JS,
        include_str!("../assets/js/views/queues.js"),
    ),
    (
        "/js/views/schedules.js",
        JS,
        include_str!("../assets/js/views/schedules.js"),
    ),
    (
        "/js/views/tokens.js",
        JS,
        include_str!("../assets/js/views/tokens.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("../assets/favicon.svg"),
    ),
];

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    /// The Core API as the browser reaches it.
    pub core_url: String,
    pub version: String,
    /// The listener's connection caps and deadlines.
    pub serve: sheratan_runtime::serve::ServeLimits,
    /// The listener's TLS (`SHERATAN_TLS`); plain HTTP without.
    pub tls: Option<sheratan_runtime::tls::TlsServer>,
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
        let tls = self.state.config.tls.clone();
        sheratan_runtime::serve::serve_with(
            self.listener,
            router(self.state),
            limits,
            Default::default(),
            shutdown,
            tls,
        )
        .await
    }
}

fn router(state: Arc<DashboardState>) -> Router {
    let mut routes = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
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
    for &(path, content_type, body) in ASSETS {
        routes = routes.route(
            path,
            get(move |s: State<Arc<DashboardState>>| async move { asset(&s, content_type, body) }),
        );
    }
    sheratan_runtime::edge::with_fallbacks(
        routes,
        "the dashboard",
        "/, /app.js, /js/…, /app.css, /favicon.svg, /config.json and /health (its pages live under /#/…)",
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
    use super::ASSETS;

    /// The module a script's `import … from '…'` names, resolved against the script's path.
    fn imports(path: &str, script: &str) -> Vec<String> {
        let dir = &path[..path.rfind('/').unwrap()];
        script
            .split("from '")
            .skip(1)
            .map(|rest| {
                let target = &rest[..rest.find('\'').unwrap()];
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for part in target.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        name => parts.push(name),
                    }
                }
                format!("/{}", parts.join("/"))
            })
            .collect()
    }

    #[test]
    fn every_imported_module_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|(path, _, _)| *path).collect();
        let mut checked = 0;
        for (path, _, body) in ASSETS.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            for import in imports(path, body) {
                assert!(
                    served.contains(&import.as_str()),
                    "{path} imports {import}, which is not served"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 20,
            "only {checked} imports found: is the parser still right?"
        );
    }

    #[test]
    fn markup_enters_the_page_only_through_the_html_module() {
        for (path, _, body) in ASSETS.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            if *path == "/js/html.js" {
                continue;
            }
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(
                    !body.contains(sink),
                    "{path} uses {sink}: build markup with html`…` and put()"
                );
            }
        }
    }

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
