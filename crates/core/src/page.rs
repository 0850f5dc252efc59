//! Opaque page tokens for keyset pagination: the hex of the last item's sort key.

use crate::{Error, Result};

/// Default page size of list calls.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size of list calls.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The page size to use for a requested size (0 or negative means the default).
pub fn page_size(requested: i32) -> Result<u32> {
    match requested {
        r if r < 0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        r => Ok((r as u32).min(MAX_PAGE_SIZE)),
    }
}

/// The token that continues after `last`.
pub fn encode_token(last: &str) -> String {
    hex::encode(last.as_bytes())
}

/// The position a token continues after; `None` for the first page.
pub fn decode_token(token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    // Positions are ids and slugs, short and NUL-free; anything else was not issued here.
    if token.len() > 1024 {
        return Err(Error::invalid(
            "page_token",
            "is not a token this server issued",
        ));
    }
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|position| !position.contains('\0'))
        .map(Some)
        .ok_or_else(|| Error::invalid("page_token", "is not a token this server issued"))
}

/// The next-page token for a page of `len` items when `limit` were asked for.
pub fn next_token(len: usize, limit: u32, last: Option<&str>) -> Option<String> {
    if len as u32 >= limit {
        last.map(encode_token)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_to_100_and_are_capped_at_1000() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1).ok(), Some(1));
        assert_eq!(page_size(1000).ok(), Some(1000));
        assert_eq!(page_size(1001).ok(), Some(MAX_PAGE_SIZE));
        assert_eq!(page_size(i32::MAX).ok(), Some(MAX_PAGE_SIZE));
        assert!(matches!(page_size(-1), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            page_size(i32::MIN),
            Err(Error::InvalidArgument(_))
        ));
    }
}
