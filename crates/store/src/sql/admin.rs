//! Entity types, connectors and consumers (SPEC.md §4.1, §4.2).

use super::changes::{log_deletes_where, DeleteScope};
use super::{lock_open_sessions, Backend, OpenSessionsOf, Pool, Row};
use crate::error::{entity_type_in_use, run, unique_to_exists, StoreResult};
use crate::rows::{self, count};
use async_trait::async_trait;
use sqlx::Row as _;
use std::collections::BTreeMap;
use tributary_core::error::ResourceKind;
use tributary_core::model::{Connector, Consumer, EntityType, SessionMode};
use tributary_core::store::AdminStore;
use tributary_core::{Error, Result};

macro_rules! entity_type_columns {
    () => {
        concat!(
            "slug, name, description, ",
            json_col!("schema", "schema"),
            ", schema_version, created_at, updated_at"
        )
    };
}

macro_rules! connector_columns {
    () => {
        "id, name, entity_type, write_policy, reject_removals_above_percent, rate_limit, created_at"
    };
}

#[async_trait]
impl AdminStore for Backend {
    async fn create_entity_type(&self, e: &EntityType) -> Result<()> {
        run(async {
            sqlx::query(concat!(
                "INSERT INTO entity_types (slug, name, description, schema, schema_version, \
                 created_at, updated_at) VALUES ($1, $2, $3, ",
                json_value!("$4"),
                ", $5, $6, $7)"
            ))
            .bind(&e.slug)
            .bind(&e.name)
            .bind(&e.description)
            .bind(e.schema.to_string())
            .bind(i64::from(e.schema_version))
            .bind(e.created_at)
            .bind(e.updated_at)
            .execute(self.writer())
            .await
            .map_err(unique_to_exists(ResourceKind::EntityType, &e.slug))?;
            Ok(())
        })
        .await
    }

