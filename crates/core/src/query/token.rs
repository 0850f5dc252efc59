//! ListRecords page tokens: opaque to clients, they carry the last row's sort values and key
//! (the keyset position), the sequence of the listing's first snapshot, and the fingerprint of
//! the query they were issued for.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a page ends in the listing's order: the last row's sort values (as the store encoded
/// them; opaque to the domain) and its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "v")]
    pub values: Vec<Value>,
    #[serde(rename = "k")]
    pub key: String,
}

/// The state a page token carries from one page to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListToken {
    /// [`super::ListQuery::fingerprint`] of the query that issued it.
    #[serde(rename = "f")]
    pub fingerprint: String,
    /// The change-log sequence of the listing's first page; every page reports it, so a client
    /// that watches from it misses nothing that changed while it paged.
    #[serde(rename = "s")]
    pub sequence: u64,
    #[serde(rename = "c")]
    pub cursor: Cursor,
}

fn bad_token(why: &str) -> Error {
    Error::invalid("page_token", why)
}

impl ListToken {
    fn holds_nul(&self) -> bool {
        self.cursor.key.contains('\0') || self.cursor.values.iter().any(crate::text::json_has_nul)
    }

    /// The opaque text form.
    pub fn encode(&self) -> String {
        // Serialising a struct of strings, numbers and JSON values cannot fail.
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The token `text` continues, checked against the query it is used with; `None` for the
    /// first page.
    ///
    /// Tokens are not signed: everything in one is re-validated. Its size is capped, its
    /// fingerprint must be the query's, and the store checks that its values fit the query's
    /// order one for one (their count is capped by `max_order_by_fields`) and binds them as
    /// parameters; so a forged token can only name a position in the same listing (ADR 0016).
    pub fn decode(text: &str, fingerprint: &str, max_bytes: usize) -> Result<Option<ListToken>> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > max_bytes {
            return Err(bad_token(&format!(
                "is {} bytes; at most {max_bytes} (catalog.max_page_token_bytes)",
                text.len()
            )));
        }
        let token: ListToken = hex::decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|t: &ListToken| !t.holds_nul())
            .ok_or_else(|| bad_token("is not a token this server issued"))?;
        if token.fingerprint != fingerprint {
            return Err(bad_token(
                "was issued for another entity type, filter or order_by; page with the same query \
                 or start again without a token",
            ));
        }
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_the_fingerprint() {
        let token = ListToken {
            fingerprint: "f1".into(),
            sequence: 7,
            cursor: Cursor {
                values: vec![Value::from(3), Value::from("x")],
                key: "abc".into(),
            },
        };
        let text = token.encode();
        assert_eq!(
            ListToken::decode(&text, "f1", 1024).ok().flatten(),
            Some(token)
        );
        assert!(ListToken::decode(&text, "f2", 1024).is_err());
        assert!(ListToken::decode("zz", "f1", 1024).is_err());
        assert!(ListToken::decode("7b7d", "f1", 1024).is_err());
        assert_eq!(ListToken::decode("", "f1", 1024).ok().flatten(), None);
    }
}
