//! The admin domain (SPEC.md §4.1, §4.2): entity types, connectors, consumers, import results.

use crate::auth::{hash_token, new_token, CONNECTOR_TOKEN_PREFIX, CONSUMER_TOKEN_PREFIX};
use crate::clock::now_micros;
use crate::ids::{is_valid_slug, new_connector_id, new_id};
use crate::model::{Connector, Consumer, EntityType, ImportResult, Page, WritePolicy};
use crate::page::{decode_token, next_token};
use crate::schema::EntitySchema;
use crate::store::{ImportResultFilter, Store};
use crate::{Error, Result, Violation};
use serde_json::Value;
use std::sync::Arc;

/// What a caller gives to create or update an entity type.
#[derive(Debug, Clone)]
pub struct EntityTypeInput {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub schema: Option<Value>,
}

/// What a caller gives to create or update a connector.
#[derive(Debug, Clone)]
pub struct ConnectorInput {
    pub name: String,
    pub entity_type: String,
    pub write_policy: WritePolicy,
    pub reject_removals_above_percent: Option<f64>,
    pub rate_limit: Option<u32>,
}

/// The dry-run report of a candidate schema.
#[derive(Debug, Clone, Default)]
pub struct SchemaCheck {
    pub records_checked: u64,
    pub records_invalid: u64,
    pub examples: Vec<String>,
}

/// Admin use cases over a store.
#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn Store>,
}

fn check_name(field: &str, name: &str, violations: &mut Vec<Violation>) {
    if name.contains('\0') {
        violations.push(Violation::new(field, crate::text::NUL_PROBLEM));
        return;
    }
    let chars = name.chars().count();
    if chars == 0 || chars > 200 {
        violations.push(Violation::new(field, "must be 1..200 characters"));
    }
}

fn fail_if_any(violations: Vec<Violation>) -> Result<()> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

