//! The contribution domain (SPEC.md §2.1, §2.2): authenticate a connector, validate its batches,
//! and drive its sessions through the store.

use crate::auth::hash_token;
use crate::clock::{now_micros, Micros};
use crate::ids::record_key;
use crate::limits::Limits;
use crate::model::{Connector, RecordOutcome, SessionMode};
use crate::record::{check_delete_ids, prepare_batch, RecordInput, RecordOwner};
use crate::schema::{EntitySchema, SchemaCache};
use crate::store::{ClosedSession, KeyedId, OpenedSession, SessionCall, Store};
use crate::{Error, Result};
use std::sync::Arc;

/// An authenticated connector.
#[derive(Debug, Clone)]
pub struct Contributor {
    pub connector: Connector,
    /// Its entity type's schema version when it authenticated.
    pub schema_version: u32,
}

/// Contribution use cases over a store.
#[derive(Clone)]
pub struct ContributionService {
    store: Arc<dyn Store>,
    schemas: SchemaCache,
    limits: Limits,
}

impl ContributionService {
    /// A service over `store` with `limits`.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            store,
            schemas: SchemaCache::default(),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The connector whose token this is; `Unauthenticated` for none or an unknown one.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Contributor> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthenticated)?;
        match self.store.connector_by_token(&hash_token(token)).await? {
            Some((connector, schema_version)) => Ok(Contributor {
                connector,
                schema_version,
            }),
            None => Err(Error::Unauthenticated),
        }
    }

    /// Opens a session of `mode`, superseding an open accrue/replace session.
    pub async fn open_session(
        &self,
        who: &Contributor,
        mode: SessionMode,
    ) -> Result<OpenedSession> {
        self.store
            .open_session(&who.connector, mode, now_micros())
            .await
    }

    /// Validates and applies (or stages) an upsert batch; one outcome per record.
    pub async fn upsert(
        &self,
        who: &Contributor,
        session_id: &str,
        records: Vec<RecordInput>,
    ) -> Result<Vec<RecordOutcome>> {
        self.check_batch_size(records.len(), "records")?;
        let schema = self.schema(who).await?;
        let owner = RecordOwner {
            entity_type: &who.connector.entity_type,
            connector: &who.connector.id,
        };
        let prepared = prepare_batch(owner, &schema, self.limits.max_record_bytes, records)?;
        let now = now_micros();
        let outcomes = self
            .store
            .upsert_batch(&self.call(who, session_id, now)?, &prepared)
            .await?;
        Ok(prepared
            .into_iter()
            .zip(outcomes)
            .map(|(r, outcome)| RecordOutcome {
                id: r.id,
                key: r.key,
                outcome,
            })
            .collect())
    }

    /// Validates and applies (or stages) a delete batch; one outcome per id.
    pub async fn delete(
        &self,
        who: &Contributor,
        session_id: &str,
        ids: Vec<String>,
    ) -> Result<Vec<RecordOutcome>> {
        self.check_batch_size(ids.len(), "ids")?;
        check_delete_ids(&ids)?;
        let keyed: Vec<KeyedId> = ids
            .into_iter()
            .map(|id| KeyedId {
                key: record_key(&who.connector.entity_type, &who.connector.id, &id),
                id,
            })
            .collect();
        let outcomes = self
            .store
            .delete_batch(&self.call(who, session_id, now_micros())?, &keyed)
            .await?;
        Ok(keyed
            .into_iter()
            .zip(outcomes)
            .map(|(k, outcome)| RecordOutcome {
                id: k.id,
                key: k.key,
                outcome,
            })
            .collect())
    }

    /// Closes a session, committing (accrue/replace) when `commit`.
    pub async fn close(
        &self,
        who: &Contributor,
        session_id: &str,
        commit: bool,
        force: bool,
    ) -> Result<ClosedSession> {
        self.store
            .close_session(&self.call(who, session_id, now_micros())?, commit, force)
            .await
    }

    /// Rolls back accrue/replace sessions idle longer than the idle timeout; returns how many.
    pub async fn expire_idle_sessions(&self) -> Result<u64> {
        let now = now_micros();
        self.store
            .expire_idle_sessions(self.idle_cutoff(now), now)
            .await
    }

    fn idle_cutoff(&self, now: Micros) -> Micros {
        now.saturating_sub(self.limits.session_idle_timeout.as_micros() as i64)
    }

    fn call<'a>(
        &self,
        who: &'a Contributor,
        session_id: &'a str,
        now: Micros,
    ) -> Result<SessionCall<'a>> {
        // Session ids are UUIDs; anything else cannot name a session of this connector.
        if uuid::Uuid::try_parse(session_id).is_err() {
            return Err(Error::PermissionDenied(format!(
                "session {session_id:?} is not an open session of this connector"
            )));
        }
        Ok(SessionCall {
            session_id,
            connector: &who.connector,
            now,
            idle_cutoff: self.idle_cutoff(now),
        })
    }

    fn check_batch_size(&self, len: usize, field: &str) -> Result<()> {
        if len > self.limits.max_batch_records {
            return Err(Error::ResourceExhausted {
                subject: field.to_owned(),
                description: format!(
                    "batch of {len} exceeds limits.max_batch_records = {}",
                    self.limits.max_batch_records
                ),
            });
        }
        Ok(())
    }

    async fn schema(&self, who: &Contributor) -> Result<Arc<EntitySchema>> {
        let slug = &who.connector.entity_type;
        if let Some(schema) = self.schemas.get(slug, who.schema_version) {
            return Ok(schema);
        }
        let entity_type = self.store.get_entity_type(slug).await?;
        let schema = Arc::new(EntitySchema::compile(&entity_type.schema)?);
        self.schemas
            .insert(slug, entity_type.schema_version, schema.clone());
        Ok(schema)
    }
}
