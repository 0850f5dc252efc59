//! `google.protobuf.Struct`/`Value` <-> `serde_json::Value`, and timestamps. Numbers follow
//! [`number_to_json`]: an integral double within ±2^53 is a JSON integer (SPEC.md §11).

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value as ProtoValue};
use serde_json::{Map, Value};
use tributary_core::{Error, Result, Violation};
pub use tributary_proto::json::{number_to_json, JsonObject, NonFiniteNumber};

/// Converts a `Struct` to a JSON object.
pub fn struct_to_json(s: Struct) -> Result<Value, NonFiniteNumber> {
    fields_to_json(s).map(Value::Object)
}

/// Converts a `Struct` given in request field `field` to a JSON object; a non-finite number is
/// a violation naming its full path (`records[3].entity.population`).
fn struct_field_to_json(field: impl std::fmt::Display, s: Struct) -> Result<Value, Violation> {
    struct_to_json(s).map_err(|e| non_finite_violation(field, e))
}

/// Converts a `Struct` the server decoded straight into JSON, given in request field `field`; a
/// non-finite number is a violation naming its full path (`records[3].entity.population`).
pub fn object_field_to_json(
    field: impl std::fmt::Display,
    object: JsonObject,
) -> Result<Value, Violation> {
    object
        .into_json()
        .map(Value::Object)
        .map_err(|e| non_finite_violation(field, e))
}

fn non_finite_violation(field: impl std::fmt::Display, e: NonFiniteNumber) -> Violation {
    Violation::new(
        format!("{field}{}", e.path),
        "NaN and infinity are not JSON numbers",
    )
}

/// Like [`struct_field_to_json`], as a domain `InvalidArgument` error.
pub fn struct_arg_to_json(field: &str, s: Struct) -> Result<Value> {
    struct_field_to_json(field, s).map_err(|v| Error::InvalidArgument(vec![v]))
}

fn fields_to_json(s: Struct) -> Result<Map<String, Value>, NonFiniteNumber> {
    let mut map = Map::new();
    for (key, value) in s.fields {
        let json = value_to_json(value).map_err(|e| e.under(format_args!(".{key}")))?;
        map.insert(key, json);
    }
    Ok(map)
}

fn value_to_json(value: ProtoValue) -> Result<Value, NonFiniteNumber> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n).ok_or_else(NonFiniteNumber::here)?,
        Some(Kind::StructValue(s)) => Value::Object(fields_to_json(s)?),
        Some(Kind::ListValue(list)) => {
            let mut items = Vec::with_capacity(list.values.len());
            for (i, item) in list.values.into_iter().enumerate() {
                items.push(value_to_json(item).map_err(|e| e.under(format_args!("[{i}]")))?);
            }
            Value::Array(items)
        }
    })
}

/// A JSON value as a protobuf `Value` (numbers become doubles).
pub fn json_to_value(value: Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}

/// A JSON object's fields as a `Struct`.
pub fn map_to_struct(map: Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

/// A JSON value as a `Struct`; `None` when it is not an object.
pub fn json_to_struct(value: Value) -> Option<Struct> {
    match value {
        Value::Object(map) => Some(map_to_struct(map)),
        _ => None,
    }
}

/// An entity type's stored schema as a `Struct`. A stored schema that is not a JSON object is a
/// broken invariant, hence `Internal`.
pub fn schema_to_struct(slug: &str, schema: Value) -> Result<Struct> {
    json_to_struct(schema).ok_or_else(|| {
        Error::Internal(format!("schema of entity type {slug} is not a JSON object"))
    })
}

/// Stored JSON object text (a record's `entity`/`instance`, a schema) as a `Struct`.
/// Stored text that is not a JSON object is a broken invariant, hence `Internal`.
pub fn json_text_to_struct(what: &str, text: &str) -> Result<Struct> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map_to_struct(map)),
        Ok(_) => Err(Error::Internal(format!(
            "stored {what} is not a JSON object"
        ))),
        Err(e) => Err(Error::Internal(format!("stored {what} is not JSON: {e}"))),
    }
}

