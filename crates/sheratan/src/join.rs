//! The one-string join (k3s style): `sht1:<ca-sha256>:<token>@<host>:<control-port>[,<data-port>]`.
//! `sheratan join-string` prints it on the hub's machine; `--join` / `SHERATAN_JOIN` on a node
//! fetches the hub's CA, checks it against the pinned SHA-256 before any token is sent, keeps
//! it under the node's home, and from then on speaks TLS verified against it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::client_args::ClientArgs;
use crate::{Failure, usage};

const PREFIX: &str = "sht1:";
/// The hub's data plane port when the string names none.
const DEFAULT_DATA_PORT: u16 = 8788;

/// A parsed join string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinString {
    pub ca_sha256: String,
    pub token: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub control_port: u16,
    pub data_port: u16,
}

impl JoinString {
    pub fn parse(text: &str) -> Result<JoinString, String> {
        let bad = |why: &str| {
            format!(
                "not a join string ({why}); expected sht1:<ca-sha256>:<token>@<host>:<port>, as `sheratan join-string` prints it on the hub"
            )
        };
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("no sht1: prefix"))?;
        let (sha, rest) = rest.split_once(':').ok_or_else(|| bad("no CA hash"))?;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash is not 64 hex digits"));
        }
        let (token, addr) = rest.rsplit_once('@').ok_or_else(|| bad("no @host"))?;
        if token.is_empty() {
            return Err(bad("no token"));
        }
        let (hostport, data_port) = match addr.split_once(',') {
            Some((hp, data)) => (hp, data.parse().map_err(|_| bad("bad data port"))?),
            None => (addr, DEFAULT_DATA_PORT),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no :port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let control_port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if control_port == 0 || data_port == 0 {
            return Err(bad("port 0"));
        }
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("a host with a colon that is not an IPv6 address"));
        }
        Ok(JoinString {
            ca_sha256: sha.to_ascii_lowercase(),
            token: token.to_owned(),
            host: host.to_owned(),
            control_port,
            data_port,
        })
    }

    pub fn render(&self) -> String {
        format!(
            "{PREFIX}{}:{}@{}:{},{}",
            self.ca_sha256,
            self.token,
            self.bracketed(),
            self.control_port,
            self.data_port
        )
    }

    fn bracketed(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    pub fn control_url(&self) -> String {
        format!("https://{}:{}", self.bracketed(), self.control_port)
    }

    pub fn data_url(&self) -> String {
        format!("https://{}:{}", self.bracketed(), self.data_port)
    }
}

/// Applies `--join` (if given) to a command's hub settings: the CA is fetched, pinned and
/// stored (unless the one kept from an earlier join is the pinned one already), the URLs
/// become the hub's `https://` ones, the token the string's. A CA kept privately under the
/// home (joined before, or the hub's own machine) is trusted either way.
pub async fn prepare(client: &mut ClientArgs) -> Result<(), Failure> {
    let dir = client.home.join("tls");
    if let Some(text) = client.join.clone().filter(|j| !j.trim().is_empty()) {
        let join = JoinString::parse(&text).map_err(usage)?;
        let kept = std::fs::read_to_string(dir.join("ca.pem"))
            .ok()
            .and_then(|pem| sheratan_runtime::ca::one_certificate(&pem).ok());
        if kept.is_none_or(|(sha, _)| sha != join.ca_sha256) {
            fetch_ca(&join, &dir).await?;
        }
        client.control_url = join.control_url();
        client.data_url = join.data_url();
        client.token = Some(join.token);
        client.token_file = None;
    }
    match sheratan_runtime::ca::private_ca_file(&dir) {
        Some(ca) => sheratan_client::trust_ca_file(ca),
        None if dir.join("ca.pem").exists() => tracing::warn!(
            "{} is not trusted without being named: it or its directory is not this user's or others may write it (chmod 700 {}, or name it in SHERATAN_CA_FILE)",
            dir.join("ca.pem").display(),
            dir.display()
        ),
        None => {}
    }
    Ok(())
}

/// The most a CA answer may be: a certificate is a few hundred bytes.
const MAX_CA_BYTES: usize = 64 * 1024;

