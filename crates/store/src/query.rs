//! Compiling a listing ([`RecordQuery`]: the domain's filter AST, order and cursor) to one
//! parameterised `SELECT`, shared by both backends. What differs (placeholders, JSON functions,
//! collations) is the backend's [`Dialect`].
//!
//! Every condition compiles to SQL that is never NULL, so `NOT` means "does not match" (three-
//! valued logic would make `NOT (absent = 3)` drop records that lack the field). Values are
//! always bound; only field names and JSON paths, validated by `tributary-core` to
//! `[A-Za-z0-9_-]` segments, are written into the SQL, so expression indexes can match them.

use crate::error::{StoreError, StoreResult};
use serde_json::Value;
use tributary_core::query::{CompareOp, Cursor, Field, Filter};
use tributary_core::store::RecordQuery;
use tributary_core::Error;

/// A bound parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
    /// JSON text (PostgreSQL binds it as `jsonb`).
    Json(String),
}

/// How a sort expression's cursor value is bound again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindAs {
    Text,
    Int,
    /// JSON text carried as a string (PostgreSQL `jsonb`).
    Json,
    /// Whatever SQL type the JSON value has: string text, integer, real (SQLite).
    Dynamic,
}

/// One expression a listing orders by; never NULL.
#[derive(Debug, Clone)]
pub(crate) struct SortExpr {
    pub sql: String,
    pub bind: BindAs,
}

/// The arguments of a statement under construction.
pub(crate) struct Binds<D: Dialect> {
    pub args: Vec<Arg>,
    _dialect: std::marker::PhantomData<D>,
}

impl<D: Dialect> Binds<D> {
    pub(crate) fn new() -> Self {
        Self {
            args: Vec::new(),
            _dialect: std::marker::PhantomData,
        }
    }

    /// Binds `arg`; answers its placeholder.
    pub(crate) fn push(&mut self, arg: Arg) -> String {
        let placeholder = D::placeholder(self.args.len() + 1, &arg);
        self.args.push(arg);
        placeholder
    }
}

/// What a backend contributes to a compiled listing.
pub(crate) trait Dialect: Sized {
    /// SQL for "always true" / "always false".
    const TRUE: &'static str;
    const FALSE: &'static str;
    /// The placeholder of the `n`-th argument (1-based), with any cast its kind needs.
    fn placeholder(n: usize, arg: &Arg) -> String;
    /// The expression of a column field (`key`, `id`, `name`, `connector`, `updated_at`) as
    /// compared and ordered (PostgreSQL: byte order for `name`).
    fn column(field: &Field) -> &'static str;
    /// `col` contains `needle` as a substring.
    fn substring(col: &str, needle: &str) -> String;
    /// `col` matches the regular expression `pattern`.
    fn regex(col: &str, pattern: &str) -> String;
    /// A condition on a JSON path field (`Compare`, `Exists`, `Contains`, `Regex`).
    fn json_leaf(b: &mut Binds<Self>, filter: &Filter) -> String;
    /// The expressions a JSON path field orders by.
    fn json_sort(field: &Field) -> Vec<SortExpr>;
    /// An expression of a row's sort values (all but the final key) as JSON array text.
    fn sort_values(exprs: &[&SortExpr]) -> String;
}

/// The JSON document a path field lives in and its path segments; `None` for columns.
pub(crate) fn json_path(field: &Field) -> Option<(&'static str, &[String])> {
    match field {
        Field::Entity(path) => Some(("records.entity", path)),
        Field::Instance(path) => Some(("records.instance", path)),
        _ => None,
    }
}

pub(crate) fn compare_sql(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Gt => ">",
        CompareOp::Gte => ">=",
        CompareOp::Lt => "<",
        CompareOp::Lte => "<=",
    }
}

fn bad_cursor() -> StoreError {
    Error::invalid(
        "page_token",
        "does not fit this listing; start again without a token",
    )
    .into()
}