    async fn get_entity_type(&self, slug: &str) -> Result<EntityType> {
        run(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                entity_type_columns!(),
                " FROM entity_types WHERE slug = $1"
            ))
            .bind(slug)
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| Error::not_found(ResourceKind::EntityType, slug))?;
            rows::entity_type(&row)
        })
        .await
    }

    async fn list_entity_types(&self, after: Option<&str>, limit: u32) -> Result<Vec<EntityType>> {
        run(async {
            let rows = sqlx::query(concat!(
                "SELECT ",
                entity_type_columns!(),
                " FROM entity_types WHERE slug > $1 ORDER BY slug LIMIT $2"
            ))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?;
            rows.iter().map(rows::entity_type).collect()
        })
        .await
    }

    async fn update_entity_type(&self, e: &EntityType, now: i64) -> Result<EntityType> {
        run(async {
            let mut tx = self.write().await?;
            let row = sqlx::query(concat!(
                "SELECT ",
                entity_type_columns!(),
                " FROM entity_types WHERE slug = $1",
                for_update!()
            ))
            .bind(&e.slug)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(ResourceKind::EntityType, &e.slug))?;
            let current = rows::entity_type(&row)?;
            // Compared as JSON values, so key order or whitespace alone is not a schema change.
            let schema_version = if current.schema == e.schema {
                current.schema_version
            } else {
                current.schema_version + 1
            };
            let row = sqlx::query(concat!(
                "UPDATE entity_types SET name = $2, description = $3, schema = ",
                json_value!("$4"),
                ", schema_version = $5, updated_at = $6 WHERE slug = $1 RETURNING ",
                entity_type_columns!()
            ))
            .bind(&e.slug)
            .bind(&e.name)
            .bind(&e.description)
            .bind(e.schema.to_string())
            .bind(i64::from(schema_version))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let updated = rows::entity_type(&row)?;
            tx.commit().await?;
            Ok(updated)
        })
        .await
    }

    async fn delete_entity_type(&self, slug: &str, force: bool) -> Result<()> {
        run(async {
            let mut tx = self.write().await?;
            let exists = sqlx::query(concat!(
                "SELECT 1 FROM entity_types WHERE slug = $1",
                for_update!()
            ))
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_none() {
                return Err(Error::not_found(ResourceKind::EntityType, slug).into());
            }
            let (records, connectors): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM records WHERE entity_type = $1), \
                        (SELECT count(*) FROM connectors WHERE entity_type = $1)",
            )
            .bind(slug)
            .fetch_one(&mut *tx)
            .await?;
            if (records > 0 || connectors > 0) && !force {
                return Err(entity_type_in_use(slug, count(records), count(connectors)));
            }
            // Batches and commits in flight on the type's sessions finish first.
            lock_open_sessions(&mut tx, OpenSessionsOf::EntityType(slug)).await?;
            let now = tributary_core::clock::now_micros();
            let logged =
                log_deletes_where(&mut tx, DeleteScope::EntityType, slug, slug, now).await?;
            let statements = [
                "DELETE FROM records WHERE entity_type = $1",
                "DELETE FROM staged_records WHERE session_id IN \
                 (SELECT s.id FROM sessions s JOIN connectors c ON c.id = s.connector \
                  WHERE c.entity_type = $1)",
                "DELETE FROM staged_unchanged WHERE session_id IN \
                 (SELECT s.id FROM sessions s JOIN connectors c ON c.id = s.connector \
                  WHERE c.entity_type = $1)",
                "DELETE FROM sessions WHERE connector IN \
                 (SELECT id FROM connectors WHERE entity_type = $1)",
                // The current cycle's rows of their sources (which go by cascade with the
                // connectors).
                "DELETE FROM source_marks WHERE source_id IN \
                 (SELECT s.id FROM sources s JOIN connectors c ON c.id = s.connector \
                  WHERE c.entity_type = $1)",
                "DELETE FROM source_items WHERE source_id IN \
                 (SELECT s.id FROM sources s JOIN connectors c ON c.id = s.connector \
                  WHERE c.entity_type = $1)",
                "DELETE FROM connectors WHERE entity_type = $1",
                "DELETE FROM consumer_grants WHERE entity_type = $1",
                "DELETE FROM entity_types WHERE slug = $1",
            ];
            for sql in statements {
                sqlx::query(sql).bind(slug).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(())
        })
        .await
    }

    async fn create_connector(&self, c: &Connector, token_hash: &str) -> Result<()> {
        run(async {
            let mut tx = self.write().await?;
            let exists = sqlx::query("SELECT 1 FROM entity_types WHERE slug = $1")
                .bind(&c.entity_type)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(Error::not_found(ResourceKind::EntityType, &c.entity_type).into());
            }
            sqlx::query(concat!(
                "INSERT INTO connectors (",
                connector_columns!(),
                ", token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(&c.id)
            .bind(&c.name)
            .bind(&c.entity_type)
            .bind(c.write_policy.as_str())
            .bind(c.reject_removals_above_percent)
            .bind(c.rate_limit.map(i64::from))
            .bind(c.created_at)
            .bind(token_hash)
            .execute(&mut *tx)
            .await
            .map_err(unique_to_exists(ResourceKind::Connector, &c.id))?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn get_connector(&self, id: &str) -> Result<Connector> {
        run(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                connector_columns!(),
                " FROM connectors WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or_else(|| Error::not_found(ResourceKind::Connector, id))?;
            rows::connector(&row)
        })
        .await
    }

    async fn list_connectors(&self, after: Option<&str>, limit: u32) -> Result<Vec<Connector>> {
        run(async {
            let rows = sqlx::query(concat!(
                "SELECT ",
                connector_columns!(),
                " FROM connectors WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?;
            rows.iter().map(rows::connector).collect()
        })
        .await
    }

    async fn update_connector(&self, c: &Connector) -> Result<Connector> {
        run(async {
            let row = sqlx::query(concat!(
                "UPDATE connectors SET name = $2, write_policy = $3, \
                 reject_removals_above_percent = $4, rate_limit = $5 WHERE id = $1 RETURNING ",
                connector_columns!()
            ))
            .bind(&c.id)
            .bind(&c.name)
            .bind(c.write_policy.as_str())
            .bind(c.reject_removals_above_percent)
            .bind(c.rate_limit.map(i64::from))
            .fetch_optional(self.writer())
            .await?
            .ok_or_else(|| Error::not_found(ResourceKind::Connector, &c.id))?;
            rows::connector(&row)
        })
        .await
    }

    async fn delete_connector(&self, id: &str, delete_records: bool) -> Result<u64> {
        run(async {
            let now = tributary_core::clock::now_micros();
            let mut tx = self.write().await?;
            // Locked first, as open_session does, so no session opens while it goes.
            let entity_type: Option<String> = sqlx::query_scalar(concat!(
                "SELECT entity_type FROM connectors WHERE id = $1",
                for_update!()
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(entity_type) = entity_type else {
                return Err(Error::not_found(ResourceKind::Connector, id).into());
            };
            // Its open sessions end as if closed with commit = false, after their batches in
            // flight; their staged data goes.
            lock_open_sessions(&mut tx, OpenSessionsOf::Connector(id)).await?;
            for staged in [
                "DELETE FROM staged_records WHERE session_id IN \
                 (SELECT id FROM sessions WHERE connector = $1 AND state = 'open')",
                "DELETE FROM staged_unchanged WHERE session_id IN \
                 (SELECT id FROM sessions WHERE connector = $1 AND state = 'open')",
            ] {
                sqlx::query(staged).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query(
                "UPDATE sessions SET state = CASE mode WHEN 'stream' THEN 'closed' \
                 ELSE 'rolled_back' END, closed_at = $2 WHERE connector = $1 AND state = 'open'",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The current cycle's rows of its sources (which go by cascade with the connector).
            for sql in [
                "DELETE FROM source_marks WHERE source_id IN \
                 (SELECT id FROM sources WHERE connector = $1)",
                "DELETE FROM source_items WHERE source_id IN \
                 (SELECT id FROM sources WHERE connector = $1)",
                "DELETE FROM connectors WHERE id = $1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
            let mut logged = None;
            let records = if delete_records {
                logged = log_deletes_where(&mut tx, DeleteScope::Connector, id, &entity_type, now)
                    .await?;
                sqlx::query("DELETE FROM records WHERE connector = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            } else {
                0
            };
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(records)
        })
        .await
    }

    async fn set_connector_token(&self, id: &str, token_hash: &str) -> Result<()> {
        run(async {
            let done = sqlx::query("UPDATE connectors SET token_hash = $2 WHERE id = $1")
                .bind(id)
                .bind(token_hash)
                .execute(self.writer())
                .await
                .map_err(unique_to_exists(ResourceKind::Connector, id))?;
            if done.rows_affected() == 0 {
                return Err(Error::not_found(ResourceKind::Connector, id).into());
            }
            Ok(())
        })
        .await
    }

    async fn connector_by_token(&self, token_hash: &str) -> Result<Option<(Connector, u32)>> {
        run(async {
            let row = sqlx::query(
                "SELECT c.id, c.name, c.entity_type, c.write_policy, \
                        c.reject_removals_above_percent, c.rate_limit, c.created_at, \
                        t.schema_version \
                 FROM connectors c JOIN entity_types t ON t.slug = c.entity_type \
                 WHERE c.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(self.auth())
            .await?;
            let Some(row) = row else { return Ok(None) };
            let version: i64 = row.try_get("schema_version")?;
            Ok(Some((
                rows::connector(&row)?,
                u32::try_from(version).unwrap_or(u32::MAX),
            )))
        })
        .await
    }

    async fn create_consumer(&self, c: &Consumer, token_hash: &str) -> Result<()> {
        run(async {
            let mut tx = self.write().await?;
            let known: Vec<String> = sqlx::query_scalar(concat!(
                "SELECT slug FROM entity_types WHERE ",
                in_list!("slug", "$1")
            ))
            .bind(super::in_list_arg(
                c.entity_types.iter().map(String::as_str),
            )?)
            .fetch_all(&mut *tx)
            .await?;
            if let Some(missing) = c.entity_types.iter().find(|slug| !known.contains(slug)) {
                return Err(Error::not_found(ResourceKind::EntityType, missing).into());
            }
            sqlx::query(
                "INSERT INTO consumers (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&c.id)
            .bind(&c.name)
            .bind(token_hash)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await
            .map_err(unique_to_exists(ResourceKind::Consumer, &c.id))?;
            sqlx::query(concat!(
                "INSERT INTO consumer_grants (consumer_id, entity_type) \
                 SELECT DISTINCT $1, slug FROM entity_types WHERE ",
                in_list!("slug", "$2"),
                " ON CONFLICT DO NOTHING"
            ))
            .bind(&c.id)
            .bind(super::in_list_arg(
                c.entity_types.iter().map(String::as_str),
            )?)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn get_consumer(&self, id: &str) -> Result<Consumer> {
        run(async {
            let rows = sqlx::query("SELECT id, name, created_at FROM consumers WHERE id = $1")
                .bind(id)
                .fetch_all(self.reader())
                .await?;
            with_grants(self.reader(), rows)
                .await?
                .pop()
                .ok_or_else(|| Error::not_found(ResourceKind::Consumer, id).into())
        })
        .await
    }

    async fn list_consumers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Consumer>> {
        run(async {
            let rows = sqlx::query(
                "SELECT id, name, created_at FROM consumers WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?;
            with_grants(self.reader(), rows).await
        })
        .await
    }

    async fn delete_consumer(&self, id: &str) -> Result<()> {
        run(async {
            let done = sqlx::query("DELETE FROM consumers WHERE id = $1")
                .bind(id)
                .execute(self.writer())
                .await?;
            if done.rows_affected() == 0 {
                return Err(Error::not_found(ResourceKind::Consumer, id).into());
            }
            Ok(())
        })
        .await
    }

    async fn open_sessions_by_mode(&self) -> Result<Vec<(SessionMode, u64)>> {
        run(open_sessions(self.reader())).await
    }

    fn connections(&self) -> (u32, u32) {
        super::connections(self)
    }

    async fn consumer_by_token(&self, token_hash: &str) -> Result<Option<Consumer>> {
        run(async {
            let rows =
                sqlx::query("SELECT id, name, created_at FROM consumers WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_all(self.auth())
                    .await?;
            Ok(with_grants(self.auth(), rows).await?.pop())
        })
        .await
    }
}

/// Counts of open sessions by mode, every mode present.
async fn open_sessions(pool: &Pool) -> StoreResult<Vec<(SessionMode, u64)>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT mode, count(*) FROM sessions WHERE state = 'open' GROUP BY mode")
            .fetch_all(pool)
            .await?;
    Ok(SessionMode::ALL
        .iter()
        .map(|mode| {
            let n = rows
                .iter()
                .find(|(m, _)| m == mode.as_str())
                .map_or(0, |(_, n)| count(*n));
            (*mode, n)
        })
        .collect())
}

/// Consumers from rows of `id, name, created_at` plus their grants, in the rows' order.
async fn with_grants(pool: &Pool, rows: Vec<Row>) -> StoreResult<Vec<Consumer>> {
    let mut consumers = Vec::with_capacity(rows.len());
    for row in &rows {
        consumers.push(Consumer {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            entity_types: Vec::new(),
            created_at: row.try_get("created_at")?,
        });
    }
    if consumers.is_empty() {
        return Ok(consumers);
    }
    let grants: Vec<(String, String)> = sqlx::query_as(concat!(
        "SELECT consumer_id, entity_type FROM consumer_grants WHERE ",
        in_list!("consumer_id", "$1"),
        " ORDER BY consumer_id, entity_type"
    ))
    .bind(super::in_list_arg(consumers.iter().map(|c| c.id.as_str()))?)
    .fetch_all(pool)
    .await?;
    let mut by_consumer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (consumer, entity_type) in grants {
        by_consumer.entry(consumer).or_default().push(entity_type);
    }
    for c in &mut consumers {
        c.entity_types = by_consumer.remove(&c.id).unwrap_or_default();
    }
    Ok(consumers)
}