/// Fetches the hub's CA (no token is sent), checks it against the pin, and keeps it as
/// `<dir>/ca.pem`.
async fn fetch_ca(join: &JoinString, dir: &Path) -> Result<PathBuf, Failure> {
    let url = format!("{}/v1/tls/ca", join.control_url());
    let failed = |what: String| Failure::from(anyhow::anyhow!("{what}"));
    // Unverified on purpose, and only here: nothing secret is sent, and what comes back is
    // trusted only if it is one certificate whose hash is the pinned one. The node's client
    // certificate goes along (a hub requiring mutual TLS asks for it; its key never does).
    let http = sheratan_client::hub_client_builder()
        .map_err(|e| usage(e.to_string()))?
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| failed(format!("HTTP client: {e}")))?;
    let mut answer = http
        .get(&url)
        .send()
        .await
        .map_err(|e| failed(format!("cannot fetch the hub's CA from {url}: {e}")))?;
    if !answer.status().is_success() {
        return Err(failed(format!(
            "{url} answered {} instead of the hub's CA (is this a Sheratan hub with a mesh CA?)",
            answer.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| failed(format!("cannot read the hub's CA from {url}: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CA_BYTES {
            return Err(failed(format!(
                "{url} answered more than {MAX_CA_BYTES} bytes: not a CA certificate"
            )));
        }
    }
    let mismatch = |found: &str| {
        usage(format!(
            "the hub at {} presents a CA that does not match the join string: expected sha256 {}, found {found}; the token was not sent. Check the string (`sheratan join-string` on the hub) and what sits between this machine and the hub",
            join.control_url(),
            join.ca_sha256
        ))
    };
    let (found, pem) = sheratan_runtime::ca::one_certificate(&String::from_utf8_lossy(&body))
        .map_err(|why| mismatch(&why))?;
    if found != join.ca_sha256 {
        return Err(mismatch(&found));
    }
    store_ca(dir, &pem, &found).map_err(usage)
}

/// Keeps the pinned CA (that certificate alone) in the node's `tls` directory, never beside
/// a CA key (that home is a hub's).
fn store_ca(dir: &Path, pem: &str, sha: &str) -> Result<PathBuf, String> {
    let path = dir.join("ca.pem");
    if dir.join("ca.key").exists() {
        return Err(format!(
            "{} holds a mesh CA's key (this home is a hub's): join with another --home",
            dir.display()
        ));
    }
    sheratan_runtime::ca::store_trusted(dir, pem)?;
    tracing::info!(ca = %path.display(), sha256 = sha, "joined: the hub's CA is pinned and kept");
    Ok(path)
}

/// `sheratan join-string`.
#[derive(Debug, Args)]
pub struct JoinStringArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The name or address nodes reach the hub at [default: this machine's first non-loopback
    /// address].
    #[arg(long)]
    pub host: Option<String>,
    /// Put a fresh node credential named NAME in the string instead of the mesh token: the
    /// node can then act only as NAME (run it with --node-id NAME).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// With --node: the queues the node may lease from (a worker's queues; `auction` for a
    /// host or a broker, `llm` for a relay). Default: every queue, and no execute grants.
    #[arg(long, value_delimiter = ',', requires = "node")]
    pub queues: Vec<String>,
}

pub async fn join_string(mut args: JoinStringArgs) -> Result<(), Failure> {
    // The hub's own CA (this is its machine) verifies the admin call that makes a credential.
    prepare(&mut args.client).await?;
    let home = &args.client.home;
    let ca = std::fs::read_to_string(home.join("tls/ca.pem")).map_err(|_| {
        usage(format!(
            "no mesh CA in {}: start the hub (or `sheratan up`) with TLS first, or make one with `sheratan tls ca`",
            home.join("tls").display()
        ))
    })?;
    let ca_sha256 = sheratan_runtime::ca::fingerprint(&ca).ok_or_else(|| {
        usage(format!(
            "{}/tls/ca.pem holds no certificate",
            home.display()
        ))
    })?;
    let (token, holds) = match &args.node {
        Some(name) => (
            node_credential(&args.client, name, &args.queues).await?,
            "a node credential's secret",
        ),
        None => (
            args.client.find_token().map_err(|e| usage(e.to_string()))?,
            "the mesh token",
        ),
    };
    let port = |url: &str, default: u16| {
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(default)
    };
    let host = match &args.host {
        Some(host) if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() => {
            return Err(usage(format!(
                "--host {host:?}: give the name or address alone; the ports come from --control-url and --data-url"
            )));
        }
        Some(host) => host.clone(),
        None => default_host(),
    };
    let join = JoinString {
        ca_sha256,
        token,
        host,
        control_port: port(&args.client.control_url, 8787),
        data_port: port(&args.client.data_url, DEFAULT_DATA_PORT),
    };
    println!("{}", join.render());
    eprintln!(
        "note: the string holds {holds}: pass it like a password (SHERATAN_JOIN in a file only the node's user reads). Nodes reach the data plane at {} too: the hub must listen there (SHERATAN_DATA_ADDR=0.0.0.0:{}).",
        join.data_url(),
        join.data_port
    );
    Ok(())
}

/// A new node credential named `name`, made on the hub's admin path; its secret.
async fn node_credential(
    client: &ClientArgs,
    name: &str,
    queues: &[String],
) -> Result<String, Failure> {
    let req = sheratan_proto::credentials::CreateCredential {
        name: name.to_owned(),
        role: sheratan_proto::credentials::CredentialRole::Node,
        queues: queues.to_vec(),
        expires_in_s: None,
    };
    let created = client
        .data()?
        .create_credential(&req)
        .await
        .map_err(anyhow::Error::new)?;
    Ok(created.secret)
}

/// This machine's first non-loopback address, else its hostname.
fn default_host() -> String {
    sheratan_runtime::tls::local_addresses()
        .into_iter()
        .find(|ip| !ip.is_loopback() && ip.is_ipv4())
        .map(|ip| ip.to_string())
        .unwrap_or_else(crate::client_args::hostname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_string_round_trips_and_bad_ones_say_why() {
        let sha = "ab".repeat(32);
        let join = JoinString::parse(&format!("sht1:{sha}:to:k@en@hub.example:8787")).unwrap();
        assert_eq!(join.token, "to:k@en");
        assert_eq!(join.host, "hub.example");
        assert_eq!((join.control_port, join.data_port), (8787, 8788));
        assert_eq!(JoinString::parse(&join.render()).unwrap(), join);
        let v6 = JoinString::parse(&format!("sht1:{sha}:t@[fd00::1]:1,2")).unwrap();
        assert_eq!(v6.control_url(), "https://[fd00::1]:1");
        assert_eq!(v6.data_url(), "https://[fd00::1]:2");
        for bad in [
            "sht2:x".to_owned(),
            format!("sht1:{}:t@h:1", "ab".repeat(31)),
            format!("sht1:{sha}:@h:1"),
            format!("sht1:{sha}:t@h"),
            format!("sht1:{sha}:t@h:99999"),
            format!("sht1:{sha}:t@h:0"),
            format!("sht1:{sha}:t@a:b:1"),
        ] {
            let err = JoinString::parse(&bad).unwrap_err();
            assert!(err.contains("not a join string"), "{bad}: {err}");
        }
    }
}
