//! The consumers' read side (SPEC.md §3): authentication, grants, and visible-record reads.

use crate::auth::hash_token;
use crate::ids::record_key;
use crate::model::{Consumer, EntityType, Page, StoredRecord};
use crate::page::decode_token;
use crate::query::{ListQuery, ListToken, QueryLimits};
use crate::store::{RecordQuery, Store};
use crate::text::{check_no_nul, refuse_nul};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one consumer may ask of the catalog; every field has a `[catalog]` config key.
#[derive(Debug, Clone)]
pub struct CatalogLimits {
    pub query: QueryLimits,
    /// Most ids one LookupByExternalIds call may ask for.
    pub max_lookup_ids: usize,
    /// Most Watch streams one consumer may hold open in this process.
    pub max_watches_per_consumer: usize,
    /// Most Watch streams without a token (a public catalog) in this process.
    pub max_public_watches: usize,
    /// How often an open Watch checks that its consumer still exists and is still granted.
    pub watch_revalidate: Duration,
}

impl Default for CatalogLimits {
    fn default() -> Self {
        Self {
            query: QueryLimits::default(),
            max_lookup_ids: 1_000,
            max_watches_per_consumer: 16,
            max_public_watches: 256,
            watch_revalidate: Duration::from_secs(2),
        }
    }
}

/// Who is reading: a consumer, or anyone when the catalog is public and no token was sent.
#[derive(Debug, Clone)]
pub enum Reader {
    Consumer(Consumer),
    Public,
}

impl Reader {
    /// Whether the reader may read `entity_type`.
    pub fn may_read(&self, entity_type: &str) -> bool {
        match self {
            Self::Public => true,
            Self::Consumer(c) => c.entity_types.iter().any(|t| t == entity_type),
        }
    }

    fn ensure(&self, entity_type: &str) -> Result<()> {
        if self.may_read(entity_type) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "this consumer is not granted entity type {entity_type:?}"
            )))
        }
    }
}

/// Catalog use cases over a store.
#[derive(Clone)]
pub struct CatalogService {
    store: Arc<dyn Store>,
    public: bool,
    limits: Arc<CatalogLimits>,
    /// Open Watch streams per consumer id ("" for public readers).
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl CatalogService {
    /// A service over `store`; `public` lets calls without a token read everything.
    pub fn new(store: Arc<dyn Store>, public: bool) -> Self {
        Self {
            store,
            public,
            limits: Arc::default(),
            watches: Arc::default(),
        }
    }

    /// This service with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: CatalogLimits) -> Self {
        let mut limits = limits;
        limits.query = limits.query.clamped();
        self.limits = Arc::new(limits);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &CatalogLimits {
        &self.limits
    }

    /// The reader a token names. A wrong token is refused even when the catalog is public.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Reader> {
        match token.filter(|t| !t.is_empty()) {
            Some(token) => match self.store.consumer_by_token(&hash_token(token)).await? {
                Some(consumer) => Ok(Reader::Consumer(consumer)),
                None => Err(Error::Unauthenticated),
            },
            None if self.public => Ok(Reader::Public),
            None => Err(Error::Unauthenticated),
        }
    }

    /// A page of the entity types the reader may read.
    pub async fn list_entity_types(
        &self,
        reader: &Reader,
        limit: u32,
        token: &str,
    ) -> Result<Page<EntityType>> {
        let mut after = decode_token(token)?;
        let mut items = Vec::new();
        // Skip ungranted types without returning short pages that would end the listing early.
        loop {
            let page = self
                .store
                .list_entity_types(after.as_deref(), limit)
                .await?;
            let full = page.len() as u32 == limit;
            after = page.last().map(|e| e.slug.clone());
            items.extend(page.into_iter().filter(|e| reader.may_read(&e.slug)));
            if items.len() as u32 >= limit || !full {
                let next_page_token = if full {
                    after.as_deref().map(crate::page::encode_token)
                } else {
                    None
                };
                items.truncate(limit as usize);
                return Ok(Page {
                    next_page_token,
                    items,
                });
            }
        }
    }

    /// The entity type `slug`, if the reader may read it.
    pub async fn get_entity_type(&self, reader: &Reader, slug: &str) -> Result<EntityType> {
        refuse_nul([("slug", slug)])?;
        reader.ensure(slug)?;
        self.store.get_entity_type(slug).await
    }

    /// The visible record with `key`.
    /// A record of a type the reader may not read is answered like a missing one: the answer
    /// must not tell whether the key exists.
    pub async fn get_record(&self, reader: &Reader, key: &str) -> Result<StoredRecord> {
        crate::ids::check_record_key("key", key)?;
        self.store
            .get_record(key)
            .await?
            .filter(|record| reader.may_read(&record.entity_type))
            .ok_or_else(|| Error::not_found(crate::error::ResourceKind::Record, key))
    }

