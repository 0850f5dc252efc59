//! How a source's item (any JSON value) becomes a record (§5 `mapping`).
//!
//! A mapping is a JSON object with an expression per record attribute:
//! `{"id": "/code", "name": "{/name} ({/code})", "entity": {"code": "/code", "population": "/pop"},
//!   "instance": "/meta", "checksum": "/etag"}`.
//! An expression is a JSON pointer into the item (`"/a/b"`; `""` is the whole item), a template
//! (a string with `{/pointer}` placeholders, always giving a string), or an object whose values
//! are expressions (building an object). Defaults, for an attribute the mapping leaves out, depend
//! on the source's kind ([`Mapping::compile_for`]): `id` `/id`, `name` `/name` (`/title` for a
//! `feed`, whose entries have titles, not names), `entity` the whole item; no instance; the
//! checksum computed by Tributary.

use super::SourceKind;
use crate::record::RecordInput;
use crate::{Error, Result};
use serde_json::{Map, Value};

/// One expression of a mapping.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Pointer(String),
    Template(Vec<Part>),
    Object(Vec<(String, Expr)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Pointer(String),
}

/// A checked mapping, ready to apply to items.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    id: Expr,
    name: Expr,
    entity: Expr,
    instance: Option<Expr>,
    checksum: Option<Expr>,
}

const FIELDS: [&str; 5] = ["id", "name", "entity", "instance", "checksum"];

/// Where an attribute the mapping leaves out is read from, for items of `kind`.
fn default_pointer(kind: SourceKind, attribute: &str) -> Option<&'static str> {
    match (attribute, kind) {
        ("id", _) => Some("/id"),
        ("name", SourceKind::Feed) => Some("/title"),
        ("name", _) => Some("/name"),
        ("entity", _) => Some(""),
        _ => None,
    }
}

impl Mapping {
    /// Checks and compiles the mapping of a source of `kind`; attributes it leaves out take
    /// that kind's defaults (a feed entry's `title` is the record's name). Violations name
    /// `field.<attribute>`.
    pub fn compile_for(kind: SourceKind, field: &str, mapping: &Value) -> Result<Self> {
        let empty = Map::new();
        let object = match mapping {
            Value::Null => &empty,
            Value::Object(o) => o,
            _ => return Err(Error::invalid(field, "must be a JSON object")),
        };
        let mut violations = Vec::new();
        for key in object.keys() {
            if !FIELDS.contains(&key.as_str()) {
                violations.push(crate::Violation::new(
                    format!("{field}.{key}"),
                    format!("unknown attribute; expected one of {}", FIELDS.join(", ")),
                ));
            }
        }
        let mut expr = |name: &str| -> Option<Expr> {
            let at = format!("{field}.{name}");
            match object.get(name) {
                None | Some(Value::Null) => {
                    default_pointer(kind, name).map(|d| Expr::Pointer(d.to_owned()))
                }
                Some(v) => match parse(&at, v) {
                    Ok(e) => Some(e),
                    Err(v) => {
                        violations.push(v);
                        None
                    }
                },
            }
        };
        let id = expr("id");
        let name = expr("name");
        let entity = expr("entity");
        let instance = expr("instance");
        let checksum = expr("checksum");
        match (id, name, entity) {
            (Some(id), Some(name), Some(entity)) if violations.is_empty() => Ok(Self {
                id,
                name,
                entity,
                instance,
                checksum,
            }),
            _ => Err(Error::InvalidArgument(violations)),
        }
    }

