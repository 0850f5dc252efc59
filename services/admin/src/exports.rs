//! Protobuf <-> domain for exports and their runs (SPEC.md §7).

use crate::{import_status_to_proto, required};
use prost_types::Duration as PbDuration;
use std::time::Duration;
use tributary_core::export::service::ExportInput;
use tributary_core::export::{Export, ExportFormat, ExportRun};
use tributary_core::source::Schedule;
use tributary_core::{Error, Result};
use tributary_grpc::convert::timestamp;
use tributary_proto::admin::v1 as pb;

fn format_from_proto(format: i32) -> Result<Option<ExportFormat>> {
    match pb::ExportFormat::try_from(format) {
        Ok(pb::ExportFormat::Unspecified) => Ok(None),
        Ok(pb::ExportFormat::Ndjson) => Ok(Some(ExportFormat::Ndjson)),
        Ok(pb::ExportFormat::Json) => Ok(Some(ExportFormat::Json)),
        Ok(pb::ExportFormat::Csv) => Ok(Some(ExportFormat::Csv)),
        Err(_) => Err(Error::invalid(
            "export.format",
            format!("{format} is not an ExportFormat"),
        )),
    }
}

fn format_to_proto(format: ExportFormat) -> pb::ExportFormat {
    match format {
        ExportFormat::Ndjson => pb::ExportFormat::Ndjson,
        ExportFormat::Json => pb::ExportFormat::Json,
        ExportFormat::Csv => pb::ExportFormat::Csv,
    }
}

/// An export as a caller sent it.
pub(crate) fn export_input(e: pb::Export) -> Result<ExportInput> {
    let schedule = match e.schedule {
        None => Schedule::Rest,
        Some(pb::export::Schedule::Interval(d)) => {
            if d.seconds < 0 || d.nanos < 0 {
                return Err(Error::invalid("export.interval", "must not be negative"));
            }
            Schedule::Interval(Duration::new(d.seconds as u64, d.nanos as u32))
        }
        Some(pb::export::Schedule::Cron(c)) => Schedule::Cron(c),
    };
    Ok(ExportInput {
        format: format_from_proto(e.format)?,
        name: e.name,
        entity_type: e.entity_type,
        filter: e.filter,
        destination: e.destination,
        schedule,
        enabled: e.enabled,
    })
}

pub(crate) fn export_to_proto(e: Export) -> pb::Export {
    pb::Export {
        format: format_to_proto(e.format).into(),
        schedule: match e.schedule {
            Schedule::Rest => None,
            Schedule::Interval(d) => Some(pb::export::Schedule::Interval(PbDuration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos() as i32,
            })),
            Schedule::Cron(c) => Some(pb::export::Schedule::Cron(c)),
        },
        enabled: Some(e.enabled),
        created_at: Some(timestamp(e.created_at)),
        updated_at: Some(timestamp(e.updated_at)),
        id: e.id,
        name: e.name,
        entity_type: e.entity_type,
        filter: e.filter,
        destination: e.destination,
    }
}

pub(crate) fn run_to_proto(r: ExportRun) -> pb::ExportRun {
    pb::ExportRun {
        status: import_status_to_proto(r.status).into(),
        started_at: Some(timestamp(r.started_at)),
        ended_at: Some(timestamp(r.ended_at)),
        error: r.error.unwrap_or_default(),
        id: r.id,
        export_id: r.export_id,
        records: r.records,
        bytes: r.bytes,
        location: r.location,
    }
}

pub(crate) fn required_export(e: Option<pb::Export>) -> Result<pb::Export> {
    required("export", e)
}
