//! The settings of each source kind (§5 `kind`), checked when a source is created or updated.
//!
//! Header values and parts of URLs may hold secrets (API keys, bearer tokens, signatures), so
//! `Get`/`List` show them redacted (see [`super::secrets`]).

use super::SourceKind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub use super::secrets::{keep_secrets, redact, REDACTED};

/// A paginated JSON API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonConfig {
    /// The first page's URL; pagination adds query parameters to it.
    pub url: String,
    /// JSON pointer to the items array in a page's body; `""` means the body is the array.
    #[serde(default)]
    pub items: String,
    /// Headers sent with every request (e.g. `Authorization`); never shown back.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub pagination: Pagination,
}

/// How an `http_json` source walks its pages; the cursor saved between pages says where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One page only.
    #[default]
    None,
    /// `?page=N` from `start`; done at an empty page or one shorter than `size`.
    Page {
        #[serde(default = "page_param")]
        param: String,
        #[serde(default = "one")]
        start: u64,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
    /// `?offset=N&limit=L`; done at a page shorter than `limit`.
    Offset {
        #[serde(default = "offset_param")]
        param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        #[serde(default = "hundred")]
        limit: u64,
    },
    /// `?cursor=TOKEN`, the token read from the previous page at JSON pointer `field`; done when
    /// it is absent, null or empty.
    Cursor {
        #[serde(default = "cursor_param")]
        param: String,
        field: String,
    },
    /// The `Link: <url>; rel="next"` response header (RFC 8288); done when there is none.
    Link,
}

fn page_param() -> String {
    "page".into()
}
fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn cursor_param() -> String {
    "cursor".into()
}
fn one() -> u64 {
    1
}
fn hundred() -> u64 {
    100
}
fn thousand() -> u64 {
    1000
}

/// Newline-delimited JSON in a local file or behind an `http(s)://` URL (an object store's
/// object, public or presigned), read from a byte offset (the cursor) a page of lines at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonConfig {
    /// A file on the engine's machine; exactly one of `path` and `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Read with ranged GETs from the cursor's byte offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent with every request to `url`; never shown back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Lines per page.
    #[serde(default = "thousand")]
    pub page_size: u64,
}

/// An RSS 2.0, Atom or Media RSS feed, fetched whole (feeds are small) as one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// An external `tributary.provider.v1.SourceProvider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// `http://host:port` of the provider.
    pub endpoint: String,
    /// Passed to the provider with every call, as JSON text.
    #[serde(default)]
    pub config: Value,
}

/// A kind's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum KindConfig {
    HttpJson(HttpJsonConfig),
    Ndjson(NdjsonConfig),
    Feed(FeedConfig),
    Grpc(GrpcConfig),
}

fn decode<T: for<'de> Deserialize<'de>>(field: &str, config: &Value) -> Result<T> {
    serde_json::from_value(config.clone()).map_err(|e| Error::invalid(field, e.to_string()))
}

fn check_url(field: &str, url: &str) -> Result<()> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            super::secrets::check_not_redacted(field, url)
        }
        Ok(u) => Err(Error::invalid(
            field,
            format!("scheme {:?} is not http or https", u.scheme()),
        )),
        Err(e) => Err(Error::invalid(field, format!("not a URL: {e}"))),
    }
}

impl KindConfig {
    /// Checks `config` for `kind`; violations name `field.<setting>`.
    pub fn parse(field: &str, kind: SourceKind, config: &Value) -> Result<Self> {
        Ok(match kind {
            SourceKind::HttpJson => {
                let c: HttpJsonConfig = decode(field, config)?;
                check_url(&format!("{field}.url"), &c.url)?;
                if !(c.items.is_empty() || c.items.starts_with('/')) {
                    return Err(Error::invalid(
                        format!("{field}.items"),
                        "must be a JSON pointer (\"/data\", or \"\" for the whole body)",
                    ));
                }
                match &c.pagination {
                    Pagination::Offset { limit: 0, .. }
                    | Pagination::Page { size: Some(0), .. } => {
                        return Err(Error::invalid(
                            format!("{field}.pagination"),
                            "page size must be positive",
                        ))
                    }
                    Pagination::Cursor { field: f, .. } if !f.starts_with('/') => {
                        return Err(Error::invalid(
                            format!("{field}.pagination.field"),
                            "must be a JSON pointer",
                        ))
                    }
                    _ => {}
                }
                Self::HttpJson(c)
            }
            SourceKind::Ndjson => {
                let c: NdjsonConfig = decode(field, config)?;
                match (&c.path, &c.url) {
                    (Some(path), None) if !path.is_empty() => {
                        if !c.headers.is_empty() {
                            return Err(Error::invalid(
                                format!("{field}.headers"),
                                "only apply to a url",
                            ));
                        }
                    }
                    (None, Some(url)) => check_url(&format!("{field}.url"), url)?,
                    _ => {
                        return Err(Error::invalid(
                            format!("{field}.path"),
                            "exactly one of path (a file) and url (http or https) is required",
                        ))
                    }
                }
                if c.page_size == 0 {
                    return Err(Error::invalid(
                        format!("{field}.page_size"),
                        "must be positive",
                    ));
                }
                Self::Ndjson(c)
            }
            SourceKind::Feed => {
                let c: FeedConfig = decode(field, config)?;
                check_url(&format!("{field}.url"), &c.url)?;
                Self::Feed(c)
            }
            SourceKind::Grpc => {
                let c: GrpcConfig = decode(field, config)?;
                check_url(&format!("{field}.endpoint"), &c.endpoint)?;
                Self::Grpc(c)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn http_json_settings_are_checked() {
        let ok = KindConfig::parse(
            "source.config",
            SourceKind::HttpJson,
            &json!({"url": "http://x/items", "items": "/data",
                    "pagination": {"type": "cursor", "field": "/next"}}),
        );
        assert!(ok.is_ok(), "{ok:?}");
        for bad in [
            json!({"url": "ftp://x"}),
            json!({"url": "http://x", "items": "data"}),
            json!({"url": "http://x", "pagination": {"type": "sideways"}}),
            json!({"url": "http://x", "extra": 1}),
        ] {
            assert!(matches!(
                KindConfig::parse("source.config", SourceKind::HttpJson, &bad),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn ndjson_reads_a_file_or_a_url_never_both() {
        for ok in [
            json!({"path": "/data/items.ndjson"}),
            json!({"url": "https://bucket.example/items.ndjson", "headers": {"Authorization": "x"}}),
        ] {
            let parsed = KindConfig::parse("config", SourceKind::Ndjson, &ok);
            assert!(parsed.is_ok(), "{ok}: {parsed:?}");
        }
        for (bad, field) in [
            (json!({}), "config.path"),
            (json!({"path": ""}), "config.path"),
            (json!({"path": "/a", "url": "https://x/a"}), "config.path"),
            (json!({"url": "s3://bucket/a"}), "config.url"),
            (
                json!({"path": "/a", "headers": {"A": "b"}}),
                "config.headers",
            ),
            (json!({"path": "/a", "page_size": 0}), "config.page_size"),
        ] {
            match KindConfig::parse("config", SourceKind::Ndjson, &bad) {
                Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
