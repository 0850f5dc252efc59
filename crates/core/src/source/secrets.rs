//! Secrets in a source's settings: header values and the secret parts of URLs (userinfo, query
//! values, fragment). [`redact_url`] is the one function every place that shows, logs or reports
//! a URL goes through; the stored settings keep the real values, which only the engine uses.
//!
//! An update that sends back what Get showed keeps the stored secrets: a header value sent as
//! [`REDACTED`] keeps the stored value, and a URL equal to the redacted form of the stored one
//! keeps the stored URL. A URL that holds [`URL_REDACTED`] anywhere else (edited around the
//! placeholder, or copied from another source) is refused, so the placeholder is never stored
//! as if it were the secret.

use crate::{Error, Result};
use serde_json::Value;

/// What `GetSource`/`ListSources` show instead of a header's value.
pub const REDACTED: &str = "<redacted>";

/// What replaces a secret part of a URL (URL-safe, so a redacted URL is still a URL).
pub const URL_REDACTED: &str = "REDACTED";

/// The settings that hold a URL, in every kind (`grpc` calls it `endpoint`).
const URL_FIELDS: [&str; 2] = ["url", "endpoint"];

/// `url` with its userinfo, every query value and its fragment replaced by [`URL_REDACTED`];
/// scheme, host, port and path are kept so an operator can tell which endpoint failed. Text
/// that is not a URL is redacted whole.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return format!("({URL_REDACTED}: not a URL)");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Only fails for URLs that cannot have userinfo, which then have none.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username(URL_REDACTED);
    }
    if let Some(query) = parsed.query() {
        // A bare name (`?s3cr3t`) may itself be the secret, so it is replaced whole.
        let redacted = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={URL_REDACTED}"),
                None if pair.is_empty() => String::new(),
                None => URL_REDACTED.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        parsed.set_query(Some(&redacted));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(URL_REDACTED));
    }
    parsed.to_string()
}

/// `config` (a source's settings) as it may be shown: header values replaced by [`REDACTED`],
/// URLs by [`redact_url`].
pub fn redact(config: &Value) -> Value {
    let mut shown = config.clone();
    if let Some(Value::Object(headers)) = shown.get_mut("headers") {
        for value in headers.values_mut() {
            *value = Value::String(REDACTED.to_owned());
        }
    }
    if let Value::Object(settings) = &mut shown {
        for field in URL_FIELDS {
            if let Some(Value::String(url)) = settings.get_mut(field) {
                *url = redact_url(url);
            }
        }
    }
    shown
}

/// A saved cursor (JSON text) as it may be shown: a next-page URL in it (`Link` pagination)
/// redacted like a source's URL.
pub fn redact_cursor(cursor: &str) -> String {
    match serde_json::from_str::<Value>(cursor) {
        Ok(Value::Object(mut c)) => {
            if let Some(Value::String(url)) = c.get_mut("url") {
                *url = redact_url(url);
            }
            Value::Object(c).to_string()
        }
        _ => cursor.to_owned(),
    }
}

/// `update` with what was sent back redacted replaced by the stored secrets: header values sent
/// as [`REDACTED`], and URLs equal to the redacted form of the stored URL.
pub fn keep_secrets(update: &mut Value, stored: &Value) {
    if let (Some(Value::Object(old)), Some(Value::Object(headers))) =
        (stored.get("headers"), update.get_mut("headers"))
    {
        for (name, value) in headers.iter_mut() {
            if value.as_str() == Some(REDACTED) {
                if let Some(old) = old.get(name) {
                    *value = old.clone();
                }
            }
        }
    }
    for field in URL_FIELDS {
        let (Some(Value::String(old)), Some(Value::String(sent))) =
            (stored.get(field), update.get_mut(field))
        else {
            continue;
        };
        if *sent == redact_url(old) {
            *sent = old.clone();
        }
    }
}

/// Refuses a URL that still holds the redaction placeholder in a part [`redact_url`] replaces:
/// storing it would replace a secret with the word `REDACTED`.
pub fn check_not_redacted(field: &str, url: &str) -> Result<()> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let placeholder = |s: &str| s == URL_REDACTED;
    let in_query = parsed.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| placeholder(pair.split_once('=').map_or(pair, |(_, v)| v)))
    });
    if placeholder(parsed.username()) || in_query || parsed.fragment().is_some_and(placeholder) {
        return Err(Error::invalid(
            field,
            format!(
                "holds the placeholder {URL_REDACTED} of a redacted URL; send the URL exactly as \
                 shown to keep the stored one, or the full URL with its secrets"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn userinfo_query_values_and_fragment_are_redacted() {
        assert_eq!(
            redact_url("https://alice:pw@bucket.example:8443/a/b.ndjson?X-Sig=abc&v=1&flag#tok"),
            "https://REDACTED@bucket.example:8443/a/b.ndjson?X-Sig=REDACTED&v=REDACTED&REDACTED#REDACTED"
        );
        assert_eq!(redact_url("http://x/items"), "http://x/items");
        assert_eq!(redact_url("http://token@x/"), "http://REDACTED@x/");
        assert!(!redact_url("not a url with s3cret").contains("s3cret"));
    }

    #[test]
    fn header_values_and_urls_are_redacted_and_kept_on_update() {
        let stored = json!({"url": "http://u:p@x/?sig=s3cret",
                            "headers": {"Authorization": "Bearer s3cret"}});
        let shown = redact(&stored);
        assert!(!shown.to_string().contains("s3cret"), "{shown}");
        let mut update = shown.clone();
        keep_secrets(&mut update, &stored);
        assert_eq!(update, stored);
        // A changed URL is the caller's own.
        let mut update = json!({"url": "http://x/?sig=new"});
        keep_secrets(&mut update, &stored);
        assert_eq!(update["url"], "http://x/?sig=new");
    }

    #[test]
    fn a_url_edited_around_the_placeholder_is_refused() {
        assert!(check_not_redacted("u", "http://x/?sig=REDACTED&page=2").is_err());
        assert!(check_not_redacted("u", "http://REDACTED@x/").is_err());
        assert!(check_not_redacted("u", "http://x/#REDACTED").is_err());
        assert!(check_not_redacted("u", "http://x/REDACTED?a=b").is_ok());
    }

    #[test]
    fn a_next_page_url_in_a_cursor_is_redacted() {
        let shown = redact_cursor(r#"{"url":"http://x/items?page=2&sig=s3cret"}"#);
        assert!(
            !shown.contains("s3cret") && shown.contains("page=REDACTED"),
            "{shown}"
        );
        assert_eq!(redact_cursor(r#"{"page":2}"#), r#"{"page":2}"#);
    }
}
