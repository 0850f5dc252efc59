//! `google.protobuf.Struct` decoded straight into `serde_json`, for the records the Contribution
//! server receives (ADR 0022): every record's entity was decoded into prost's `Struct` (a
//! `BTreeMap` of boxed `Value`s) and then rebuilt as JSON, two trees per record where one will do.
//!
//! Protobuf has only doubles; JSON has integers. An integral double within ±2^53 (where every
//! integer is exact) becomes a JSON integer, so integers are stored and returned as integers
//! (SPEC.md §11) and checksums do not depend on how a client spelled `1` vs `1.0`.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;
use serde_json::{Map, Number, Value};

/// Largest magnitude at which every integer is exactly representable as an f64.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53

/// An f64 as a JSON number: an integer when integral and exact, `None` for NaN and infinities.
pub fn number_to_json(n: f64) -> Option<Value> {
    if !n.is_finite() {
        return None;
    }
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        // Exact: |n| <= 2^53 fits i64 and the cast loses nothing (and turns -0.0 into 0).
        return Some(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Value::Number)
}

/// A number JSON cannot hold (NaN or ±infinity), at `path` inside the converted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteNumber {
    /// Path relative to the converted value, e.g. `.population` or `.sizes[2]`.
    pub path: String,
}

impl NonFiniteNumber {
    /// A non-finite number right here (the path is empty).
    pub fn here() -> Self {
        Self {
            path: String::new(),
        }
    }

    /// The same number seen from one level up: `segment` goes in front of the path. Paths are
    /// built only as an error travels out, so a valid value spends nothing on them.
    pub fn under(mut self, segment: std::fmt::Arguments<'_>) -> Self {
        self.path.insert_str(0, &segment.to_string());
        self
    }
}

/// A `google.protobuf.Struct` as a JSON object, on the wire exactly a `Struct`.
///
/// A number JSON cannot hold is decoded as `null` and remembered (the first one met), so that
/// [`JsonObject::into_json`] can refuse the object naming where it was: a decoder can only fail
/// with a bare `DecodeError`, and the client deserves the path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JsonObject {
    fields: Map<String, Value>,
    non_finite: Option<NonFiniteNumber>,
}

impl JsonObject {
    /// The object `fields` (which hold no number JSON cannot hold: a `Value` cannot).
    pub fn new(fields: Map<String, Value>) -> Self {
        Self {
            fields,
            non_finite: None,
        }
    }

    /// The object's fields, or where the first number JSON cannot hold was.
    pub fn into_json(self) -> Result<Map<String, Value>, NonFiniteNumber> {
        match self.non_finite {
            None => Ok(self.fields),
            Some(e) => Err(e),
        }
    }
}

/// A container keeps the first non-finite number met in it: `found`, inside its member at
/// `segment`, unless one was kept before (the path is formatted only then).
fn keep_first(
    kept: &mut Option<NonFiniteNumber>,
    found: Option<NonFiniteNumber>,
    segment: std::fmt::Arguments<'_>,
) {
    if kept.is_none() {
        *kept = found.map(|e| e.under(segment));
    }
}

// Wire tags of google/protobuf/struct.proto.
const STRUCT_FIELDS: u32 = 1;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
const VALUE_NULL: u32 = 1;
const VALUE_NUMBER: u32 = 2;
const VALUE_STRING: u32 = 3;
const VALUE_BOOL: u32 = 4;
const VALUE_STRUCT: u32 = 5;
const VALUE_LIST: u32 = 6;
const LIST_VALUES: u32 = 1;

