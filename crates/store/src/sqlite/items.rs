//! A page of `(id, checksum)` items read as one text on SQLite (`items_page!`).
//!
//! Each item is `<bytes>:<id><bytes>:<checksum>`, the lengths in bytes (`octet_length`, which
//! counts the database's encoding: UTF-8, SQLite's default and the only one Tributary creates,
//! so its bytes are Rust's), so ids may hold any character, `:` included.

use crate::error::{StoreError, StoreResult};

/// Splits a page's text into its items, by id in byte order. An aggregate's order is not
/// guaranteed by SQL, so a page that comes back out of order is sorted.
pub(super) fn parse(text: &str) -> StoreResult<Vec<(String, String)>> {
    let mut items = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (id, after_id) = take_prefixed(rest)?;
        let (checksum, after_checksum) = take_prefixed(after_id)?;
        items.push((id.to_owned(), checksum.to_owned()));
        rest = after_checksum;
    }
    if !items.is_sorted_by(|a, b| a.0 < b.0) {
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(items)
}

/// Takes one `<bytes>:<text>` off the front of `text`.
fn take_prefixed(text: &str) -> StoreResult<(&str, &str)> {
    let corrupt = || StoreError::Corrupt(format!("reconcile page item: {:.80}", text));
    let (length, rest) = text.split_once(':').ok_or_else(corrupt)?;
    let length: usize = length.parse().map_err(|_| corrupt())?;
    let value = rest.get(..length).ok_or_else(corrupt)?;
    Ok((value, &rest[length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One item's text as the statement writes it (the conformance suite checks the statement).
    fn item_text(id: &str, checksum: &str) -> String {
        format!("{}:{id}{}:{checksum}", id.len(), checksum.len())
    }

    #[test]
    fn ids_with_separators_and_multibyte_characters_come_back_whole() {
        let items = [("a:1", "c1"), ("b", "12:x"), ("z\n:", "c"), ("é€😀", "")];
        let text: String = items.iter().map(|(i, c)| item_text(i, c)).collect();
        let parsed = parse(&text).expect("parses");
        let expected: Vec<(String, String)> = items
            .iter()
            .map(|(i, c)| (i.to_string(), c.to_string()))
            .collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn an_empty_page_has_no_items() {
        assert_eq!(parse("").expect("parses"), Vec::new());
    }

    #[test]
    fn a_page_out_of_order_comes_back_sorted() {
        let text = item_text("b", "2") + &item_text("a", "1");
        let parsed = parse(&text).expect("parses");
        assert_eq!(parsed[0].0, "a");
        assert_eq!(parsed[1].0, "b");
    }

    #[test]
    fn a_malformed_page_is_corrupt_not_a_panic() {
        for text in ["x", "3:ab", "2:ab", "99:ab2:cd", "1:é1:c", "-1:a1:c"] {
            assert!(
                matches!(parse(text), Err(StoreError::Corrupt(_))),
                "{text:?} should be corrupt"
            );
        }
    }
}
