//! Where pages come from: one provider per source kind, each answering "the page at this
//! cursor". Providers keep no state between calls (the cursor is all), so the next page may be
//! fetched by another engine.

mod feed;
mod grpc;
mod http;
mod http_json;
mod ndjson;

use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::Value;
use tributary_core::source::{KindConfig, Source};

pub use http::HttpOptions;

/// One page of a source.
#[derive(Debug, Default)]
pub struct FetchedPage {
    pub items: Vec<Value>,
    /// Items that could not even be read as JSON: `(data, error)`; reported failed.
    pub unreadable: Vec<(String, String)>,
    /// Where the next page starts.
    pub next_cursor: Value,
    /// No more pages in this cycle.
    pub done: bool,
}

/// Fetches pages of one source.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The page at `cursor` (`None` at a cycle's start).
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError>;
}

/// The provider for `source`; an error when its settings no longer parse.
pub fn provider_for(source: &Source, http: &HttpOptions) -> Result<Box<dyn Provider>, FetchError> {
    let config = KindConfig::parse("config", source.kind, &source.config)
        .map_err(|e| FetchError::new(format!("source settings are invalid: {e}")))?;
    Ok(match config {
        KindConfig::HttpJson(c) => Box::new(http_json::HttpJson::new(c, http.clone())?),
        KindConfig::Ndjson(c) => Box::new(ndjson::Ndjson::new(c, http.clone())),
        KindConfig::Feed(c) => Box::new(feed::Feed::new(c, http.clone())?),
        KindConfig::Grpc(c) => Box::new(grpc::Grpc::new(source.id.clone(), c, http)?),
    })
}
