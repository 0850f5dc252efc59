//! `http_json`: a paginated JSON API. The cursor says which page is next: `{"page": n}`,
//! `{"offset": n}`, `{"cursor": "token"}` or `{"url": "next link"}`.

use super::http::{get, Home, HttpOptions};
use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::{json, Value};
use tributary_core::source::kinds::{HttpJsonConfig, Pagination};
use tributary_core::source::secrets::redact_url;
use url::Url;

pub(crate) struct HttpJson {
    config: HttpJsonConfig,
    base: Url,
    http: HttpOptions,
}

impl HttpJson {
    pub(crate) fn new(config: HttpJsonConfig, http: HttpOptions) -> Result<Self, FetchError> {
        let base = Url::parse(&config.url)
            .map_err(|e| FetchError::new(format!("source url {}: {e}", redact_url(&config.url))))?;
        Ok(Self { config, base, http })
    }

    fn with_query(&self, pairs: &[(&str, String)]) -> String {
        let mut url = self.base.clone();
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in pairs {
                query.append_pair(k, v);
            }
        }
        url.to_string()
    }

    /// The URL of the page at `cursor`.
    fn url_at(&self, cursor: Option<&Value>) -> String {
        let number = |key: &str| cursor.and_then(|c| c.get(key)).and_then(Value::as_u64);
        match &self.config.pagination {
            Pagination::None => self.base.to_string(),
            Pagination::Page {
                param,
                start,
                size_param,
                size,
            } => {
                let mut pairs =
                    vec![(param.as_str(), number("page").unwrap_or(*start).to_string())];
                if let (Some(p), Some(s)) = (size_param, size) {
                    pairs.push((p.as_str(), s.to_string()));
                }
                self.with_query(&pairs)
            }
            Pagination::Offset {
                param,
                limit_param,
                limit,
            } => self.with_query(&[
                (param.as_str(), number("offset").unwrap_or(0).to_string()),
                (limit_param.as_str(), limit.to_string()),
            ]),
            Pagination::Cursor { param, .. } => {
                match cursor.and_then(|c| c.get("cursor")).and_then(Value::as_str) {
                    Some(token) => self.with_query(&[(param.as_str(), token.to_owned())]),
                    None => self.base.to_string(),
                }
            }
            Pagination::Link => cursor
                .and_then(|c| c.get("url"))
                .and_then(Value::as_str)
                .map_or_else(|| self.base.to_string(), str::to_owned),
        }
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against `base`.
pub(crate) fn next_link(header: &str, base: &str) -> Option<String> {
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let target = target.strip_prefix('<')?.strip_suffix('>')?;
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|rel| {
                    rel.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r == "next")
                })
                .unwrap_or(false)
        });
        if is_next {
            return Url::parse(base)
                .and_then(|b| b.join(target))
                .ok()
                .map(|u| u.to_string());
        }
    }
    None
}

#[async_trait]
impl Provider for HttpJson {
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let url = self.url_at(cursor);
        let home = Home {
            url: &self.config.url,
            headers: &self.config.headers,
        };
        let fetched = get(&self.http, &home, &url).await?;
        let shown = redact_url(&url);
        let body: Value = serde_json::from_slice(&fetched.body)
            .map_err(|e| FetchError::new(format!("GET {shown}: the body is not JSON: {e}")))?;
        let items = match body.pointer(&self.config.items) {
            Some(Value::Array(items)) => items.clone(),
            _ => {
                return Err(FetchError::new(format!(
                    "GET {shown}: no array at {:?} in the body",
                    self.config.items
                )))
            }
        };
        let n = items.len() as u64;
        let number = |key: &str| cursor.and_then(|c| c.get(key)).and_then(Value::as_u64);
        let (next_cursor, done) = match &self.config.pagination {
            Pagination::None => (Value::Null, true),
            Pagination::Page { start, size, .. } => {
                let page = number("page").unwrap_or(*start);
                (
                    json!({"page": page + 1}),
                    n == 0 || size.is_some_and(|s| n < s),
                )
            }
            Pagination::Offset { limit, .. } => {
                let offset = number("offset").unwrap_or(0);
                (json!({"offset": offset + n}), n < *limit)
            }
            Pagination::Cursor { field, .. } => match body.pointer(field) {
                Some(Value::String(s)) if !s.is_empty() => (json!({"cursor": s}), false),
                Some(Value::Number(num)) => (json!({"cursor": num.to_string()}), false),
                _ => (Value::Null, true),
            },
            Pagination::Link => match fetched
                .link
                .as_deref()
                .and_then(|h| next_link(h, &fetched.answered))
            {
                Some(next) => (json!({"url": next}), false),
                None => (Value::Null, true),
            },
        };
        Ok(FetchedPage {
            items,
            unreadable: Vec::new(),
            next_cursor,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_the_next_page() {
        let h = r#"<https://api.example/items?page=1>; rel="prev", </items?page=3>; rel="next""#;
        assert_eq!(
            next_link(h, "https://api.example/items?page=2").as_deref(),
            Some("https://api.example/items?page=3")
        );
        assert_eq!(next_link(r#"<a>; rel="last""#, "http://x/"), None);
    }
}
