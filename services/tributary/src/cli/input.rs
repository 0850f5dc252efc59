//! Reading contribution files: NDJSON or CSV, from a file or stdin (`-`), one record at a time
//! with its line number, so memory does not grow with the file.
//!
//! NDJSON: one JSON object per line with `id`, `name`, `entity` (object), optional `instance`
//! (object) and `checksum`; other keys are ignored (so `records list --output ndjson` can be fed
//! back); blank lines are skipped.
//!
//! CSV: a header row names each column: `id`, `name`, `checksum`, `entity.<path>` or
//! `instance.<path>`, where `<path>` may be dotted (`entity.currency.code` builds a nested
//! object). A `:string`, `:number`, `:integer`, `:boolean` or `:json` suffix fixes a column's
//! type; without one a cell that is a JSON number becomes a number, `true`/`false` a boolean,
//! anything else a string (so `007` stays a string). An empty cell leaves the field out.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tributary_client::pb::contribution::Record;
use tributary_grpc::convert::map_to_struct;

use super::usage;

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line.
    Ndjson,
    /// A header row, then one record per row.
    Csv,
}

impl InputFormat {
    /// The format a path's extension implies: `.csv` is CSV, anything else (and stdin) NDJSON.
    pub fn from_path(path: &Path) -> InputFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => InputFormat::Csv,
            _ => InputFormat::Ndjson,
        }
    }
}

/// Reads a small whole file (a schema), `-` meaning stdin; an unreadable file is a usage error.
pub fn read_small(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(text)
}

/// One record read from the input, or why its line could not become one.
#[derive(Debug)]
pub struct Item {
    /// 1-based line where the record starts.
    pub line: u64,
    pub record: Result<Record, String>,
}

/// A reader that counts the bytes it hands out (for the progress bar).
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input: records one by one, and how far into it reading has got.
pub struct RecordReader {
    kind: Kind,
    /// Bytes read so far (shared with the progress display).
    pub bytes_read: Arc<AtomicU64>,
    /// The input's size when it is a regular file (`None` for stdin).
    pub size: Option<u64>,
}

enum Kind {
    Ndjson {
        lines: BufReader<Counting<Box<dyn Read + Send>>>,
        line: u64,
        buf: String,
    },
    Csv {
        reader: csv::Reader<Counting<Box<dyn Read + Send>>>,
        columns: Vec<CsvColumn>,
        row: csv::StringRecord,
    },
}

impl RecordReader {
    /// Opens `path` (`-` for stdin) as `format`; a CSV header is checked here, before anything
    /// is sent. Failures are usage errors.
    pub fn open(path: &Path, format: InputFormat) -> anyhow::Result<RecordReader> {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let (source, size): (Box<dyn Read + Send>, Option<u64>) = if path == Path::new("-") {
            (Box::new(std::io::stdin()), None)
        } else {
            let file = File::open(path)
                .map_err(|e| usage(format!("cannot open {}: {e}", path.display())))?;
            let size = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            (Box::new(file), size)
        };
        let counting = Counting {
            inner: source,
            read: bytes_read.clone(),
        };
        let kind = match format {
            InputFormat::Ndjson => Kind::Ndjson {
                lines: BufReader::with_capacity(256 * 1024, counting),
                line: 0,
                buf: String::new(),
            },
            InputFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(counting);
                let headers = reader
                    .headers()
                    .map_err(|e| usage(format!("{}: CSV header: {e}", display(path))))?
                    .clone();
                let columns = csv_columns(&headers)
                    .map_err(|e| usage(format!("{}: CSV header: {e}", display(path))))?;
                Kind::Csv {
                    reader,
                    columns,
                    row: csv::StringRecord::new(),
                }
            }
        };
        Ok(RecordReader {
            kind,
            bytes_read,
            size,
        })
    }

    /// The next record (or why its line is not one); `Ok(None)` at the end; `Err` when the
    /// input itself cannot be read.
    pub fn next_item(&mut self) -> std::io::Result<Option<Item>> {
        match &mut self.kind {
            Kind::Ndjson { lines, line, buf } => loop {
                buf.clear();
                if lines.read_line(buf)? == 0 {
                    return Ok(None);
                }
                *line += 1;
                let text = buf.trim();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(Item {
                    line: *line,
                    record: ndjson_record(text),
                }));
            },
            Kind::Csv {
                reader,
                columns,
                row,
            } => match reader.read_record(row) {
                Ok(false) => Ok(None),
                Ok(true) => {
                    let line = row.position().map_or(0, |p| p.line());
                    Ok(Some(Item {
                        line,
                        record: csv_record(columns, row),
                    }))
                }
                Err(e) => match e.kind() {
                    csv::ErrorKind::Io(_) => Err(std::io::Error::other(e.to_string())),
                    _ => {
                        // A malformed row (bad UTF-8, ...) is one invalid record; reading goes on.
                        let line = e.position().map_or(0, |p| p.line());
                        Ok(Some(Item {
                            line,
                            record: Err(format!("invalid CSV row: {e}")),
                        }))
                    }
                },
            },
        }
    }
}