/// Microseconds since the Unix epoch as a `Timestamp`.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A `Timestamp` as microseconds since the Unix epoch (sub-microsecond precision is dropped).
pub fn micros(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos.div_euclid(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;
    use serde_json::json;

    fn num(n: f64) -> ProtoValue {
        ProtoValue {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    #[test]
    fn integral_numbers_become_json_integers() {
        let s = Struct {
            fields: [
                ("population".to_owned(), num(83_000_000.0)),
                ("ratio".to_owned(), num(0.5)),
                ("neg".to_owned(), num(-3.0)),
            ]
            .into_iter()
            .collect(),
        };
        let json = struct_to_json(s).expect("finite");
        assert_eq!(
            json,
            json!({"population": 83_000_000, "ratio": 0.5, "neg": -3})
        );
        assert!(json["population"].is_i64());
        assert_eq!(json["population"].to_string(), "83000000");
    }

    #[test]
    fn integers_beyond_two_to_the_53_stay_floats() {
        assert!(number_to_json(2f64.powi(53)).expect("finite").is_i64());
        assert!(number_to_json(2f64.powi(60)).expect("finite").is_f64());
        assert_eq!(number_to_json(-0.0), Some(json!(0)));
    }

    #[test]
    fn nested_structs_and_lists_round_trip() {
        let original = json!({
            "name": "Germany",
            "population": 83_000_000,
            "area": 357_022.5,
            "member": true,
            "capital": null,
            "cities": [{"name": "Berlin", "rank": 1}, {"name": "Hamburg", "rank": 2}],
            "codes": {"iso": ["DE", "DEU"], "numeric": 276},
            "empty": {},
            "nothing": []
        });
        let s = json_to_struct(original.clone()).expect("object");
        let back = struct_to_json(s).expect("finite");
        assert_eq!(back, original);
        assert!(back["cities"][1]["rank"].is_i64());
    }

    #[test]
    fn non_finite_numbers_are_invalid_with_their_path() {
        let inner = Struct {
            fields: [(
                "sizes".to_owned(),
                ProtoValue {
                    kind: Some(Kind::ListValue(ListValue {
                        values: vec![num(1.0), num(f64::NAN)],
                    })),
                },
            )]
            .into_iter()
            .collect(),
        };
        let s = Struct {
            fields: [(
                "a".to_owned(),
                ProtoValue {
                    kind: Some(Kind::StructValue(inner)),
                },
            )]
            .into_iter()
            .collect(),
        };
        let violation = struct_field_to_json("records[3].entity", s).expect_err("NaN");
        assert_eq!(violation.field, "records[3].entity.a.sizes[1]");
        assert!(number_to_json(f64::INFINITY).is_none());
    }

    /// Any `google.protobuf.Value`, NaN, infinities and -0.0 included, nested a few levels.
    fn proto_values() -> impl Strategy<Value = ProtoValue> {
        let key = r#"[a-c"\\é😀]{0,3}"#;
        let number = prop_oneof![
            any::<f64>(),
            (-3i64..3).prop_map(|n| n as f64),
            Just(-0.0),
            Just(2f64.powi(53)),
            Just(f64::NAN),
            Just(f64::INFINITY),
        ];
        let leaf = prop_oneof![
            Just(Kind::NullValue(0)),
            any::<bool>().prop_map(Kind::BoolValue),
            number.prop_map(Kind::NumberValue),
            key.prop_map(Kind::StringValue),
        ]
        .prop_map(|kind| ProtoValue { kind: Some(kind) })
        .boxed();
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| Kind::ListValue(ListValue { values })),
                prop::collection::btree_map(key, inner, 0..4)
                    .prop_map(|fields| Kind::StructValue(Struct { fields })),
            ]
            .prop_map(|kind| ProtoValue { kind: Some(kind) })
        })
    }

    fn proto_structs() -> impl Strategy<Value = Struct> {
        prop::collection::btree_map("[a-d]{0,2}", proto_values(), 0..5)
            .prop_map(|fields| Struct { fields })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The server's straight decoding answers what decoding a `Struct` and converting it
        /// answers: the same JSON, or the same non-finite number's path.
        #[test]
        fn a_json_object_decodes_what_struct_to_json_converts(s in proto_structs()) {
            let wire = s.encode_to_vec();
            let direct = JsonObject::decode(wire.as_slice()).expect("a Struct decodes");
            let expected = struct_to_json(s);
            prop_assert_eq!(direct.into_json().map(Value::Object), expected);
        }

        /// A JSON object encodes as the `Struct` it converts to.
        #[test]
        fn a_json_object_encodes_as_its_struct(s in proto_structs()) {
            let Ok(Value::Object(fields)) = struct_to_json(s) else {
                return Ok(()); // non-finite: not a JSON object
            };
            let object = JsonObject::new(fields.clone());
            let wire = object.encode_to_vec();
            prop_assert_eq!(wire.len(), object.encoded_len());
            let decoded = Struct::decode(wire.as_slice()).expect("a JsonObject decodes as a Struct");
            prop_assert_eq!(decoded, map_to_struct(fields));
        }
    }

    #[test]
    fn stored_text_converts_and_rejects_non_objects() {
        let s = json_text_to_struct("entity", r#"{"n":1}"#).expect("object");
        assert_eq!(struct_to_json(s).expect("finite"), json!({"n": 1}));
        assert!(matches!(
            json_text_to_struct("entity", "[1]"),
            Err(Error::Internal(_))
        ));
    }

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for m in [0i64, 1, 1_700_000_000_123_456, -1, -1_500_000] {
            let ts = timestamp(m);
            assert!((0..1_000_000_000).contains(&ts.nanos));
            assert_eq!(micros(&ts), m);
        }
    }
}
