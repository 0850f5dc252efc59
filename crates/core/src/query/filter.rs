//! The filter language of SPEC.md §3: a JSON object over record fields with `$eq $ne $gt $gte
//! $lt $lte $in $nin $exists $contains $regex $and $or $not`.
//!
//! Semantics every backend implements (docs/adr/0003-catalog-queries-and-change-log.md):
//! - A bare value means `$eq`; several keys in one object mean `$and`.
//! - Comparisons are typed: a number matches only numbers (compared numerically), a string only
//!   strings (compared by bytes), a boolean only booleans. `{"f": null}` matches JSON null and an
//!   absent field. Ranges (`$gt` …) take a number or a string.
//! - `$ne` and `$nin` are the negations of `$eq` and `$in`: they match absent fields too.
//! - `$contains`: a string field containing the value as a substring, or an array field with an
//!   element equal to the value.
//! - `$regex`: the pattern must compile as a Rust `regex`; matching is done by the database
//!   (PostgreSQL `~`, SQLite the same Rust engine), so keep to the common subset.
//! - `updated_at` takes RFC 3339 text or integer microseconds since the epoch.

use super::field::{Field, FieldKind};
use super::limits::QueryLimits;
use super::rfc3339::parse_rfc3339_micros;
use crate::{Error, Result, Violation};
use serde_json::{Map, Value};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A JSON scalar a filter compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    /// An integral number that fits an `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    Text(String),
}

impl Scalar {
    /// The scalar as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Scalar::Text(s) => Value::String(s.clone()),
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Scalar::Int(_) | Scalar::Float(_))
    }
}

/// A parsed filter. Negations (`$ne`, `$nin`, `$not`, `$exists: false`) are [`Filter::Not`].
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every condition holds (empty: always true).
    All(Vec<Filter>),
    /// At least one holds (empty: never true).
    Any(Vec<Filter>),
    Not(Box<Filter>),
    /// `field op value`, typed as described in the module docs. For `updated_at` the value is
    /// always [`Scalar::Int`] microseconds.
    Compare {
        field: Field,
        op: CompareOp,
        value: Scalar,
    },
    /// The field is present (JSON null counts as present). Always true for columns.
    Exists {
        field: Field,
    },
    /// Substring of a string, or element of an array.
    Contains {
        field: Field,
        value: Scalar,
    },
    /// The (string) field matches a regular expression.
    Regex {
        field: Field,
        pattern: String,
    },
}

/// Parses filter text; answers the filter (`None` for empty text or `{}`) and its canonical
/// JSON (for the listing fingerprint).
pub(super) fn parse(text: &str, limits: &QueryLimits) -> Result<(Option<Filter>, String)> {
    if text.len() > limits.max_filter_bytes {
        return Err(Error::invalid(
            "filter",
            format!(
                "is {} bytes; at most {} (catalog.max_filter_bytes)",
                text.len(),
                limits.max_filter_bytes
            ),
        ));
    }
    if text.trim().is_empty() {
        return Ok((None, String::new()));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid("filter", format!("is not valid JSON: {e}")))?;
    let Value::Object(object) = &value else {
        return Err(Error::invalid("filter", "must be a JSON object"));
    };
    let mut parser = Parser {
        violations: Vec::new(),
        nodes: 0,
        limits,
    };
    let filter = parser.object(object, "filter", 0);
    if !parser.violations.is_empty() {
        return Err(Error::InvalidArgument(parser.violations));
    }
    let canonical = crate::checksum::canonical_json(&value)?;
    let filter = match filter {
        Filter::All(items) if items.is_empty() => None,
        other => Some(other),
    };
    Ok((filter, canonical))
}

struct Parser<'l> {
    violations: Vec<Violation>,
    nodes: usize,
    limits: &'l QueryLimits,
}

