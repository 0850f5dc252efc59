//! Listings on SQLite: the [`Dialect`] that compiles filters to `json_type` / `json_extract`
//! (the `regexp` function is registered on every connection by sqlx, backed by the Rust `regex`
//! crate).

use crate::query::{compare_sql, json_path, Arg, BindAs, Binds, Dialect, SortExpr};
use tributary_core::query::{CompareOp, Field, Filter, Scalar};

pub(crate) struct Sqlite;

/// `json_type(doc, '$.a.b')` and `json_extract(doc, '$.a.b')` of a path field. The path is
/// written plainly (`$.a.b`, never quoted) so that an operator's expression index on
/// `json_extract(entity, '$.a.b')` is the same expression and SQLite's planner uses it.
fn typed(field: &Field) -> (String, String) {
    let (doc, path) = json_path(field).unwrap_or(("records.entity", &[]));
    let path = format!("'$.{}'", path.join("."));
    (
        format!("json_type({doc}, {path})"),
        format!("json_extract({doc}, {path})"),
    )
}

fn each(field: &Field) -> String {
    let (doc, path) = json_path(field).unwrap_or(("records.entity", &[]));
    format!("json_each({doc}, '$.{}')", path.join("."))
}

/// `t` (a `json_type`) is the JSON type of `value`; two-valued (`IS` is NULL-safe).
fn type_is(t: &str, value: &Scalar) -> String {
    match value {
        Scalar::Int(_) | Scalar::Float(_) => format!("({t} IS 'integer' OR {t} IS 'real')"),
        Scalar::Text(_) => format!("{t} IS 'text'"),
        Scalar::Bool(true) => format!("{t} IS 'true'"),
        Scalar::Bool(false) => format!("{t} IS 'false'"),
        Scalar::Null => format!("COALESCE({t}, 'null') = 'null'"),
    }
}

fn arg(value: &Scalar) -> Option<Arg> {
    match value {
        Scalar::Int(i) => Some(Arg::Int(*i)),
        Scalar::Float(f) => Some(Arg::Float(*f)),
        Scalar::Text(s) => Some(Arg::Text(s.clone())),
        Scalar::Bool(_) | Scalar::Null => None,
    }
}

impl Dialect for Sqlite {
    const TRUE: &'static str = "(1 = 1)";
    const FALSE: &'static str = "(1 = 0)";

    fn placeholder(n: usize, _arg: &Arg) -> String {
        format!("${n}")
    }

    fn column(field: &Field) -> &'static str {
        match field {
            Field::Key => "records.key",
            Field::Id => "records.id",
            Field::Name => "records.name",
            Field::Connector => "records.connector",
            Field::UpdatedAt => "records.updated_at",
            // Never called for paths; a harmless column keeps the signature simple.
            Field::Entity(_) | Field::Instance(_) => "records.key",
        }
    }

    fn substring(col: &str, needle: &str) -> String {
        format!("(instr({col}, {needle}) > 0)")
    }

    fn regex(col: &str, pattern: &str) -> String {
        format!("(regexp({pattern}, {col}) = 1)")
    }

    fn json_leaf(b: &mut Binds<Self>, filter: &Filter) -> String {
        match filter {
            Filter::Compare { field, op, value } => {
                let (t, x) = typed(field);
                let guard = type_is(&t, value);
                match arg(value) {
                    Some(a) => {
                        let p = b.push(a);
                        format!("({guard} AND {x} {} {p})", compare_sql(*op))
                    }
                    // Booleans and null: the type is the value (ranges were refused).
                    None if *op == CompareOp::Eq => format!("({guard})"),
                    None => Self::FALSE.to_owned(),
                }
            }
            Filter::Exists { field } => {
                let (t, _) = typed(field);
                format!("({t} IS NOT NULL)")
            }
            Filter::Contains { field, value } => {
                let (t, x) = typed(field);
                let element = match value {
                    Scalar::Bool(true) => "e.type = 'true'".to_owned(),
                    Scalar::Bool(false) => "e.type = 'false'".to_owned(),
                    other => {
                        let guard = type_is("e.type", other);
                        match arg(other) {
                            Some(a) => format!("{guard} AND e.value = {}", b.push(a)),
                            None => return Self::FALSE.to_owned(),
                        }
                    }
                };
                let in_array = format!(
                    "({t} IS 'array' AND EXISTS (SELECT 1 FROM {} AS e WHERE {element}))",
                    each(field)
                );
                match value {
                    Scalar::Text(s) => {
                        let p = b.push(Arg::Text(s.clone()));
                        format!("(({t} IS 'text' AND instr({x}, {p}) > 0) OR {in_array})")
                    }
                    _ => in_array,
                }
            }
            Filter::Regex { field, pattern } => {
                let (t, x) = typed(field);
                let p = b.push(Arg::Text(pattern.clone()));
                format!("({t} IS 'text' AND regexp({p}, {x}) = 1)")
            }
            _ => Self::FALSE.to_owned(),
        }
    }

    fn json_sort(field: &Field) -> Vec<SortExpr> {
        let (t, x) = typed(field);
        vec![
            // Types apart first (absent/null, booleans, numbers, strings, arrays, objects), so
            // the second expression only ever compares values of one type.
            SortExpr {
                sql: format!(
                    "(CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 1 WHEN 'integer' THEN 2 \
                     WHEN 'real' THEN 2 WHEN 'text' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 \
                     ELSE 0 END)"
                ),
                bind: BindAs::Int,
            },
            SortExpr {
                sql: format!("COALESCE({x}, 0)"),
                bind: BindAs::Dynamic,
            },
        ]
    }

    fn sort_values(exprs: &[&SortExpr]) -> String {
        let list: Vec<&str> = exprs.iter().map(|e| e.sql.as_str()).collect();
        format!("json_array({})", list.join(", "))
    }
}
