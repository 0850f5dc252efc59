//! Identifiers: record keys, connector ids, entity-type slugs.

use sha1::{Digest, Sha1};

/// The public key of a record: lowercase hex SHA-1 of `entity_type \n connector \n id`.
/// It is stable forever, so consumers may store it.
pub fn record_key(entity_type: &str, connector: &str, id: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(entity_type.as_bytes());
    hasher.update(b"\n");
    hasher.update(connector.as_bytes());
    hasher.update(b"\n");
    hasher.update(id.as_bytes());
    // Every record of every batch is keyed here: the digits are written by table into one
    // buffer, not collected a `char` at a time as `hex::encode` does.
    let mut digits = [0u8; 40];
    // A SHA-1 digest is 20 bytes, exactly the 40 digits' room, so this cannot fail.
    let _ = hex::encode_to_slice(hasher.finalize(), &mut digits);
    String::from_utf8_lossy(&digits).into_owned()
}

/// Checks that `key` (request field `field`) is a record key: 40 lowercase hex characters. A
/// malformed key names no record, so it is a bad argument rather than a record not found.
pub fn check_record_key(field: &str, key: &str) -> crate::Result<()> {
    let is_key = key.len() == 40
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_key {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            field,
            "must be a record key: 40 lowercase hex characters",
        ))
    }
}

/// A new connector id: 40 lowercase hex characters.
pub fn new_connector_id() -> String {
    let bytes: [u8; 20] = rand::random();
    hex::encode(bytes)
}

/// A new opaque id for consumers and import results.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `slug` is 1..64 of `a-z0-9-`.
pub fn is_valid_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_key_is_sha1_of_type_connector_and_id() {
        // printf 'country\nabc\nGB' | sha1sum
        assert_eq!(
            record_key("country", "abc", "GB"),
            "7b551f2a93ee651e35ecbe49deb64dd4fa5aa316"
        );
        assert_ne!(
            record_key("country", "abc", "GB"),
            record_key("country", "abd", "GB")
        );
    }

    #[test]
    fn record_keys_are_40_lowercase_hex_characters() {
        let key = record_key("country", "abc", "GB");
        assert!(check_record_key("key", &key).is_ok());
        for bad in [
            String::new(),
            key[..39].to_owned(),
            format!("{key}0"),
            key.to_uppercase(),
            format!("{}g", &key[..39]),
        ] {
            assert!(check_record_key("key", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slugs_are_lowercase_digits_and_dashes() {
        assert!(is_valid_slug("country"));
        assert!(is_valid_slug("a-1"));
        assert!(!is_valid_slug(""));
        assert!(!is_valid_slug("Country"));
        assert!(!is_valid_slug("a_b"));
        assert!(!is_valid_slug(&"a".repeat(65)));
    }
}
