//! The built-in `http` handler: one HTTP request per job, on behalf of whoever may submit
//! jobs. That makes it a proxy into the network the node sits in, so it runs only where the
//! operator turned it on, and then only toward public addresses unless named:
//!
//! ```toml
//! [http]
//! enabled = true                          # off unless set
//! allow_hosts = ["api.internal", "10.8.0.0/16", "192.168.1.20"]  # beyond public addresses
//! methods = ["GET", "HEAD", "POST"]       # the default
//! max_response_bytes = 1048576            # the default (1 MiB); more fails the job
//! max_redirects = 5                       # the default
//! ```
//!
//! Destinations are checked after DNS resolution (the resolver hands the connector only
//! allowed addresses, so a name cannot be re-pointed between check and connect) and again at
//! every redirect. Refused unless allowed: loopback, private (RFC 1918, fc00::/7), link-local
//! (169.254.0.0/16 with the cloud metadata address, fe80::/10), CGNAT (100.64.0.0/10),
//! multicast, unspecified and reserved addresses, also inside IPv4-mapped and NAT64 IPv6.
//! Credentials and routing headers (`Authorization`, `Proxy-Authorization`, `Cookie`, `Host`,
//! `X-Sheratan-*`) cannot be set by a payload. The answer is read as a stream and the job
//! fails past `max_response_bytes`, so a huge answer costs the node no memory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::Outcome;

/// `[http]` of the handlers file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default)]
    pub enabled: bool,
    /// Host names, IP addresses and CIDR blocks let through the private-address check.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_max_response")]
    pub max_response_bytes: u64,
    #[serde(default = "default_max_redirects")]
    pub max_redirects: usize,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

fn default_max_response() -> u64 {
    1 << 20
}

fn default_max_redirects() -> usize {
    5
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_hosts: Vec::new(),
            methods: default_methods(),
            max_response_bytes: default_max_response(),
            max_redirects: default_max_redirects(),
        }
    }
}

/// What the handler may reach: the settings, checked and parsed.
#[derive(Debug)]
struct Policy {
    names: Vec<String>,
    nets: Vec<ipnet::IpNet>,
    methods: Vec<reqwest::Method>,
    max_response_bytes: u64,
}

impl Policy {
    fn from_settings(settings: &HttpSettings) -> Result<Policy, String> {
        let mut names = Vec::new();
        let mut nets = Vec::new();
        for entry in &settings.allow_hosts {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<ipnet::IpNet>() {
                nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                nets.push(ipnet::IpNet::from(ip));
            } else if !entry.is_empty()
                && entry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            {
                names.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "http.allow_hosts: {entry:?} is not a host name, IP address or CIDR block"
                ));
            }
        }
        let mut methods = Vec::new();
        for m in &settings.methods {
            let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("http.methods: {m:?} is not an HTTP method"))?;
            methods.push(method);
        }
        if settings.max_response_bytes == 0 {
            return Err("http.max_response_bytes must be at least 1".into());
        }
        Ok(Policy {
            names,
            nets,
            methods,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    fn host_allowed_by_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.contains(&host)
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        !(is_internal(ip) || is_this_machine(ip)) || self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL before it is requested (the first one and every redirect): scheme, and an
    /// IP literal host (names are checked when they are resolved).
    fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{url} is not an http:// or https:// URL"));
        }
        // The client would turn user-info into an Authorization header, which a payload may
        // not set.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "a URL with a user name or password (user:password@) is refused: credentials cannot be set by a job".into(),
            );
        }
        let host = url.host_str().ok_or_else(|| format!("{url} has no host"))?;
        // An IP literal is never resolved, so it is checked here; names when resolved.
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.check_ip(url, ip),
            Err(_) => Ok(()),
        }
    }

    fn check_ip(&self, url: &reqwest::Url, ip: IpAddr) -> Result<(), String> {
        if self.ip_allowed(ip) {
            Ok(())
        } else {
            Err(refusal(url.host_str().unwrap_or_default(), ip))
        }
    }
}

fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "{host} is {ip}, an internal address (loopback, private, link-local, CGNAT, multicast, reserved, or this machine's own) that the http handler does not reach; an operator may allow it in [http] allow_hosts"
    )
}

