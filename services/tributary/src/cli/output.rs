//! Printing results as a table (for people), JSON or NDJSON (for programs), and the JSON form
//! of each API message (protobuf JSON field names in snake_case, objects as JSON objects,
//! timestamps in RFC 3339).

use std::io::Write;

use comfy_table::{presets, ContentArrangement, Table};
use prost_types::{Struct, Timestamp};
use serde_json::{json, Value};
use tributary_client::pb::{admin, catalog};
use tributary_grpc::convert::struct_to_json;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document (an array for lists).
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// A table column: its header and the JSON pointer of its cell in each item.
pub type Column = (&'static str, &'static str);

/// Widest cell in a table; longer values (schemas, entities) are cut with an ellipsis.
const MAX_CELL_CHARS: usize = 60;

/// Prints `items` as a table of `columns`, a JSON array or NDJSON.
pub fn print_list(format: OutputFormat, columns: &[Column], items: &[Value]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", table(columns, items))?;
        }
        OutputFormat::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(items)?)?;
        }
        OutputFormat::Ndjson => {
            for item in items {
                writeln!(out, "{item}")?;
            }
        }
    }
    Ok(())
}

/// Prints one item: a two-column FIELD/VALUE table, pretty JSON or one NDJSON line.
pub fn print_one(format: OutputFormat, item: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            let mut t = Table::new();
            t.load_preset(presets::NOTHING)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header(["FIELD", "VALUE"]);
            if let Value::Object(map) = item {
                for (k, v) in map {
                    t.add_row([k.clone(), cell(v, usize::MAX)]);
                }
            }
            writeln!(out, "{t}")?;
        }
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(item)?)?,
        OutputFormat::Ndjson => writeln!(out, "{item}")?,
    }
    Ok(())
}

/// A table of `columns` over `items`.
pub fn table(columns: &[Column], items: &[Value]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(h, _)| *h));
    for item in items {
        t.add_row(columns.iter().map(|(_, pointer)| {
            item.pointer(pointer)
                .map(|v| cell(v, MAX_CELL_CHARS))
                .unwrap_or_default()
        }));
    }
    t
}

/// A value as a table cell: strings bare, the rest as compact JSON, cut at `max` characters.
pub fn cell(value: &Value, max: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.chars().count() > max {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// A `Struct` as a JSON object (`{}` when absent; a non-finite number, which JSON cannot
/// hold, becomes null).
pub fn object(s: Option<&Struct>) -> Value {
    match s {
        Some(s) => struct_to_json(s.clone()).unwrap_or(Value::Null),
        None => json!({}),
    }
}

/// A timestamp in RFC 3339, or null when absent.
pub fn time(ts: Option<&Timestamp>) -> Value {
    ts.map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// An entity type as the Admin service returns it.
pub fn admin_entity_type(e: &admin::EntityType) -> Value {
    json!({
        "slug": e.slug,
        "name": e.name,
        "description": e.description,
        "schema_version": e.schema_version,
        "schema": object(e.schema.as_ref()),
        "created_at": time(e.created_at.as_ref()),
        "updated_at": time(e.updated_at.as_ref()),
    })
}

/// Columns of `entity-type list`.
pub const ENTITY_TYPE_COLUMNS: &[Column] = &[
    ("SLUG", "/slug"),
    ("NAME", "/name"),
    ("SCHEMA VERSION", "/schema_version"),
    ("DESCRIPTION", "/description"),
];

/// The write policy's name as the command line spells it.
pub fn write_policy_name(policy: admin::WritePolicy) -> &'static str {
    match policy {
        admin::WritePolicy::Unspecified | admin::WritePolicy::Importer => "importer",
        admin::WritePolicy::ImporterCreateOnly => "importer-create-only",
        admin::WritePolicy::ImporterUpdateUnlessEdited => "importer-update-unless-edited",
    }
}

/// A connector (never its token, which only `create` and `rotate` print).
pub fn connector(c: &admin::Connector) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "entity_type": c.entity_type,
        "write_policy": write_policy_name(c.write_policy()),
        "reject_removals_above_percent": c.reject_removals_above_percent,
        "rate_limit": c.rate_limit,
        "created_at": time(c.created_at.as_ref()),
    })
}

/// Columns of `connector list`.
pub const CONNECTOR_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("ENTITY TYPE", "/entity_type"),
    ("WRITE POLICY", "/write_policy"),
    ("CREATED", "/created_at"),
];

/// A consumer.
pub fn consumer(c: &admin::Consumer) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "entity_types": c.entity_types,
        "created_at": time(c.created_at.as_ref()),
    })
}

/// Columns of `consumer list`.
pub const CONSUMER_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("ENTITY TYPES", "/entity_types"),
    ("CREATED", "/created_at"),
];

/// The status of an import as the command line spells it.
pub fn import_status_name(status: admin::ImportStatus) -> &'static str {
    match status {
        admin::ImportStatus::Unspecified => "unspecified",
        admin::ImportStatus::Succeeded => "succeeded",
        admin::ImportStatus::Partial => "partial",
        admin::ImportStatus::Failed => "failed",
        admin::ImportStatus::Canceled => "canceled",
    }
}

