//! Canonical JSON (RFC 8785) and the record checksum of SPEC.md §1.1.

use crate::{Error, Result};
use serde_json::Value;

/// Canonical JSON text of `value`: sorted keys, no whitespace, canonical numbers.
pub fn canonical_json(value: &Value) -> Result<String> {
    serde_json_canonicalizer::to_string(value)
        .map_err(|e| Error::Internal(format!("canonical JSON: {e}")))
}

/// The computed checksum: lowercase hex BLAKE3 of the canonical JSON of
/// `{"entity","instance","name"}`, assembled from the parts' canonical forms.
///
/// The keys are written in RFC 8785 order (entity < instance < name), so the result is exactly
/// the canonical JSON of the whole object without canonicalising the parts twice.
pub fn record_checksum(name: &str, entity_canonical: &str, instance_canonical: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"{\"entity\":");
    hasher.update(entity_canonical.as_bytes());
    hasher.update(b",\"instance\":");
    hasher.update(instance_canonical.as_bytes());
    hasher.update(b",\"name\":");
    // A JSON string of the name is its canonical form.
    let name_json = Value::String(name.to_owned()).to_string();
    hasher.update(name_json.as_bytes());
    hasher.update(b"}");
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checksum_equals_blake3_of_canonical_whole_object() {
        let entity = json!({"b": 1, "a": [1.0, "x"]});
        let instance = json!({});
        let whole = json!({"name": "N", "entity": entity, "instance": instance});
        let expected = blake3::hash(canonical_json(&whole).unwrap().as_bytes())
            .to_hex()
            .to_string();
        let got = record_checksum(
            "N",
            &canonical_json(&entity).unwrap(),
            &canonical_json(&instance).unwrap(),
        );
        assert_eq!(got, expected);
    }

    /// The known answers of `tests/vectors/checksums.json`, computed independently with
    /// Python's `rfc8785` and `blake3` packages (`tests/vectors/make_checksums.py`).
    const VECTORS: &str = include_str!("../../../tests/vectors/checksums.json");

    #[test]
    fn every_checksum_vector_matches_rfc_8785_and_blake3() {
        let file: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = file["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 12, "{} vectors", vectors.len());
        for vector in vectors {
            let case = vector["case"].as_str().unwrap();
            let record = &vector["record"];
            let name = record["name"].as_str().unwrap();
            let entity = canonical_json(&record["entity"]).unwrap();
            // An absent instance is `{}` (SPEC.md §1.1).
            let instance = match record.get("instance") {
                Some(instance) => canonical_json(instance).unwrap(),
                None => "{}".to_owned(),
            };
            let whole = json!({
                "name": name,
                "entity": record["entity"],
                "instance": record.get("instance").cloned().unwrap_or_else(|| json!({})),
            });
            assert_eq!(
                canonical_json(&whole).unwrap(),
                vector["canonical"].as_str().unwrap(),
                "canonical JSON of {case:?}"
            );
            assert_eq!(
                record_checksum(name, &entity, &instance),
                vector["checksum"].as_str().unwrap(),
                "checksum of {case:?}"
            );
        }
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_checksum() {
        let a: Value = serde_json::from_str(r#"{"x": 1, "y": {"p": true, "q": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"q":null,"p":true},"x":1}"#).unwrap();
        let ca = canonical_json(&a).unwrap();
        assert_eq!(ca, canonical_json(&b).unwrap());
        assert_eq!(
            record_checksum("n", &ca, "{}"),
            record_checksum("n", &canonical_json(&b).unwrap(), "{}")
        );
    }
}
