//! Entity types, connectors and consumers on PostgreSQL.

use super::changes::{log_deletes_where, DeleteScope};
use super::PgStore;
use crate::error::{entity_type_in_use, unique_to_exists, StoreResult};
use crate::rows::{self, count};
use sqlx::Row;
use std::collections::BTreeMap;
use tributary_core::error::ResourceKind;
use tributary_core::model::{Connector, Consumer, EntityType};
use tributary_core::Error;

macro_rules! entity_type_columns {
    () => {
        "slug, name, description, schema, schema_version, created_at, updated_at"
    };
}
macro_rules! entity_type_select {
    () => {
        "slug, name, description, schema::text AS schema, schema_version, created_at, updated_at"
    };
}
macro_rules! connector_columns {
    () => {
        "id, name, entity_type, write_policy, reject_removals_above_percent, rate_limit, created_at"
    };
}

pub(crate) async fn create_entity_type(s: &PgStore, e: &EntityType) -> StoreResult<()> {
    sqlx::query(concat!(
        "INSERT INTO entity_types (",
        entity_type_columns!(),
        ") VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)"
    ))
    .bind(&e.slug)
    .bind(&e.name)
    .bind(&e.description)
    .bind(e.schema.to_string())
    .bind(i64::from(e.schema_version))
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(&s.pool)
    .await
    .map_err(unique_to_exists(ResourceKind::EntityType, &e.slug))?;
    Ok(())
}

pub(crate) async fn get_entity_type(s: &PgStore, slug: &str) -> StoreResult<EntityType> {
    let row = sqlx::query(concat!(
        "SELECT ",
        entity_type_select!(),
        " FROM entity_types WHERE slug = $1"
    ))
    .bind(slug)
    .fetch_optional(&s.pool)
    .await?
    .ok_or_else(|| Error::not_found(ResourceKind::EntityType, slug))?;
    rows::entity_type(&row)
}

pub(crate) async fn list_entity_types(
    s: &PgStore,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<EntityType>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        entity_type_select!(),
        " FROM entity_types WHERE slug > $1 ORDER BY slug LIMIT $2"
    ))
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::entity_type).collect()
}

pub(crate) async fn update_entity_type(
    s: &PgStore,
    e: &EntityType,
    now: i64,
) -> StoreResult<EntityType> {
    let mut tx = s.write().await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        entity_type_select!(),
        " FROM entity_types WHERE slug = $1 FOR UPDATE"
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
        "UPDATE entity_types SET name = $2, description = $3, schema = $4::jsonb, schema_version = $5, updated_at = $6 \
         WHERE slug = $1 RETURNING ",
        entity_type_select!()
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
}

