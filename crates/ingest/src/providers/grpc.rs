//! `grpc`: an external `tributary.provider.v1.SourceProvider`, called with the cursor as JSON
//! text; any language can be a provider. An `https://` endpoint is reached over TLS, verified
//! against the system's roots and `ingest.ca_file`.

use super::http::with_causes;
use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::Value;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tributary_core::source::kinds::GrpcConfig;
use tributary_proto::provider::v1::source_provider_client::SourceProviderClient;
use tributary_proto::provider::v1::NextRequest;

pub(crate) struct Grpc {
    source_id: String,
    config: String,
    channel: Channel,
}

impl Grpc {
    pub(crate) fn new(
        source_id: String,
        config: GrpcConfig,
        tls: &ClientTlsConfig,
    ) -> Result<Self, FetchError> {
        let invalid = |e| FetchError::new(format!("provider endpoint {:?}: {e}", config.endpoint));
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone()).map_err(invalid)?;
        if config.endpoint.starts_with("https://") {
            endpoint = endpoint.tls_config(tls.clone()).map_err(invalid)?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            source_id,
            config: config.config.to_string(),
            channel,
        })
    }
}

#[async_trait]
impl Provider for Grpc {
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let mut client = SourceProviderClient::new(self.channel.clone());
        let reply = client
            .next(NextRequest {
                source_id: self.source_id.clone(),
                cursor: cursor.map(Value::to_string).unwrap_or_default(),
                config: self.config.clone(),
            })
            .await
            .map_err(|s| {
                // The status's source says why a connection failed (a refused certificate).
                let cause = std::error::Error::source(&s).map(with_causes);
                FetchError::new(format!(
                    "provider Next: {}: {}{}",
                    s.code(),
                    s.message(),
                    cause.map(|c| format!(": {c}")).unwrap_or_default()
                ))
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