/// The compiled listing: SQL selecting `columns` plus `sort_values`, and its arguments.
pub(crate) fn compile<D: Dialect>(
    query: &RecordQuery<'_>,
    columns: &str,
) -> StoreResult<(String, Vec<Arg>)> {
    let mut b = Binds::<D>::new();
    let entity_type = b.push(Arg::Text(query.entity_type.to_owned()));
    let mut conditions = vec![format!("records.entity_type = {entity_type}")];
    if let Some(filter) = query.filter {
        conditions.push(filter_sql(&mut b, filter));
    }
    let sort: Vec<(SortExpr, bool)> = query
        .order
        .iter()
        .flat_map(|k| {
            sort_exprs::<D>(&k.field)
                .into_iter()
                .map(move |e| (e, k.descending))
        })
        .collect();
    // The order always ends with the key; the cursor carries the other values apart.
    let Some(((last, _), rest)) = sort.split_last() else {
        return Err(StoreError::Corrupt(
            "a listing order without the key".into(),
        ));
    };
    if last.sql != D::column(&Field::Key) {
        return Err(StoreError::Corrupt(
            "a listing order not ending with the key".into(),
        ));
    }
    if let Some(cursor) = query.after {
        conditions.push(keyset::<D>(&mut b, &sort, cursor)?);
    }
    let order_by: Vec<String> = sort
        .iter()
        .map(|(e, desc)| format!("{} {}", e.sql, if *desc { "DESC" } else { "ASC" }))
        .collect();
    let rest: Vec<&SortExpr> = rest.iter().map(|(e, _)| e).collect();
    let limit = b.push(Arg::Int(i64::from(query.limit)));
    let sql = format!(
        "SELECT {columns}, {} AS sort_values FROM records WHERE {} ORDER BY {} LIMIT {limit}",
        D::sort_values(&rest),
        conditions.join(" AND "),
        order_by.join(", "),
    );
    Ok((sql, b.args))
}

/// The count of the records of `entity_type` that `filter` admits: the conditions of
/// [`compile`] without order, cursor or limit.
pub(crate) fn compile_count<D: Dialect>(
    entity_type: &str,
    filter: Option<&Filter>,
) -> (String, Vec<Arg>) {
    let mut b = Binds::<D>::new();
    let entity_type = b.push(Arg::Text(entity_type.to_owned()));
    let mut conditions = vec![format!("records.entity_type = {entity_type}")];
    if let Some(filter) = filter {
        conditions.push(filter_sql(&mut b, filter));
    }
    let sql = format!(
        "SELECT count(*) FROM records WHERE {}",
        conditions.join(" AND ")
    );
    (sql, b.args)
}

fn sort_exprs<D: Dialect>(field: &Field) -> Vec<SortExpr> {
    match field {
        Field::Entity(_) | Field::Instance(_) => D::json_sort(field),
        Field::UpdatedAt => vec![SortExpr {
            sql: D::column(field).to_owned(),
            bind: BindAs::Int,
        }],
        _ => vec![SortExpr {
            sql: D::column(field).to_owned(),
            bind: BindAs::Text,
        }],
    }
}

/// Rows strictly after `cursor` in the order `sort`: for each position i, the earlier
/// expressions equal the cursor's and the i-th is past it. The key, last, makes it strict.
fn keyset<D: Dialect>(
    b: &mut Binds<D>,
    sort: &[(SortExpr, bool)],
    cursor: &Cursor,
) -> StoreResult<String> {
    if cursor.values.len() + 1 != sort.len() {
        return Err(bad_cursor());
    }
    let mut placeholders = Vec::with_capacity(sort.len());
    for ((expr, _), value) in sort.iter().zip(&cursor.values) {
        placeholders.push(b.push(cursor_arg(expr.bind, value)?));
    }
    placeholders.push(b.push(Arg::Text(cursor.key.clone())));
    let mut any = Vec::with_capacity(sort.len());
    for i in 0..sort.len() {
        let mut all: Vec<String> = (0..i)
            .map(|j| format!("{} = {}", sort[j].0.sql, placeholders[j]))
            .collect();
        let (expr, desc) = &sort[i];
        all.push(format!(
            "{} {} {}",
            expr.sql,
            if *desc { "<" } else { ">" },
            placeholders[i]
        ));
        any.push(format!("({})", all.join(" AND ")));
    }
    Ok(format!("({})", any.join(" OR ")))
}