pub(crate) async fn delete_entity_type(s: &PgStore, slug: &str, force: bool) -> StoreResult<()> {
    let mut tx = s.write().await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM entity_types WHERE slug = $1 FOR UPDATE")
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
    // Batches and commits in flight on the type's sessions finish first. Accrue/replace sessions
    // are locked before stream sessions: a commit holds its own session row and then locks its
    // connector's stream sessions, so taking them in the other order could deadlock (ADR 0003).
    sqlx::query(
        "SELECT 1 FROM sessions s JOIN connectors c ON c.id = s.connector \
         WHERE c.entity_type = $1 AND s.state = 'open' ORDER BY (s.mode = 'stream'), s.id \
         FOR UPDATE OF s",
    )
    .bind(slug)
    .execute(&mut *tx)
    .await?;
    let now = tributary_core::clock::now_micros();
    let logged = log_deletes_where(&mut tx, DeleteScope::EntityType, slug, now).await?;
    let statements = [
        "DELETE FROM records WHERE entity_type = $1",
        "DELETE FROM staged_records WHERE session_id IN \
         (SELECT s.id FROM sessions s JOIN connectors c ON c.id = s.connector WHERE c.entity_type = $1)",
        "DELETE FROM sessions WHERE connector IN (SELECT id FROM connectors WHERE entity_type = $1)",
        // The current cycle's rows of their sources (which go by cascade with the connectors).
        "DELETE FROM source_marks WHERE source_id IN \
         (SELECT s.id FROM sources s JOIN connectors c ON c.id = s.connector WHERE c.entity_type = $1)",
        "DELETE FROM source_items WHERE source_id IN \
         (SELECT s.id FROM sources s JOIN connectors c ON c.id = s.connector WHERE c.entity_type = $1)",
        "DELETE FROM connectors WHERE entity_type = $1",
        "DELETE FROM consumer_grants WHERE entity_type = $1",
        "DELETE FROM entity_types WHERE slug = $1",
    ];
    for sql in statements {
        sqlx::query(sql).bind(slug).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    if let Some(sequence) = logged {
        s.changes.publish(sequence);
    }
    Ok(())
}

pub(crate) async fn create_connector(
    s: &PgStore,
    c: &Connector,
    token_hash: &str,
) -> StoreResult<()> {
    let mut tx = s.write().await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM entity_types WHERE slug = $1")
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
}

pub(crate) async fn get_connector(s: &PgStore, id: &str) -> StoreResult<Connector> {
    let row = sqlx::query(concat!(
        "SELECT ",
        connector_columns!(),
        " FROM connectors WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or_else(|| Error::not_found(ResourceKind::Connector, id))?;
    rows::connector(&row)
}

pub(crate) async fn list_connectors(
    s: &PgStore,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<Connector>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        connector_columns!(),
        " FROM connectors WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(rows::connector).collect()
}

pub(crate) async fn update_connector(s: &PgStore, c: &Connector) -> StoreResult<Connector> {
    let row = sqlx::query(concat!(
        "UPDATE connectors SET name = $2, write_policy = $3, reject_removals_above_percent = $4, rate_limit = $5 \
         WHERE id = $1 RETURNING ",
        connector_columns!()
    ))
    .bind(&c.id)
    .bind(&c.name)
    .bind(c.write_policy.as_str())
    .bind(c.reject_removals_above_percent)
    .bind(c.rate_limit.map(i64::from))
    .fetch_optional(&s.pool)
    .await?
    .ok_or_else(|| Error::not_found(ResourceKind::Connector, &c.id))?;
    rows::connector(&row)
}

pub(crate) async fn delete_connector(
    s: &PgStore,
    id: &str,
    delete_records: bool,
) -> StoreResult<u64> {
    let now = tributary_core::clock::now_micros();
    let mut tx = s.write().await?;
    // Lock the connector first, as open_session does, so no session opens while it goes.
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM connectors WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(Error::not_found(ResourceKind::Connector, id).into());
    }
    // Its open sessions end as if closed with commit = false (waiting for in-flight batches,
    // which hold their session row); their staged data goes. Accrue/replace sessions are locked
    // first, as in delete_entity_type: a commit in flight holds its own row and then locks the
    // connector's stream sessions.
    sqlx::query(
        "SELECT 1 FROM sessions WHERE connector = $1 AND state = 'open' \
         ORDER BY (mode = 'stream'), id FOR UPDATE",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let ended: Vec<String> = sqlx::query_scalar(
        "UPDATE sessions SET state = CASE mode WHEN 'stream' THEN 'closed' ELSE 'rolled_back' END, closed_at = $2 \
         WHERE connector = $1 AND state = 'open' RETURNING id",
    )
    .bind(id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM staged_records WHERE session_id = ANY($1)")
        .bind(&ended)
        .execute(&mut *tx)
        .await?;
    // The current cycle's rows of its sources (which go by cascade with the connector).
    for sql in [
        "DELETE FROM source_marks WHERE source_id IN (SELECT id FROM sources WHERE connector = $1)",
        "DELETE FROM source_items WHERE source_id IN (SELECT id FROM sources WHERE connector = $1)",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM connectors WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let mut logged = None;
    let records = if delete_records {
        // The sessions update above waited out the connector's batches in flight.
        logged = log_deletes_where(&mut tx, DeleteScope::Connector, id, now).await?;
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
        s.changes.publish(sequence);
    }
    Ok(records)
}

pub(crate) async fn set_connector_token(
    s: &PgStore,
    id: &str,
    token_hash: &str,
) -> StoreResult<()> {
    let done = sqlx::query("UPDATE connectors SET token_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(token_hash)
        .execute(&s.pool)
        .await
        .map_err(unique_to_exists(ResourceKind::Connector, id))?;
    if done.rows_affected() == 0 {
        return Err(Error::not_found(ResourceKind::Connector, id).into());
    }
    Ok(())
}

pub(crate) async fn connector_by_token(
    s: &PgStore,
    token_hash: &str,
) -> StoreResult<Option<(Connector, u32)>> {
    let row = sqlx::query(
        "SELECT c.id, c.name, c.entity_type, c.write_policy, c.reject_removals_above_percent, c.rate_limit, \
                c.created_at, t.schema_version \
         FROM connectors c JOIN entity_types t ON t.slug = c.entity_type WHERE c.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&s.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("schema_version")?;
    Ok(Some((
        rows::connector(&row)?,
        u32::try_from(version).unwrap_or(u32::MAX),
    )))
}

pub(crate) async fn create_consumer(
    s: &PgStore,
    c: &Consumer,
    token_hash: &str,
) -> StoreResult<()> {
    let mut tx = s.write().await?;
    let known: Vec<String> =
        sqlx::query_scalar("SELECT slug FROM entity_types WHERE slug = ANY($1)")
            .bind(&c.entity_types)
            .fetch_all(&mut *tx)
            .await?;
    if let Some(missing) = c.entity_types.iter().find(|slug| !known.contains(slug)) {
        return Err(Error::not_found(ResourceKind::EntityType, missing).into());
    }
    sqlx::query("INSERT INTO consumers (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&c.id)
        .bind(&c.name)
        .bind(token_hash)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(unique_to_exists(ResourceKind::Consumer, &c.id))?;
    sqlx::query(
        "INSERT INTO consumer_grants (consumer_id, entity_type) SELECT DISTINCT $1, unnest($2::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&c.id)
    .bind(&c.entity_types)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Consumers from rows of `id, name, created_at` plus their grants, in the rows' order.
async fn with_grants(s: &PgStore, rows: Vec<sqlx::postgres::PgRow>) -> StoreResult<Vec<Consumer>> {
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
    let grants: Vec<(String, String)> = sqlx::query_as(
        "SELECT consumer_id, entity_type FROM consumer_grants \
         WHERE consumer_id = ANY($1) ORDER BY consumer_id, entity_type",
    )
    .bind(consumers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
    .fetch_all(&s.pool)
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

pub(crate) async fn get_consumer(s: &PgStore, id: &str) -> StoreResult<Consumer> {
    let rows = sqlx::query("SELECT id, name, created_at FROM consumers WHERE id = $1")
        .bind(id)
        .fetch_all(&s.pool)
        .await?;
    with_grants(s, rows)
        .await?
        .pop()
        .ok_or_else(|| Error::not_found(ResourceKind::Consumer, id).into())
}

pub(crate) async fn list_consumers(
    s: &PgStore,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<Consumer>> {
    let rows = sqlx::query(
        "SELECT id, name, created_at FROM consumers WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&s.pool)
    .await?;
    with_grants(s, rows).await
}

pub(crate) async fn delete_consumer(s: &PgStore, id: &str) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM consumers WHERE id = $1")
        .bind(id)
        .execute(&s.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::not_found(ResourceKind::Consumer, id).into());
    }
    Ok(())
}

pub(crate) async fn consumer_by_token(
    s: &PgStore,
    token_hash: &str,
) -> StoreResult<Option<Consumer>> {
    let rows = sqlx::query("SELECT id, name, created_at FROM consumers WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_all(&s.pool)
        .await?;
    Ok(with_grants(s, rows).await?.pop())
}