    /// The visible record `id` of `connector` in `entity_type`.
    pub async fn get_record_by_id(
        &self,
        reader: &Reader,
        entity_type: &str,
        connector: &str,
        id: &str,
    ) -> Result<StoredRecord> {
        refuse_nul([
            ("entity_type", entity_type),
            ("connector", connector),
            ("id", id),
        ])?;
        reader.ensure(entity_type)?;
        let key = record_key(entity_type, connector, id);
        self.store
            .get_record(&key)
            .await?
            .ok_or_else(|| Error::not_found(crate::error::ResourceKind::Record, key))
    }

    /// The visible records among `ids`, with their checksums.
    pub async fn lookup_by_external_ids(
        &self,
        reader: &Reader,
        entity_type: &str,
        ids: &[String],
        connector: Option<&str>,
    ) -> Result<Vec<StoredRecord>> {
        refuse_nul([
            ("entity_type", entity_type),
            ("connector", connector.unwrap_or("")),
        ])?;
        reader.ensure(entity_type)?;
        let max = self.limits.max_lookup_ids;
        if ids.len() > max {
            return Err(Error::ResourceExhausted {
                subject: "ids".into(),
                description: format!(
                    "{} ids asked for; at most {max} per call (catalog.max_lookup_ids)",
                    ids.len()
                ),
            });
        }
        let mut violations = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            check_no_nul(format!("ids[{i}]"), id, &mut violations);
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let records = match connector {
            Some(connector) => {
                let keys: Vec<String> = ids
                    .iter()
                    .map(|id| record_key(entity_type, connector, id))
                    .collect();
                self.store.get_records(&keys).await?
            }
            None => self.store.lookup_records(entity_type, ids, None).await?,
        };
        // Records found prove the type exists; an empty answer is NOT_FOUND for an unknown one.
        if records.is_empty() {
            self.store.get_entity_type(entity_type).await?;
        }
        Ok(records)
    }

