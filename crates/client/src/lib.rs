//! A typed Rust client for Tributary: a channel, and the generated stubs with the caller's token
//! attached to every call (`authorization: Bearer <token>`).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tributary_client::connect("http://127.0.0.1:50051").await?;
//! let mut admin = tributary_client::admin(channel, "tba_...");
//! let types = admin.list_entity_types(tributary_client::pb::admin::ListEntityTypesRequest::default()).await?;
//! # Ok(()) }
//! ```
//!
//! [`StreamingContributor`] contributes over the `Contribute` stream, resuming the session after
//! a broken connection; [`digest`] computes the checksums the server would, for `Diff`;
//! [`pages`] follows page tokens; [`status`] renders a status with its error details;
//! [`retry`] waits as the server's `RetryInfo` asks (a connector over its rate limit);
//! [`reconcile`] runs a range-based sync (`Reconcile`) of a large set.

pub mod digest;
pub mod pages;
mod pre_encoded;
pub mod reconcile;
pub mod retry;
pub mod status;
pub mod stream;

pub use stream::{
    is_retryable, AckCallback, DigestAnswer, StreamError, StreamStats, StreamingContributor,
    StreamingContributorBuilder,
};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tributary_proto::admin::v1::admin_client::AdminClient;
use tributary_proto::catalog::v1::catalog_client::CatalogClient;
use tributary_proto::contribution::v1::contribution_client::ContributionClient;

/// The generated messages, by service.
pub mod pb {
    pub use tributary_proto::admin::v1 as admin;
    pub use tributary_proto::catalog::v1 as catalog;
    pub use tributary_proto::contribution::v1 as contribution;
}

/// Largest message the clients send or accept: the server's default limit, 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// TLS for `https://` endpoints: the system's root certificates, plus `ca_certificate_pem`
/// (a private authority) when given, and a client certificate for servers that require one
/// (mTLS).
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates trusted besides the system's roots.
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// The client's PEM certificate chain and private key.
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

// The private key must never reach a log line.
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_certificate", &self.ca_certificate_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// Whether anything differs from the defaults (system roots, no client certificate).
    pub fn is_default(&self) -> bool {
        self.ca_certificate_pem.is_none() && self.client_identity_pem.is_none()
    }

    fn tonic_config(&self) -> ClientTlsConfig {
        let mut config = tributary_grpc::tls::client_tls_config(self.ca_certificate_pem.as_deref());
        if let Some((cert, key)) = &self.client_identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a URI (or `host:port`).
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A CA file or client certificate was given for a plaintext endpoint.
    #[error(
        "TLS options (a CA file, a client certificate) need an https:// server, not {endpoint:?}"
    )]
    TlsNeedsHttps { endpoint: String },
    /// The server could not be reached (or the TLS handshake failed).
    #[error("cannot connect to {endpoint}: {}", tributary_core::error::with_causes(.source))]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A channel to a Tributary server; `endpoint` is a URI (`http://host:port`,
/// `https://host:port`, verified against the system's roots) or `host:port` (plaintext).
pub async fn connect(endpoint: &str) -> Result<Channel, ClientError> {
    connect_with(endpoint, &TlsOptions::default()).await
}

/// [`connect`] with TLS options: a private CA and a client certificate for `https://`
/// endpoints. TLS options with a plaintext endpoint are refused rather than ignored.
pub async fn connect_with(endpoint: &str, tls: &TlsOptions) -> Result<Channel, ClientError> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let invalid = |source| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        source,
    };
    let mut endpoint_config = Endpoint::from_shared(uri.clone()).map_err(invalid)?;
    if uri.starts_with("https://") {
        endpoint_config = endpoint_config
            .tls_config(tls.tonic_config())
            .map_err(invalid)?;
    } else if !tls.is_default() {
        return Err(ClientError::TlsNeedsHttps {
            endpoint: endpoint.to_owned(),
        });
    }
    endpoint_config
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            endpoint: uri,
            source,
        })
}

/// Attaches `authorization: Bearer <token>` to every call; an empty token attaches nothing
/// (for a public catalog).
#[derive(Clone)]
pub struct BearerAuth {
    header: Result<Option<MetadataValue<Ascii>>, ()>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth { .. }")
    }
}

impl BearerAuth {
    /// An interceptor sending `token`.
    pub fn new(token: &str) -> Self {
        let header = if token.is_empty() {
            Ok(None)
        } else {
            format!("Bearer {token}").parse().map(Some).map_err(|_| ())
        };
        Self { header }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match &self.header {
            Ok(Some(value)) => {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
                Ok(request)
            }
            Ok(None) => Ok(request),
            // Refused locally: such a token cannot be sent, so it cannot be valid.
            Err(()) => Err(Status::unauthenticated(
                "the token contains characters that cannot be sent in metadata",
            )),
        }
    }
}

/// A Contribution client; `token` is a connector token.
pub fn contribution(
    channel: Channel,
    token: &str,
) -> ContributionClient<InterceptedService<Channel, BearerAuth>> {
    ContributionClient::with_interceptor(channel, BearerAuth::new(token))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A Catalog client; `token` is a consumer token (empty for a public catalog).
pub fn catalog(
    channel: Channel,
    token: &str,
) -> CatalogClient<InterceptedService<Channel, BearerAuth>> {
    CatalogClient::with_interceptor(channel, BearerAuth::new(token))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An Admin client; `token` is the admin token.
pub fn admin(
    channel: Channel,
    token: &str,
) -> AdminClient<InterceptedService<Channel, BearerAuth>> {
    AdminClient::with_interceptor(channel, BearerAuth::new(token))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_attached() {
        let request = BearerAuth::new("tbc_abc")
            .call(Request::new(()))
            .expect("valid token");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer tbc_abc")
        );
        let bare = BearerAuth::new("")
            .call(Request::new(()))
            .expect("no token");
        assert!(bare.metadata().get("authorization").is_none());
        assert!(BearerAuth::new("bad\ntoken")
            .call(Request::new(()))
            .is_err());
    }
}
