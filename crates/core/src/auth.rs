//! Tokens: generated with 256 bits of randomness, shown once, stored only as a SHA-256 hash.
//!
//! A fast hash is right here (unlike for passwords): the tokens are random, so there is nothing
//! for a dictionary attack to guess, and the hash is looked up on every RPC.

use sha2::{Digest, Sha256};

/// A new token with a prefix that tells what it is for (`tbc_` connector, `tbr_` consumer).
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a token: lowercase hex SHA-256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `presented` is the token whose hash is `expected_hash`, comparing in constant time.
pub fn token_matches(presented: &str, expected_hash: &str) -> bool {
    let presented_hash = hash_token(presented);
    presented_hash.len() == expected_hash.len()
        && presented_hash
            .bytes()
            .zip(expected_hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Prefix of connector tokens.
pub const CONNECTOR_TOKEN_PREFIX: &str = "tbc_";
/// Prefix of consumer tokens.
pub const CONSUMER_TOKEN_PREFIX: &str = "tbr_";
/// Prefix of generated admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "tba_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_match_only_their_hash() {
        let a = new_token(CONNECTOR_TOKEN_PREFIX);
        let b = new_token(CONNECTOR_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(token_matches(&a, &hash_token(&a)));
        assert!(!token_matches(&b, &hash_token(&a)));
    }
}
