//! The OpenAPI 3.1 documents of Sheratan's HTTP APIs: the hub's control and data planes, Core
//! and the relay. Every body's schema is generated from its `sheratan-proto` type (utoipa's
//! `ToSchema` derive, which reads the serde attributes), and every route is one line of a
//! table per API (`hub`, `core`, `relay`) saying its method, path, auth, body, answers and
//! errors. The documents are checked in as `docs/openapi/*.json` (a test fails when they
//! differ from what this crate generates), served at `/openapi.json` by each component, and
//! validated in the suite by an independent validator.
//!
//! Why a table and not attributes on the handlers: the table is the contract in one place,
//! next to docs/API.md's; the suite checks it against the routers both ways (every documented
//! operation is routed, every routed path is documented), so the two cannot drift.

mod core;
mod hub;
mod relay;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use utoipa::ToSchema;

pub use self::core::core;
pub use self::hub::{hub_control, hub_data};
pub use self::relay::relay;

/// Builds one API's document.
pub type Build = fn() -> Value;

/// Every API this crate describes, with the file name of its checked-in document.
pub const APIS: [(&str, Build); 4] = [
    ("hub-control", hub_control),
    ("hub-data", hub_data),
    ("core", core),
    ("relay", relay),
];

/// The rendered document of one of [`APIS`] by its name, built once per process: what
/// `GET /openapi.json` answers.
pub fn served(name: &str) -> Option<&'static str> {
    // One cell per API: a server builds only the documents it serves.
    static DOCS: [OnceLock<String>; APIS.len()] = [const { OnceLock::new() }; APIS.len()];
    let i = APIS.iter().position(|(n, _)| *n == name)?;
    Some(DOCS[i].get_or_init(|| render(&APIS[i].1())).as_str())
}

/// The document as served and checked in: pretty JSON, keys sorted, a final newline.
pub fn render(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Anyone, without a token.
    Public,
    /// No token, but loopback peers only (the data plane's `/health`).
    Loopback,
    /// The token (mesh token, a component's own, or a credential whose role allows it).
    Token,
    /// The hub's admin path: the token from a loopback peer, or an admin credential from anywhere.
    Admin,
}

/// A body: JSON of a proto type, or another media type described in words.
#[derive(Clone, Copy)]
enum Content {
    Json(fn(&mut Schemas) -> Value),
    Raw(&'static str),
}

/// The schemas one document collects as its operations name types.
type Schemas = BTreeMap<String, Value>;

/// A reference to `T`'s schema, adding `T` and every type it names to the document.
fn schema_ref<T: ToSchema>(schemas: &mut Schemas) -> Value {
    let mut found = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut found);
    for (name, schema) in found {
        let schema = serde_json::to_value(schema).expect("a schema always serializes");
        schemas.insert(name, schema);
    }
    json!({ "$ref": format!("#/components/schemas/{}", T::name()) })
}

/// The query parameters a query-string type (a proto struct) stands for, one per field.
fn query_params<T: ToSchema>(schemas: &mut Schemas) -> Vec<Value> {
    let mut found = Vec::new();
    T::schemas(&mut found);
    for (name, schema) in found {
        let schema = serde_json::to_value(schema).expect("a schema always serializes");
        schemas.insert(name, schema);
    }
    let object = serde_json::to_value(T::schema()).expect("a schema always serializes");
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = object["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut p = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(d) = description {
                p["description"] = d;
            }
            p
        })
        .collect()
}

/// Registers a type's schema and answers its `$ref`.
type SchemaOf = fn(&mut Schemas) -> Value;

/// One operation of an API: a row of its table.
pub(crate) struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    body: Option<Content>,
    query: Option<fn(&mut Schemas) -> Vec<Value>>,
    answers: Vec<(u16, &'static str, Option<Content>)>,
    errors: Vec<(u16, &'static str)>,
    signed: bool,
    headers: Vec<(&'static str, &'static str, bool)>,
    /// A WebSocket's frames: what the client sends, what the server sends.
    frames: Option<[SchemaOf; 2]>,
}

pub(crate) fn op(method: &'static str, path: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        summary,
        auth: Auth::Token,
        body: None,
        query: None,
        answers: Vec::new(),
        errors: Vec::new(),
        signed: false,
        headers: Vec::new(),
        frames: None,
    }
}