fn display(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// A path for display, `stdin` for `-`.
pub fn input_name(path: &Path) -> String {
    display(path)
}

/// One NDJSON line as a record.
fn ndjson_record(text: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("a line must be a JSON object".into());
    };
    let id = string_field(&mut map, "id")?.ok_or("missing \"id\"")?;
    let name = string_field(&mut map, "name")?.unwrap_or_default();
    let checksum = string_field(&mut map, "checksum")?.unwrap_or_default();
    let entity = match map.remove("entity") {
        Some(Value::Object(o)) => Some(map_to_struct(o)),
        None | Some(Value::Null) => None,
        Some(_) => return Err("\"entity\" must be a JSON object".into()),
    };
    let instance = match map.remove("instance") {
        Some(Value::Object(o)) => Some(map_to_struct(o)),
        None | Some(Value::Null) => None,
        Some(_) => return Err("\"instance\" must be a JSON object".into()),
    };
    Ok(Record {
        id,
        name,
        entity,
        instance,
        checksum,
    })
}

fn string_field(map: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{key}\" must be a string")),
    }
}

/// What a CSV column holds.
#[derive(Debug, Clone, PartialEq)]
enum CsvColumn {
    Id,
    Name,
    Checksum,
    /// A field of `entity` (`object` false) or `instance` (true), at a dotted path.
    Field {
        instance: bool,
        path: Vec<String>,
        kind: CellType,
    },
}

/// How a CSV cell becomes a JSON value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CellType {
    Infer,
    String,
    Number,
    Integer,
    Boolean,
    Json,
}

fn csv_columns(headers: &csv::StringRecord) -> Result<Vec<CsvColumn>, String> {
    let mut columns = Vec::with_capacity(headers.len());
    for header in headers {
        let header = header.trim();
        let column = match header {
            "id" => CsvColumn::Id,
            "name" => CsvColumn::Name,
            "checksum" => CsvColumn::Checksum,
            _ => {
                let (path, kind) = match header.rsplit_once(':') {
                    Some((path, kind)) => (
                        path,
                        match kind {
                            "string" => CellType::String,
                            "number" => CellType::Number,
                            "integer" => CellType::Integer,
                            "boolean" => CellType::Boolean,
                            "json" => CellType::Json,
                            other => {
                                return Err(format!(
                                    "column {header:?}: unknown type {other:?} (string, number, \
                                     integer, boolean or json)"
                                ))
                            }
                        },
                    ),
                    None => (header, CellType::Infer),
                };
                let (instance, rest) = if let Some(rest) = path.strip_prefix("entity.") {
                    (false, rest)
                } else if let Some(rest) = path.strip_prefix("instance.") {
                    (true, rest)
                } else {
                    return Err(format!(
                        "column {header:?}: expected id, name, checksum, entity.<field> or \
                         instance.<field>"
                    ));
                };
                let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    return Err(format!("column {header:?}: empty field name"));
                }
                CsvColumn::Field {
                    instance,
                    path,
                    kind,
                }
            }
        };
        if column != CsvColumn::Checksum && columns.contains(&column) {
            return Err(format!("column {header:?} appears twice"));
        }
        columns.push(column);
    }
    if !columns.contains(&CsvColumn::Id) {
        return Err("an \"id\" column is required".into());
    }
    if !columns.contains(&CsvColumn::Name) {
        return Err("a \"name\" column is required".into());
    }
    Ok(columns)
}

/// One CSV row as a record.
fn csv_record(columns: &[CsvColumn], row: &csv::StringRecord) -> Result<Record, String> {
    if row.len() != columns.len() {
        return Err(format!(
            "{} fields where the header has {}",
            row.len(),
            columns.len()
        ));
    }
    let mut record = Record::default();
    let mut entity = Map::new();
    let mut instance = Map::new();
    for (column, cell) in columns.iter().zip(row.iter()) {
        match column {
            CsvColumn::Id => record.id = cell.to_owned(),
            CsvColumn::Name => record.name = cell.to_owned(),
            CsvColumn::Checksum => record.checksum = cell.to_owned(),
            CsvColumn::Field {
                instance: is_instance,
                path,
                kind,
            } => {
                if cell.is_empty() {
                    continue;
                }
                let value = cell_value(cell, *kind).map_err(|e| {
                    let prefix = if *is_instance { "instance" } else { "entity" };
                    format!("{prefix}.{}: {e}", path.join("."))
                })?;
                let target = if *is_instance {
                    &mut instance
                } else {
                    &mut entity
                };
                insert_path(target, path, value)?;
            }
        }
    }
    record.entity = Some(map_to_struct(entity));
    if !instance.is_empty() {
        record.instance = Some(map_to_struct(instance));
    }
    Ok(record)
}

