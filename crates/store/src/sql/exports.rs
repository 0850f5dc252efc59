//! Exports (SPEC.md §7): definitions, their run history, and the claims of scheduled runs.

use super::{Backend, Row};
use crate::error::{run, unique_to_exists, StoreError};
use crate::rows::{self, to_i64, EXPORT_COLUMNS, EXPORT_RUN_COLUMNS};
use async_trait::async_trait;
use std::sync::LazyLock;
use tributary_core::clock::Micros;
use tributary_core::error::ResourceKind;
use tributary_core::export::store::ExportStore;
use tributary_core::export::{Export, ExportRun};
use tributary_core::source::store::Claim;
use tributary_core::{Error, Result};

fn not_found(id: &str) -> StoreError {
    Error::not_found(ResourceKind::Export, id).into()
}

/// `NotFound` for the entity type when it does not exist (checked in `tx` before a write, so a
/// foreign-key failure never reaches the caller as an internal error).
async fn check_entity_type(tx: &mut super::Tx, slug: &str) -> Result<(), StoreError> {
    let exists = sqlx::query(concat!(
        "SELECT 1 FROM entity_types WHERE slug = $1",
        for_share!()
    ))
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?;
    if exists.is_none() {
        return Err(Error::not_found(ResourceKind::EntityType, slug).into());
    }
    Ok(())
}

