//! `grpc`: an external `tributary.provider.v1.SourceProvider`, called with the cursor as JSON
//! text; any language can be a provider. An `https://` endpoint is reached over TLS, verified
//! against the system's roots and `ingest.ca_file`.
//!
//! Connecting has `ingest.provider_connect_timeout_secs` and each `Next` call
//! `ingest.provider_request_timeout_secs` (connecting included): a provider that accepts and
//! never answers, or never accepts, fails the page saying it timed out, and the engine's slot
//! is free again.

use super::http::{with_causes, HttpOptions};
use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tributary_core::source::kinds::GrpcConfig;
use tributary_core::source::secrets::redact_url;
use tributary_proto::provider::v1::source_provider_client::SourceProviderClient;
use tributary_proto::provider::v1::NextRequest;

pub(crate) struct Grpc {
    source_id: String,
    config: String,
    channel: Channel,
    /// The endpoint as errors show it (redacted).
    shown: String,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Grpc {
    pub(crate) fn new(
        source_id: String,
        config: GrpcConfig,
        http: &HttpOptions,
    ) -> Result<Self, FetchError> {
        let shown = redact_url(&config.endpoint);
        let invalid = |e| FetchError::new(format!("provider endpoint {shown}: {e}"));
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(invalid)?
            .connect_timeout(http.provider_connect_timeout)
            .timeout(http.provider_request_timeout);
        if config.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(http.grpc_tls.clone())
                .map_err(invalid)?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            source_id,
            config: config.config.to_string(),
            channel,
            shown,
            connect_timeout: http.provider_connect_timeout,
            request_timeout: http.provider_request_timeout,
        })
    }
}

#[async_trait]
impl Provider for Grpc {
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let mut client = SourceProviderClient::new(self.channel.clone());
        let call = client.next(NextRequest {
            source_id: self.source_id.clone(),
            cursor: cursor.map(Value::to_string).unwrap_or_default(),
            config: self.config.clone(),
        });
        // The channel's own timeouts bound each attempt; this bounds the call as a whole (a
        // connection that hangs in its TLS or HTTP/2 handshake included).
        let limit = self.connect_timeout + self.request_timeout;
        let timed_out = || {
            FetchError::new(format!(
                "provider Next at {} timed out: no answer within {:?} \
                 (ingest.provider_request_timeout_secs; connecting: \
                 ingest.provider_connect_timeout_secs)",
                self.shown, self.request_timeout
            ))
        };
        let reply = tokio::time::timeout(limit, call)
            .await
            .map_err(|_| timed_out())?
            .map_err(|s| {
                // The status's source says why a connection failed (a refused certificate).
                let cause = std::error::Error::source(&s).map(with_causes);
                let detail = format!(
                    "{}: {}{}",
                    s.code(),
                    s.message(),
                    cause.map(|c| format!(": {c}")).unwrap_or_default()
                );
                let lower = detail.to_lowercase();
                let expired = ["timed out", "timeout expired", "deadline has elapsed"]
                    .iter()
                    .any(|w| lower.contains(w))
                    || s.code() == tonic::Code::DeadlineExceeded;
                if expired && lower.contains("connect") {
                    FetchError::new(format!(
                        "connecting to provider {} timed out after {:?} \
                         (ingest.provider_connect_timeout_secs): {detail}",
                        self.shown, self.connect_timeout
                    ))
                } else if expired {
                    FetchError::new(format!(
                        "provider Next at {} timed out after {:?} \
                         (ingest.provider_request_timeout_secs): {detail}",
                        self.shown, self.request_timeout
                    ))
                } else {
                    FetchError::new(format!("provider Next: {detail}"))
                }
            })?
            .into_inner();
        let mut page = FetchedPage {
            done: reply.done,
            ..FetchedPage::default()
        };
        for item in reply.items {
            match tributary_grpc::convert::struct_to_json(item) {
                Ok(v) => page.items.push(v),
                Err(e) => page.unreadable.push((
                    String::new(),
                    format!("item has a non-finite number at {}", e.path),
                )),
            }
        }
        page.next_cursor = if reply.next_cursor.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&reply.next_cursor)
                .map_err(|e| FetchError::new(format!("provider next_cursor is not JSON: {e}")))?
        };
        Ok(page)
    }
}