impl Parser<'_> {
    fn fail(&mut self, at: &str, problem: impl Into<String>) -> Filter {
        self.violations.push(Violation::new(at, problem));
        Filter::All(Vec::new())
    }

    /// Counts a node; false (with a violation) once the filter is too large.
    fn count(&mut self, at: &str) -> bool {
        let max = self.limits.max_filter_conditions;
        self.nodes += 1;
        if self.nodes == max + 1 {
            self.violations.push(Violation::new(
                at,
                format!(
                    "the filter has more than {max} conditions (catalog.max_filter_conditions)"
                ),
            ));
        }
        self.nodes <= max
    }

    fn too_deep(&mut self, at: &str) -> Filter {
        let max = self.limits.max_filter_depth;
        self.fail(
            at,
            format!("nests deeper than {max} levels (catalog.max_filter_depth)"),
        )
    }

    /// A filter object: fields and top-level `$and` / `$or` / `$not`; several keys mean AND.
    fn object(&mut self, object: &Map<String, Value>, at: &str, depth: usize) -> Filter {
        if depth > self.limits.max_filter_depth {
            return self.too_deep(at);
        }
        let mut all = Vec::with_capacity(object.len());
        for (key, value) in object {
            let here = format!("{at}.{key}");
            if !self.count(&here) {
                break;
            }
            let item = match key.as_str() {
                "$and" | "$or" => {
                    let items = self.list(value, &here, depth);
                    if key == "$and" {
                        Filter::All(items)
                    } else {
                        Filter::Any(items)
                    }
                }
                "$not" => match value {
                    Value::Object(inner) if !inner.is_empty() => {
                        Filter::Not(Box::new(self.object(inner, &here, depth + 1)))
                    }
                    _ => self.fail(&here, "$not takes a non-empty filter object"),
                },
                op if op.starts_with('$') => self.fail(
                    &here,
                    format!(
                        "unknown operator {op:?} here; a filter object holds fields, $and, $or and $not"
                    ),
                ),
                name => match Field::parse(name) {
                    Ok(field) => self.condition(&field, value, &here, depth),
                    Err(problem) => self.fail(&here, problem),
                },
            };
            all.push(item);
        }
        match all.len() {
            1 => all.pop().unwrap_or(Filter::All(Vec::new())),
            _ => Filter::All(all),
        }
    }

    /// The array of `$and` / `$or`: non-empty filter objects.
    fn list(&mut self, value: &Value, at: &str, depth: usize) -> Vec<Filter> {
        let Value::Array(items) = value else {
            self.fail(at, "takes an array of filter objects");
            return Vec::new();
        };
        if items.is_empty() {
            self.fail(at, "takes at least one filter object");
            return Vec::new();
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let here = format!("{at}[{i}]");
                match item {
                    Value::Object(inner) if !inner.is_empty() => {
                        self.object(inner, &here, depth + 1)
                    }
                    _ => self.fail(&here, "must be a non-empty filter object"),
                }
            })
            .collect()
    }

    /// What follows a field name: a bare value (`$eq`) or an object of operators.
    fn condition(&mut self, field: &Field, value: &Value, at: &str, depth: usize) -> Filter {
        match value {
            Value::Object(ops) if ops.keys().all(|k| k.starts_with('$')) && !ops.is_empty() => {
                self.operators(field, ops, at, depth)
            }
            Value::Object(_) => self.fail(
                at,
                "expected a scalar or an object of operators ($eq, $gt, …); objects cannot be \
                 compared",
            ),
            Value::Array(_) => self.fail(
                at,
                "arrays cannot be compared; use $in for one of several values or $contains for \
                 an array element",
            ),
            scalar => self.compare(field, CompareOp::Eq, scalar, at),
        }
    }

    fn operators(
        &mut self,
        field: &Field,
        ops: &Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Filter {
        if depth > self.limits.max_filter_depth {
            return self.too_deep(at);
        }
        let mut all = Vec::with_capacity(ops.len());
        for (op, value) in ops {
            let here = format!("{at}.{op}");
            if !self.count(&here) {
                break;
            }
            let item = match op.as_str() {
                "$eq" => self.compare(field, CompareOp::Eq, value, &here),
                "$ne" => Filter::Not(Box::new(self.compare(field, CompareOp::Eq, value, &here))),
                "$gt" => self.compare(field, CompareOp::Gt, value, &here),
                "$gte" => self.compare(field, CompareOp::Gte, value, &here),
                "$lt" => self.compare(field, CompareOp::Lt, value, &here),
                "$lte" => self.compare(field, CompareOp::Lte, value, &here),
                "$in" => self.one_of(field, value, &here),
                "$nin" => Filter::Not(Box::new(self.one_of(field, value, &here))),
                "$exists" => match value {
                    Value::Bool(true) => Filter::Exists {
                        field: field.clone(),
                    },
                    Value::Bool(false) => Filter::Not(Box::new(Filter::Exists {
                        field: field.clone(),
                    })),
                    _ => self.fail(&here, "$exists takes true or false"),
                },
                "$contains" => self.contains(field, value, &here),
                "$regex" => self.regex(field, value, &here),
                "$not" => match value {
                    Value::Object(inner)
                        if !inner.is_empty() && inner.keys().all(|k| k.starts_with('$')) =>
                    {
                        Filter::Not(Box::new(self.operators(field, inner, &here, depth + 1)))
                    }
                    _ => self.fail(&here, "$not on a field takes an object of operators"),
                },
                other => self.fail(
                    &here,
                    format!(
                        "unknown operator {other:?}; expected one of $eq $ne $gt $gte $lt $lte $in \
                         $nin $exists $contains $regex $not"
                    ),
                ),
            };
            all.push(item);
        }
        match all.len() {
            1 => all.pop().unwrap_or(Filter::All(Vec::new())),
            _ => Filter::All(all),
        }
    }

    fn compare(&mut self, field: &Field, op: CompareOp, value: &Value, at: &str) -> Filter {
        let Some(scalar) = self.scalar(field, value, at) else {
            return Filter::All(Vec::new());
        };
        if op != CompareOp::Eq && !(scalar.is_number() || matches!(scalar, Scalar::Text(_))) {
            return self.fail(at, "range comparisons take a number or a string");
        }
        Filter::Compare {
            field: field.clone(),
            op,
            value: scalar,
        }
    }

    fn one_of(&mut self, field: &Field, value: &Value, at: &str) -> Filter {
        let Value::Array(values) = value else {
            return self.fail(at, "takes an array of values");
        };
        let max = self.limits.max_in_values;
        if values.len() > max {
            return self.fail(
                at,
                format!(
                    "has {} values; at most {max} (catalog.max_in_values)",
                    values.len()
                ),
            );
        }
        let mut any = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let here = format!("{at}[{i}]");
            any.push(self.compare(field, CompareOp::Eq, v, &here));
        }
        Filter::Any(any)
    }

    fn contains(&mut self, field: &Field, value: &Value, at: &str) -> Filter {
        if field.kind() == FieldKind::Micros {
            return self.fail(
                at,
                "$contains applies to strings and arrays, not updated_at",
            );
        }
        match self.scalar(field, value, at) {
            Some(Scalar::Null) => self.fail(at, "$contains takes a string, number or boolean"),
            Some(scalar) => Filter::Contains {
                field: field.clone(),
                value: scalar,
            },
            None => Filter::All(Vec::new()),
        }
    }

    fn regex(&mut self, field: &Field, value: &Value, at: &str) -> Filter {
        if field.kind() == FieldKind::Micros {
            return self.fail(at, "$regex applies to strings, not updated_at");
        }
        let Value::String(pattern) = value else {
            return self.fail(at, "$regex takes a pattern string");
        };
        let max = self.limits.max_regex_bytes;
        if pattern.len() > max {
            return self.fail(
                at,
                format!(
                    "the pattern is {} bytes; at most {max} (catalog.max_regex_bytes)",
                    pattern.len()
                ),
            );
        }
        if pattern.contains('\0') {
            return self.fail(at, crate::text::NUL_PROBLEM);
        }
        // Compiled programs are capped too: a short pattern can expand (`a{1000}{1000}`).
        match regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
        {
            Ok(_) => Filter::Regex {
                field: field.clone(),
                pattern: pattern.clone(),
            },
            Err(e) => self.fail(at, format!("invalid regular expression: {e}")),
        }
    }

    /// A JSON scalar as this field takes it: text columns take strings; `updated_at` takes
    /// RFC 3339 text or integer microseconds; JSON paths take any scalar.
    fn scalar(&mut self, field: &Field, value: &Value, at: &str) -> Option<Scalar> {
        let scalar = match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) if s.contains('\0') => {
                self.fail(at, crate::text::NUL_PROBLEM);
                return None;
            }
            Value::String(s) => Scalar::Text(s.clone()),
            Value::Array(_) | Value::Object(_) => {
                self.fail(at, "takes a scalar (string, number, boolean or null)");
                return None;
            }
        };
        match (field.kind(), scalar) {
            (FieldKind::Json, Scalar::Float(f)) if !f.is_finite() => {
                self.fail(at, "the number is out of range");
                None
            }
            (FieldKind::Json, scalar) => Some(scalar),
            (FieldKind::Text, scalar @ Scalar::Text(_)) => Some(scalar),
            (FieldKind::Text, _) => {
                self.fail(
                    at,
                    format!("{} is a string; compare it with a string", field.name()),
                );
                None
            }
            (FieldKind::Micros, scalar @ Scalar::Int(_)) => Some(scalar),
            (FieldKind::Micros, Scalar::Text(text)) => match parse_rfc3339_micros(&text) {
                Some(micros) => Some(Scalar::Int(micros)),
                None => {
                    self.fail(
                        at,
                        format!("{text:?} is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)"),
                    );
                    None
                }
            },
            (FieldKind::Micros, _) => {
                self.fail(
                    at,
                    "updated_at takes an RFC 3339 time or integer microseconds since the epoch",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Option<Filter>, String)> {
        super::parse(text, &QueryLimits::default())
    }

    fn ok(text: &str) -> Filter {
        match parse(text) {
            Ok((Some(f), _)) => f,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn fields(text: &str) -> Vec<String> {
        match parse(text) {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("{text}: expected invalid, got {other:?}"),
        }
    }

    fn pop() -> Field {
        Field::Entity(vec!["population".into()])
    }

    #[test]
    fn bare_value_is_eq_and_several_keys_are_and() {
        assert_eq!(
            ok(r#"{"id": "GB"}"#),
            Filter::Compare {
                field: Field::Id,
                op: CompareOp::Eq,
                value: Scalar::Text("GB".into())
            }
        );
        assert!(matches!(ok(r#"{"id": "GB", "name": "x"}"#), Filter::All(v) if v.len() == 2));
        assert!(matches!(
            ok(r#"{"entity.population": {"$gt": 1, "$lt": 5}}"#),
            Filter::All(v) if v.len() == 2
        ));
    }

    #[test]
    fn negations() {
        assert_eq!(
            ok(r#"{"entity.population": {"$ne": 3}}"#),
            Filter::Not(Box::new(Filter::Compare {
                field: pop(),
                op: CompareOp::Eq,
                value: Scalar::Int(3)
            }))
        );
        assert!(matches!(
            ok(r#"{"entity.population": {"$nin": [1, 2.5]}}"#),
            Filter::Not(_)
        ));
        assert!(matches!(ok(r#"{"$not": {"id": "x"}}"#), Filter::Not(_)));
        assert!(matches!(
            ok(r#"{"id": {"$not": {"$regex": "^G"}}}"#),
            Filter::Not(_)
        ));
    }

    #[test]
    fn empty_filters_match_everything() {
        assert_eq!(parse("").ok().map(|p| p.0), Some(None));
        assert_eq!(parse(" {} ").ok().map(|p| p.0), Some(None));
    }

    #[test]
    fn updated_at_takes_rfc3339_or_micros() {
        assert_eq!(
            ok(r#"{"updated_at": {"$gte": "1970-01-01T00:00:01Z"}}"#),
            Filter::Compare {
                field: Field::UpdatedAt,
                op: CompareOp::Gte,
                value: Scalar::Int(1_000_000)
            }
        );
        assert!(matches!(
            ok(r#"{"updated_at": {"$lt": 5}}"#),
            Filter::Compare { .. }
        ));
        assert_eq!(
            fields(r#"{"updated_at": "yesterday"}"#),
            vec!["filter.updated_at"]
        );
    }

    #[test]
    fn violations_name_where_and_what() {
        assert_eq!(
            fields(r#"{"entity.population": {"$gtt": 1}}"#),
            vec!["filter.entity.population.$gtt"]
        );
        assert_eq!(
            fields(r#"{"$or": [{"bogus": 1}]}"#),
            vec!["filter.$or[0].bogus"]
        );
        assert_eq!(fields(r#"{"$nor": []}"#), vec!["filter.$nor"]);
        assert_eq!(fields(r#"{"id": 5}"#), vec!["filter.id"]);
        assert_eq!(
            fields(r#"{"id": {"$regex": "("}}"#),
            vec!["filter.id.$regex"]
        );
        assert_eq!(fields(r#"{"entity.a": {"b": 1}}"#), vec!["filter.entity.a"]);
        assert_eq!(fields(r#"{"entity.a": [1]}"#), vec!["filter.entity.a"]);
        assert_eq!(
            fields(r#"{"entity.a": {"$gt": true}}"#),
            vec!["filter.entity.a.$gt"]
        );
        assert_eq!(
            fields(r#"{"entity.a": {"$exists": 1}}"#),
            vec!["filter.entity.a.$exists"]
        );
        assert_eq!(fields(r#"{"$and": []}"#), vec!["filter.$and"]);
        assert_eq!(fields("[1]"), vec!["filter"]);
        assert_eq!(fields("{"), vec!["filter"]);
        // Every problem is reported, not just the first.
        assert_eq!(fields(r#"{"a": 1, "id": 2}"#).len(), 2);
    }

    #[test]
    fn limits_and_nul_are_refused_naming_the_place() {
        let many: Vec<String> = (0..1_001).map(|i| i.to_string()).collect();
        let filter = format!(
            r#"{{"id": {{"$in": [{}]}}}}"#,
            many.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(fields(&filter), vec!["filter.id.$in"]);
        assert_eq!(fields("{\"id\": \"a\\u0000b\"}"), vec!["filter.id"]);
        assert_eq!(
            fields(&format!(
                r#"{{"id": {{"$regex": "{}"}}}}"#,
                "a".repeat(1_025)
            )),
            vec!["filter.id.$regex"]
        );
        let mut deep = String::from(r#"{"id": "x"}"#);
        for _ in 0..17 {
            deep = format!(r#"{{"$not": {deep}}}"#);
        }
        assert!(!fields(&deep).is_empty());
    }
}
