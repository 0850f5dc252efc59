//! HTTP fetching shared by `http_json`, `feed` and `ndjson`: configured headers (sent to the
//! source's own origin only), redirects followed by hand, a timeout, and a cap on a page's body
//! so memory stays bounded by one page. URLs in errors are redacted.

use crate::error::FetchError;
use crate::EngineOptions;
use std::collections::BTreeMap;
use std::time::Duration;
use tributary_core::source::secrets::redact_url;
use tributary_core::source::AllowedDirs;
use url::Url;

/// Most redirects followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 10;

/// How the engine reaches sources: HTTP settings, the files `ndjson` may read, and the TLS
/// and timeouts of `grpc` providers.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub client: reqwest::Client,
    /// Largest page body read; a larger one fails the page.
    pub max_page_bytes: usize,
    /// Longest `ndjson` line.
    pub max_line_bytes: usize,
    /// Where `ndjson` files may be.
    pub allowed_dirs: AllowedDirs,
    /// TLS of `https://` gRPC providers: the same roots as HTTPS sources.
    pub grpc_tls: tonic::transport::ClientTlsConfig,
    pub provider_connect_timeout: Duration,
    pub provider_request_timeout: Duration,
}

impl HttpOptions {
    /// A client per `options` (timeout per request, page and line caps), trusting the system's
    /// root certificates and those in `options.ca_file`. Redirects are not followed by the
    /// client: [`send`] follows them so that it decides which headers each hop gets.
    pub fn new(options: &EngineOptions) -> Result<Self, FetchError> {
        let extra_roots = options.ca_file.as_deref();
        // reqwest is built without a crypto provider of its own; ring becomes the process's
        // default once (an error only says one is installed already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
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
            max_page_bytes: options.max_page_bytes,
            max_line_bytes: options.max_line_bytes.max(1),
            allowed_dirs: AllowedDirs::new(options.allowed_dirs.clone()),
            grpc_tls,
            provider_connect_timeout: options.provider_connect_timeout,
            provider_request_timeout: options.provider_request_timeout,
        })
    }
}

/// A fetched body and the response headers the caller needs.
pub(crate) struct Fetched {
    pub body: Vec<u8>,
    pub link: Option<String>,
    /// The URL that answered (the last of any redirects).
    pub answered: String,
}

/// Where a source lives: the URL it was configured with and the headers configured for it.
/// The headers belong to that URL's origin (scheme, host, port) and are sent to it only.
pub(crate) struct Home<'a> {
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
}

/// Whether `a` and `b` share an origin (RFC 6454: scheme, host and port).
fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// A reqwest error's message and causes, without the URL reqwest puts in it (it may hold
/// secrets; callers name the redacted URL themselves).
pub(crate) fn reqwest_error(e: reqwest::Error) -> String {
    with_causes(&e.without_url())
}

/// Sends `GET url` (and `range`, when given, as `Range: bytes=<range>-`), following up to
/// [`MAX_REDIRECTS`] redirects. The home's headers go only to requests whose origin is the
/// home's: a next-page link or a redirect to another origin is requested without them (the
/// way browsers and curl treat `Authorization` on a cross-origin redirect, for every
/// configured header). The response is the caller's to check.
pub(crate) async fn send(
    http: &HttpOptions,
    home: &Home<'_>,
    url: &str,
    range: Option<u64>,
) -> Result<reqwest::Response, FetchError> {
    let shown = redact_url(url);
    let home_url = Url::parse(home.url)
        .map_err(|e| FetchError::new(format!("source url {}: {e}", redact_url(home.url))))?;
    let mut target =
        Url::parse(url).map_err(|e| FetchError::new(format!("GET {shown}: not a URL: {e}")))?;
    for _ in 0..=MAX_REDIRECTS {
        let mut request = http.client.get(target.clone());
        if same_origin(&target, &home_url) {
            for (name, value) in home.headers {
                request = request.header(name, value);
            }
        }
        if let Some(from) = range {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::new(format!("GET {shown}: {}", reqwest_error(e))))?;
        if !response.status().is_redirection() {
            return Ok(response);
        }
        let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
            // A 304 or a 3xx without a target: the caller reports the status.
            return Ok(response);
        };
        let next = location
            .to_str()
            .ok()
            .and_then(|l| target.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                FetchError::new(format!(
                    "GET {shown}: HTTP {} redirects to an unusable location (not an http or \
                     https URL)",
                    response.status()
                ))
            })?;
        target = next;
    }
    Err(FetchError::new(format!(
        "GET {shown}: more than {MAX_REDIRECTS} redirects"
    )))
}

/// GETs `url` with the home's headers; non-2xx statuses and bodies over the cap are errors.
pub(crate) async fn get(
    http: &HttpOptions,
    home: &Home<'_>,
    url: &str,
) -> Result<Fetched, FetchError> {
    let shown = redact_url(url);
    let mut response = send(http, home, url, None).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::new(format!("GET {shown}: HTTP {status}")));
    }
    // A relative next link is resolved against the page that was answered (after redirects).
    let answered = response.url().to_string();
    let link = response
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        FetchError::new(format!(
            "GET {shown}: reading the body: {}",
            reqwest_error(e)
        ))
    })? {
        if body.len() + chunk.len() > http.max_page_bytes {
            return Err(FetchError::new(format!(
                "GET {shown}: the page is larger than {} bytes (ingest.max_page_bytes)",
                http.max_page_bytes
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        body,
        link: Some(link).filter(|l| !l.is_empty()),
        answered,
    })
}

pub(crate) use tributary_core::error::with_causes;

#[cfg(test)]
mod tests {
    use super::*;

    fn options_with(roots: &std::path::Path) -> Result<HttpOptions, FetchError> {
        HttpOptions::new(&EngineOptions {
            ca_file: Some(roots.to_owned()),
            ..EngineOptions::default()
        })
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
