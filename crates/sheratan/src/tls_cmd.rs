//! `sheratan tls`: the mesh CA on the hub's machine, and the certificates it issues.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sheratan_runtime::ca::{MeshCa, Usage};

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The mesh CA in $SHERATAN_HOME/tls (made if there is none): its certificate's path and
    /// SHA-256, which nodes pin.
    Ca(CaArgs),
    /// Issue a certificate from the mesh CA (a year): for a host, the relay, a Core on another
    /// machine, or with --client a node's client certificate (its name is the node id).
    Cert(CertArgs),
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// State directory of the hub whose CA this is.
    #[arg(long, env = "SHERATAN_HOME", default_value = "./.sheratan")]
    pub home: PathBuf,
}

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(flatten)]
    pub ca: CaArgs,
    /// The certificate's name (a client certificate's is the node id).
    #[arg(long)]
    pub name: String,
    /// A DNS name or IP address the certificate is for (repeat, or comma-separated).
    #[arg(long = "san", value_delimiter = ',')]
    pub sans: Vec<String>,
    /// A client certificate (mutual TLS) instead of a server's.
    #[arg(long)]
    pub client: bool,
    /// Where to write NAME.pem and NAME.key (0600) [default: $SHERATAN_HOME/tls/issued].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace NAME.pem and NAME.key if they exist.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: TlsCommand) -> Result<(), Failure> {
    match cmd {
        TlsCommand::Ca(args) => {
            let ca = open(&args)?;
            println!("ca: {}", ca.cert_path().display());
            println!("sha256: {}", ca.sha256());
            Ok(())
        }
        TlsCommand::Cert(args) => cert(args),
    }
}

fn open(args: &CaArgs) -> Result<MeshCa, Failure> {
    MeshCa::open_or_create(&args.home.join("tls")).map_err(|e| Failure::from(anyhow::anyhow!(e)))
}

fn cert(args: CertArgs) -> Result<(), Failure> {
    sheratan_proto::ids::validate_name("--name", &args.name, 64).map_err(crate::usage)?;
    if args.sans.is_empty() && !args.client {
        return Err(crate::usage(
            "a server certificate needs at least one --san (the DNS name or IP address clients use)"
                .into(),
        ));
    }
    let ca = open(&args.ca)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.ca.home.join("tls").join("issued"));
    std::fs::create_dir_all(&out)
        .map_err(|e| Failure::from(anyhow::anyhow!("{}: {e}", out.display())))?;
    let tls_dir = args.ca.home.join("tls");
    if std::fs::canonicalize(&out).ok() == std::fs::canonicalize(&tls_dir).ok() {
        return Err(crate::usage(format!(
            "--out {}: that is the CA's own directory; issue certificates elsewhere",
            out.display()
        )));
    }
    for existing in ["pem", "key"].map(|ext| out.join(format!("{}.{ext}", args.name))) {
        if existing.exists() && !args.force {
            return Err(crate::usage(format!(
                "{} exists; --force replaces it",
                existing.display()
            )));
        }
    }
    let usage = if args.client {
        Usage::Client
    } else {
        Usage::Server
    };
    let files = ca
        .issue(&args.name, &args.sans, usage, &out, &args.name)
        .map_err(crate::usage)?;
    println!("cert: {}", files.cert.display());
    println!(
        "key: {} (mode 0600: keep it on the machine that uses it)",
        files.key.display()
    );
    println!("ca: {} (sha256 {})", ca.cert_path().display(), ca.sha256());
    Ok(())
}