pub(crate) fn get(path: &'static str, summary: &'static str) -> Op {
    op("get", path, summary)
}
pub(crate) fn post(path: &'static str, summary: &'static str) -> Op {
    op("post", path, summary)
}
pub(crate) fn put(path: &'static str, summary: &'static str) -> Op {
    op("put", path, summary)
}
pub(crate) fn patch(path: &'static str, summary: &'static str) -> Op {
    op("patch", path, summary)
}
pub(crate) fn delete(path: &'static str, summary: &'static str) -> Op {
    op("delete", path, summary)
}

impl Op {
    pub(crate) fn auth(mut self, auth: Auth) -> Op {
        self.auth = auth;
        self
    }
    /// A JSON request body of type `T`.
    pub(crate) fn body<T: ToSchema>(mut self) -> Op {
        self.body = Some(Content::Json(schema_ref::<T>));
        self
    }
    /// A request body of another media type.
    pub(crate) fn raw_body(mut self, media: &'static str) -> Op {
        self.body = Some(Content::Raw(media));
        self
    }
    /// Query parameters: the fields of `T`.
    pub(crate) fn query<T: ToSchema>(mut self) -> Op {
        self.query = Some(query_params::<T>);
        self
    }
    /// A JSON answer of type `T` with this status.
    pub(crate) fn ok<T: ToSchema>(mut self, status: u16, when: &'static str) -> Op {
        self.answers
            .push((status, when, Some(Content::Json(schema_ref::<T>))));
        self
    }
    /// An answer of another media type.
    pub(crate) fn ok_raw(mut self, status: u16, media: &'static str, when: &'static str) -> Op {
        self.answers.push((status, when, Some(Content::Raw(media))));
        self
    }
    /// An answer without a body.
    pub(crate) fn ok_empty(mut self, status: u16, when: &'static str) -> Op {
        self.answers.push((status, when, None));
        self
    }
    /// An error status this operation answers (with the contract's error body), and when.
    pub(crate) fn err(mut self, status: u16, when: &'static str) -> Op {
        self.errors.push((status, when));
        self
    }
    /// The result signature headers are required (`POST /v1/results`, progress).
    pub(crate) fn signed(mut self) -> Op {
        self.signed = true;
        self
    }
    /// The operation opens a WebSocket whose client frames are `C` and server frames `S`
    /// (OpenAPI has no words for them: they go in `x-sheratan-frames`).
    pub(crate) fn frames<C: ToSchema, S: ToSchema>(mut self) -> Op {
        self.frames = Some([schema_ref::<C>, schema_ref::<S>]);
        self
    }
    /// A request header the operation reads.
    pub(crate) fn header(mut self, name: &'static str, what: &'static str, required: bool) -> Op {
        self.headers.push((name, what, required));
        self
    }
}

/// What a document says about itself and what every operation of it shares.
pub(crate) struct Api {
    pub title: &'static str,
    pub description: String,
    /// The statuses every authenticated operation of this API may answer besides its own.
    pub common: &'static [(u16, &'static str)],
}

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

pub(crate) fn document(api: Api, ops: Vec<Op>) -> Value {
    let mut schemas = Schemas::new();
    schema_ref::<sheratan_proto::ErrorBody>(&mut schemas);
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for o in ops {
        let operation = operation(&api, &o, &mut schemas);
        let item = paths.entry(o.path).or_default();
        assert!(
            item.insert(o.method.to_string(), operation).is_none(),
            "{} {} is in the table twice",
            o.method,
            o.path
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": api.title,
            "version": sheratan_proto::VERSION,
            "description": api.description,
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "security": [{ "bearer": [] }, { "token": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": security_schemes(),
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": { "type": "integer", "minimum": 0 },
                },
            },
        },
    })
}