/// Whether `ip` is one of this machine's own addresses (a public one included): a request to
/// it reaches every service listening on 0.0.0.0 here, as if from inside. Binding a socket to
/// an address succeeds only for a local one; no packet is sent.
fn is_this_machine(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Loopback, private, link-local, CGNAT, multicast, unspecified, broadcast and reserved
/// addresses, and IPv6 forms that carry an IPv4 address (mapped, NAT64) judged by it.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg = v6.segments();
            let o = v6.octets();
            // NAT64 (64:ff9b::/96 and the local 64:ff9b:1::/48): the last 32 bits are an IPv4
            // address; 6to4 (2002::/16): bits 16–47 are.
            if seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6] == [0, 0, 0, 0] || seg[2] == 1) {
                return is_internal_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if seg[0] == 0x2002 {
                return is_internal_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0 // "this network", 0.0.0.0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || o[0] >= 240 // reserved 240.0.0.0/4
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || ip.is_documentation() // 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
}

/// Resolves names and keeps only the addresses the policy allows, so the connector can only
/// ever connect to an allowed address (no window between check and connect).
struct GuardedResolver {
    policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.host_allowed_by_name(&host) {
                return Ok(Box::new(resolved.into_iter()) as reqwest::dns::Addrs);
            }
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| policy.ip_allowed(a.ip()))
                .collect();
            match (allowed.is_empty(), resolved.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                (true, Some(first)) => Err(Refused(refusal(&host, first.ip())).into()),
                (true, None) => Err(format!("{host} does not resolve").into()),
            }
        })
    }
}

/// A destination the policy refused; found in a request error's source chain.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The handler, built once per node from its settings.
#[derive(Debug, Clone)]
pub(crate) struct HttpHandler {
    policy: Arc<Policy>,
    client: reqwest::Client,
}

impl HttpHandler {
    /// `None` when the handler is off.
    pub(crate) fn new(settings: &HttpSettings) -> Result<Option<HttpHandler>, String> {
        if !settings.enabled {
            return Ok(None);
        }
        let policy = Arc::new(Policy::from_settings(settings)?);
        let redirect_policy = policy.clone();
        let max_redirects = settings.max_redirects;
        // `https://` is verified against the system's roots and the mesh CA (SHERATAN_CA_FILE).
        let client = sheratan_client::http_client_builder()
            .map_err(|e| format!("the http handler's client: {e}"))?
            // Proxies from the environment would resolve the destination themselves.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(Refused(format!(
                        "more than {max_redirects} redirects (http.max_redirects)"
                    )));
                }
                match redirect_policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(why) => attempt.error(Refused(format!("redirect refused: {why}"))),
                }
            }))
            .build()
            .map_err(|e| format!("the http handler's client: {e}"))?;
        Ok(Some(HttpHandler { policy, client }))
    }

    /// `{"url", "method"?, "headers"?, "body"?, "timeout_ms"?}` → `{"status", "body"}` (body as
    /// text). Any HTTP status is a success; a refused destination, method or header fails
    /// for good; a connection failure or timeout is retryable.
    pub(crate) async fn run(&self, payload: &serde_json::Value, deadline: Duration) -> Outcome {
        let request = match self.request(payload, deadline) {
            Ok(r) => r,
            Err(why) => return Outcome::fail(format!("http: {why}"), false),
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let status = response.status().as_u16();
        match self.read_capped(response).await {
            Ok(bytes) => Outcome::Success(serde_json::json!({
                "status": status,
                "body": String::from_utf8_lossy(&bytes),
            })),
            Err(outcome) => outcome,
        }
    }

    fn request(
        &self,
        payload: &serde_json::Value,
        deadline: Duration,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = payload["url"]
            .as_str()
            .ok_or("needs {\"url\": \"http://…\"}")?;
        let url = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        self.policy.check_url(&url)?;
        let method = payload["method"].as_str().unwrap_or("GET");
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        if !self.policy.methods.contains(&method) {
            return Err(format!(
                "the method {method} is not allowed (http.methods: {})",
                self.policy
                    .methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let timeout = payload["timeout_ms"]
            .as_u64()
            .map(Duration::from_millis)
            .unwrap_or(deadline)
            .min(deadline);
        let mut req = self.client.request(method, url).timeout(timeout);
        if let Some(headers) = payload["headers"].as_object() {
            for (name, value) in headers {
                if is_forbidden_header(name) {
                    return Err(format!(
                        "the header {name:?} cannot be set by a job (Authorization, Proxy-Authorization, Cookie, Host and X-Sheratan-* are refused)"
                    ));
                }
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("the header {name:?} must be a string"))?;
                // Checked here: the client would report a bad one as a (retryable) send error.
                let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name"))?;
                let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                    format!("the header {name:?} has a value a header cannot carry")
                })?;
                req = req.header(header, value);
            }
        } else if !payload["headers"].is_null() {
            return Err("headers must be an object of strings".into());
        }
        Ok(match &payload["body"] {
            serde_json::Value::Null => req,
            serde_json::Value::String(s) => req.body(s.clone()),
            other => req.json(other),
        })
    }

    /// The answer's body, read as it arrives, refused as soon as it outgrows the cap.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Outcome> {
        let cap = self.policy.max_response_bytes;
        let too_large = || {
            Outcome::fail(
                format!(
                    "http: the answer is larger than http.max_response_bytes ({cap} bytes); it was not read"
                ),
                false,
            )
        };
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > cap {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(Outcome::fail(
                        format!("http: reading the answer failed: {}", e.without_url()),
                        true,
                    ));
                }
            }
        }
    }
}

