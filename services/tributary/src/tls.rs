//! TLS on the gRPC port (SPEC.md §9): rustls through tonic, with ring as the crypto provider
//! (the one reqwest uses for HTTPS sources). A certificate and key turn TLS on; a client CA
//! turns on mTLS, refusing every client without a certificate that CA signed.

use crate::config::TlsSettings;
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM material of the server's TLS, read once at start-up.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// The private key of the chain's first certificate.
    pub key_pem: Vec<u8>,
    /// The authority client certificates must be signed by (mTLS), if any.
    pub client_ca_pem: Option<Vec<u8>>,
}

// The private key must never reach a log line.
impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mtls", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS `settings` describe: `None` without a certificate; an error for a key without
    /// a certificate (or the reverse), a client CA without a certificate, or an unreadable file.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Option<Self>> {
        let (cert, key) = match (&settings.cert, &settings.key) {
            (None, None) => {
                anyhow::ensure!(
                    settings.client_ca.is_none(),
                    "tls.client_ca (--tls-client-ca) needs tls.cert and tls.key: mTLS runs over TLS"
                );
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => anyhow::bail!("tls.cert is set but tls.key (--tls-key) is not"),
            (None, Some(_)) => anyhow::bail!("tls.key is set but tls.cert (--tls-cert) is not"),
        };
        Ok(Some(Self {
            cert_pem: read_pem(cert, "tls.cert")?,
            key_pem: read_pem(key, "tls.key")?,
            client_ca_pem: settings
                .client_ca
                .as_deref()
                .map(|ca| read_pem(ca, "tls.client_ca"))
                .transpose()?,
        }))
    }

    /// How the gRPC port is served, for the start-up log line: `off`, `on` or `mTLS`.
    pub fn describe(tls: Option<&Self>) -> &'static str {
        match tls {
            None => "off",
            Some(tls) if tls.client_ca_pem.is_some() => "mTLS",
            Some(_) => "on",
        }
    }

    /// tonic's configuration for this TLS; certificates are parsed when the server is built.
    /// A handshake must finish within [`HANDSHAKE_TIMEOUT`], so connections that never
    /// complete one do not pile up.
    pub fn tonic_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

fn read_pem(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading {setting} {}", path.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN "),
        "{setting} {} is not a PEM file",
        path.display()
    );
    Ok(pem)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        let none = TlsSettings::default();
        assert!(ServerTls::load(&none).expect("no TLS").is_none());
        let half = TlsSettings {
            cert: Some(PathBuf::from("/nonexistent/cert.pem")),
            ..TlsSettings::default()
        };
        assert!(ServerTls::load(&half)
            .unwrap_err()
            .to_string()
            .contains("tls.key"));
        let mtls_alone = TlsSettings {
            client_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsSettings::default()
        };
        assert!(ServerTls::load(&mtls_alone)
            .unwrap_err()
            .to_string()
            .contains("tls.cert"));
    }

    #[test]
    fn unreadable_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let not_pem = dir.path().join("cert.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let settings = TlsSettings {
            cert: Some(not_pem),
            key: Some(dir.path().join("missing.pem")),
            client_ca: None,
        };
        let error = format!("{:#}", ServerTls::load(&settings).unwrap_err());
        assert!(
            error.contains("tls.cert") && error.contains("not a PEM file"),
            "{error}"
        );
    }
}
