//! Tokens in request metadata: `authorization: Bearer <token>` or `x-tributary-token: <token>`.

use tonic::{Request, Status};
use tributary_core::auth::{hash_token, token_matches};

/// The alternative token header.
pub const TOKEN_HEADER: &str = "x-tributary-token";

/// The token a request carries, if any.
pub fn bearer_token<T>(req: &Request<T>) -> Option<&str> {
    let metadata = req.metadata();
    if let Some(value) = metadata.get("authorization").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Some((scheme, token)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(token.trim());
            }
        }
    }
    metadata
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The admin token check; holds only the token's hash.
#[derive(Clone)]
pub struct AdminAuth {
    token_hash: String,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth { .. }")
    }
}

impl AdminAuth {
    /// A check for `token`; only its hash is kept.
    pub fn new(token: &str) -> Self {
        Self {
            token_hash: hash_token(token),
        }
    }

    /// A check against a token hash (lowercase hex SHA-256).
    pub fn from_hash(token_hash: String) -> Self {
        Self { token_hash }
    }

    /// `UNAUTHENTICATED` unless the request carries the admin token.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match bearer_token(req) {
            Some(token) if token_matches(token, &self.token_hash) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid admin token")),
            None => Err(Status::unauthenticated(
                "missing admin token: send `authorization: Bearer <token>`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(header: &'static str, value: &str) -> Request<()> {
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(header, value.parse().expect("ascii"));
        req
    }

    #[test]
    fn reads_bearer_and_alternative_header() {
        assert_eq!(
            bearer_token(&request("authorization", "Bearer abc")),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&request("authorization", "bearer abc")),
            Some("abc")
        );
        assert_eq!(bearer_token(&request(TOKEN_HEADER, "xyz")), Some("xyz"));
        assert_eq!(bearer_token(&request("authorization", "Basic abc")), None);
        assert_eq!(bearer_token(&Request::new(())), None);
    }

    #[test]
    fn admin_check() {
        let auth = AdminAuth::new("tba_secret");
        assert!(auth
            .check(&request("authorization", "Bearer tba_secret"))
            .is_ok());
        assert_eq!(
            auth.check(&request("authorization", "Bearer nope"))
                .map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            auth.check(&Request::new(())).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
    }
}
