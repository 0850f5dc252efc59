//! The contribution domain (SPEC.md §2.1–§2.4): authenticate a connector, validate its batches,
//! and drive its sessions through the store.

use crate::auth::hash_token;
use crate::clock::{now_micros, Micros};
use crate::closing::ClosingSessions;
use crate::ids::record_key;
use crate::limits::Limits;
use crate::model::{Connector, DigestState, Outcome, RecordOutcome, SessionMode};
use crate::rate_limit::{RateLimiter, Refusal};
use crate::reconcile::{check_call, CallLimits, Judge, RangeAnswer, RangeQuery, Seek, Verdict};
use crate::record::{
    check_delete_ids, check_digests, prepare_batch, KeyedDigest, KeyedId, PreparedRecord,
    RecordInput, RecordOwner,
};
use crate::schema::{EntitySchema, SchemaCache};
use crate::store::{BatchResult, ClosedSession, OpenedSession, ResumedSession, SessionCall, Store};
use crate::{Error, Result};
use std::sync::Arc;

pub use crate::record::DigestInput;

/// What a diff reports back for one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestOutcome {
    pub id: String,
    pub key: String,
    pub state: DigestState,
}

/// A batch checked and keyed, not yet applied to a session.
#[derive(Debug)]
pub enum PreparedBatch {
    Upsert(Vec<PreparedRecord>),
    Delete(Vec<KeyedId>),
    Diff(Vec<KeyedDigest>),
    Reconcile(Vec<RangeQuery>),
}

/// What applying a batch reports: one outcome per record or id, one state per digest, or one
/// answer per reconciled range.
#[derive(Debug)]
pub enum BatchReport {
    Records(Vec<RecordOutcome>),
    Digests(Vec<DigestOutcome>),
    Ranges(Vec<RangeAnswer>),
}

/// Server items read per statement while a reconcile call is judged.
const RECONCILE_PAGE: u32 = 10_000;

impl PreparedBatch {
    /// Records, ids or digests in the batch: what it costs against a rate limit.
    pub fn len(&self) -> usize {
        match self {
            Self::Upsert(records) => records.len(),
            Self::Delete(ids) => ids.len(),
            Self::Diff(digests) => digests.len(),
            // A range costs one; a listed item one more.
            Self::Reconcile(queries) => queries
                .iter()
                .map(|q| match &q.content {
                    crate::reconcile::RangeContent::Items(items) => items.len() + 1,
                    crate::reconcile::RangeContent::Fingerprint(_) => 1,
                })
                .sum(),
        }
    }

    /// Whether the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BatchReport {
    /// A record batch's outcomes (none for digests and ranges).
    pub fn into_outcomes(self) -> Vec<RecordOutcome> {
        match self {
            Self::Records(outcomes) => outcomes,
            Self::Digests(_) | Self::Ranges(_) => Vec::new(),
        }
    }

    fn into_digests(self) -> Vec<DigestOutcome> {
        match self {
            Self::Digests(digests) => digests,
            Self::Records(_) | Self::Ranges(_) => Vec::new(),
        }
    }

    fn into_ranges(self) -> Vec<RangeAnswer> {
        match self {
            Self::Ranges(answers) => answers,
            Self::Records(_) | Self::Digests(_) => Vec::new(),
        }
    }
}

/// An authenticated connector.
#[derive(Debug, Clone)]
pub struct Contributor {
    pub connector: Connector,
    /// Its entity type's schema version when it authenticated.
    pub schema_version: u32,
    /// The hash of the token it authenticated with, to check it again on long streams.
    pub token_hash: String,
}

/// Contribution use cases over a store.
#[derive(Clone)]
pub struct ContributionService {
    store: Arc<dyn Store>,
    schemas: SchemaCache,
    limits: Limits,
    rate_limits: RateLimiter,
    closing: ClosingSessions,
}

impl ContributionService {
    /// A service over `store` with `limits`.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            store,
            schemas: SchemaCache::default(),
            rate_limits: RateLimiter::new(limits.max_batch_records),
            closing: ClosingSessions::default(),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes `records` from the connector's `rate_limit` budget (SPEC.md §4.2), or refuses with
    /// `RateLimited` (how long to wait) before anything of the call is applied. Unary calls
    /// authenticate each time, so a changed limit applies from the next call.
    pub fn admit(&self, who: &Contributor, records: usize) -> Result<()> {
        let rate = who.connector.rate_limit;
        match self.rate_limits.admit(&who.connector.id, rate, records) {
            Ok(()) => Ok(()),
            Err(Refusal::RetryAfter(retry_after)) => Err(Error::RateLimited {
                connector: who.connector.id.clone(),
                rate: rate.unwrap_or_default(),
                retry_after,
            }),
            Err(Refusal::TooLarge { burst }) => Err(Error::ResourceExhausted {
                subject: format!("connector:{}", who.connector.id),
                description: format!(
                    "a batch of {records} is more than the rate limit ever admits at once ({burst})"
                ),
            }),
        }
    }

