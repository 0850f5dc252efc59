//! HTTP fetching shared by `http_json` and `feed`: configured headers, a timeout, and a cap on
//! a page's body so memory stays bounded by one page.

use crate::error::FetchError;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How the engine reaches sources: HTTP settings, and the TLS of `grpc` providers.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub client: reqwest::Client,
    /// Largest page body read; a larger one fails the page.
    pub max_page_bytes: usize,
    /// TLS of `https://` gRPC providers: the same roots as HTTPS sources.
    pub grpc_tls: tonic::transport::ClientTlsConfig,
}

impl HttpOptions {
    /// A client with `timeout` per request and pages of at most `max_page_bytes`, trusting the
    /// system's root certificates and those in the PEM file `extra_roots`.
    pub fn new(
        timeout: Duration,
        max_page_bytes: usize,
        extra_roots: Option<&Path>,
    ) -> Result<Self, FetchError> {
        // reqwest is built without a crypto provider of its own; ring becomes the process's
        // default once (an error only says one is installed already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")));
        let mut extra_roots_pem = None;
        if let Some(path) = extra_roots {
            let pem = std::fs::read(path).map_err(|e| {
                FetchError::new(format!("reading CA certificates {}: {e}", path.display()))
            })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| FetchError::new(format!("CA certificates {}: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(FetchError::new(format!(
                    "CA certificates {}: no PEM certificate in the file",
                    path.display()
                )));
            }
            builder = builder.tls_certs_merge(roots);
            extra_roots_pem = Some(pem);
        }
        let grpc_tls = tributary_grpc::tls::client_tls_config(extra_roots_pem.as_deref());
        let client = builder
            .build()
            .map_err(|e| FetchError::new(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            max_page_bytes,
            grpc_tls,
        })
    }
}

/// A fetched body and the response headers the caller needs.
pub(crate) struct Fetched {
    pub body: Vec<u8>,
    pub link: Option<String>,
}

/// Sends `GET url` with the configured `headers` (and `range`, when given, as
/// `Range: bytes=<range>-`); the response is the caller's to check.
pub(crate) async fn send(
    http: &HttpOptions,
    url: &str,
    headers: &BTreeMap<String, String>,
    range: Option<u64>,
) -> Result<reqwest::Response, FetchError> {
    let mut request = http.client.get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(from) = range {
        request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
    }
    request
        .send()
        .await
        .map_err(|e| FetchError::new(format!("GET {url}: {}", with_causes(&e))))
}

/// GETs `url` with `headers`; non-2xx statuses and bodies over the cap are errors.
pub(crate) async fn get(
    http: &HttpOptions,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> Result<Fetched, FetchError> {
    let mut response = send(http, url, headers, None).await?;
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
        .map_err(|e| FetchError::new(format!("GET {url}: reading the body: {}", with_causes(&e))))?
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

pub(crate) use tributary_core::error::with_causes;

#[cfg(test)]
mod tests {
    use super::*;

    fn options_with(roots: &Path) -> Result<HttpOptions, FetchError> {
        HttpOptions::new(Duration::from_secs(1), 1024, Some(roots))
    }

    #[test]
    fn an_unusable_ca_file_stops_the_engine_from_starting_and_says_why() {
        let dir = std::env::temp_dir().join(format!("tributary-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let error = options_with(&missing).expect_err("a missing file is refused");
        assert!(error.0.contains("reading CA certificates"), "{}", error.0);

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = options_with(&empty).expect_err("a file without certificates is refused");
        assert!(error.0.contains("no PEM certificate"), "{}", error.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_carry_their_causes_once() {
        #[derive(Debug)]
        struct Sending(std::io::Error, &'static str);
        impl std::fmt::Display for Sending {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.1)
            }
        }
        impl std::error::Error for Sending {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = || std::io::Error::other("Connection refused");
        assert_eq!(
            with_causes(&Sending(refused(), "error sending request")),
            "error sending request: Connection refused"
        );
        // A message that already includes its cause does not repeat it.
        assert_eq!(
            with_causes(&Sending(refused(), "connect: Connection refused")),
            "connect: Connection refused"
        );
    }
}
