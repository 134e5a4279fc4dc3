//! The client's error: the contract's error codes as a type, with operator-facing messages.

use sheratan_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with the contract's error body.
    #[error("{code}: {message}{}", hint_suffix(hint))]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        hint: String,
        retry_after_s: Option<u64>,
    },
    /// A non-2xx answer without the contract's error body (a proxy, another service).
    #[error("HTTP {status} without a Sheratan error body (is this the right address?): {body}")]
    UnexpectedStatus { status: u16, body: String },
    #[error(
        "cannot reach {url}: {message} (is the hub running, and is this its address? see SHERATAN_CONTROL_URL and SHERATAN_DATA_URL)"
    )]
    Transport { url: String, message: String },
    /// The server's TLS certificate is not one this client trusts: retrying cannot help.
    #[error(
        "the TLS certificate of {url} is not trusted ({message}); give the mesh CA in SHERATAN_CA_FILE (on the hub's machine: $SHERATAN_HOME/tls/ca.pem; `sheratan tls ca` prints its SHA-256 to compare)"
    )]
    Untrusted { url: String, message: String },
    /// The hub asks for a client certificate (mutual TLS) and this client gave none it takes.
    #[error(
        "the hub at {url} requires a client certificate (mutual TLS) and refused this one or its absence ({message}); give this node's in SHERATAN_TLS_CLIENT_CERT and SHERATAN_TLS_CLIENT_KEY (`sheratan tls cert --client --name NODE_ID` on the hub's machine)"
    )]
    CertificateRequired { url: String, message: String },
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    #[error("client configuration: {0}")]
    Config(String),
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" (hint: {hint})")
    }
}

impl ClientError {
    pub(crate) fn transport(url: &str, err: reqwest::Error) -> Self {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        if let Some(alert) = ["CertificateRequired", "BadCertificate", "UnknownCA"]
            .iter()
            .find(|alert| message.contains(&format!("received fatal alert: {alert}")))
        {
            return ClientError::CertificateRequired {
                url: url.to_owned(),
                message: format!("TLS alert {alert}"),
            };
        }
        if message.contains("InvalidContentType") {
            // Retrying cannot help: the URL's scheme is wrong.
            return ClientError::Config(format!(
                "{url} does not speak TLS (a plain HTTP port?): use http:// for this machine's loopback, or the port that serves TLS"
            ));
        }
        if message.contains("invalid peer certificate") {
            let reason = message
                .rsplit("invalid peer certificate: ")
                .next()
                .unwrap_or_default()
                .to_owned();
            return ClientError::Untrusted {
                url: url.to_owned(),
                message: format!("invalid peer certificate: {reason}"),
            };
        }
        ClientError::Transport {
            url: url.to_owned(),
            message,
        }
    }

    /// The contract's code, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::UnexpectedStatus { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}