fn import_items(items: &[admin::ImportItem]) -> Value {
    items
        .iter()
        .map(|i| json!({"id": i.id, "reason": i.reason, "error": i.error, "data": i.data}))
        .collect()
}

/// An import result.
pub fn import_result(r: &admin::ImportResult) -> Value {
    json!({
        "id": r.id,
        "connector": r.connector,
        "session_id": r.session_id,
        "source": r.source,
        "status": import_status_name(r.status()),
        "started_at": time(r.started_at.as_ref()),
        "ended_at": time(r.ended_at.as_ref()),
        "created": r.created,
        "updated": r.updated,
        "unchanged": r.unchanged,
        "skipped": r.skipped,
        "failed": r.failed,
        "deleted": r.deleted,
        "swept": r.swept,
        "sweep_refused": r.sweep_refused,
        "pages": r.pages,
        "skipped_items": import_items(&r.skipped_items),
        "failed_items": import_items(&r.failed_items),
        "items_not_listed": r.items_not_listed,
        "errors": r.errors,
    })
}

/// Columns of `import-results list`.
pub const IMPORT_RESULT_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("CONNECTOR", "/connector"),
    ("STATUS", "/status"),
    ("CREATED", "/created"),
    ("UPDATED", "/updated"),
    ("UNCHANGED", "/unchanged"),
    ("DELETED", "/deleted"),
    ("SWEPT", "/swept"),
    ("ENDED", "/ended_at"),
];

/// Columns of `source list`.
pub const SOURCE_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("CONNECTOR", "/connector"),
    ("KIND", "/kind"),
    ("INTERVAL", "/interval"),
    ("CRON", "/cron"),
    ("ENABLED", "/enabled"),
    ("UPDATED", "/updated_at"),
];

/// The state of a source as the command line spells it.
pub fn source_state_name(state: admin::SourceState) -> &'static str {
    match state {
        admin::SourceState::Unspecified => "unspecified",
        admin::SourceState::Idle => "idle",
        admin::SourceState::Running => "running",
        admin::SourceState::Resting => "resting",
        admin::SourceState::Backoff => "backoff",
    }
}

/// A source's runtime status.
pub fn source_status(s: &admin::SourceStatus) -> Value {
    json!({
        "source_id": s.source_id,
        "state": source_state_name(s.state()),
        "cursor": s.cursor,
        "cycle_id": s.cycle_id,
        "cycle_started_at": time(s.cycle_started_at.as_ref()),
        "attempts": s.attempts,
        "last_error": s.last_error,
        "last_run_at": time(s.last_run_at.as_ref()),
        "next_run_at": time(s.next_run_at.as_ref()),
        "lease_holder": s.lease_holder,
        "lease_expires_at": time(s.lease_expires_at.as_ref()),
        "marks": s.marks,
        "pages": s.pages,
        "created": s.created,
        "updated": s.updated,
        "unchanged": s.unchanged,
        "skipped": s.skipped,
        "failed": s.failed,
        "last_import_result": s.last_import_result,
    })
}

/// A record as consumers see it.
pub fn record(r: &catalog::Record) -> Value {
    json!({
        "key": r.key,
        "entity_type": r.entity_type,
        "connector": r.connector,
        "id": r.id,
        "name": r.name,
        "entity": object(r.entity.as_ref()),
        "instance": object(r.instance.as_ref()),
        "checksum": r.checksum,
        "version": r.version,
        "created_at": time(r.created_at.as_ref()),
        "updated_at": time(r.updated_at.as_ref()),
        "source": r.source,
        "edited_at": time(r.edited_at.as_ref()),
    })
}

/// A record as `records edit` returns it.
pub fn edited_record(r: &admin::EditedRecord) -> Value {
    json!({
        "key": r.key,
        "entity_type": r.entity_type,
        "connector": r.connector,
        "id": r.id,
        "name": r.name,
        "entity": object(r.entity.as_ref()),
        "instance": object(r.instance.as_ref()),
        "checksum": r.checksum,
        "version": r.version,
        "updated_at": time(r.updated_at.as_ref()),
        "edited_at": time(r.edited_at.as_ref()),
    })
}

/// Columns of `records list`.
pub const RECORD_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("VERSION", "/version"),
    ("UPDATED", "/updated_at"),
    ("KEY", "/key"),
    ("ENTITY", "/entity"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_cut_and_strings_are_bare() {
        assert_eq!(cell(&json!("abc"), 10), "abc");
        assert_eq!(cell(&json!({"a": 1}), 10), r#"{"a":1}"#);
        assert_eq!(cell(&json!("abcdef"), 4), "abc…");
        assert_eq!(cell(&Value::Null, 4), "");
    }

    #[test]
    fn tables_have_headers_and_one_row_per_item() {
        let t = table(
            &[("ID", "/id"), ("N", "/n")],
            &[json!({"id": "GB", "n": 1}), json!({"id": "IN"})],
        )
        .to_string();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].contains("ID") && lines[1].contains("GB") && lines[2].contains("IN"));
    }
}
