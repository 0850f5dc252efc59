//! Text every backend can store. PostgreSQL refuses NUL (U+0000) in `text` and in `jsonb`
//! strings and keys, where SQLite would keep it; the domain refuses it up front, on both
//! backends alike, naming the field, rather than let one database fail deep inside a write.

use crate::{Error, Result, Violation};
use serde_json::Value;

/// What a violation says about NUL.
pub const NUL_PROBLEM: &str = "contains NUL (U+0000), which text here cannot hold";

/// Whether `value` holds NUL in any string or object key.
pub fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// Adds a violation of `field` when `value` holds NUL.
pub fn check_no_nul(field: impl Into<String>, value: &str, out: &mut Vec<Violation>) {
    if value.contains('\0') {
        out.push(Violation::new(field, NUL_PROBLEM));
    }
}

/// Adds a violation of `field` when the JSON `value` holds NUL in a string or key.
pub fn check_json_no_nul(field: impl Into<String>, value: &Value, out: &mut Vec<Violation>) {
    if json_has_nul(value) {
        out.push(Violation::new(field, NUL_PROBLEM));
    }
}

/// `InvalidArgument` naming the first of `fields` (name, value) that holds NUL.
pub fn refuse_nul<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    let mut violations = Vec::new();
    for (field, value) in fields {
        check_no_nul(field, value, &mut violations);
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_nul_in_strings_keys_and_nesting() {
        assert!(!json_has_nul(&json!({"a": ["b", {"c": 1}]})));
        assert!(json_has_nul(&json!({"a": ["b\u{0}"]})));
        assert!(json_has_nul(&json!({"a\u{0}": 1})));
        assert!(refuse_nul([("id", "ok"), ("name", "x\0y")]).is_err());
        assert!(refuse_nul([("id", "ok")]).is_ok());
    }
}
