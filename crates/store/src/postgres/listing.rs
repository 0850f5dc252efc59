//! Listings on PostgreSQL: the [`Dialect`] that compiles filters over JSONB (typed with
//! `jsonb_typeof`, strings in byte order via `COLLATE "C"`, `$eq` on entity paths also as a
//! containment test the GIN index answers).

use crate::query::{compare_sql, json_path, Arg, BindAs, Binds, Dialect, SortExpr};
use serde_json::{Map, Value};
use tributary_core::query::{CompareOp, Field, Filter, Scalar};

pub(crate) struct Postgres;

/// The JSONB value at a path field: `records.entity #> '{a,b}'`. Segments are validated
/// (`[A-Za-z0-9_-]`), so the array literal needs no quoting.
fn at(field: &Field) -> String {
    let (doc, path) = json_path(field).unwrap_or(("records.entity", &[]));
    format!("({doc} #> '{{{}}}')", path.join(","))
}

/// `x`'s JSON type is `kind`; two-valued.
fn type_is(x: &str, kind: &str) -> String {
    format!("COALESCE(jsonb_typeof({x}) = '{kind}', false)")
}

/// `{"a": {"b": value}}` for path `a.b`: what `entity @>` tests for `$eq`.
fn containment(path: &[String], value: Value) -> String {
    let nested = path.iter().rev().fold(value, |inner, segment| {
        let mut object = Map::new();
        object.insert(segment.clone(), inner);
        Value::Object(object)
    });
    nested.to_string()
}

impl Dialect for Postgres {
    const TRUE: &'static str = "true";
    const FALSE: &'static str = "false";

    fn placeholder(n: usize, arg: &Arg) -> String {
        match arg {
            Arg::Json(_) => format!("${n}::jsonb"),
            Arg::Text(_) => format!("${n}::text"),
            Arg::Int(_) => format!("${n}::bigint"),
            Arg::Float(_) => format!("${n}::float8"),
        }
    }

    fn column(field: &Field) -> &'static str {
        match field {
            Field::Key => "records.key",
            Field::Id => "records.id",
            // `name` has the database's collation; listings compare it in byte order like the
            // other columns (and SQLite).
            Field::Name => "(records.name COLLATE \"C\")",
            Field::Connector => "records.connector",
            Field::UpdatedAt => "records.updated_at",
            Field::Entity(_) | Field::Instance(_) => "records.key",
        }
    }

    fn substring(col: &str, needle: &str) -> String {
        format!("(strpos({col}, {needle}) > 0)")
    }

    fn regex(col: &str, pattern: &str) -> String {
        format!("({col} ~ {pattern})")
    }

    fn json_leaf(b: &mut Binds<Self>, filter: &Filter) -> String {
        match filter {
            Filter::Compare {
                field,
                op: CompareOp::Eq,
                value: Scalar::Null,
            } => format!("(COALESCE(jsonb_typeof({}), 'null') = 'null')", at(field)),
            Filter::Compare {
                field,
                op: CompareOp::Eq,
                value,
            } => {
                let x = at(field);
                let v = b.push(Arg::Json(value.to_json().to_string()));
                let exact = format!("COALESCE({x} = {v}, false)");
                match field {
                    // jsonb equality is typed (a string never equals a number) and numeric
                    // for numbers; the containment test lets the GIN index find candidates.
                    Field::Entity(path) => {
                        let c = b.push(Arg::Json(containment(path, value.to_json())));
                        format!("(records.entity @> {c} AND {exact})")
                    }
                    _ => format!("({exact})"),
                }
            }
            Filter::Compare { field, op, value } => {
                let x = at(field);
                match value {
                    Scalar::Int(_) | Scalar::Float(_) => {
                        let v = b.push(Arg::Json(value.to_json().to_string()));
                        format!(
                            "({} AND {x} {} {v})",
                            type_is(&x, "number"),
                            compare_sql(*op)
                        )
                    }
                    Scalar::Text(s) => {
                        let v = b.push(Arg::Text(s.clone()));
                        format!(
                            "({} AND ({x} #>> '{{}}') COLLATE \"C\" {} {v})",
                            type_is(&x, "string"),
                            compare_sql(*op)
                        )
                    }
                    _ => Self::FALSE.to_owned(),
                }
            }
            Filter::Exists { field } => format!("({} IS NOT NULL)", at(field)),
            Filter::Contains { field, value } => {
                let x = at(field);
                let element = b.push(Arg::Json(Value::Array(vec![value.to_json()]).to_string()));
                let in_array = format!("({} AND {x} @> {element})", type_is(&x, "array"));
                match value {
                    Scalar::Text(s) => {
                        let p = b.push(Arg::Text(s.clone()));
                        format!(
                            "(({} AND strpos({x} #>> '{{}}', {p}) > 0) OR {in_array})",
                            type_is(&x, "string")
                        )
                    }
                    _ => in_array,
                }
            }
            Filter::Regex { field, pattern } => {
                let x = at(field);
                let p = b.push(Arg::Text(pattern.clone()));
                format!("({} AND ({x} #>> '{{}}') ~ {p})", type_is(&x, "string"))
            }
            _ => Self::FALSE.to_owned(),
        }
    }

    fn json_sort(field: &Field) -> Vec<SortExpr> {
        let x = at(field);
        vec![
            // Types apart first (absent/null, booleans, numbers, strings, arrays, objects), then
            // booleans and numbers by their JSONB order, then strings (and the text of arrays
            // and objects) in byte order.
            SortExpr {
                sql: format!(
                    "(CASE jsonb_typeof({x}) WHEN 'boolean' THEN 1 WHEN 'number' THEN 2 \
                     WHEN 'string' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 ELSE 0 END)"
                ),
                bind: BindAs::Int,
            },
            SortExpr {
                sql: format!(
                    "(CASE WHEN jsonb_typeof({x}) IN ('boolean', 'number') THEN {x} \
                     ELSE 'null'::jsonb END)"
                ),
                bind: BindAs::Json,
            },
            SortExpr {
                sql: format!(
                    "((CASE WHEN jsonb_typeof({x}) IN ('string', 'array', 'object') \
                     THEN {x} #>> '{{}}' ELSE '' END) COLLATE \"C\")"
                ),
                bind: BindAs::Text,
            },
        ]
    }

    fn sort_values(exprs: &[&SortExpr]) -> String {
        // JSONB values travel as their text, so the cursor binds them back exactly.
        let list: Vec<String> = exprs
            .iter()
            .map(|e| match e.bind {
                BindAs::Json => format!("({})::text", e.sql),
                _ => e.sql.clone(),
            })
            .collect();
        format!("jsonb_build_array({})::text", list.join(", "))
    }
}
