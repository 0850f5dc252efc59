//! Where the server is and which token to present.
//!
//! Tokens: `--token`, else `TRIBUTARY_TOKEN`. Admin commands look further: `--token`, else
//! `TRIBUTARY_ADMIN_TOKEN` (the variable the server itself reads), else `TRIBUTARY_TOKEN`, else —
//! only when the server is on this machine (a loopback address) — the token file the embedded
//! server generates, `<data dir>/admin.token`, with the data dir from `TRIBUTARY_DATA_DIR` or
//! `./tributary-data` (where `tributary serve` puts it by default).

use std::path::PathBuf;

use anyhow::Context;
use tonic::transport::Channel;
use tributary_client::TlsOptions;

use super::usage;

/// Default server address (`tributary serve`'s default listen address).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How to reach the server, shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The Tributary server's gRPC address (`http://host:port`, `host:port`, or
    /// `https://host:port` for a server with TLS, verified against the system's roots and
    /// --ca-file).
    #[arg(long, global = true, env = "TRIBUTARY_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// PEM certificates of a private authority to trust for an https:// server, besides the
    /// system's roots.
    #[arg(long, global = true, value_name = "FILE", env = "TRIBUTARY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate to present to a server that requires one (mTLS; needs
    /// --client-key).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TRIBUTARY_CLIENT_CERT"
    )]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, global = true, value_name = "FILE", env = "TRIBUTARY_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// The token to present (default: from the environment; see the command's help).
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// A token and where it came from (named in hints when the server refuses it).
#[derive(Debug, Clone)]
pub struct Token {
    pub value: String,
    pub source: String,
}

impl ServerArgs {
    /// A channel to the server, over TLS for an `https://` server.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        Ok(tributary_client::connect_with(&self.server, &self.tls()?).await?)
    }

    /// The TLS options the flags name, read from their files.
    fn tls(&self) -> anyhow::Result<TlsOptions> {
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
        };
        let client_identity_pem = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some((read(cert, "--client-cert")?, read(key, "--client-key")?))
            }
            _ => return Err(usage("--client-cert and --client-key go together")),
        };
        Ok(TlsOptions {
            ca_certificate_pem: self
                .ca_file
                .as_ref()
                .map(|ca| read(ca, "--ca-file"))
                .transpose()?,
            client_identity_pem,
        })
    }

    /// A connector or consumer token: `--token`, else `TRIBUTARY_TOKEN`. `optional` allows none
    /// (a public catalog).
    pub fn token(&self, what: &str, optional: bool) -> anyhow::Result<Token> {
        if let Some(token) = self.flag_token() {
            return Ok(token);
        }
        if let Some(token) = env_token("TRIBUTARY_TOKEN") {
            return Ok(token);
        }
        if optional {
            return Ok(Token {
                value: String::new(),
                source: "no token".into(),
            });
        }
        Err(usage(format!(
            "no {what} token: pass --token or set TRIBUTARY_TOKEN"
        )))
    }

    /// The admin token: `--token`, `TRIBUTARY_ADMIN_TOKEN`, `TRIBUTARY_TOKEN`, then the local
    /// server's token file when the server is on a loopback address.
    pub fn admin_token(&self) -> anyhow::Result<Token> {
        if let Some(token) = self.flag_token() {
            return Ok(token);
        }
        for var in ["TRIBUTARY_ADMIN_TOKEN", "TRIBUTARY_TOKEN"] {
            if let Some(token) = env_token(var) {
                return Ok(token);
            }
        }
        let file = admin_token_file();
        if is_loopback(&self.server) {
            match std::fs::read_to_string(&file) {
                Ok(text) if !text.trim().is_empty() => {
                    return Ok(Token {
                        value: text.trim().to_owned(),
                        source: file.display().to_string(),
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", file.display()));
                }
            }
        }
        Err(usage(format!(
            "no admin token: pass --token, set TRIBUTARY_ADMIN_TOKEN, or (for a server on this \
             machine) run where {} exists",
            file.display()
        )))
    }

    fn flag_token(&self) -> Option<Token> {
        self.token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Token {
                value: t.to_owned(),
                source: "--token".into(),
            })
    }
}

fn env_token(var: &str) -> Option<Token> {
    std::env::var(var)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(|value| Token {
            value,
            source: var.to_owned(),
        })
}

/// `<TRIBUTARY_DATA_DIR or ./tributary-data>/admin.token`: where `tributary serve` keeps the
/// generated admin token.
fn admin_token_file() -> PathBuf {
    let dir = std::env::var_os("TRIBUTARY_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./tributary-data"));
    dir.join("admin.token")
}

/// Whether `server` names this machine: a token file on disk only means something for a server
/// that runs here.
pub fn is_loopback(server: &str) -> bool {
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    match url::Url::parse(&with_scheme)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Adds a hint naming the token's source to an `UNAUTHENTICATED` refusal.
pub fn with_token_hint(error: tonic::Status, token: &Token, what: &str) -> anyhow::Error {
    if error.code() == tonic::Code::Unauthenticated {
        anyhow::Error::new(error).context(format!(
            "the server refused the {what} token from {}",
            token.source
        ))
    } else {
        anyhow::Error::new(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_servers_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:50051"));
        assert!(is_loopback("localhost:50051"));
        assert!(is_loopback("http://[::1]:50051"));
        assert!(!is_loopback("http://catalog.example:50051"));
        assert!(!is_loopback("10.0.0.5:50051"));
    }
}
