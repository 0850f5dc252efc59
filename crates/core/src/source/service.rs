//! The source admin domain (SPEC.md §4.3, §4.4, §5): source CRUD and control, event deltas,
//! and edits inside Tributary. The engine that runs cycles is `tributary-ingest`.

use crate::clock::now_micros;
use crate::ids::{new_id, record_key};
use crate::limits::Limits;
use crate::model::{ImportResult, Page, StoredRecord};
use crate::page::{decode_token, next_token};
use crate::record::KeyedId;
use crate::record::{check_delete_ids, prepare_batch, RecordInput, RecordOwner};
use crate::schema::EntitySchema;
use crate::source::kinds::{keep_secrets, KindConfig, Pagination};
use crate::source::store::RecordEdit;
use crate::source::AllowedDirs;
use crate::source::{DeltaTotals, Mapping, Pacing, Schedule, Source, SourceKind, SourceStatus};
use crate::store::Store;
use crate::{Error, Result, Violation};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What a caller gives to create or update a source; `None` means the default (create) or the
/// current value (update).
#[derive(Debug, Clone, Default)]
pub struct SourceInput {
    pub connector: String,
    pub name: String,
    pub kind: Option<SourceKind>,
    pub config: Value,
    pub mapping: Value,
    pub schedule: Schedule,
    pub burst_length: Option<Duration>,
    pub burst_interval: Option<Duration>,
    pub rest_length: Option<Duration>,
    /// Empty means the default backoff.
    pub backoff: Vec<Duration>,
    pub reject_removals_above_percent: Option<f64>,
    pub reject_empty: Option<bool>,
    pub enabled: Option<bool>,
}

/// Called when a source becomes due outside the engine's own timing (created, triggered), so
/// an engine in this process looks at once instead of at its next heartbeat.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Source use cases over a store.
#[derive(Clone)]
pub struct SourceService {
    store: Arc<dyn Store>,
    limits: Limits,
    allowed_dirs: AllowedDirs,
    waker: Option<Waker>,
}

fn check_pacing(source: &Source, violations: &mut Vec<Violation>) {
    if source.pacing.burst_length.is_zero() {
        violations.push(Violation::new("source.burst_length", "must be positive"));
    }
    if let Some(p) = source.reject_removals_above_percent {
        if !(0.0..=100.0).contains(&p) {
            violations.push(Violation::new(
                "source.reject_removals_above_percent",
                "must be between 0 and 100",
            ));
        }
    }
}

/// The rules a kind's settings follow on this server (beyond their shape): a file path only
/// under an allowed directory, and pages no larger than a contribution batch, the unit the
/// store writes in one transaction.
fn check_server_rules(
    config: &KindConfig,
    limits: &Limits,
    allowed_dirs: &AllowedDirs,
    violations: &mut Vec<Violation>,
) {
    let max = limits.max_batch_records as u64;
    let mut too_large = |field: &str, size: u64| {
        if size > max {
            violations.push(Violation::new(
                field,
                format!(
                    "{size} is above the largest page, {max} records (limits.max_batch_records)"
                ),
            ));
        }
    };
    match config {
        KindConfig::Ndjson(c) => {
            too_large("source.config.page_size", c.page_size);
            if let Some(path) = &c.path {
                if let Err(Error::InvalidArgument(v)) =
                    allowed_dirs.check_setting("source.config.path", path)
                {
                    violations.extend(v);
                }
            }
        }
        KindConfig::HttpJson(c) => match &c.pagination {
            Pagination::Offset { limit, .. } => too_large("source.config.pagination.limit", *limit),
            Pagination::Page {
                size: Some(size), ..
            } => too_large("source.config.pagination.size", *size),
            _ => {}
        },
        KindConfig::Feed(_) | KindConfig::Grpc(_) => {}
    }
}