fn cursor_arg(bind: BindAs, value: &Value) -> StoreResult<Arg> {
    let arg = match (bind, value) {
        (BindAs::Text, Value::String(s)) => Arg::Text(s.clone()),
        (BindAs::Json, Value::String(s)) => {
            // Bound as jsonb: refuse anything that is not JSON rather than fail in the database.
            serde_json::from_str::<Value>(s).map_err(|_| bad_cursor())?;
            Arg::Json(s.clone())
        }
        (BindAs::Int, Value::Number(n)) => Arg::Int(n.as_i64().ok_or_else(bad_cursor)?),
        (BindAs::Dynamic, Value::String(s)) => Arg::Text(s.clone()),
        (BindAs::Dynamic, Value::Number(n)) => match n.as_i64() {
            Some(i) => Arg::Int(i),
            None => Arg::Float(n.as_f64().ok_or_else(bad_cursor)?),
        },
        _ => return Err(bad_cursor()),
    };
    Ok(arg)
}

/// A filter as a never-NULL SQL condition.
pub(crate) fn filter_sql<D: Dialect>(b: &mut Binds<D>, filter: &Filter) -> String {
    match filter {
        Filter::All(items) if items.is_empty() => D::TRUE.to_owned(),
        Filter::Any(items) if items.is_empty() => D::FALSE.to_owned(),
        Filter::All(items) | Filter::Any(items) => {
            let joiner = if matches!(filter, Filter::All(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts: Vec<String> = items.iter().map(|f| filter_sql(b, f)).collect();
            balanced(&parts, joiner)
        }
        Filter::Not(inner) => format!("(NOT {})", filter_sql(b, inner)),
        Filter::Compare { field, .. }
        | Filter::Exists { field }
        | Filter::Contains { field, .. }
        | Filter::Regex { field, .. } => {
            if json_path(field).is_some() {
                D::json_leaf(b, filter)
            } else {
                column_leaf(b, filter)
            }
        }
    }
}

/// `parts` joined by `joiner` as a balanced tree of parentheses: SQLite parses `a OR b OR …`
/// into a chain as deep as it is long, and refuses one deeper than 1,000 (an `$in` of 1,000
/// values); halves nest only log2(n) deep.
fn balanced(parts: &[String], joiner: &str) -> String {
    const FLAT: usize = 16;
    if parts.len() <= FLAT {
        return format!("({})", parts.join(joiner));
    }
    let (left, right) = parts.split_at(parts.len() / 2);
    format!(
        "({}{joiner}{})",
        balanced(left, joiner),
        balanced(right, joiner)
    )
}

/// A condition on a (NOT NULL) column. The domain has checked the value's type.
fn column_leaf<D: Dialect>(b: &mut Binds<D>, filter: &Filter) -> String {
    use tributary_core::query::Scalar;
    match filter {
        Filter::Compare { field, op, value } => {
            let arg = match value {
                Scalar::Int(i) => Arg::Int(*i),
                Scalar::Text(s) => Arg::Text(s.clone()),
                // Refused by the domain; never matches rather than guess.
                _ => return D::FALSE.to_owned(),
            };
            let p = b.push(arg);
            format!("({} {} {p})", D::column(field), compare_sql(*op))
        }
        Filter::Exists { .. } => D::TRUE.to_owned(),
        Filter::Contains {
            field,
            value: Scalar::Text(s),
        } => {
            let p = b.push(Arg::Text(s.clone()));
            D::substring(D::column(field), &p)
        }
        Filter::Regex { field, pattern } => {
            let p = b.push(Arg::Text(pattern.clone()));
            D::regex(D::column(field), &p)
        }
        _ => D::FALSE.to_owned(),
    }
}

/// Decodes a row's `sort_values` text into the cursor of that row.
pub(crate) fn cursor_of(sort_values: &str, key: String) -> StoreResult<Cursor> {
    let values: Vec<Value> = serde_json::from_str(sort_values)
        .map_err(|e| StoreError::Corrupt(format!("sort values {sort_values:?}: {e}")))?;
    Ok(Cursor { values, key })
}