fn is_forbidden_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "host"
    ) || name.starts_with("x-sheratan-")
}

/// A failed request: refused by the policy (for good) or a network failure (retryable).
fn failure(err: &reqwest::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Outcome::fail(format!("http: {refused}"), false);
        }
        source = e.source();
    }
    // reqwest's own message is "error sending request"; the why is down the chain.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        message = format!("{message}: {e}");
        source = e.source();
    }
    // A certificate this node does not trust will not become trusted by retrying.
    if let Some(reason) = message.split("invalid peer certificate: ").nth(1) {
        return Outcome::fail(
            format!(
                "http: the TLS certificate of {} is not trusted (invalid peer certificate: {reason}); the http handler trusts the system's roots and SHERATAN_CA_FILE",
                // Scheme, host and path only: a query may carry a job's secrets.
                err.url()
                    .map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
                    .unwrap_or_else(|| "the server".into())
            ),
            false,
        );
    }
    Outcome::fail(format!("http: {message}"), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "192.0.2.2",
            "198.51.100.7",
            "203.0.113.9",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "2002:0101:0101::1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
        assert!(is_this_machine("127.0.0.1".parse().unwrap()));
        assert!(!is_this_machine("1.1.1.1".parse().unwrap()));
    }

    #[test]
    fn the_allow_list_takes_names_addresses_and_blocks() {
        let policy = Policy::from_settings(&HttpSettings {
            enabled: true,
            allow_hosts: vec![
                "Api.Internal".into(),
                "10.8.0.0/16".into(),
                "127.0.0.2".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        assert!(policy.host_allowed_by_name("api.internal."));
        assert!(policy.ip_allowed("10.8.3.4".parse().unwrap()));
        assert!(!policy.ip_allowed("10.9.0.1".parse().unwrap()));
        assert!(policy.ip_allowed("127.0.0.2".parse().unwrap()));
        assert!(!policy.ip_allowed("127.0.0.1".parse().unwrap()));
        assert!(policy.ip_allowed("1.1.1.1".parse().unwrap()));
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(
            policy
                .check_url(&url("http://169.254.169.254/latest"))
                .is_err()
        );
        assert!(policy.check_url(&url("http://[::1]:8788/admin")).is_err());
        assert!(policy.check_url(&url("file:///etc/passwd")).is_err());
        assert!(policy.check_url(&url("http://127.0.0.2:80/")).is_ok());
        assert!(policy.check_url(&url("http://user:pw@127.0.0.2/")).is_err());
        assert!(
            policy
                .check_url(&url("http://Bearer:tok@1.1.1.1/"))
                .is_err()
        );
        assert!(
            Policy::from_settings(&HttpSettings {
                allow_hosts: vec!["not a host!".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn credentials_and_routing_headers_are_refused() {
        for h in [
            "Authorization",
            "cookie",
            "HOST",
            "X-Sheratan-Token",
            "x-sheratan-signature",
            "Proxy-Authorization",
        ] {
            assert!(is_forbidden_header(h), "{h}");
        }
        assert!(!is_forbidden_header("Accept"));
    }
}