fn cell_value(cell: &str, kind: CellType) -> Result<Value, String> {
    match kind {
        CellType::String => Ok(Value::String(cell.to_owned())),
        CellType::Infer => Ok(match cell {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => match serde_json::from_str::<serde_json::Number>(cell) {
                Ok(n) => Value::Number(n),
                Err(_) => Value::String(cell.to_owned()),
            },
        }),
        CellType::Number => serde_json::from_str::<serde_json::Number>(cell)
            .map(Value::Number)
            .map_err(|_| format!("{cell:?} is not a number")),
        CellType::Integer => cell
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{cell:?} is not an integer")),
        CellType::Boolean => match cell {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{cell:?} is not true or false")),
        },
        CellType::Json => serde_json::from_str(cell).map_err(|e| format!("invalid JSON: {e}")),
    }
}

fn insert_path(
    target: &mut Map<String, Value>,
    path: &[String],
    value: Value,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut map = target;
    for (depth, key) in parents.iter().enumerate() {
        let slot = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        map = match slot {
            Value::Object(m) => m,
            _ => {
                return Err(format!(
                    "{} is both a value and an object",
                    path[..=depth].join(".")
                ))
            }
        };
    }
    map.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_grpc::convert::struct_to_json;

    fn read_all(text: &str, format: InputFormat) -> Vec<Item> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("input");
        std::fs::write(&path, text).expect("write");
        let mut reader = RecordReader::open(&path, format).expect("open");
        let mut items = Vec::new();
        while let Some(item) = reader.next_item().expect("read") {
            items.push(item);
        }
        items
    }

    fn json_of(record: &Record) -> Value {
        serde_json::json!({
            "id": record.id,
            "name": record.name,
            "entity": record.entity.clone().map(|s| struct_to_json(s).expect("finite")),
            "instance": record.instance.clone().map(|s| struct_to_json(s).expect("finite")),
        })
    }

    #[test]
    fn ndjson_lines_keep_their_line_numbers_and_bad_lines_are_items() {
        let items = read_all(
            "{\"id\":\"GB\",\"name\":\"UK\",\"entity\":{\"population\":1}}\n\n not json\n{\"name\":\"x\"}\n[1]\n",
            InputFormat::Ndjson,
        );
        let lines: Vec<u64> = items.iter().map(|i| i.line).collect();
        assert_eq!(lines, [1, 3, 4, 5]);
        assert_eq!(items[0].record.as_ref().expect("valid").id, "GB");
        assert!(items[1]
            .record
            .as_ref()
            .expect_err("bad")
            .starts_with("invalid JSON"));
        assert_eq!(
            items[2].record.as_ref().expect_err("no id"),
            "missing \"id\""
        );
        assert_eq!(
            items[3].record.as_ref().expect_err("array"),
            "a line must be a JSON object"
        );
    }

    #[test]
    fn csv_headers_map_to_typed_nested_fields() {
        let items = read_all(
            "id,name,entity.code:string,entity.population,entity.currency.code,entity.eu,instance.note\n\
             GB,United Kingdom,44,66040229,GBP,false,\n\
             FR,France,007,1.5,EUR,true,hello\n",
            InputFormat::Csv,
        );
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].line, 2);
        assert_eq!(
            json_of(items[0].record.as_ref().expect("valid")),
            serde_json::json!({"id": "GB", "name": "United Kingdom", "instance": null,
                "entity": {"code": "44", "population": 66040229, "currency": {"code": "GBP"}, "eu": false}})
        );
        assert_eq!(
            json_of(items[1].record.as_ref().expect("valid")),
            serde_json::json!({"id": "FR", "name": "France", "instance": {"note": "hello"},
                "entity": {"code": "007", "population": 1.5, "currency": {"code": "EUR"}, "eu": true}})
        );
    }

    #[test]
    fn csv_bad_cells_and_short_rows_are_invalid_records() {
        let items = read_all(
            "id,name,entity.population:integer\nA,a,12\nB,b,many\nC,c\n",
            InputFormat::Csv,
        );
        assert!(items[0].record.is_ok());
        assert_eq!(items[1].line, 3);
        assert_eq!(
            items[1].record.as_ref().expect_err("bad"),
            "entity.population: \"many\" is not an integer"
        );
        assert_eq!(items[2].line, 4);
        assert!(items[2].record.is_err());
    }

    #[test]
    fn csv_headers_are_checked() {
        let headers = |h: &[&str]| csv_columns(&csv::StringRecord::from(h.to_vec()));
        assert!(headers(&["id", "name", "entity.x"]).is_ok());
        assert!(headers(&["name"]).expect_err("no id").contains("\"id\""));
        assert!(headers(&["id", "name", "population"])
            .expect_err("unknown")
            .contains("entity.<field>"));
        assert!(headers(&["id", "name", "entity.x:date"])
            .expect_err("type")
            .contains("unknown type"));
    }
}
