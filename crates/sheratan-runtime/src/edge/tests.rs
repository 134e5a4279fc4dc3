//! The edge in process: a small server built from the shared extractors, driven with
//! `Router::oneshot` and a peer address of the test's choosing (a second machine's address
//! costs nothing here). Each test tries to get past one defence.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::ServiceExt;

use super::*;

const TOKEN: &str = "edge-test-token-0123456789";
const LIMIT: usize = 64;

struct Server;

impl Edge for Server {
    type Credential = ();

    fn authenticate(&self, headers: &axum::http::HeaderMap, _: SocketAddr) -> Result<(), ApiError> {
        check_mesh_token(headers, Some(&[TOKEN]))
    }

    fn body_limit(&self) -> usize {
        LIMIT
    }
}

#[derive(Deserialize)]
struct Job {
    kind: String,
    #[serde(default)]
    caps: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    limit: Option<u32>,
}

fn server() -> Router {
    let routes = Router::new()
        .route(
            "/jobs",
            post(
                |_: Caller<Arc<Server>>, JsonBody(job): JsonBody<Job>| async move {
                    format!("{} {}", job.kind, job.caps.len())
                },
            ),
        )
        .route(
            "/raw",
            post(|RawBody(body): RawBody| async move { body.len().to_string() }),
        )
        .route(
            "/list",
            get(|QueryParams(q): QueryParams<Query>| async move { format!("{:?}", q.limit) }),
        )
        .route(
            "/jobs/{n}",
            get(|PathParams(n): PathParams<u32>| async move { n.to_string() }),
        )
        .route(
            "/admin",
            get(|Peer(peer): Peer| async move { require_loopback(peer, "/admin").map(|()| "ok") }),
        );
    with_fallbacks(routes, "the test server", "/jobs, /raw, /list, /admin")
        .with_state(Arc::new(Server))
}

fn local() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// A request from `peer`, as `serve` hands it to the router.
fn from(peer: SocketAddr, mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

fn post_json(path: &str) -> axum::http::request::Builder {
    Request::post(path).header(header::CONTENT_TYPE, "application/json")
}

/// Status and body; the body parsed as JSON when it is JSON.
async fn send(req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = server().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

fn job(token: Option<&str>, body: &str) -> Request<Body> {
    let mut req = post_json("/jobs");
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    from(local(), req.body(Body::from(body.to_owned())).unwrap())
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_caller_without_the_token_is_refused() {
    let body = r#"{"kind":"echo"}"#;
    let (status, answer) = send(job(None, body)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::FORBIDDEN, "AUTH_FAIL")
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no token")
    );
    let (status, _) = send(job(Some("edge-test-token-012345678"), body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a prefix of the token");
    let (status, answer) = send(job(Some(TOKEN), body)).await;
    assert_eq!((status, answer), (StatusCode::OK, "echo 0".into()));
}

#[tokio::test]
async fn either_header_carries_the_token_but_two_tokens_are_refused() {
    let with = |headers: &[(&str, &str)]| {
        let mut req = post_json("/jobs");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        from(local(), req.body(Body::from(r#"{"kind":"k"}"#)).unwrap())
    };
    let bearer = format!("bearer {TOKEN}");
    for ok in [
        vec![(sheratan_proto::headers::TOKEN, TOKEN)],
        vec![("authorization", bearer.as_str())],
        vec![
            ("authorization", bearer.as_str()),
            (sheratan_proto::headers::TOKEN, TOKEN),
        ],
    ] {
        assert_eq!(send(with(&ok)).await.0, StatusCode::OK, "{ok:?}");
    }
    // One guess in each header: if either matching were enough, every request would be two
    // guesses of a brute force.
    for two in [
        vec![
            ("authorization", bearer.as_str()),
            (sheratan_proto::headers::TOKEN, "guess-0123456789abcdef"),
        ],
        vec![
            (sheratan_proto::headers::TOKEN, "guess-0123456789abcdef"),
            (sheratan_proto::headers::TOKEN, TOKEN),
        ],
    ] {
        let (status, answer) = send(with(&two)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{two:?}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("two different tokens")
        );
    }
}

#[tokio::test]
async fn bodies_are_json_objects_of_the_right_shape() {
    let refused = [
        ("", "empty"),
        ("[1]", "must be a JSON object"),
        (r#"{"kind":"k","caps":["a",2]}"#, "caps[1]"),
        (r#"{"kind":"k"} {}"#, "malformed JSON"),
        (r#"{"caps":[]}"#, "missing field `kind`"),
        (
            r#"{"kind":"k","$serde_json::private::RawValue":1}"#,
            "reserved",
        ),
    ];
    for (body, says) in refused {
        let (status, answer) = send(job(Some(TOKEN), body)).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{body}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_declared_or_streamed() {
    // Declared: refused before a byte is read (the body here is empty).
    let req = Request::post("/raw")
        .header(header::CONTENT_LENGTH, (LIMIT + 1).to_string())
        .body(Body::empty())
        .unwrap();
    let (status, answer) = send(from(local(), req)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    // Streamed without a length: refused once it outgrows the limit.
    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 10])));
    let req = Request::post("/raw")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let (status, _) = send(from(local(), req)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // At the limit: read.
    let req = Request::post("/raw")
        .body(Body::from(vec![b'x'; LIMIT]))
        .unwrap();
    assert_eq!(
        send(from(local(), req)).await,
        (StatusCode::OK, serde_json::json!(LIMIT))
    );
}

#[tokio::test]
async fn queries_and_paths_that_do_not_decode_are_the_contracts_400() {
    let get_from = |uri: &str| from(local(), Request::get(uri).body(Body::empty()).unwrap());
    assert_eq!(
        send(get_from("/list?limit=5")).await,
        (StatusCode::OK, "Some(5)".into())
    );
    for (uri, says) in [
        ("/list?limit=many", "query parameter limit"),
        ("/list?limit=-1", "query parameter limit"),
        ("/list?mystery=1", "unknown field"),
        ("/jobs/abc", "bad path"),
    ] {
        let (status, answer) = send(get_from(uri)).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{uri}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{uri}: {message}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_contracts_shape() {
    let (status, answer) = send(from(
        local(),
        Request::get("/nope").body(Body::empty()).unwrap(),
    ))
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    assert!(
        answer["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("/jobs, /raw")
    );
    let (status, answer) = send(from(
        local(),
        Request::delete("/raw").body(Body::empty()).unwrap(),
    ))
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );
}

#[tokio::test]
async fn loopback_only_routes_refuse_every_other_address() {
    let admin = |peer: &str| {
        from(
            peer.parse().unwrap(),
            Request::get("/admin").body(Body::empty()).unwrap(),
        )
    };
    for peer in [
        "127.0.0.1:1",
        "127.8.9.10:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]:1",
    ] {
        assert_eq!(send(admin(peer)).await.0, StatusCode::OK, "{peer}");
    }
    for peer in [
        "10.0.0.5:1",
        "192.168.1.2:1",
        "[::ffff:10.0.0.5]:1",
        "[fe80::1]:1",
        "0.0.0.0:1",
    ] {
        let (status, answer) = send(admin(peer)).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::FORBIDDEN, "LOCALHOST_ONLY"),
            "{peer}"
        );
    }
}

#[tokio::test]
async fn a_server_started_without_peer_addresses_fails_closed() {
    // Without `serve`'s peer address nothing can tell loopback from remote: refuse.
    let req = Request::get("/admin").body(Body::empty()).unwrap();
    let (status, answer) = send(req).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
    );
    assert_eq!(
        answer["error"]["message"], "internal error",
        "the cause is not sent"
    );
}
