//! The consumers' read side (SPEC.md §3): authentication, grants, and visible-record reads.

use crate::auth::hash_token;
use crate::ids::record_key;
use crate::model::{Consumer, EntityType, Page, StoredRecord};
use crate::page::{decode_token, next_token};
use crate::store::Store;
use crate::{Error, Result};
use std::sync::Arc;

/// Most ids one LookupByExternalIds call may ask for.
pub const MAX_LOOKUP_IDS: usize = 1000;

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
}

impl CatalogService {
    /// A service over `store`; `public` lets calls without a token read everything.
    pub fn new(store: Arc<dyn Store>, public: bool) -> Self {
        Self { store, public }
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
        reader.ensure(slug)?;
        self.store.get_entity_type(slug).await
    }

    /// The visible record with `key`.
    pub async fn get_record(&self, reader: &Reader, key: &str) -> Result<StoredRecord> {
        let record = self
            .store
            .get_record(key)
            .await?
            .ok_or_else(|| Error::not_found(crate::error::ResourceKind::Record, key))?;
        reader.ensure(&record.entity_type)?;
        Ok(record)
    }

    /// The visible record `id` of `connector` in `entity_type`.
    pub async fn get_record_by_id(
        &self,
        reader: &Reader,
        entity_type: &str,
        connector: &str,
        id: &str,
    ) -> Result<StoredRecord> {
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
        reader.ensure(entity_type)?;
        if ids.len() > MAX_LOOKUP_IDS {
            return Err(Error::ResourceExhausted {
                subject: "ids".into(),
                description: format!(
                    "{} ids asked for; at most {MAX_LOOKUP_IDS} per call",
                    ids.len()
                ),
            });
        }
        match connector {
            Some(connector) => {
                let keys: Vec<String> = ids
                    .iter()
                    .map(|id| record_key(entity_type, connector, id))
                    .collect();
                self.store.get_records(&keys).await
            }
            None => self.store.lookup_records(entity_type, ids, None).await,
        }
    }

    /// A page of visible records of `entity_type`, in key order.
    pub async fn list_records(
        &self,
        reader: &Reader,
        entity_type: &str,
        filter: &str,
        order_by: &str,
        limit: u32,
        token: &str,
    ) -> Result<Page<StoredRecord>> {
        reader.ensure(entity_type)?;
        self.store.get_entity_type(entity_type).await?;
        // The filter language and custom orders come with the query compiler (issue 4); until
        // then a filter is refused rather than silently ignored.
        if !filter.trim().is_empty() {
            return Err(Error::invalid(
                "filter",
                "filters are not supported by this server version",
            ));
        }
        if !order_by.trim().is_empty() && order_by.trim() != "key" {
            return Err(Error::invalid(
                "order_by",
                "only the default order (key) is supported by this server version",
            ));
        }
        let items = self
            .store
            .list_records(entity_type, decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|r| r.key.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }
}
