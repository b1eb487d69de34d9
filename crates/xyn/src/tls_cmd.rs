//! `xyn tls self-signed` and the HTTPS settings of `xyn serve` (flags, `[web]` keys, SIGHUP
//! reload, the redirect listener and ACME).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum TlsCmd {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem, mode 0600) for
    /// development.
    SelfSigned {
        /// Directory to write into (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Names and addresses the certificate is for (repeatable) [default: localhost,
        /// 127.0.0.1, ::1].
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

/// HTTPS flags of `xyn serve` (each wins over its `[web]` key).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM); reloaded on SIGHUP.
    #[arg(long, env = "XYN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "XYN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also accept TLS 1.2 (only TLS 1.3 by default).
    #[arg(long)]
    pub tls12: bool,
    /// Also listen on this address for plain HTTP, answering 308 redirects to HTTPS (and
    /// ACME HTTP-01 challenges).
    #[arg(long, env = "XYN_REDIRECT_HTTP")]
    pub redirect_http: Option<String>,
    /// Get a certificate for this host with ACME (repeatable).
    #[arg(long = "acme-host")]
    pub acme_hosts: Vec<String>,
    /// ACME directory URL [default: Let's Encrypt].
    #[arg(long, env = "XYN_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// ACME challenge: http-01 (needs --redirect-http reachable on port 80) or tls-alpn-01
    /// (needs the HTTPS listener reachable on port 443).
    #[arg(long, value_parser = ["http-01", "tls-alpn-01"])]
    pub acme_challenge: Option<String>,
    /// Contact e-mail of the ACME account.
    #[arg(long)]
    pub acme_email: Option<String>,
    /// PEM root certificate the ACME directory's own HTTPS certificate chains to (test CAs).
    #[arg(long)]
    pub acme_ca_root: Option<PathBuf>,
}

/// The `[web]` TLS keys of xyn.toml.
#[derive(Debug, Default, Clone)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub tls12: bool,
    pub redirect_http: Option<String>,
    pub acme_hosts: Vec<String>,
    pub acme_directory: Option<String>,
    pub acme_challenge: Option<String>,
    pub acme_email: Option<String>,
    pub acme_ca_root: Option<PathBuf>,
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

pub fn run(cmd: TlsCmd) -> Result<ExitCode> {
    match cmd {
        TlsCmd::SelfSigned { out, hosts } => {
            let (cert, key) = xyn_tls::self_signed(&hosts)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            xyn_tls::write_private(&out.join("key.pem"), key.as_bytes())
                .with_context(|| format!("cannot write {}", out.join("key.pem").display()))?;
            std::fs::write(out.join("cert.pem"), cert)
                .with_context(|| format!("cannot write {}", out.join("cert.pem").display()))?;
            eprintln!(
                "wrote {} and {} (self-signed, for development only)",
                out.join("cert.pem").display(),
                out.join("key.pem").display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// HTTPS as configured, with its background tasks started: `None` for plain HTTP.
pub struct Https {
    pub listener: xyn_web::tls::TlsListener,
    pub tokens: Arc<xyn_tls::acme::Http01Tokens>,
    pub redirect: Option<String>,
}

/// Builds the HTTPS settings from flags and `[web]`, starts the SIGHUP reloader and the ACME
/// task. Must run inside the runtime.
pub fn start(args: &TlsArgs, file: &TlsFile, data_dir: &Path) -> Result<Option<Https>> {
    let cert = args.tls_cert.clone().or_else(|| file.cert.clone());
    let key = args.tls_key.clone().or_else(|| file.key.clone());
    let hosts: Vec<String> = if args.acme_hosts.is_empty() {
        file.acme_hosts.clone()
    } else {
        args.acme_hosts.clone()
    };
    let redirect = args
        .redirect_http
        .clone()
        .or_else(|| file.redirect_http.clone());
    let files = match (cert, key) {
        (Some(cert), Some(key)) => Some(xyn_tls::PemFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("[web] tls_cert and tls_key go together"),
    };
    if files.is_none() && hosts.is_empty() {
        anyhow::ensure!(
            redirect.is_none(),
            "--redirect-http needs HTTPS (--tls-cert/--tls-key or ACME hosts)"
        );
        return Ok(None);
    }
    let certs = xyn_tls::Certs::new(files.clone())?;
    let config = xyn_tls::server_config(certs.clone(), args.tls12 || file.tls12)?;
    if files.is_some() {
        spawn_reloader(certs.clone());
    }
    let tokens = Arc::new(xyn_tls::acme::Http01Tokens::default());
    if !hosts.is_empty() {
        let challenge: xyn_tls::acme::Challenge = args
            .acme_challenge
            .clone()
            .or_else(|| file.acme_challenge.clone())
            .unwrap_or_else(|| "http-01".into())
            .parse()
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            challenge != xyn_tls::acme::Challenge::Http01 || redirect.is_some(),
            "ACME http-01 needs --redirect-http (the plain-HTTP listener answers the challenges)"
        );
        let cfg = xyn_tls::acme::AcmeConfig {
            directory: args
                .acme_directory
                .clone()
                .or_else(|| file.acme_directory.clone())
                .unwrap_or_else(|| LETS_ENCRYPT.into()),
            hosts,
            challenge,
            contact: args
                .acme_email
                .clone()
                .or_else(|| file.acme_email.clone())
                .map(|e| vec![format!("mailto:{e}")])
                .unwrap_or_default(),
            ca_root: args
                .acme_ca_root
                .clone()
                .or_else(|| file.acme_ca_root.clone()),
            dir: data_dir.join("tls").join("acme"),
            check_every: Duration::from_secs(12 * 3600),
        };
        let acme = xyn_tls::acme::Acme::new(cfg, certs, tokens.clone());
        tokio::spawn(acme.run());
    }
    Ok(Some(Https {
        listener: xyn_web::tls::TlsListener { config },
        tokens,
        redirect,
    }))
}

/// Reloads the certificate files on each SIGHUP; a bad file is logged and the previous
/// certificate stays in use. Open connections are not touched.
fn spawn_reloader(certs: Arc<xyn_tls::Certs>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; certificates will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match certs.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; keeping the current one")
                }
            }
        }
    });
    #[cfg(not(unix))]
    drop(certs);
}
