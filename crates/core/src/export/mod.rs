//! Exports (SPEC.md §7): an entity type's visible records, optionally filtered, written as NDJSON,
//! JSON or CSV to a directory (`file://`) or an S3 bucket (`s3://`), on demand or on a schedule.
//!
//! This module holds what an export is and its rules; [`format`] turns records into bytes;
//! [`store`] is what a database keeps. The runner that reads pages and writes objects is
//! `tributary-ingest`'s (it needs an object-store client, which the domain does not).

pub mod format;
pub mod service;
pub mod store;

use crate::clock::Micros;
use crate::model::ImportStatus;
use crate::source::Schedule;
use crate::{Error, Result, Violation};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

crate::model::string_enum! {
    /// How an export writes records.
    ExportFormat { Ndjson = "ndjson", Json = "json", Csv = "csv" }
}

impl ExportFormat {
    /// The file extension of a run's file or object.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

/// An export's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub id: String,
    /// Unique; part of every file or object name the export writes.
    pub name: String,
    pub entity_type: String,
    /// The Catalog filter language (JSON text); empty for every record.
    pub filter: String,
    pub format: ExportFormat,
    /// `file:///dir/prefix` or `s3://bucket/prefix`.
    pub destination: String,
    /// `Rest` means no schedule: the export runs only on `RunExport`.
    pub schedule: Schedule,
    pub enabled: bool,
    pub created_at: Micros,
    pub updated_at: Micros,
}

impl Export {
    /// When a scheduled export is next due after a run that started at `started` and ended at
    /// `ended`; `None` when it has no schedule or is disabled.
    pub fn next_run(&self, started: Micros, ended: Micros) -> Option<Micros> {
        match self.schedule {
            Schedule::Rest => None,
            _ if !self.enabled => None,
            // A cron expression that never matches again leaves the export unscheduled.
            ref s => Some(s.next_run(started, ended, Duration::from_secs(100 * 365 * 86_400))),
        }
    }

    /// When a newly created or updated export is first due: interval exports at once, cron
    /// exports at the next matching time.
    pub fn first_run(&self, now: Micros) -> Option<Micros> {
        match self.schedule {
            Schedule::Interval(_) if self.enabled => Some(now),
            _ => self.next_run(now, now),
        }
    }
}

/// One run of an export, as reported by `ListExportRuns`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRun {
    pub id: String,
    pub export_id: String,
    /// `Succeeded` or `Failed`.
    pub status: ImportStatus,
    pub started_at: Micros,
    pub ended_at: Micros,
    pub records: u64,
    pub bytes: u64,
    /// The exact `file://` or `s3://` URL written (nothing is there after a failed run).
    pub location: String,
    pub error: Option<String>,
}

/// Where an export's runs are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local directory (created when missing).
    File { dir: PathBuf },
    /// A bucket and a key prefix without leading or trailing `/` (possibly empty).
    S3 { bucket: String, prefix: String },
}

/// The longest export name.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest destination URL.
pub const MAX_DESTINATION_BYTES: usize = 2048;
/// The shortest schedule interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