#[async_trait]
impl ExportStore for Backend {
    async fn create_export(&self, e: &Export, next_run_at: Option<Micros>) -> Result<()> {
        static INSERT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "INSERT INTO exports ({EXPORT_COLUMNS}, next_run_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )
        });
        run(async {
            let mut tx = self.write().await?;
            check_entity_type(&mut tx, &e.entity_type).await?;
            sqlx::query(&INSERT)
                .bind(&e.id)
                .bind(&e.name)
                .bind(&e.entity_type)
                .bind(&e.filter)
                .bind(e.format.as_str())
                .bind(&e.destination)
                .bind(e.schedule.to_text())
                .bind(i64::from(e.enabled))
                .bind(e.created_at)
                .bind(e.updated_at)
                .bind(next_run_at)
                .execute(&mut *tx)
                .await
                .map_err(unique_to_exists(ResourceKind::Export, &e.name))?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn get_export(&self, id: &str) -> Result<Export> {
        static SELECT: LazyLock<String> =
            LazyLock::new(|| format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE id = $1"));
        run(async {
            let row: Option<Row> = sqlx::query(&SELECT)
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
            rows::export(&row.ok_or_else(|| not_found(id))?)
        })
        .await
    }

    async fn list_exports(&self, after: Option<&str>, limit: u32) -> Result<Vec<Export>> {
        static SELECT: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE id > $1 ORDER BY id LIMIT $2")
        });
        run(async {
            let found: Vec<Row> = sqlx::query(&SELECT)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
            found.iter().map(rows::export).collect()
        })
        .await
    }

    async fn update_export(&self, e: &Export, next_run_at: Option<Micros>) -> Result<Export> {
        static UPDATE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE exports SET name = $2, entity_type = $3, filter = $4, format = $5, \
                     destination = $6, schedule = $7, enabled = $8, updated_at = $9, \
                     next_run_at = $10 \
                 WHERE id = $1 RETURNING {EXPORT_COLUMNS}"
            )
        });
        run(async {
            let mut tx = self.write().await?;
            check_entity_type(&mut tx, &e.entity_type).await?;
            let row: Option<Row> = sqlx::query(&UPDATE)
                .bind(&e.id)
                .bind(&e.name)
                .bind(&e.entity_type)
                .bind(&e.filter)
                .bind(e.format.as_str())
                .bind(&e.destination)
                .bind(e.schedule.to_text())
                .bind(i64::from(e.enabled))
                .bind(e.updated_at)
                .bind(next_run_at)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unique_to_exists(ResourceKind::Export, &e.name))?;
            let stored = rows::export(&row.ok_or_else(|| not_found(&e.id))?)?;
            tx.commit().await?;
            Ok(stored)
        })
        .await
    }

    async fn delete_export(&self, id: &str) -> Result<()> {
        run(async {
            let mut tx = self.write().await?;
            sqlx::query("DELETE FROM export_runs WHERE export_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM exports WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(not_found(id));
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn record_export_run(&self, r: &ExportRun) -> Result<()> {
        static INSERT: LazyLock<String> = LazyLock::new(|| {
            // Inserted only while the export exists, so a run that outlived its export's
            // deletion is dropped (NotFound) instead of failing on the foreign key.
            format!(
                "INSERT INTO export_runs ({EXPORT_RUN_COLUMNS}) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM exports WHERE id = $2"
            )
        });
        run(async {
            let done = sqlx::query(&INSERT)
                .bind(&r.id)
                .bind(&r.export_id)
                .bind(r.status.as_str())
                .bind(r.started_at)
                .bind(r.ended_at)
                .bind(to_i64(r.records))
                .bind(to_i64(r.bytes))
                .bind(&r.location)
                .bind(r.error.as_deref())
                .execute(self.writer())
                .await?;
            if done.rows_affected() == 0 {
                return Err(not_found(&r.export_id));
            }
            Ok(())
        })
        .await
    }

    async fn list_export_runs(
        &self,
        export_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExportRun>> {
        // Newest first; the page continues strictly after the run `after` in (started_at, id)
        // order.
        static SELECT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {EXPORT_RUN_COLUMNS} FROM export_runs \
                 WHERE export_id = $1 \
                   AND (CAST($2 AS TEXT) IS NULL OR (started_at, id) < \
                        (SELECT started_at, id FROM export_runs WHERE id = $2)) \
                 ORDER BY started_at DESC, id DESC LIMIT $3"
            )
        });
        run(async {
            let exists = sqlx::query("SELECT 1 FROM exports WHERE id = $1")
                .bind(export_id)
                .fetch_optional(self.reader())
                .await?;
            if exists.is_none() {
                return Err(not_found(export_id));
            }
            let found: Vec<Row> = sqlx::query(&SELECT)
                .bind(export_id)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
            found.iter().map(rows::export_run).collect()
        })
        .await
    }

    async fn claim_exports(&self, claim: &Claim<'_>) -> Result<Vec<Export>> {
        // One statement decides every claim: due, enabled, and no live lease. The conditions
        // are repeated outside the subquery so that, under PostgreSQL's READ COMMITTED, a row
        // another scheduler claimed meanwhile is re-checked against its new version and skipped.
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            let due = "enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= $2 \
                       AND (lease_holder IS NULL OR lease_expires_at < $2)";
            format!(
                "UPDATE exports SET lease_holder = $1, lease_expires_at = $3 \
                 WHERE id IN (SELECT id FROM exports WHERE {due} \
                              ORDER BY next_run_at LIMIT $4{}) \
                   AND {due} \
                 RETURNING {EXPORT_COLUMNS}",
                skip_locked!()
            )
        });
        run(async {
            let claimed: Vec<Row> = sqlx::query(&CLAIM)
                .bind(claim.holder)
                .bind(claim.now)
                .bind(claim.lease_until)
                .bind(i64::from(claim.limit))
                .fetch_all(self.writer())
                .await?;
            claimed.iter().map(rows::export).collect()
        })
        .await
    }

    async fn renew_export_lease(&self, id: &str, holder: &str, until: Micros) -> Result<bool> {
        run(async {
            let done = sqlx::query(
                "UPDATE exports SET lease_expires_at = $3 WHERE id = $1 AND lease_holder = $2",
            )
            .bind(id)
            .bind(holder)
            .bind(until)
            .execute(self.writer())
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn release_export(
        &self,
        id: &str,
        holder: &str,
        next_run_at: Option<Micros>,
    ) -> Result<bool> {
        run(async {
            let done = sqlx::query(
                "UPDATE exports SET lease_holder = NULL, lease_expires_at = NULL, \
                     next_run_at = $3 \
                 WHERE id = $1 AND lease_holder = $2",
            )
            .bind(id)
            .bind(holder)
            .bind(next_run_at)
            .execute(self.writer())
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn next_export_due(&self) -> Result<Option<Micros>> {
        run(async {
            let due: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(next_run_at) FROM exports \
                 WHERE enabled = 1 AND next_run_at IS NOT NULL",
            )
            .fetch_one(self.reader())
            .await?;
            Ok(due)
        })
        .await
    }
}
