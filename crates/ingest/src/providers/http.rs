//! HTTP fetching shared by `http_json` and `feed`: configured headers, a timeout, and a cap on
//! a page's body so memory stays bounded by one page.

use crate::error::FetchError;
use std::collections::BTreeMap;
use std::time::Duration;

/// HTTP settings of the engine.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub client: reqwest::Client,
    /// Largest page body read; a larger one fails the page.
    pub max_page_bytes: usize,
}

impl HttpOptions {
    /// A client with `timeout` per request and pages of at most `max_page_bytes`.
    pub fn new(timeout: Duration, max_page_bytes: usize) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::new(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            max_page_bytes,
        })
    }
}

/// A fetched body and the response headers the caller needs.
pub(crate) struct Fetched {
    pub body: Vec<u8>,
    pub link: Option<String>,
}

/// GETs `url` with `headers`; non-2xx statuses and bodies over the cap are errors.
pub(crate) async fn get(
    http: &HttpOptions,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> Result<Fetched, FetchError> {
    let mut request = http.client.get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| FetchError::new(format!("GET {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::new(format!("GET {url}: HTTP {status}")));
    }
    let link = response
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::new(format!("GET {url}: reading the body: {e}")))?
    {
        if body.len() + chunk.len() > http.max_page_bytes {
            return Err(FetchError::new(format!(
                "GET {url}: the page is larger than {} bytes",
                http.max_page_bytes
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        body,
        link: Some(link).filter(|l| !l.is_empty()),
    })
}