    /// A page of visible records of `entity_type` matching `filter` (JSON text, SPEC.md §3) in
    /// `order_by` order (AIP-132), continuing after `token`; with the change-log sequence of the
    /// listing's first page, from which a Watch misses nothing.
    pub async fn list_records(
        &self,
        reader: &Reader,
        entity_type: &str,
        filter: &str,
        order_by: &str,
        limit: u32,
        token: &str,
    ) -> Result<Listing> {
        refuse_nul([("entity_type", entity_type)])?;
        reader.ensure(entity_type)?;
        let limits = &self.limits.query;
        let query = ListQuery::parse_within(entity_type, filter, order_by, limits)?;
        let token = ListToken::decode(token, &query.fingerprint, limits.max_page_token_bytes)?;
        self.store.get_entity_type(entity_type).await?;
        let page = self
            .store
            .query_records(&RecordQuery {
                entity_type,
                filter: query.filter.as_ref(),
                order: &query.order,
                after: token.as_ref().map(|t| &t.cursor),
                limit,
            })
            .await?;
        let sequence = token.map_or(page.sequence, |t| t.sequence);
        let next_page_token = match page.last {
            Some(cursor) if page.records.len() as u32 >= limit => Some(
                ListToken {
                    fingerprint: query.fingerprint,
                    sequence,
                    cursor,
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(Listing {
            page: Page {
                items: page.records,
                next_page_token,
            },
            sequence,
        })
    }

    /// How many visible records of `entity_type` match `filter` (as ListRecords reads it), and
    /// the change-log sequence of that count.
    pub async fn count_records(
        &self,
        reader: &Reader,
        entity_type: &str,
        filter: &str,
    ) -> Result<(u64, u64)> {
        refuse_nul([("entity_type", entity_type)])?;
        reader.ensure(entity_type)?;
        let query = ListQuery::parse_within(entity_type, filter, "", &self.limits.query)?;
        self.store.get_entity_type(entity_type).await?;
        self.store
            .count_matching(entity_type, query.filter.as_ref())
            .await
    }

    /// Checks that the reader may watch `entity_type` and that it exists.
    pub async fn authorize_watch(&self, reader: &Reader, entity_type: &str) -> Result<()> {
        refuse_nul([("entity_type", entity_type)])?;
        reader.ensure(entity_type)?;
        self.store.get_entity_type(entity_type).await.map(|_| ())
    }

    /// A place for one more Watch stream of `reader`, held until the slot is dropped;
    /// `ResourceExhausted` when the reader holds as many as its limit.
    pub fn admit_watch(&self, reader: &Reader) -> Result<WatchSlot> {
        let (holder, max, key) = match reader {
            Reader::Consumer(c) => (
                c.id.clone(),
                self.limits.max_watches_per_consumer,
                "catalog.max_watches_per_consumer",
            ),
            Reader::Public => (
                String::new(),
                self.limits.max_public_watches,
                "catalog.max_public_watches",
            ),
        };
        let mut open = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(holder.clone()).or_default();
        if *count >= max {
            return Err(Error::ResourceExhausted {
                subject: "watches".into(),
                description: format!(
                    "this reader has {count} Watch streams open; at most {max} ({key})"
                ),
            });
        }
        *count += 1;
        Ok(WatchSlot {
            watches: self.watches.clone(),
            holder,
        })
    }

    /// Checks again that `token`'s reader may still watch `entity_type`: an open Watch ends
    /// (`Unauthenticated` or `PermissionDenied`) once its consumer is deleted, its grant
    /// removed or the entity type deleted.
    pub async fn revalidate_watch(&self, token: Option<&str>, entity_type: &str) -> Result<()> {
        let reader = self.authenticate(token).await?;
        reader.ensure(entity_type)?;
        match self.store.get_entity_type(entity_type).await {
            Err(Error::NotFound { .. }) => Err(Error::PermissionDenied(format!(
                "entity type {entity_type:?} has been deleted"
            ))),
            other => other.map(|_| ()),
        }
    }

    /// The next change events of `entity_type` after sequence `after` (at most `limit`).
    /// `OutOfRange` when `after` is older than the change log's retention (the client must list
    /// again); `InvalidArgument` when it is beyond the latest sequence.
    pub async fn read_changes(
        &self,
        entity_type: &str,
        after: u64,
        limit: u32,
    ) -> Result<ChangeBatch> {
        let page = self.store.read_changes(entity_type, after, limit).await?;
        if after < page.pruned_through {
            return Err(Error::OutOfRange(format!(
                "changes up to sequence {} have been pruned (older than the change log's                  retention); list the records again and watch from the listing's sequence",
                page.pruned_through
            )));
        }
        if after > page.last_sequence {
            return Err(Error::invalid(
                "after",
                format!(
                    "sequence {after} is beyond the latest sequence {}",
                    page.last_sequence
                ),
            ));
        }
        let full = page.changes.len() as u32 >= limit;
        let last_read = page.changes.last().map(|c| c.sequence);
        // A short page saw every entry up to the snapshot's last sequence, whatever its type.
        let through = match last_read {
            Some(seq) if full => seq,
            other => other.unwrap_or(after).max(page.last_sequence),
        };
        let events = page
            .changes
            .into_iter()
            .filter_map(|c| match (c.deleted, c.record) {
                (true, _) => Some(ChangeEvent {
                    sequence: c.sequence,
                    change: Change::Deleted(c.key),
                }),
                (false, Some(record)) => Some(ChangeEvent {
                    sequence: c.sequence,
                    change: Change::Upserted(Box::new(record)),
                }),
                // Deleted since; the delete's own entry follows.
                (false, None) => None,
            })
            .collect();
        Ok(ChangeBatch {
            events,
            through,
            more: full,
        })
    }

    /// Resolves once a change above `after` may exist (spurious wake-ups are possible).
    pub async fn wait_for_changes(&self, entity_type: &str, after: u64) {
        self.store.wait_for_changes(entity_type, after).await
    }

    /// Deletes change-log entries older than `retention`; returns how many.
    pub async fn prune_change_log(&self, retention: std::time::Duration) -> Result<u64> {
        let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        self.store
            .prune_changes(crate::clock::now_micros().saturating_sub(retention))
            .await
    }
}

/// One open Watch stream counted against its reader's limit; released when dropped.
#[derive(Debug)]
pub struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    holder: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.holder) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

/// A page of records and the listing's change-log sequence.
#[derive(Debug, Clone)]
pub struct Listing {
    pub page: Page<StoredRecord>,
    /// Watch after this sequence to see every change made since the listing began.
    pub sequence: u64,
}

/// What changed.
#[derive(Debug, Clone)]
pub enum Change {
    /// The record as it is now (it may have changed again since this event; later events say so).
    Upserted(Box<StoredRecord>),
    /// The key of a deleted record.
    Deleted(String),
}

/// One change event.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub sequence: u64,
    pub change: Change,
}

/// Change events read in one go.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    pub events: Vec<ChangeEvent>,
    /// Every change of the entity type up to this sequence has been read: continue after it.
    pub through: u64,
    /// The read was cut at its limit: read again at once.
    pub more: bool,
}