fn check_source(source: &Source, limits: &Limits, allowed_dirs: &AllowedDirs) -> Result<()> {
    let mut violations = Vec::new();
    let chars = source.name.chars().count();
    if chars == 0 || chars > 200 {
        violations.push(Violation::new("source.name", "must be 1..200 characters"));
    }
    crate::text::check_no_nul("source.name", &source.name, &mut violations);
    crate::text::check_no_nul("source.connector", &source.connector, &mut violations);
    crate::text::check_json_no_nul("source.config", &source.config, &mut violations);
    crate::text::check_json_no_nul("source.mapping", &source.mapping, &mut violations);
    check_pacing(source, &mut violations);
    match KindConfig::parse("source.config", source.kind, &source.config) {
        Ok(config) => check_server_rules(&config, limits, allowed_dirs, &mut violations),
        Err(Error::InvalidArgument(v)) => violations.extend(v),
        Err(_) => {}
    }
    for check in [
        Mapping::compile_for(source.kind, "source.mapping", &source.mapping).map(|_| ()),
        source.schedule.check("source.schedule"),
    ] {
        if let Err(Error::InvalidArgument(v)) = check {
            violations.extend(v);
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

impl SourceService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            store,
            limits,
            allowed_dirs: AllowedDirs::default(),
            waker: None,
        }
    }

    /// Lets `ndjson` sources read files under `dirs` (none by default).
    pub fn with_allowed_dirs(mut self, dirs: AllowedDirs) -> Self {
        self.allowed_dirs = dirs;
        self
    }

    /// Also calls `waker` whenever a source becomes due (see [`Waker`]).
    pub fn with_waker(mut self, waker: Waker) -> Self {
        self.waker = Some(waker);
        self
    }

    fn wake(&self) {
        if let Some(wake) = &self.waker {
            wake();
        }
    }

    /// Creates a source owned by `input.connector`, due at once when enabled.
    pub async fn create_source(&self, input: SourceInput) -> Result<Source> {
        let kind = input
            .kind
            .ok_or_else(|| Error::invalid("source.kind", "is required"))?;
        if input.connector.is_empty() {
            return Err(Error::invalid("source.connector", "is required"));
        }
        let defaults = Pacing::default();
        let now = now_micros();
        let source = Source {
            id: new_id(),
            connector: input.connector,
            name: input.name,
            kind,
            config: input.config,
            mapping: input.mapping,
            schedule: input.schedule,
            pacing: Pacing {
                burst_length: input.burst_length.unwrap_or(defaults.burst_length),
                burst_interval: input.burst_interval.unwrap_or(defaults.burst_interval),
                rest_length: input.rest_length.unwrap_or(defaults.rest_length),
                backoff: if input.backoff.is_empty() {
                    defaults.backoff
                } else {
                    input.backoff
                },
            },
            reject_removals_above_percent: input.reject_removals_above_percent,
            reject_empty: input.reject_empty.unwrap_or(true),
            enabled: input.enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        check_source(&source, &self.limits, &self.allowed_dirs)?;
        self.store.create_source(&source).await?;
        self.wake();
        Ok(source)
    }

    /// The source `id`.
    pub async fn get_source(&self, id: &str) -> Result<Source> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.get_source(id).await
    }

    /// A page of sources, optionally of one connector.
    pub async fn list_sources(
        &self,
        connector: Option<&str>,
        limit: u32,
        token: &str,
    ) -> Result<Page<Source>> {
        let items = self
            .store
            .list_sources(connector, decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|s| s.id.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Replaces a source's definition. Header values and URLs sent back redacted keep their
    /// stored value (see [`crate::source::secrets`]).
    pub async fn update_source(&self, id: &str, input: SourceInput) -> Result<Source> {
        let current = self.store.get_source(id).await?;
        if !input.connector.is_empty() && input.connector != current.connector {
            return Err(Error::invalid(
                "source.connector",
                "a source's connector cannot change",
            ));
        }
        let kind = input.kind.unwrap_or(current.kind);
        let mut config = input.config;
        if config.is_null() {
            config = current.config.clone();
        } else {
            keep_secrets(&mut config, &current.config);
        }
        let updated = Source {
            name: input.name,
            kind,
            config,
            mapping: if input.mapping.is_null() {
                current.mapping.clone()
            } else {
                input.mapping
            },
            schedule: input.schedule,
            pacing: Pacing {
                burst_length: input.burst_length.unwrap_or(current.pacing.burst_length),
                burst_interval: input
                    .burst_interval
                    .unwrap_or(current.pacing.burst_interval),
                rest_length: input.rest_length.unwrap_or(current.pacing.rest_length),
                backoff: if input.backoff.is_empty() {
                    current.pacing.backoff.clone()
                } else {
                    input.backoff
                },
            },
            reject_removals_above_percent: input.reject_removals_above_percent,
            reject_empty: input.reject_empty.unwrap_or(current.reject_empty),
            enabled: input.enabled.unwrap_or(current.enabled),
            updated_at: now_micros(),
            ..current
        };
        check_source(&updated, &self.limits, &self.allowed_dirs)?;
        let stored = self.store.update_source(&updated).await?;
        self.wake();
        Ok(stored)
    }

    /// Deletes a source; its records stay.
    pub async fn delete_source(&self, id: &str) -> Result<()> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.delete_source(id).await
    }

    /// Runs a source now, outside its schedule.
    pub async fn trigger_source(&self, id: &str) -> Result<SourceStatus> {
        crate::text::refuse_nul([("id", id)])?;
        let status = self.store.trigger_source(id, now_micros()).await?;
        self.wake();
        Ok(status)
    }

    /// Cancels a source's current cycle; the next one starts per its schedule.
    pub async fn cancel_source(&self, id: &str) -> Result<Option<ImportResult>> {
        crate::text::refuse_nul([("id", id)])?;
        let source = self.store.get_source(id).await?;
        let now = now_micros();
        let next = source
            .schedule
            .next_run(now, now, source.pacing.rest_length);
        self.store.cancel_source(id, now, next).await
    }

    /// A source's runtime state.
    pub async fn source_status(&self, id: &str) -> Result<SourceStatus> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.source_status(id).await
    }

    /// Applies an event delta (§5): `added` records upserted under the connector's write policy
    /// and counted as seen in the current cycle, `removed` ids deleted. Atomic: one invalid
    /// record rejects the whole delta.
    pub async fn push_delta(
        &self,
        source_id: &str,
        added: Vec<RecordInput>,
        removed: Vec<String>,
    ) -> Result<DeltaTotals> {
        let total = added.len() + removed.len();
        if total > self.limits.max_batch_records {
            return Err(Error::ResourceExhausted {
                subject: "records".into(),
                description: format!(
                    "{total} records and ids in one delta; at most {} are allowed",
                    self.limits.max_batch_records
                ),
            });
        }
        let source = self.store.get_source(source_id).await?;
        let connector = self.store.get_connector(&source.connector).await?;
        let entity_type = self.store.get_entity_type(&connector.entity_type).await?;
        let schema = EntitySchema::compile(&entity_type.schema)?;
        let owner = RecordOwner {
            entity_type: &connector.entity_type,
            connector: &connector.id,
        };
        check_delete_ids(&removed).map_err(|e| rename_violations(e, "ids[", "removed["))?;
        let added = prepare_batch(owner, &schema, self.limits.max_record_bytes, added)
            .map_err(|e| rename_violations(e, "records[", "added["))?;
        let removed: Vec<KeyedId> = removed
            .into_iter()
            .map(|id| KeyedId {
                key: record_key(&connector.entity_type, &connector.id, &id),
                id,
            })
            .collect();
        self.store
            .push_source_delta(&source, &connector, &added, &removed, now_micros())
            .await
    }

    /// Edits a record inside Tributary (§4.4): the given attributes replace the stored ones, the
    /// entity is validated against its type's schema, and `edited_at` is set, so a connector
    /// under `importer_update_unless_edited` no longer overwrites it.
    pub async fn edit_record(
        &self,
        key: &str,
        name: Option<String>,
        entity: Option<Value>,
        instance: Option<Value>,
    ) -> Result<StoredRecord> {
        crate::ids::check_record_key("key", key)?;
        let record = self
            .store
            .get_record(key)
            .await?
            .ok_or_else(|| Error::not_found(crate::error::ResourceKind::Record, key))?;
        let entity_type = self.store.get_entity_type(&record.entity_type).await?;
        let schema = EntitySchema::compile(&entity_type.schema)?;
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| Error::Internal(format!("stored {what} of {key} is not JSON: {e}")))
        };
        let input = RecordInput {
            id: record.id.clone(),
            name: name.unwrap_or(record.name),
            entity: Some(match entity {
                Some(e) => e,
                None => parse("entity", &record.entity)?,
            }),
            instance: Some(match instance {
                Some(i) => i,
                None => parse("instance", &record.instance)?,
            }),
            // The edit changes the content, so the checksum is Tributary's own from now on.
            checksum: String::new(),
        };
        let owner = RecordOwner {
            entity_type: &record.entity_type,
            connector: &record.connector,
        };
        let mut prepared = prepare_batch(owner, &schema, self.limits.max_record_bytes, vec![input])
            .map_err(|e| rename_violations(e, "records[0].", ""))?;
        let prepared = prepared
            .pop()
            .ok_or_else(|| Error::Internal("an edit prepared no record".into()))?;
        self.store
            .edit_record(&RecordEdit {
                key: key.to_owned(),
                name: prepared.name,
                entity: prepared.entity,
                instance: prepared.instance,
                checksum: prepared.checksum,
                now: now_micros(),
            })
            .await
    }
}

/// Renames the field prefix of an `InvalidArgument`'s violations (`records[2]` → `added[2]`), so
/// they name the request's own fields.
fn rename_violations(error: Error, from: &str, to: &str) -> Error {
    match error {
        Error::InvalidArgument(violations) => Error::InvalidArgument(
            violations
                .into_iter()
                .map(|v| Violation {
                    field: match v.field.strip_prefix(from) {
                        Some(rest) => format!("{to}{rest}"),
                        None => v.field,
                    },
                    description: v.description,
                })
                .collect(),
        ),
        other => other,
    }
}