impl AdminService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn checked_entity_type(input: EntityTypeInput) -> Result<EntityType> {
        let mut violations = Vec::new();
        if !is_valid_slug(&input.slug) {
            violations.push(Violation::new(
                "entity_type.slug",
                "must be 1..64 of a-z, 0-9 and '-'",
            ));
        }
        check_name("entity_type.name", &input.name, &mut violations);
        crate::text::check_no_nul(
            "entity_type.description",
            &input.description,
            &mut violations,
        );
        let schema = input
            .schema
            .unwrap_or_else(|| serde_json::json!({"type": "object"}));
        crate::text::check_json_no_nul("entity_type.schema", &schema, &mut violations);
        if let Err(Error::InvalidArgument(schema_violations)) = EntitySchema::compile(&schema) {
            violations.extend(
                schema_violations
                    .into_iter()
                    .map(|v| Violation::new(format!("entity_type.{}", v.field), v.description)),
            );
        }
        fail_if_any(violations)?;
        let now = now_micros();
        Ok(EntityType {
            slug: input.slug,
            name: input.name,
            description: input.description,
            schema,
            schema_version: 1,
            created_at: now,
            updated_at: now,
        })
    }

    /// Creates an entity type after checking its slug, name and schema.
    pub async fn create_entity_type(&self, input: EntityTypeInput) -> Result<EntityType> {
        let entity_type = Self::checked_entity_type(input)?;
        self.store.create_entity_type(&entity_type).await?;
        Ok(entity_type)
    }

    /// The entity type `slug`.
    pub async fn get_entity_type(&self, slug: &str) -> Result<EntityType> {
        crate::text::refuse_nul([("slug", slug)])?;
        self.store.get_entity_type(slug).await
    }

    /// A page of entity types.
    pub async fn list_entity_types(&self, limit: u32, token: &str) -> Result<Page<EntityType>> {
        let items = self
            .store
            .list_entity_types(decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|e| e.slug.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Updates name, description and schema.
    pub async fn update_entity_type(&self, input: EntityTypeInput) -> Result<EntityType> {
        let entity_type = Self::checked_entity_type(input)?;
        self.store
            .update_entity_type(&entity_type, now_micros())
            .await
    }

    /// Deletes an entity type (refused while records exist unless `force`).
    pub async fn delete_entity_type(&self, slug: &str, force: bool) -> Result<()> {
        crate::text::refuse_nul([("slug", slug)])?;
        self.store.delete_entity_type(slug, force).await
    }

    /// Counts how many existing records `schema` (or the current schema) would reject, reading
    /// the records page by page so memory stays bounded.
    pub async fn validate_entity_type(
        &self,
        slug: &str,
        schema: Option<Value>,
    ) -> Result<SchemaCheck> {
        let entity_type = self.store.get_entity_type(slug).await?;
        let schema = schema.unwrap_or(entity_type.schema);
        let compiled = EntitySchema::compile(&schema)?;
        let mut check = SchemaCheck::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_records(slug, after.as_deref(), 500).await?;
            for record in &page {
                check.records_checked += 1;
                let entity: Value = serde_json::from_str(&record.entity).map_err(|e| {
                    Error::Internal(format!("stored entity of {} is not JSON: {e}", record.key))
                })?;
                let mut violations = Vec::new();
                compiled.violations("entity", &entity, &mut violations);
                if !violations.is_empty() {
                    check.records_invalid += 1;
                    for v in violations {
                        if check.examples.len() < 100 {
                            check
                                .examples
                                .push(format!("{}: {}: {}", record.id, v.field, v.description));
                        }
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(last.key.clone()),
                _ => break,
            }
        }
        Ok(check)
    }

    fn check_connector(input: &ConnectorInput) -> Result<()> {
        let mut violations = Vec::new();
        check_name("connector.name", &input.name, &mut violations);
        if let Some(p) = input.reject_removals_above_percent {
            if !(0.0..=100.0).contains(&p) {
                violations.push(Violation::new(
                    "connector.reject_removals_above_percent",
                    "must be between 0 and 100",
                ));
            }
        }
        if input.rate_limit == Some(0) {
            violations.push(Violation::new(
                "connector.rate_limit",
                "must be positive when set",
            ));
        }
        fail_if_any(violations)
    }

    /// Creates a connector; returns it and its token (shown once, stored hashed).
    pub async fn create_connector(&self, input: ConnectorInput) -> Result<(Connector, String)> {
        Self::check_connector(&input)?;
        if !is_valid_slug(&input.entity_type) {
            return Err(Error::invalid(
                "connector.entity_type",
                "must name an entity type",
            ));
        }
        let connector = Connector {
            id: new_connector_id(),
            name: input.name,
            entity_type: input.entity_type,
            write_policy: input.write_policy,
            reject_removals_above_percent: input.reject_removals_above_percent,
            rate_limit: input.rate_limit,
            created_at: now_micros(),
        };
        let token = new_token(CONNECTOR_TOKEN_PREFIX);
        self.store
            .create_connector(&connector, &hash_token(&token))
            .await?;
        Ok((connector, token))
    }

    /// The connector `id`.
    pub async fn get_connector(&self, id: &str) -> Result<Connector> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.get_connector(id).await
    }

    /// A page of connectors.
    pub async fn list_connectors(&self, limit: u32, token: &str) -> Result<Page<Connector>> {
        let items = self
            .store
            .list_connectors(decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|c| c.id.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Updates a connector's settings; its entity type cannot change.
    pub async fn update_connector(&self, id: &str, input: ConnectorInput) -> Result<Connector> {
        crate::text::refuse_nul([("id", id)])?;
        Self::check_connector(&input)?;
        let current = self.store.get_connector(id).await?;
        if !input.entity_type.is_empty() && input.entity_type != current.entity_type {
            return Err(Error::invalid(
                "connector.entity_type",
                "a connector's entity type cannot change",
            ));
        }
        let updated = Connector {
            name: input.name,
            write_policy: input.write_policy,
            reject_removals_above_percent: input.reject_removals_above_percent,
            rate_limit: input.rate_limit,
            ..current
        };
        self.store.update_connector(&updated).await
    }

    /// Deletes a connector, with its records when `delete_records`.
    pub async fn delete_connector(&self, id: &str, delete_records: bool) -> Result<u64> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.delete_connector(id, delete_records).await
    }

    /// Issues a new token for a connector; the old one stops working at once.
    pub async fn rotate_connector_token(&self, id: &str) -> Result<String> {
        crate::text::refuse_nul([("id", id)])?;
        let token = new_token(CONNECTOR_TOKEN_PREFIX);
        self.store
            .set_connector_token(id, &hash_token(&token))
            .await?;
        Ok(token)
    }

    /// Creates a consumer granted `entity_types`; returns it and its token.
    pub async fn create_consumer(
        &self,
        name: String,
        mut entity_types: Vec<String>,
    ) -> Result<(Consumer, String)> {
        let mut violations = Vec::new();
        check_name("consumer.name", &name, &mut violations);
        for (i, slug) in entity_types.iter().enumerate() {
            if !is_valid_slug(slug) {
                violations.push(Violation::new(
                    format!("consumer.entity_types[{i}]"),
                    "must name an entity type",
                ));
            }
        }
        fail_if_any(violations)?;
        entity_types.sort();
        entity_types.dedup();
        let consumer = Consumer {
            id: new_id(),
            name,
            entity_types,
            created_at: now_micros(),
        };
        let token = new_token(CONSUMER_TOKEN_PREFIX);
        self.store
            .create_consumer(&consumer, &hash_token(&token))
            .await?;
        Ok((consumer, token))
    }

    /// The consumer `id`.
    pub async fn get_consumer(&self, id: &str) -> Result<Consumer> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.get_consumer(id).await
    }

    /// A page of consumers.
    pub async fn list_consumers(&self, limit: u32, token: &str) -> Result<Page<Consumer>> {
        let items = self
            .store
            .list_consumers(decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|c| c.id.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Deletes a consumer; its token stops working at once.
    pub async fn delete_consumer(&self, id: &str) -> Result<()> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.delete_consumer(id).await
    }

    /// The import result `id`.
    pub async fn get_import_result(&self, id: &str) -> Result<ImportResult> {
        crate::text::refuse_nul([("id", id)])?;
        self.store.get_import_result(id).await
    }

    /// A page of the import results `filter` admits, newest first.
    pub async fn list_import_results(
        &self,
        filter: &ImportResultFilter<'_>,
        limit: u32,
        token: &str,
    ) -> Result<Page<ImportResult>> {
        crate::text::refuse_nul([
            ("connector", filter.connector.unwrap_or_default()),
            ("source", filter.source.unwrap_or_default()),
        ])?;
        let items = self
            .store
            .list_import_results(filter, decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|r| r.id.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }
}