impl prost::Message for JsonObject {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_object_body(&self.fields, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != STRUCT_FIELDS {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut entry = Entry::default();
        encoding::message::merge(wire_type, &mut entry, buf, ctx)?;
        let key = &entry.key;
        keep_first(
            &mut self.non_finite,
            entry.value.non_finite,
            format_args!(".{key}"),
        );
        // A key sent twice: the last value wins, as in protobuf's maps.
        self.fields.insert(entry.key, entry.value.value);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        object_len(&self.fields)
    }

    fn clear(&mut self) {
        self.fields.clear();
        self.non_finite = None;
    }
}

/// One `Struct.fields` map entry being decoded.
#[derive(Debug, Default)]
struct Entry {
    key: String,
    value: JsonValue,
}

impl prost::Message for Entry {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_entry(&self.key, &self.value.value, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            ENTRY_KEY => encoding::string::merge(wire_type, &mut self.key, buf, ctx),
            ENTRY_VALUE => encoding::message::merge(wire_type, &mut self.value, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        entry_len(&self.key, &self.value.value)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// One `google.protobuf.Value` being decoded (an unset `kind` is `null`).
#[derive(Debug, Default)]
struct JsonValue {
    value: Value,
    non_finite: Option<NonFiniteNumber>,
}

impl JsonValue {
    /// A scalar member of the `kind` oneof: it replaces whatever was decoded before.
    fn set(&mut self, value: Value) {
        self.value = value;
        self.non_finite = None;
    }

    /// `struct_value`: merges into an object decoded before, as protobuf merges messages.
    fn merge_object(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut object = match std::mem::take(&mut self.value) {
            Value::Object(fields) => JsonObject {
                fields,
                non_finite: self.non_finite.take(),
            },
            _ => JsonObject::default(),
        };
        encoding::message::merge(wire_type, &mut object, buf, ctx)?;
        self.value = Value::Object(object.fields);
        self.non_finite = object.non_finite;
        Ok(())
    }

    /// `list_value`: appends to a list decoded before, as protobuf merges messages.
    fn merge_list(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut list = match std::mem::take(&mut self.value) {
            Value::Array(items) => JsonList {
                items,
                non_finite: self.non_finite.take(),
            },
            _ => JsonList::default(),
        };
        encoding::message::merge(wire_type, &mut list, buf, ctx)?;
        self.value = Value::Array(list.items);
        self.non_finite = list.non_finite;
        Ok(())
    }
}

impl prost::Message for JsonValue {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_value_body(&self.value, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            VALUE_NULL => {
                let mut null = 0;
                encoding::int32::merge(wire_type, &mut null, buf, ctx)?;
                self.set(Value::Null);
            }
            VALUE_NUMBER => {
                let mut n = 0.0;
                encoding::double::merge(wire_type, &mut n, buf, ctx)?;
                match number_to_json(n) {
                    Some(number) => self.set(number),
                    None => {
                        self.set(Value::Null);
                        self.non_finite = Some(NonFiniteNumber::here());
                    }
                }
            }
            VALUE_STRING => {
                let mut s = String::new();
                encoding::string::merge(wire_type, &mut s, buf, ctx)?;
                self.set(Value::String(s));
            }
            VALUE_BOOL => {
                let mut b = false;
                encoding::bool::merge(wire_type, &mut b, buf, ctx)?;
                self.set(Value::Bool(b));
            }
            VALUE_STRUCT => self.merge_object(wire_type, buf, ctx)?,
            VALUE_LIST => self.merge_list(wire_type, buf, ctx)?,
            _ => encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        value_body_len(&self.value)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// One `google.protobuf.ListValue` being decoded.
#[derive(Debug, Default)]
struct JsonList {
    items: Vec<Value>,
    non_finite: Option<NonFiniteNumber>,
}

impl prost::Message for JsonList {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_list_body(&self.items, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != LIST_VALUES {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut item = JsonValue::default();
        encoding::message::merge(wire_type, &mut item, buf, ctx)?;
        let index = self.items.len();
        keep_first(
            &mut self.non_finite,
            item.non_finite,
            format_args!("[{index}]"),
        );
        self.items.push(item.value);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        list_body_len(&self.items)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

// Encoding: what prost's `Struct` writes, from JSON. Lengths are computed at every level, as
// prost's generated code does.

/// A length-delimited field's size: tag, length, body.
fn delimited_len(tag: u32, body: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(body as u64) + body
}

fn encode_delimited_header(tag: u32, body: usize, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(body as u64, buf);
}

fn object_len(fields: &Map<String, Value>) -> usize {
    fields
        .iter()
        .map(|(key, value)| delimited_len(STRUCT_FIELDS, entry_len(key, value)))
        .sum()
}

fn encode_object_body(fields: &Map<String, Value>, buf: &mut impl BufMut) {
    for (key, value) in fields {
        encode_delimited_header(STRUCT_FIELDS, entry_len(key, value), buf);
        encode_entry(key, value, buf);
    }
}

fn entry_len(key: &str, value: &Value) -> usize {
    delimited_len(ENTRY_KEY, key.len()) + delimited_len(ENTRY_VALUE, value_body_len(value))
}

fn encode_entry(key: &str, value: &Value, buf: &mut impl BufMut) {
    encode_delimited_header(ENTRY_KEY, key.len(), buf);
    buf.put_slice(key.as_bytes());
    encode_delimited_header(ENTRY_VALUE, value_body_len(value), buf);
    encode_value_body(value, buf);
}

fn list_body_len(items: &[Value]) -> usize {
    items
        .iter()
        .map(|item| delimited_len(LIST_VALUES, value_body_len(item)))
        .sum()
}

fn encode_list_body(items: &[Value], buf: &mut impl BufMut) {
    for item in items {
        encode_delimited_header(LIST_VALUES, value_body_len(item), buf);
        encode_value_body(item, buf);
    }
}

/// The size of a `Value` message's body: the one `kind` field `value` sets.
fn value_body_len(value: &Value) -> usize {
    match value {
        Value::Null => encoding::key_len(VALUE_NULL) + 1,
        Value::Bool(_) => encoding::key_len(VALUE_BOOL) + 1,
        Value::Number(_) => encoding::key_len(VALUE_NUMBER) + 8,
        Value::String(s) => delimited_len(VALUE_STRING, s.len()),
        Value::Array(items) => delimited_len(VALUE_LIST, list_body_len(items)),
        Value::Object(fields) => delimited_len(VALUE_STRUCT, object_len(fields)),
    }
}

fn encode_value_body(value: &Value, buf: &mut impl BufMut) {
    match value {
        Value::Null => encoding::int32::encode(VALUE_NULL, &0, buf),
        Value::Bool(b) => encoding::bool::encode(VALUE_BOOL, b, buf),
        Value::Number(n) => {
            encoding::double::encode(VALUE_NUMBER, &n.as_f64().unwrap_or_default(), buf)
        }
        Value::String(s) => {
            encode_delimited_header(VALUE_STRING, s.len(), buf);
            buf.put_slice(s.as_bytes());
        }
        Value::Array(items) => {
            encode_delimited_header(VALUE_LIST, list_body_len(items), buf);
            encode_list_body(items, buf);
        }
        Value::Object(fields) => {
            encode_delimited_header(VALUE_STRUCT, object_len(fields), buf);
            encode_object_body(fields, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_types::value::Kind;
    use serde_json::json;

    fn value(kind: Kind) -> prost_types::Value {
        prost_types::Value { kind: Some(kind) }
    }

    fn decode(wire: &[u8]) -> Result<Result<Value, NonFiniteNumber>, DecodeError> {
        JsonObject::decode(wire).map(|o| o.into_json().map(Value::Object))
    }

    /// `{"a": {"a": … {"a": 1} … }}`, `depth` objects deep, as a `Struct` would encode it.
    fn nested(depth: usize) -> Vec<u8> {
        let mut wire =
            JsonObject::new(Map::from_iter([("a".to_owned(), json!(1))])).encode_to_vec();
        for _ in 1..depth {
            // An entry {key "a", value {struct_value <wire>}} around the object so far.
            let mut value = Vec::new();
            encode_delimited_header(VALUE_STRUCT, wire.len(), &mut value);
            value.extend_from_slice(&wire);
            let mut entry = Vec::new();
            encode_delimited_header(ENTRY_KEY, 1, &mut entry);
            entry.push(b'a');
            encode_delimited_header(ENTRY_VALUE, value.len(), &mut entry);
            entry.extend_from_slice(&value);
            wire.clear();
            encode_delimited_header(STRUCT_FIELDS, entry.len(), &mut wire);
            wire.extend_from_slice(&entry);
        }
        wire
    }

    #[test]
    fn nesting_beyond_protobufs_recursion_limit_is_a_decode_error() {
        // Each object level is two messages (entry, value) plus the object itself.
        assert!(decode(&nested(30)).expect("30 levels decode").is_ok());
        let error = decode(&nested(200)).expect_err("200 levels are refused");
        assert!(error.to_string().contains("recursion limit"), "{error}");
    }

    #[test]
    fn a_key_sent_twice_keeps_its_last_value() {
        let mut wire =
            JsonObject::new(Map::from_iter([("k".to_owned(), json!(1))])).encode_to_vec();
        wire.extend(
            JsonObject::new(Map::from_iter([("k".to_owned(), json!("two"))])).encode_to_vec(),
        );
        assert_eq!(decode(&wire).expect("decodes"), Ok(json!({"k": "two"})));
    }

    /// A `Struct` of one entry `key` whose value message is the concatenation of `values`
    /// (protobuf merges a message sent in parts).
    fn one_entry(key: &str, values: &[prost_types::Value]) -> Vec<u8> {
        let value_body: Vec<u8> = values.iter().flat_map(|v| v.encode_to_vec()).collect();
        let mut entry = Vec::new();
        encode_delimited_header(ENTRY_KEY, key.len(), &mut entry);
        entry.extend_from_slice(key.as_bytes());
        encode_delimited_header(ENTRY_VALUE, value_body.len(), &mut entry);
        entry.extend_from_slice(&value_body);
        let mut wire = Vec::new();
        encode_delimited_header(STRUCT_FIELDS, entry.len(), &mut wire);
        wire.extend_from_slice(&entry);
        wire
    }

    #[test]
    fn a_value_sent_in_parts_merges_as_protobuf_merges() {
        let object = |k: &str| {
            value(Kind::StructValue(prost_types::Struct {
                fields: [(k.to_owned(), value(Kind::BoolValue(true)))]
                    .into_iter()
                    .collect(),
            }))
        };
        let list = |n: f64| {
            value(Kind::ListValue(prost_types::ListValue {
                values: vec![value(Kind::NumberValue(n))],
            }))
        };
        let cases = [
            (
                vec![object("x"), object("y")],
                json!({"o": {"x": true, "y": true}}),
            ),
            (vec![list(1.0), list(2.5)], json!({"o": [1, 2.5]})),
            (vec![list(1.0), object("x")], json!({"o": {"x": true}})),
            (
                vec![
                    value(Kind::NumberValue(f64::NAN)),
                    value(Kind::StringValue("s".into())),
                ],
                json!({"o": "s"}),
            ),
        ];
        for (parts, expected) in cases {
            let wire = one_entry("o", &parts);
            let reference = prost_types::Struct::decode(wire.as_slice()).expect("prost decodes");
            assert_eq!(reference.fields.len(), 1);
            assert_eq!(decode(&wire).expect("decodes"), Ok(expected));
        }
        // A non-finite number that a later part does not replace is still reported.
        let wire = one_entry("o", &[list(f64::NAN), list(1.0)]);
        assert_eq!(
            decode(&wire).expect("decodes"),
            Err(NonFiniteNumber {
                path: ".o[0]".into()
            })
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_malformed_bytes_refused() {
        let mut wire =
            JsonObject::new(Map::from_iter([("k".to_owned(), json!(null))])).encode_to_vec();
        // Field 9, varint 7, at the object's level.
        wire.extend([9 << 3, 7]);
        assert_eq!(decode(&wire).expect("decodes"), Ok(json!({"k": null})));

        // A length running past the end, and a string that is not UTF-8.
        assert!(decode(&[(STRUCT_FIELDS << 3 | 2) as u8, 50, 1]).is_err());
        let mut entry = Vec::new();
        encode_delimited_header(ENTRY_KEY, 2, &mut entry);
        entry.extend([0xff, 0xfe]);
        let mut wire = Vec::new();
        encode_delimited_header(STRUCT_FIELDS, entry.len(), &mut wire);
        wire.extend_from_slice(&entry);
        assert!(decode(&wire).is_err());
        // A number sent with the wrong wire type.
        assert!(decode(&[
            (STRUCT_FIELDS << 3 | 2) as u8,
            4,
            (ENTRY_VALUE << 3 | 2) as u8,
            2,
            (VALUE_NUMBER << 3) as u8,
            1
        ])
        .is_err());
    }
}