    /// The contributor read again by its token: a long stream follows UpdateConnector (a new
    /// `rate_limit`, write policy) and UpdateEntityType (the schema) this way, and ends with
    /// `Unauthenticated` once the token is rotated or the connector deleted.
    pub async fn refresh(&self, who: &Contributor) -> Result<Contributor> {
        self.by_token_hash(who.token_hash.clone()).await
    }

    /// The connector whose token this is; `Unauthenticated` for none or an unknown one.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Contributor> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthenticated)?;
        self.by_token_hash(hash_token(token)).await
    }

    async fn by_token_hash(&self, token_hash: String) -> Result<Contributor> {
        match self.store.connector_by_token(&token_hash).await? {
            Some((connector, schema_version)) => Ok(Contributor {
                connector,
                schema_version,
                token_hash,
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

    /// What a batch call checks before anything else: its size (`field` names what it carries),
    /// then the connector's rate limit (`RateLimited` before any record is decoded or checked).
    /// An upsert call's caller then prepares the batch itself ([`Self::upsert_preparer`], off
    /// the async runtime's workers) and [`Self::apply`]s it.
    pub fn admit_batch(&self, who: &Contributor, len: usize, field: &str) -> Result<()> {
        self.check_batch_size(len, field)?;
        self.admit(who, len)
    }

    /// Validates and applies (or stages) a delete batch; one outcome per id. With a `batch_seq`
    /// (streamed batches) a batch already applied answers `AlreadyApplied`.
    pub async fn delete(
        &self,
        who: &Contributor,
        session_id: &str,
        ids: Vec<String>,
        batch_seq: Option<u64>,
    ) -> Result<BatchResult<Vec<RecordOutcome>>> {
        self.admit_batch(who, ids.len(), "ids")?;
        let batch = self.prepare_delete(who, ids)?;
        let result = self.apply(who, session_id, batch, batch_seq).await?;
        Ok(result.map(BatchReport::into_outcomes))
    }

    /// Compares `(id, checksum)` digests with the visible catalog (§2.4): one state per digest.
    /// In a replace session the unchanged ids are kept by the sweep without their payloads.
    /// Sequenced like [`Self::delete`].
    pub async fn diff(
        &self,
        who: &Contributor,
        session_id: &str,
        digests: Vec<DigestInput>,
        batch_seq: Option<u64>,
    ) -> Result<BatchResult<Vec<DigestOutcome>>> {
        self.admit_batch(who, digests.len(), "digests")?;
        let batch = self.prepare_diff(who, digests)?;
        let result = self.apply(who, session_id, batch, batch_seq).await?;
        Ok(result.map(BatchReport::into_digests))
    }

    /// One call of a range-based sync (§2.5): answers each range against the connector's visible
    /// records; in a replace session what matched is kept by the sweep. Sequenced like
    /// [`Self::delete`].
    pub async fn reconcile(
        &self,
        who: &Contributor,
        session_id: &str,
        queries: Vec<RangeQuery>,
        batch_seq: Option<u64>,
    ) -> Result<BatchResult<Vec<RangeAnswer>>> {
        let batch = self.prepare_reconcile(queries)?;
        self.admit(who, batch.len())?;
        let result = self.apply(who, session_id, batch, batch_seq).await?;
        Ok(result.map(BatchReport::into_ranges))
    }

    /// The caps of one reconcile call.
    pub fn reconcile_limits(&self) -> CallLimits {
        CallLimits {
            max_ranges: self.limits.max_reconcile_ranges,
            max_items: self.limits.max_batch_records,
        }
    }

    /// Checks a reconcile call's ranges; see [`Self::upsert_preparer`].
    pub fn prepare_reconcile(&self, queries: Vec<RangeQuery>) -> Result<PreparedBatch> {
        check_call(&queries, self.reconcile_limits())?;
        Ok(PreparedBatch::Reconcile(queries))
    }

    /// Reads the connector's items in the ranges of `queries`, page by page (skipping the gaps
    /// between ranges), and answers them: one pass, memory bounded by a page and the call.
    async fn judge(&self, who: &Contributor, queries: &[RangeQuery]) -> Result<Verdict> {
        let mut judge = Judge::new(queries, self.limits.max_batch_records);
        let mut seek = judge.first_seek();
        while let Some(Seek { from, inclusive }) = seek {
            let page = self
                .store
                .read_items(&who.connector, &from, inclusive, RECONCILE_PAGE)
                .await?;
            for (id, checksum) in &page {
                judge.push(id, checksum);
            }
            seek = match page.last() {
                Some((last, _)) if page.len() == RECONCILE_PAGE as usize => judge.seek_after(last),
                _ => None,
            };
        }
        Ok(judge.finish())
    }

    /// What validating an upsert batch needs from the store (the connector's schema), fetched
    /// first, so that the CPU half of an upsert call (validating against the schema, keys and
    /// checksums, without touching the session: [`UpsertPreparer::prepare`]) can run where the
    /// caller chooses: the server runs it off the async runtime's workers, which the store's
    /// transactions need to keep the database busy.
    pub async fn upsert_preparer(&self, who: &Contributor) -> Result<UpsertPreparer> {
        Ok(UpsertPreparer {
            schema: self.schema(who).await?,
            entity_type: who.connector.entity_type.clone(),
            connector: who.connector.id.clone(),
            limits: self.limits.clone(),
        })
    }

    /// Checks a delete batch and computes its keys; see [`Self::upsert_preparer`].
    pub fn prepare_delete(&self, who: &Contributor, ids: Vec<String>) -> Result<PreparedBatch> {
        self.check_batch_size(ids.len(), "ids")?;
        check_delete_ids(&ids)?;
        Ok(PreparedBatch::Delete(
            ids.into_iter()
                .map(|id| KeyedId {
                    key: record_key(&who.connector.entity_type, &who.connector.id, &id),
                    id,
                })
                .collect(),
        ))
    }

    /// Checks a digest batch and computes its keys; see [`Self::upsert_preparer`].
    pub fn prepare_diff(
        &self,
        who: &Contributor,
        digests: Vec<DigestInput>,
    ) -> Result<PreparedBatch> {
        self.check_batch_size(digests.len(), "digests")?;
        check_digests(&digests)?;
        Ok(PreparedBatch::Diff(
            digests
                .into_iter()
                .map(|d| KeyedDigest {
                    key: record_key(&who.connector.entity_type, &who.connector.id, &d.id),
                    id: d.id,
                    checksum: d.checksum,
                })
                .collect(),
        ))
    }

    /// Applies (or stages) a prepared batch in the session: the store half of an upsert call,
    /// [`Self::delete`] and [`Self::diff`].
    pub async fn apply(
        &self,
        who: &Contributor,
        session_id: &str,
        batch: PreparedBatch,
        batch_seq: Option<u64>,
    ) -> Result<BatchResult<BatchReport>> {
        let call = self.call(who, session_id, now_micros(), batch_seq)?;
        Ok(match batch {
            PreparedBatch::Upsert(records) => {
                let result = self.store.upsert_batch(&call, &records).await?;
                let named = records.into_iter().map(|r| (r.id, r.key));
                result.map(|outcomes| record_report(named, outcomes))
            }
            PreparedBatch::Delete(keyed) => {
                let result = self.store.delete_batch(&call, &keyed).await?;
                let named = keyed.into_iter().map(|k| (k.id, k.key));
                result.map(|outcomes| record_report(named, outcomes))
            }
            PreparedBatch::Diff(keyed) => {
                let result = self.store.diff_batch(&call, &keyed).await?;
                result.map(|states| {
                    BatchReport::Digests(
                        keyed
                            .into_iter()
                            .zip(states)
                            .map(|(d, state)| DigestOutcome {
                                id: d.id,
                                key: d.key,
                                state,
                            })
                            .collect(),
                    )
                })
            }
            PreparedBatch::Reconcile(queries) => {
                let verdict = self.judge(who, &queries).await?;
                let kept: Vec<KeyedId> = verdict
                    .kept_ids
                    .into_iter()
                    .map(|id| KeyedId {
                        key: record_key(&who.connector.entity_type, &who.connector.id, &id),
                        id,
                    })
                    .collect();
                let result = self
                    .store
                    .keep_batch(&call, &verdict.kept_ranges, &kept)
                    .await?;
                result.map(|()| BatchReport::Ranges(verdict.answers))
            }
        })
    }

    /// Applies several sequenced upsert batches of a stream in one transaction, in order (a
    /// group commit, ADR 0020): one result per batch, as [`Self::apply`] answers each. Fails as
    /// a whole, applying none; the batches stay the caller's, to apply one by one instead.
    pub async fn apply_upserts(
        &self,
        who: &Contributor,
        session_id: &str,
        batches: &[(u64, Vec<PreparedRecord>)],
    ) -> Result<Vec<BatchResult<BatchReport>>> {
        let now = now_micros();
        for &(seq, _) in batches {
            self.call(who, session_id, now, Some(seq))?;
        }
        let call = self.call(who, session_id, now, None)?;
        let borrowed: Vec<(u64, &[PreparedRecord])> = batches
            .iter()
            .map(|(seq, records)| (*seq, records.as_slice()))
            .collect();
        let results = self.store.upsert_batches(&call, &borrowed).await?;
        Ok(batches
            .iter()
            .zip(results)
            .map(|((_, records), result)| {
                let named = records.iter().map(|r| (r.id.clone(), r.key.clone()));
                result.map(|outcomes| record_report(named, outcomes))
            })
            .collect())
    }

    /// Finds an open session of this connector again (a resumed stream): its mode and the last
    /// batch sequence applied. `PermissionDenied` like any batch.
    pub async fn resume(&self, who: &Contributor, session_id: &str) -> Result<ResumedSession> {
        self.store
            .resume_session(&self.call(who, session_id, now_micros(), None)?)
            .await
    }

    /// Closes a session, committing (accrue/replace) when `commit`.
    pub async fn close(
        &self,
        who: &Contributor,
        session_id: &str,
        commit: bool,
        force: bool,
    ) -> Result<ClosedSession> {
        let call = self.call(who, session_id, now_micros(), None)?;
        // One close of a session at a time: a close outlives its call (crate::closing).
        let _closing = self.closing.begin(&who.connector.id, session_id)?;
        self.store.close_session(&call, commit, force).await
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
        batch_seq: Option<u64>,
    ) -> Result<SessionCall<'a>> {
        // Session ids are UUIDs; anything else cannot name a session of this connector.
        if uuid::Uuid::try_parse(session_id).is_err() {
            return Err(Error::PermissionDenied(format!(
                "session {session_id:?} is not an open session of this connector"
            )));
        }
        // Sequences start at 1 (a session's applied sequence starts at 0, so 0 would be
        // acknowledged without ever being applied) and are stored as BIGINT.
        if let Some(seq) = batch_seq {
            if seq == 0 || seq > i64::MAX as u64 {
                return Err(Error::invalid(
                    "batch_seq",
                    format!("batch_seq {seq} is out of range (1..={})", i64::MAX),
                ));
            }
        }
        Ok(SessionCall {
            session_id,
            connector: &who.connector,
            now,
            idle_cutoff: self.idle_cutoff(now),
            batch_seq,
        })
    }

    fn check_batch_size(&self, len: usize, field: &str) -> Result<()> {
        check_batch_size(&self.limits, len, field)
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

/// Everything validating and keying an upsert batch needs, owned, so it can be moved to
/// another thread: see [`ContributionService::upsert_preparer`].
pub struct UpsertPreparer {
    schema: Arc<EntitySchema>,
    entity_type: String,
    connector: String,
    limits: Limits,
}

impl UpsertPreparer {
    /// Checks the batch's size, validates every record against the schema and computes keys
    /// and checksums: CPU only, about as long as the store then takes to write the batch.
    pub fn prepare(&self, records: Vec<RecordInput>) -> Result<PreparedBatch> {
        self.check_size(records.len())?;
        let owner = RecordOwner {
            entity_type: &self.entity_type,
            connector: &self.connector,
        };
        let prepared = prepare_batch(owner, &self.schema, self.limits.max_record_bytes, records)?;
        Ok(PreparedBatch::Upsert(prepared))
    }

    /// `ResourceExhausted` for a batch of more records than `limits.max_batch_records`: checked
    /// by [`Self::prepare`], and before it by a caller that would decode the records first.
    pub fn check_size(&self, records: usize) -> Result<()> {
        check_batch_size(&self.limits, records, "records")
    }
}

/// `ResourceExhausted` for a batch of more than `limits.max_batch_records` in `field`.
fn check_batch_size(limits: &Limits, len: usize, field: &str) -> Result<()> {
    if len > limits.max_batch_records {
        return Err(Error::ResourceExhausted {
            subject: field.to_owned(),
            description: format!(
                "batch of {len} exceeds limits.max_batch_records = {}",
                limits.max_batch_records
            ),
        });
    }
    Ok(())
}

/// One outcome per record or id, in order, each with its `(id, key)`.
fn record_report(
    named: impl IntoIterator<Item = (String, String)>,
    outcomes: Vec<Outcome>,
) -> BatchReport {
    BatchReport::Records(
        named
            .into_iter()
            .zip(outcomes)
            .map(|((id, key), outcome)| RecordOutcome { id, key, outcome })
            .collect(),
    )
}
