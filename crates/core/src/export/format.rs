//! Records as bytes: NDJSON lines, one JSON array, or CSV rows of flattened columns. Each record
//! is encoded on its own, so a run streams whatever the catalog's size.

use super::ExportFormat;
use crate::clock::Micros;
use crate::model::StoredRecord;
use crate::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// The record columns a CSV starts with, before the flattened `entity.*` and `instance.*`.
pub const CSV_RECORD_COLUMNS: [&str; 10] = [
    "key",
    "entity_type",
    "connector",
    "id",
    "name",
    "checksum",
    "version",
    "created_at",
    "updated_at",
    "source",
];

/// A time as RFC 3339 in UTC with microseconds, as every export writes it.
pub fn rfc3339(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One record as NDJSON and JSON write it, with its fields in the Catalog's order.
#[derive(Serialize)]
struct RecordObject<'a> {
    key: &'a str,
    entity_type: &'a str,
    connector: &'a str,
    id: &'a str,
    name: &'a str,
    entity: Value,
    instance: Value,
    checksum: &'a str,
    version: i64,
    created_at: String,
    updated_at: String,
    source: Option<&'a str>,
}

fn parse(record: &StoredRecord, what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("stored {what} of {} is not JSON: {e}", record.key)))
}

/// A record as one JSON object (no trailing newline).
pub fn record_json(record: &StoredRecord) -> Result<Vec<u8>> {
    let object = RecordObject {
        key: &record.key,
        entity_type: &record.entity_type,
        connector: &record.connector,
        id: &record.id,
        name: &record.name,
        entity: parse(record, "entity", &record.entity)?,
        instance: parse(record, "instance", &record.instance)?,
        checksum: &record.checksum,
        version: record.version,
        created_at: rfc3339(record.created_at),
        updated_at: rfc3339(record.updated_at),
        source: record.source.as_deref(),
    };
    serde_json::to_vec(&object).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

/// Adds the flattened column names of `value` under `prefix` to `out`: an object's members
/// recursively (`entity.currency.code`), anything else (scalars, arrays) as one column.
pub fn flattened_columns(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flattened_columns(&format!("{prefix}.{k}"), v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The `entity.*` columns a JSON Schema declares: its `properties`, recursively into nested
/// object schemas.
pub fn schema_columns(schema: &Value, out: &mut BTreeSet<String>) {
    fn walk(prefix: &str, schema: &Value, out: &mut BTreeSet<String>) {
        match schema.get("properties").and_then(Value::as_object) {
            Some(props) if !props.is_empty() => {
                for (k, sub) in props {
                    walk(&format!("{prefix}.{k}"), sub, out);
                }
            }
            _ => {
                if prefix != "entity" {
                    out.insert(prefix.to_owned());
                }
            }
        }
    }
    walk("entity", schema, out);
}

/// The flattened `entity.*` and `instance.*` columns a record holds.
pub fn record_columns(record: &StoredRecord, out: &mut BTreeSet<String>) -> Result<()> {
    for (prefix, text) in [("entity", &record.entity), ("instance", &record.instance)] {
        let value = parse(record, prefix, text)?;
        if let Value::Object(map) = &value {
            for (k, v) in map {
                flattened_columns(&format!("{prefix}.{k}"), v, out);
            }
        }
    }
    Ok(())
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // Arrays, and objects where a column names the object itself, as JSON text.
        Some(other) => other.to_string(),
    }
}

fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(root, |v, part| v.get(part))
}

/// CSV encoding with a fixed header.
pub struct CsvEncoder {
    /// The flattened `entity.*` / `instance.*` columns, in order.
    columns: Vec<String>,
}

impl CsvEncoder {
    /// An encoder whose header is the record columns then `columns` (sorted, so the order is
    /// stable from run to run).
    pub fn new(columns: BTreeSet<String>) -> Self {
        Self {
            columns: columns.into_iter().collect(),
        }
    }

    fn row<I, S>(fields: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        w.write_record(fields)
            .map_err(|e| Error::Internal(format!("encoding a CSV row: {e}")))?;
        w.into_inner()
            .map_err(|e| Error::Internal(format!("encoding a CSV row: {e}")))
    }

    /// The header row.
    pub fn header(&self) -> Result<Vec<u8>> {
        Self::row(
            CSV_RECORD_COLUMNS
                .iter()
                .map(|c| c.to_string())
                .chain(self.columns.iter().cloned()),
        )
    }

    /// One record's row.
    pub fn record(&self, record: &StoredRecord) -> Result<Vec<u8>> {
        let entity = parse(record, "entity", &record.entity)?;
        let instance = parse(record, "instance", &record.instance)?;
        let fixed = [
            record.key.clone(),
            record.entity_type.clone(),
            record.connector.clone(),
            record.id.clone(),
            record.name.clone(),
            record.checksum.clone(),
            record.version.to_string(),
            rfc3339(record.created_at),
            rfc3339(record.updated_at),
            record.source.clone().unwrap_or_default(),
        ];
        let flat = self.columns.iter().map(|column| {
            let (root, path) = match column.split_once('.') {
                Some(("entity", rest)) => (&entity, rest),
                Some((_, rest)) => (&instance, rest),
                None => (&entity, column.as_str()),
            };
            cell(lookup(root, path))
        });
        Self::row(fixed.into_iter().chain(flat))
    }
}

/// What comes before, between and after records in `format` (NDJSON ends each record with a
/// newline itself).
pub fn framing(format: ExportFormat) -> (&'static [u8], &'static [u8], &'static [u8]) {
    match format {
        ExportFormat::Ndjson => (b"", b"", b""),
        ExportFormat::Json => (b"[\n", b",\n", b"\n]\n"),
        ExportFormat::Csv => (b"", b"", b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> StoredRecord {
        StoredRecord {
            key: "city:c1:1".into(),
            entity_type: "city".into(),
            connector: "c1".into(),
            id: "1".into(),
            name: "Oslo, \"the\" capital".into(),
            entity: r#"{"currency":{"code":"NOK"},"tags":["a","b"],"population":700000}"#.into(),
            instance: r#"{"n":1}"#.into(),
            checksum: "abc".into(),
            version: 3,
            created_at: 1_700_000_000_000_000,
            updated_at: 1_700_000_000_500_000,
            source: None,
            edited_at: None,
        }
    }

    #[test]
    fn ndjson_objects_carry_the_catalog_fields_in_order_with_rfc3339_times() {
        let text =
            String::from_utf8(record_json(&record()).unwrap_or_default()).unwrap_or_default();
        assert!(text.starts_with(r#"{"key":"city:c1:1","entity_type":"city","connector":"c1""#));
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["entity"]["currency"]["code"], json!("NOK"));
        assert_eq!(v["created_at"], json!("2023-11-14T22:13:20.000000Z"));
        assert_eq!(v["updated_at"], json!("2023-11-14T22:13:20.500000Z"));
        assert_eq!(v["source"], Value::Null);
        assert_eq!(v["version"], json!(3));
    }

    #[test]
    fn csv_flattens_nested_fields_keeps_arrays_as_json_and_quotes() {
        let mut columns = BTreeSet::new();
        schema_columns(
            &json!({"type": "object", "properties": {"currency": {"type": "object",
                "properties": {"code": {}, "symbol": {}}}, "population": {}}}),
            &mut columns,
        );
        record_columns(&record(), &mut columns).unwrap_or_default();
        let csv = CsvEncoder::new(columns);
        let header = String::from_utf8(csv.header().unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            header,
            "key,entity_type,connector,id,name,checksum,version,created_at,updated_at,source,\
             entity.currency.code,entity.currency.symbol,entity.population,entity.tags,instance.n\r\n"
        );
        let row = String::from_utf8(csv.record(&record()).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            row,
            "city:c1:1,city,c1,1,\"Oslo, \"\"the\"\" capital\",abc,3,2023-11-14T22:13:20.000000Z,\
             2023-11-14T22:13:20.500000Z,,NOK,,700000,\"[\"\"a\"\",\"\"b\"\"]\",1\r\n"
        );
    }
}
