//! Digests computed on the client exactly as the server computes checksums (SPEC.md §1.1), so a
//! connector can ask [`Diff`](crate::StreamingContributor::diff) which records changed without
//! sending them.

use tributary_core::checksum::{canonical_json, record_checksum};
use tributary_grpc::convert::struct_to_json;
use tributary_proto::contribution::v1 as pb;

/// Why a record's checksum cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// A number JSON cannot hold (NaN or ±infinity); the server would reject the record too.
    #[error("{field}{path}: NaN and infinity are not JSON numbers")]
    NonFinite { field: &'static str, path: String },
    /// Canonicalisation failed (it does not for JSON built from a `Struct`).
    #[error("canonical JSON: {0}")]
    Canonical(String),
}

/// The checksum the server stores for `record`: its own `checksum` when set, else the BLAKE3 of
/// the canonical JSON of `{"entity","instance","name"}`.
///
/// The `Struct`s go through the server's own conversion (integral doubles become integers), so
/// `1` and `1.0` give the checksum the server computes.
pub fn checksum(record: &pb::Record) -> Result<String, DigestError> {
    if !record.checksum.is_empty() {
        return Ok(record.checksum.clone());
    }
    let entity = canonical("entity", record.entity.as_ref())?;
    let instance = canonical("instance", record.instance.as_ref())?;
    Ok(record_checksum(&record.name, &entity, &instance))
}

/// The `(id, checksum)` digest of `record`.
pub fn digest(record: &pb::Record) -> Result<pb::Digest, DigestError> {
    Ok(pb::Digest {
        id: record.id.clone(),
        checksum: checksum(record)?,
    })
}

/// Canonical JSON of an optional object: absent is `{}` for `instance` and `null` for `entity`
/// (which the server refuses, so the checksum of such a record never matters).
fn canonical(
    field: &'static str,
    value: Option<&prost_types::Struct>,
) -> Result<String, DigestError> {
    let json = match value {
        Some(s) => struct_to_json(s.clone()).map_err(|e| DigestError::NonFinite {
            field,
            path: e.path,
        })?,
        None if field == "instance" => serde_json::Value::Object(Default::default()),
        None => serde_json::Value::Null,
    };
    canonical_json(&json).map_err(|e| DigestError::Canonical(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;
    use prost_types::{Struct, Value};

    fn number(n: f64) -> Value {
        Value {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    #[test]
    fn checksum_matches_the_servers_for_the_same_record() {
        let record = pb::Record {
            id: "GB".into(),
            name: "United Kingdom".into(),
            entity: Some(Struct {
                fields: [("population".to_owned(), number(66040229.0))].into(),
            }),
            instance: None,
            checksum: String::new(),
        };
        // What the server computes for this record (core::record::prepare).
        let expected = record_checksum("United Kingdom", r#"{"population":66040229}"#, "{}");
        assert_eq!(checksum(&record).expect("checksum"), expected);
    }

    #[test]
    fn a_contributor_checksum_is_used_as_is() {
        let record = pb::Record {
            id: "GB".into(),
            checksum: "abc".into(),
            ..Default::default()
        };
        assert_eq!(digest(&record).expect("digest").checksum, "abc");
    }

    #[test]
    fn non_finite_numbers_are_named() {
        let record = pb::Record {
            entity: Some(Struct {
                fields: [("x".to_owned(), number(f64::NAN))].into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            checksum(&record).expect_err("NaN").to_string(),
            "entity.x: NaN and infinity are not JSON numbers"
        );
    }
}
