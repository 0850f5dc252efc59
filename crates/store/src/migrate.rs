//! Schema migrations: embedded SQL scripts applied in order at open, tracked in
//! `tributary_migrations`. Each script runs in its own transaction together with its tracking row,
//! so a failed script leaves nothing half-applied.

use crate::error::{StoreError, StoreResult};
use sqlx::{Connection, PgConnection, SqlitePool};

/// One migration: its version and SQL script.
struct Migration {
    version: i64,
    sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/sqlite/0002_batch_seq.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/sqlite/0003_change_log.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../migrations/sqlite/0010_sources.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../migrations/sqlite/0011_records_source_by_rowid.sql"),
    },
    Migration {
        version: 14,
        sql: include_str!("../migrations/sqlite/0014_exports.sql"),
    },
    Migration {
        version: 16,
        sql: include_str!("../migrations/sqlite/0016_staged_unchanged.sql"),
    },
    Migration {
        version: 17,
        sql: include_str!("../migrations/sqlite/0017_import_results_session.sql"),
    },
    Migration {
        version: 18,
        sql: include_str!("../migrations/sqlite/0018_unstaging.sql"),
    },
    Migration {
        version: 19,
        sql: include_str!("../migrations/sqlite/0019_staged_appended.sql"),
    },
    Migration {
        version: 20,
        sql: include_str!("../migrations/sqlite/0020_records_key_found.sql"),
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_batch_seq.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/postgres/0003_change_log.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../migrations/postgres/0010_sources.sql"),
    },
    Migration {
        version: 14,
        sql: include_str!("../migrations/postgres/0014_exports.sql"),
    },
    Migration {
        version: 16,
        sql: include_str!("../migrations/postgres/0016_staged_unchanged.sql"),
    },
    Migration {
        version: 17,
        sql: include_str!("../migrations/postgres/0017_import_results_session.sql"),
    },
    Migration {
        version: 18,
        sql: include_str!("../migrations/postgres/0018_unstaging.sql"),
    },
    Migration {
        version: 19,
        sql: include_str!("../migrations/postgres/0019_staged_appended.sql"),
    },
];

const TRACKING_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS tributary_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// An arbitrary constant naming Tributary's migration advisory lock ("trib" in ASCII).
const PG_LOCK_KEY: i64 = 0x7472_6962;

/// Migrates a SQLite database through its writer pool. `BEGIN IMMEDIATE` takes the write lock up
/// front, so two processes opening one file at once apply each script once.
pub(crate) async fn sqlite(writer: &SqlitePool) -> StoreResult<()> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(TRACKING_TABLE).execute(&mut *tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM tributary_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for m in SQLITE.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(version = m.version, "applying SQLite migration");
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                version: m.version,
                source,
            })?;
        sqlx::query("INSERT INTO tributary_migrations (version, applied_at) VALUES (?1, ?2)")
            .bind(m.version)
            .bind(tributary_core::clock::now_micros())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Migrates a PostgreSQL database on a dedicated connection holding a session advisory lock for
/// the whole run, so replicas starting together wait for each other instead of racing to create
/// the same tables. Closing the connection releases the lock even if a script fails.
pub(crate) async fn postgres(options: &sqlx::postgres::PgConnectOptions) -> StoreResult<()> {
    let mut conn = PgConnection::connect_with(options).await?;
    let result = postgres_locked(&mut conn).await;
    // Best effort: the lock dies with the connection anyway.
    let _ = conn.close().await;
    result
}

async fn postgres_locked(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    sqlx::query(TRACKING_TABLE).execute(&mut *conn).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM tributary_migrations")
        .fetch_all(&mut *conn)
        .await?;
    for m in POSTGRES.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(version = m.version, "applying PostgreSQL migration");
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                version: m.version,
                source,
            })?;
        sqlx::query("INSERT INTO tributary_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(tributary_core::clock::now_micros())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