    /// The record `item` maps to, or why it cannot be one (a missing attribute or an id that is
    /// not text). Record rules (lengths, schema) are checked afterwards like any contribution.
    pub fn apply(&self, item: &Value) -> std::result::Result<RecordInput, String> {
        let text = |what: &str, e: &Expr| -> std::result::Result<String, String> {
            match eval(e, item)? {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("{what} must be text, found {}", kind(&other))),
            }
        };
        Ok(RecordInput {
            id: text("id", &self.id)?,
            name: text("name", &self.name)?,
            entity: Some(eval(&self.entity, item)?),
            instance: self.instance.as_ref().map(|e| eval(e, item)).transpose()?,
            checksum: self
                .checksum
                .as_ref()
                .map(|e| text("checksum", e))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// The id `item` maps to, if any: names a failed item in reports.
    pub fn id_of(&self, item: &Value) -> String {
        match eval(&self.id, item) {
            Ok(Value::String(s)) => s,
            Ok(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse(at: &str, v: &Value) -> std::result::Result<Expr, crate::Violation> {
    match v {
        Value::String(s) if s.is_empty() || s.starts_with('/') => Ok(Expr::Pointer(s.clone())),
        Value::String(s) if s.contains('{') => parse_template(at, s).map(Expr::Template),
        Value::String(_) => Err(crate::Violation::new(
            at,
            "must be a JSON pointer (\"/a/b\", \"\" for the whole item), a template (\"{/a} {/b}\") or an object",
        )),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| parse(&format!("{at}.{k}"), v).map(|e| (k.clone(), e)))
            .collect::<std::result::Result<_, _>>()
            .map(Expr::Object),
        _ => Err(crate::Violation::new(
            at,
            "must be a string (pointer or template) or an object",
        )),
    }
}

fn parse_template(at: &str, s: &str) -> std::result::Result<Vec<Part>, crate::Violation> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| crate::Violation::new(at, "a template's '{' is never closed"))?;
        let pointer = &after[..close];
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(crate::Violation::new(
                at,
                format!("{{{pointer}}} is not a JSON pointer placeholder"),
            ));
        }
        parts.push(Part::Pointer(pointer.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn lookup<'a>(item: &'a Value, pointer: &str) -> std::result::Result<&'a Value, String> {
    item.pointer(pointer)
        .filter(|v| !v.is_null())
        .ok_or_else(|| format!("item has nothing at {pointer:?}"))
}

fn eval(e: &Expr, item: &Value) -> std::result::Result<Value, String> {
    match e {
        Expr::Pointer(p) => lookup(item, p).cloned(),
        Expr::Template(parts) => {
            let mut out = String::new();
            for part in parts {
                match part {
                    Part::Text(t) => out.push_str(t),
                    Part::Pointer(p) => match lookup(item, p)? {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Ok(Value::String(out))
        }
        Expr::Object(fields) => {
            let mut map = Map::new();
            for (k, e) in fields {
                // An absent optional field is left out rather than failing the item: the
                // schema decides what is required.
                match eval(e, item) {
                    Ok(v) => {
                        map.insert(k.clone(), v);
                    }
                    Err(_) if !matches!(e, Expr::Template(_)) => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(Value::Object(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_take_id_name_and_the_whole_item() {
        let m = Mapping::compile_for(SourceKind::HttpJson, "source.mapping", &Value::Null).unwrap();
        let r = m.apply(&json!({"id": 7, "name": "Seven", "x": 1})).unwrap();
        assert_eq!(r.id, "7");
        assert_eq!(r.name, "Seven");
        assert_eq!(r.entity, Some(json!({"id": 7, "name": "Seven", "x": 1})));
        assert_eq!(r.instance, None);
        assert_eq!(r.checksum, "");
    }

    #[test]
    fn a_feed_without_mapping_names_records_by_title_and_keeps_the_rest() {
        let m = Mapping::compile_for(SourceKind::Feed, "source.mapping", &Value::Null).unwrap();
        let entry = json!({"id": "urn:1", "title": "Hello", "link": "https://x/1"});
        let r = m.apply(&entry).unwrap();
        assert_eq!(r.id, "urn:1");
        assert_eq!(r.name, "Hello");
        assert_eq!(r.entity, Some(entry));
        // A mapping that sets only the entity keeps the feed's name default.
        let m = Mapping::compile_for(SourceKind::Feed, "m", &json!({"entity": {"url": "/link"}}))
            .unwrap();
        let r = m
            .apply(&json!({"id": "a", "title": "T", "link": "L"}))
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.entity),
            ("T", Some(json!({"url": "L"})))
        );
        // Other kinds keep `/name`.
        let m = Mapping::compile_for(SourceKind::Ndjson, "m", &Value::Null).unwrap();
        assert!(m.apply(&json!({"id": "a", "title": "T"})).is_err());
    }

    #[test]
    fn pointers_templates_and_objects() {
        let m = Mapping::compile_for(
            SourceKind::HttpJson,
            "m",
            &json!({"id": "/c/code", "name": "{/n} ({/c/code})",
                    "entity": {"code": "/c/code", "population": "/pop", "missing": "/nope"},
                    "instance": "/meta", "checksum": "/etag"}),
        )
        .unwrap();
        let r = m
            .apply(
                &json!({"c": {"code": "GB"}, "n": "UK", "pop": 5, "meta": {"a": 1}, "etag": "e1"}),
            )
            .unwrap();
        assert_eq!(r.id, "GB");
        assert_eq!(r.name, "UK (GB)");
        assert_eq!(r.entity, Some(json!({"code": "GB", "population": 5})));
        assert_eq!(r.instance, Some(json!({"a": 1})));
        assert_eq!(r.checksum, "e1");
        assert!(m.apply(&json!({"n": "x"})).is_err());
    }

    #[test]
    fn bad_mappings_name_the_attribute() {
        let Err(Error::InvalidArgument(v)) = Mapping::compile_for(
            SourceKind::HttpJson,
            "source.mapping",
            &json!({"id": "code", "nme": "/n", "name": "{/a"}),
        ) else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"source.mapping.id"), "{fields:?}");
        assert!(fields.contains(&"source.mapping.nme"), "{fields:?}");
        assert!(fields.contains(&"source.mapping.name"), "{fields:?}");
    }
}
