//! Canonical JSON (RFC 8785) and the record checksum of SPEC.md §1.1.

use crate::{Error, Result};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// Canonical JSON text of `value`: sorted keys, no whitespace, canonical numbers.
///
/// Written straight from the value, in one pass and one buffer: this runs for every record a
/// connector sends, and the general serializer it replaces (`serde_json_canonicalizer`, still
/// the reference in the tests) buffered and re-parsed every member to sort it, about a fifth of
/// the server's CPU on the write path (BENCHMARKS.md, issue 16).
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = String::with_capacity(128);
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(members) => write_object(members, out)?,
    }
    Ok(())
}

/// RFC 8785 §3.2.3: members sorted by the UTF-16 code units of their names. A `Map` iterates in
/// UTF-8 byte order, which is the same order unless names mix characters above U+FFFF with
/// ones from U+E000 to U+FFFF; only then are the members sorted again.
fn write_object(members: &Map<String, Value>, out: &mut String) -> Result<()> {
    let names = members.keys();
    let in_order = names
        .clone()
        .zip(names.skip(1))
        .all(|(a, b)| utf16_order(a, b) == Ordering::Less);
    out.push('{');
    if in_order {
        write_members(members.iter(), out)?;
    } else {
        let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
        sorted.sort_unstable_by(|a, b| utf16_order(a.0, b.0));
        write_members(sorted.into_iter(), out)?;
    }
    out.push('}');
    Ok(())
}

fn write_members<'v>(
    members: impl Iterator<Item = (&'v String, &'v Value)>,
    out: &mut String,
) -> Result<()> {
    for (i, (name, value)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        write_value(value, out)?;
    }
    Ok(())
}

fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// RFC 8785 §3.2.2.3: every number as ECMAScript writes the double it is (an integer beyond
/// 2^53 included).
fn write_number(number: &Number, out: &mut String) -> Result<()> {
    match number.as_f64() {
        Some(double) if double.is_finite() => {
            out.push_str(ryu_js::Buffer::new().format_finite(double));
            Ok(())
        }
        _ => Err(Error::Internal(format!(
            "canonical JSON: {number} is not a finite number"
        ))),
    }
}

/// RFC 8785 §3.2.2.2: a string in quotes with `"`, `\\` and the control characters escaped
/// (`\b \t \n \f \r` by name, the rest as `\u00xx`), everything else as it is. Also what
/// serde_json writes, and what `JSON.stringify` does.
fn write_string(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // The byte is ASCII, so `at` is a character boundary.
        out.push_str(&text[plain_from..at]);
        plain_from = at + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
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
    let mut name_json = String::with_capacity(name.len() + 2);
    write_string(name, &mut name_json);
    hasher.update(name_json.as_bytes());
    hasher.update(b"}");
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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

    /// The writer against the general serializer it replaced, on values built to reach every
    /// rule: names that sort differently in UTF-16 than in UTF-8 (U+E000..U+FFFF against
    /// characters above U+FFFF), control characters, quotes and backslashes, integers beyond
    /// 2^53, doubles of every exponent.
    fn reference(value: &Value) -> String {
        serde_json_canonicalizer::to_string(value).unwrap()
    }

    fn json_values() -> impl Strategy<Value = Value> {
        let text = || {
            proptest::string::string_regex(
                "[a-z\"\\\\/\u{0}-\u{1f}\u{7f}\u{e9}\u{2028}\u{e000}\u{ff61}\u{fffd}\u{10000}\u{1f600}\u{10ffff}]{0,6}",
            )
            .unwrap()
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            (-400i32..400).prop_map(|e| Value::from(10f64.powi(e) * 1.234_567_890_123)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn canonical_json_writes_what_the_reference_serializer_writes(value in json_values()) {
            prop_assert_eq!(canonical_json(&value).unwrap(), reference(&value));
        }
    }

    #[test]
    fn names_sort_by_utf16_code_units_not_by_bytes() {
        // U+E000 is above the surrogates U+1F600 is written with in UTF-16, below it in UTF-8.
        let value = json!({"\u{1f600}": 1, "\u{e000}": 2, "a": 3, "": 4});
        let written = canonical_json(&value).unwrap();
        assert_eq!(written, "{\"\":4,\"a\":3,\"\u{1f600}\":1,\"\u{e000}\":2}");
        assert_eq!(written, reference(&value));
    }

    #[test]
    fn strings_escape_only_what_json_must() {
        let value = json!(["\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/\u{7f}\u{2028}é"]);
        let written = canonical_json(&value).unwrap();
        assert_eq!(
            written,
            "[\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}é\"]"
        );
        assert_eq!(written, reference(&value));
    }

    #[test]
    fn numbers_are_written_as_ecmascript_doubles() {
        let value = json!([
            0,
            -0.0,
            1.0,
            1e21,
            1e-7,
            123456789012345678u64,
            i64::MIN,
            0.1
        ]);
        let written = canonical_json(&value).unwrap();
        assert_eq!(
            written,
            "[0,0,1,1e+21,1e-7,123456789012345680,-9223372036854776000,0.1]"
        );
        assert_eq!(written, reference(&value));
    }
}