fn security_schemes() -> Value {
    json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>`: the mesh token, the component's own \
                token, or a credential (`shtc_…`) whose role allows the operation. Two different \
                tokens in one request are 403 AUTH_FAIL.",
        },
        "token": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Sheratan-Token",
            "description": "The same token in a header of its own, instead of `Authorization`.",
        },
    })
}

fn operation(api: &Api, o: &Op, schemas: &mut Schemas) -> Value {
    let mut op = json!({
        "operationId": operation_id(o.method, o.path),
        "summary": o.summary,
        "responses": responses(api, o, schemas),
    });
    if matches!(o.auth, Auth::Public | Auth::Loopback) {
        op["security"] = json!([]);
    }
    if let Some([client, server]) = o.frames {
        op["x-sheratan-frames"] = json!({ "client": client(schemas), "server": server(schemas) });
    }
    let mut params: Vec<Value> = path_params(o.path);
    if let Some(q) = o.query {
        params.extend(q(schemas));
    }
    if o.signed {
        params.push(header_param(
            sheratan_proto::headers::CONTENT_SHA256,
            "Hex SHA-256 of the raw body.",
            "^[0-9a-f]{64}$",
        ));
        params.push(header_param(
            sheratan_proto::headers::SIGNATURE,
            "`sha256=<hex HMAC-SHA256(key, raw body)>`; the key is the mesh token, or for a \
             credential the lowercase hex of HKDF-SHA256(secret, info \"sheratan result signing \
             v1\").",
            "^sha256=[0-9a-f]{64}$",
        ));
    }
    for (name, what, required) in &o.headers {
        params.push(json!({
            "name": name, "in": "header", "required": required,
            "description": what, "schema": { "type": "string" },
        }));
    }
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = o.body {
        op["requestBody"] = json!({ "required": true, "content": content(body, schemas) });
    }
    op
}

fn header_param(name: &str, what: &str, pattern: &str) -> Value {
    json!({
        "name": name, "in": "header", "required": true, "description": what,
        "schema": { "type": "string", "pattern": pattern },
    })
}

fn content(c: Content, schemas: &mut Schemas) -> Value {
    match c {
        Content::Json(schema) => json!({ "application/json": { "schema": schema(schemas) } }),
        Content::Raw(media) => json!({ media: { "schema": { "type": "string" } } }),
    }
}

/// The path's `{name}` segments as required string parameters.
fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect()
}

/// `post /v1/jobs/{id}/cancel` → `post_v1_jobs_id_cancel`: unique per document, stable.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<String> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return format!("{method}_root");
    }
    format!("{method}_{}", words.join("_"))
}

fn responses(api: &Api, o: &Op, schemas: &mut Schemas) -> Value {
    let mut out = Map::new();
    for (status, when, body) in &o.answers {
        let mut r = json!({ "description": when });
        if let Some(b) = body {
            r["content"] = content(*b, schemas);
        }
        out.insert(status.to_string(), r);
    }
    let mut errors: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for (status, when) in implied_errors(o).iter().chain(&o.errors) {
        errors.entry(*status).or_default().push(when);
    }
    if o.auth != Auth::Public {
        for (status, when) in api.common {
            errors.entry(*status).or_default().push(when);
        }
    }
    for (status, whens) in errors {
        let mut r = json!({
            "description": whens.join("; "),
            "content": { "application/json": { "schema": { "$ref": ERROR_BODY } } },
        });
        if status == 429 || status == 503 {
            r["headers"] = json!({ "Retry-After": { "$ref": "#/components/headers/Retry-After" } });
        }
        out.insert(status.to_string(), r);
    }
    Value::Object(out)
}

/// The errors that follow from an operation's shape: its auth, its body, its parameters.
fn implied_errors(o: &Op) -> Vec<(u16, &'static str)> {
    let mut e = Vec::new();
    match o.auth {
        Auth::Public => {}
        Auth::Loopback => e.push((403, "LOCALHOST_ONLY: not from a loopback address")),
        Auth::Token => e.push((
            403,
            "AUTH_FAIL: token missing, wrong, revoked or two different tokens; FORBIDDEN: a \
             credential whose role does not allow this",
        )),
        Auth::Admin => e.push((
            403,
            "AUTH_FAIL: token missing, wrong, revoked or two different tokens; LOCALHOST_ONLY: \
             the token from a non-loopback address (an admin credential may call from anywhere); \
             FORBIDDEN: a credential of another role",
        )),
    }
    if o.body.is_some() {
        e.push((
            400,
            "INVALID_REQUEST: malformed JSON or a bad field (the message names it)",
        ));
        e.push((413, "PAYLOAD_TOO_LARGE: the body is over the limit"));
    } else if o.query.is_some() || o.path.contains('{') {
        e.push((
            400,
            "INVALID_REQUEST: a bad parameter (the message names it)",
        ));
    }
    e
}

#[cfg(test)]
mod tests;
