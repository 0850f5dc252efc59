//! Protobuf <-> domain for sources, deltas and edits (SPEC.md §4.3, §4.4, §5).

use crate::{import_result_to_proto, required};
use prost_types::Duration as PbDuration;
use std::time::Duration;
use tributary_core::model::StoredRecord;
use tributary_core::record::RecordInput;
use tributary_core::source::secrets::{redact, redact_cursor};
use tributary_core::source::service::SourceInput;
use tributary_core::source::{Schedule, Source, SourceKind, SourceState, SourceStatus};
use tributary_core::{Error, Result};
use tributary_grpc::convert::{json_text_to_struct, json_to_struct, struct_arg_to_json, timestamp};
use tributary_proto::admin::v1 as pb;

fn duration(field: &str, d: Option<PbDuration>) -> Result<Option<Duration>> {
    d.map(|d| {
        if d.seconds < 0 || d.nanos < 0 {
            return Err(Error::invalid(field, "must not be negative"));
        }
        Ok(Duration::new(d.seconds as u64, d.nanos as u32))
    })
    .transpose()
}

fn to_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn kind_from_proto(kind: i32) -> Result<Option<SourceKind>> {
    match pb::SourceKind::try_from(kind) {
        Ok(pb::SourceKind::Unspecified) => Ok(None),
        Ok(pb::SourceKind::HttpJson) => Ok(Some(SourceKind::HttpJson)),
        Ok(pb::SourceKind::Ndjson) => Ok(Some(SourceKind::Ndjson)),
        Ok(pb::SourceKind::Feed) => Ok(Some(SourceKind::Feed)),
        Ok(pb::SourceKind::Grpc) => Ok(Some(SourceKind::Grpc)),
        Err(_) => Err(Error::invalid(
            "source.kind",
            format!("{kind} is not a SourceKind"),
        )),
    }
}

fn kind_to_proto(kind: SourceKind) -> pb::SourceKind {
    match kind {
        SourceKind::HttpJson => pb::SourceKind::HttpJson,
        SourceKind::Ndjson => pb::SourceKind::Ndjson,
        SourceKind::Feed => pb::SourceKind::Feed,
        SourceKind::Grpc => pb::SourceKind::Grpc,
    }
}

/// A source as a caller sent it.
pub(crate) fn source_input(s: pb::Source) -> Result<SourceInput> {
    let schedule = match s.schedule {
        None => Schedule::Rest,
        Some(pb::source::Schedule::Interval(d)) => {
            Schedule::Interval(duration("source.interval", Some(d))?.unwrap_or_default())
        }
        Some(pb::source::Schedule::Cron(c)) => Schedule::Cron(c),
    };
    let json = |field: &str, v: Option<prost_types::Struct>| -> Result<serde_json::Value> {
        v.map(|s| struct_arg_to_json(field, s))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(SourceInput {
        kind: kind_from_proto(s.kind)?,
        config: json("source.config", s.config)?,
        mapping: json("source.mapping", s.mapping)?,
        schedule,
        burst_length: duration("source.burst_length", s.burst_length)?,
        burst_interval: duration("source.burst_interval", s.burst_interval)?,
        rest_length: duration("source.rest_length", s.rest_length)?,
        backoff: s
            .backoff
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                duration(&format!("source.backoff[{i}]"), Some(d)).map(Option::unwrap_or_default)
            })
            .collect::<Result<_>>()?,
        connector: s.connector,
        name: s.name,
        reject_removals_above_percent: s.reject_removals_above_percent,
        reject_empty: s.reject_empty,
        enabled: s.enabled,
    })
}

/// A source as the Admin API shows it: header values and URLs' secrets redacted.
pub(crate) fn source_to_proto(s: Source) -> pb::Source {
    pb::Source {
        kind: kind_to_proto(s.kind).into(),
        config: json_to_struct(redact(&s.config)),
        mapping: json_to_struct(s.mapping),
        schedule: match s.schedule {
            Schedule::Rest => None,
            Schedule::Interval(d) => Some(pb::source::Schedule::Interval(to_duration(d))),
            Schedule::Cron(c) => Some(pb::source::Schedule::Cron(c)),
        },
        burst_length: Some(to_duration(s.pacing.burst_length)),
        burst_interval: Some(to_duration(s.pacing.burst_interval)),
        rest_length: Some(to_duration(s.pacing.rest_length)),
        backoff: s.pacing.backoff.into_iter().map(to_duration).collect(),
        reject_removals_above_percent: s.reject_removals_above_percent,
        reject_empty: Some(s.reject_empty),
        enabled: Some(s.enabled),
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
        id: s.id,
        connector: s.connector,
        name: s.name,
    }
}

pub(crate) fn status_to_proto(s: SourceStatus) -> pb::SourceStatus {
    pb::SourceStatus {
        state: match s.state {
            SourceState::Idle => pb::SourceState::Idle,
            SourceState::Running => pb::SourceState::Running,
            SourceState::Resting => pb::SourceState::Resting,
            SourceState::Backoff => pb::SourceState::Backoff,
        }
        .into(),
        cursor: s.cursor.as_deref().map(redact_cursor).unwrap_or_default(),
        cycle_id: s.cycle_id.unwrap_or_default(),
        cycle_started_at: s.cycle_started_at.map(timestamp),
        attempts: s.attempts,
        last_error: s.last_error.unwrap_or_default(),
        last_run_at: s.last_run_at.map(timestamp),
        next_run_at: Some(timestamp(s.next_run_at)),
        lease_holder: s.lease_holder.unwrap_or_default(),
        lease_expires_at: s.lease_expires_at.map(timestamp),
        marks: s.marks,
        pages: s.counts.pages,
        created: s.counts.created,
        updated: s.counts.updated,
        unchanged: s.counts.unchanged,
        skipped: s.counts.skipped,
        failed: s.counts.failed,
        last_import_result: s.last_import_result.unwrap_or_default(),
        source_id: s.source_id,
    }
}

pub(crate) fn delta_records(records: Vec<pb::DeltaRecord>) -> Result<Vec<RecordInput>> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RecordInput {
                entity: r
                    .entity
                    .map(|e| struct_arg_to_json(&format!("added[{i}].entity"), e))
                    .transpose()?,
                instance: r
                    .instance
                    .map(|e| struct_arg_to_json(&format!("added[{i}].instance"), e))
                    .transpose()?,
                id: r.id,
                name: r.name,
                checksum: r.checksum,
            })
        })
        .collect()
}

pub(crate) fn edited_to_proto(r: StoredRecord) -> Result<pb::EditedRecord> {
    Ok(pb::EditedRecord {
        entity: Some(json_text_to_struct("entity", &r.entity)?),
        instance: Some(json_text_to_struct("instance", &r.instance)?),
        updated_at: Some(timestamp(r.updated_at)),
        edited_at: r.edited_at.map(timestamp),
        key: r.key,
        entity_type: r.entity_type,
        connector: r.connector,
        id: r.id,
        name: r.name,
        checksum: r.checksum,
        version: r.version,
    })
}

pub(crate) fn cancel_to_proto(
    result: Option<tributary_core::model::ImportResult>,
) -> pb::CancelSourceResponse {
    pb::CancelSourceResponse {
        import_result: result.map(import_result_to_proto),
    }
}

pub(crate) fn required_source(s: Option<pb::Source>) -> Result<pb::Source> {
    required("source", s)
}