impl Destination {
    /// Parses a destination URL; `field` names it in violations. A `file://` directory must be
    /// absolute, without `.` or `..` components, and under one of `allowed_dirs`.
    pub fn parse(field: &str, text: &str, allowed_dirs: &[PathBuf]) -> Result<Destination> {
        let bad = |why: &str| Error::invalid(field, why.to_owned());
        if text.len() > MAX_DESTINATION_BYTES {
            return Err(bad(&format!(
                "must be at most {MAX_DESTINATION_BYTES} bytes"
            )));
        }
        let url = url::Url::parse(text).map_err(|e| {
            bad(&format!(
                "is not a URL ({e}); use file:///dir or s3://bucket/prefix"
            ))
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or a fragment"));
        }
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad("a file:// URL names no host: file:///dir"));
                }
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("is not an absolute file path"))?;
                if !dir.is_absolute()
                    || dir
                        .components()
                        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
                {
                    return Err(bad("must be an absolute path without . or .."));
                }
                if !dir_allowed(&dir, allowed_dirs) {
                    return Err(bad(&format!(
                        "is not under a directory exports may write to (export.allowed_dirs: {})",
                        allowed_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Ok(Destination::File { dir })
            }
            "s3" => {
                let bucket = url.host_str().unwrap_or_default().to_owned();
                if bucket.is_empty() {
                    return Err(bad("names no bucket: s3://bucket/prefix"));
                }
                if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
                    return Err(bad(
                        "must not carry credentials or a port; use s3://bucket/prefix",
                    ));
                }
                let path = percent_decode(url.path()).ok_or_else(|| bad("is not UTF-8"))?;
                let prefix = path.trim_matches('/').to_owned();
                if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                    return Err(bad("the prefix must not have empty, . or .. segments"));
                }
                Ok(Destination::S3 { bucket, prefix })
            }
            other => Err(bad(&format!(
                "scheme {other:?} is not supported; use file:///dir or s3://bucket/prefix"
            ))),
        }
    }

    /// The URL of the object `file_name` under this destination.
    pub fn location(&self, file_name: &str) -> String {
        match self {
            Destination::File { dir } => url::Url::from_file_path(dir.join(file_name))
                .map(String::from)
                .unwrap_or_else(|()| format!("file://{}", dir.join(file_name).display())),
            Destination::S3 { bucket, prefix } if prefix.is_empty() => {
                format!("s3://{bucket}/{file_name}")
            }
            Destination::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{file_name}"),
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The name of a run's file or object: `<export name>-<UTC time>.<ext>`, with the time as
/// `20261201T031500.123456Z` (fixed width, to the microsecond), so a destination's runs sort by
/// time and two runs started in the same second never share a name.
pub fn file_name(export_name: &str, format: ExportFormat, started: Micros) -> String {
    let at = chrono::DateTime::from_timestamp_micros(started).unwrap_or_default();
    format!(
        "{export_name}-{}.{}",
        at.format("%Y%m%dT%H%M%S%.6fZ"),
        format.extension()
    )
}

/// Checks an export's name, filter, destination and schedule (not whether its entity type
/// exists: that is the store's). Every problem is one violation naming the field.
pub fn check_export(export: &Export, allowed_dirs: &[PathBuf]) -> Result<()> {
    let mut violations = Vec::new();
    let chars = export.name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        violations.push(Violation::new(
            "export.name",
            format!("must be 1..{MAX_NAME_CHARS} characters"),
        ));
    } else if export.name.starts_with('.')
        || !export
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        violations.push(Violation::new(
            "export.name",
            "may hold only letters, digits, '-', '_' and '.', and must not start with '.' \
             (it names files and objects)",
        ));
    }
    if export.entity_type.is_empty() {
        violations.push(Violation::new("export.entity_type", "is required"));
    }
    crate::text::check_no_nul("export.entity_type", &export.entity_type, &mut violations);
    crate::text::check_no_nul("export.filter", &export.filter, &mut violations);
    crate::text::check_no_nul("export.destination", &export.destination, &mut violations);
    let mut extend = |check: Result<()>, prefix: Option<&str>| {
        if let Err(Error::InvalidArgument(v)) = check {
            violations.extend(v.into_iter().map(|v| match prefix {
                Some(p) => Violation::new(format!("{p}{}", v.field), v.description),
                None => v,
            }));
        }
    };
    if !export.filter.contains('\0') {
        extend(
            crate::query::ListQuery::parse(&export.entity_type, &export.filter, "").map(|_| ()),
            Some("export."),
        );
    }
    if !export.destination.contains('\0') {
        extend(
            Destination::parse("export.destination", &export.destination, allowed_dirs).map(|_| ()),
            None,
        );
    }
    extend(check_schedule(&export.schedule), None);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

fn check_schedule(schedule: &Schedule) -> Result<()> {
    if let Schedule::Interval(d) = schedule {
        if *d < MIN_INTERVAL {
            return Err(Error::invalid(
                "export.interval",
                "must be at least one minute",
            ));
        }
    }
    // Names `export.interval` / `export.cron`, the oneof's fields.
    schedule.check("export")
}

/// Whether `dir` is a directory an export may write to, given `allowed_dirs`.
pub fn dir_allowed(dir: &Path, allowed_dirs: &[PathBuf]) -> bool {
    allowed_dirs.iter().any(|allowed| dir.starts_with(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export() -> Export {
        Export {
            id: "e1".into(),
            name: "cities".into(),
            entity_type: "city".into(),
            filter: String::new(),
            format: ExportFormat::Ndjson,
            destination: "file:///data/out".into(),
            schedule: Schedule::Rest,
            enabled: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn fields(result: Result<()>) -> Vec<String> {
        match result {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn destinations_are_file_urls_under_allowed_dirs_or_s3_buckets() {
        let allowed = [PathBuf::from("/data")];
        assert_eq!(
            Destination::parse("d", "file:///data/out/x", &allowed).ok(),
            Some(Destination::File {
                dir: PathBuf::from("/data/out/x")
            })
        );
        assert_eq!(
            Destination::parse("d", "s3://bucket/a/b/", &allowed).ok(),
            Some(Destination::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            })
        );
        assert_eq!(
            Destination::parse("d", "s3://bucket", &allowed).ok(),
            Some(Destination::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            })
        );
        for bad in [
            "http://x/y",
            "file:///etc",
            "file:///data/../etc",
            "s3:///prefix",
            "s3://b/a//c",
            "s3://user:pw@b/c",
            "not a url",
        ] {
            assert!(Destination::parse("d", bad, &allowed).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_files_are_named_so_that_runs_sort_by_time() {
        // 2023-11-14T22:13:20Z
        let at = 1_700_000_000_000_000;
        assert_eq!(
            file_name("cities", ExportFormat::Csv, at),
            "cities-20231114T221320.000000Z.csv"
        );
        // Runs in the same second get different names, in the order they started.
        let later = file_name("cities", ExportFormat::Csv, at + 7);
        assert_eq!(later, "cities-20231114T221320.000007Z.csv");
        assert!(file_name("cities", ExportFormat::Csv, at) < later);
        let d = Destination::S3 {
            bucket: "b".into(),
            prefix: "p/q".into(),
        };
        assert_eq!(d.location("f.ndjson"), "s3://b/p/q/f.ndjson");
        let d = Destination::File {
            dir: PathBuf::from("/data/out"),
        };
        assert_eq!(d.location("f.ndjson"), "file:///data/out/f.ndjson");
    }

    #[test]
    fn bad_exports_name_each_bad_field() {
        let allowed = [PathBuf::from("/data")];
        assert!(check_export(&export(), &allowed).is_ok());
        let bad = Export {
            name: "a/b".into(),
            filter: "{nope".into(),
            destination: "ftp://x".into(),
            schedule: Schedule::Interval(Duration::from_secs(5)),
            ..export()
        };
        assert_eq!(
            fields(check_export(&bad, &allowed)),
            [
                "export.name",
                "export.filter",
                "export.destination",
                "export.interval"
            ]
        );
        let bad = Export {
            name: "x\0".into(),
            destination: "file:///data/\0".into(),
            schedule: Schedule::Cron("nope".into()),
            ..export()
        };
        assert_eq!(
            fields(check_export(&bad, &allowed)),
            ["export.name", "export.destination", "export.cron"]
        );
        let long = Export {
            name: "a".repeat(MAX_NAME_CHARS + 1),
            ..export()
        };
        assert_eq!(fields(check_export(&long, &allowed)), ["export.name"]);
    }

    #[test]
    fn interval_exports_are_due_at_once_and_unscheduled_ones_never() {
        let every = Export {
            schedule: Schedule::Interval(Duration::from_secs(60)),
            ..export()
        };
        assert_eq!(every.first_run(5), Some(5));
        assert_eq!(every.next_run(0, 1), Some(60_000_000));
        assert_eq!(export().first_run(5), None);
        let disabled = Export {
            enabled: false,
            ..every
        };
        assert_eq!(disabled.first_run(5), None);
    }
}
