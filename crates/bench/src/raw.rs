//! The baseline: the same workload written straight to a table shaped like Tributary's `records`
//! (its indexes included), one transaction per batch, the fastest way each database takes these
//! rows: PostgreSQL an `unnest` upsert per batch (PERF.md), SQLite a prepared single-row upsert.
//! Only the database's time is counted, not building the rows (keys, checksums, JSON text).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use sha1::{Digest, Sha1};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

use crate::records::{self, Phase, ENTITY_TYPE};
use crate::PhaseResult;

/// The connector id the raw rows belong to (any 40-hex string does).
const CONNECTOR: &str = "b3c4a1f0e2d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5";

/// The marks of the replace phase's sweep. The `records` table itself is the store's own: its
/// migrations create it (`migrate_store`), so the baseline pays exactly the real indexes.
const PG_MARKS: &str = "CREATE TEMPORARY TABLE marks (key TEXT PRIMARY KEY)";

const PG_UPSERT: &str = r#"
INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, created_at, updated_at)
SELECT k, $6, $7, i, n, e::jsonb, '{}'::jsonb, c, 1, $8, $8
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS t(k, i, n, e, c)
ON CONFLICT (key) DO UPDATE SET
    name = excluded.name, entity = excluded.entity, instance = excluded.instance,
    checksum = excluded.checksum, version = records.version + 1, updated_at = excluded.updated_at
"#;

const PG_UPSERT_IF_CHANGED: &str = r#"
INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, created_at, updated_at)
SELECT k, $6, $7, i, n, e::jsonb, '{}'::jsonb, c, 1, $8, $8
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS t(k, i, n, e, c)
ON CONFLICT (key) DO UPDATE SET
    name = excluded.name, entity = excluded.entity, instance = excluded.instance,
    checksum = excluded.checksum, version = records.version + 1, updated_at = excluded.updated_at
WHERE records.checksum IS DISTINCT FROM excluded.checksum
"#;

const PG_MARK: &str = "INSERT INTO marks (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING";

const PG_SWEEP: &str = "DELETE FROM records r WHERE r.connector = $1 \
     AND NOT EXISTS (SELECT 1 FROM marks m WHERE m.key = r.key)";

const SQLITE_MARKS: &str = "CREATE TEMP TABLE marks (key TEXT PRIMARY KEY)";

const SQLITE_UPSERT: &str = r#"
INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, 1, ?8, ?8)
ON CONFLICT (key) DO UPDATE SET
    name = excluded.name, entity = excluded.entity, instance = excluded.instance,
    checksum = excluded.checksum, version = records.version + 1, updated_at = excluded.updated_at
"#;

const SQLITE_UPSERT_IF_CHANGED: &str = r#"
INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, 1, ?8, ?8)
ON CONFLICT (key) DO UPDATE SET
    name = excluded.name, entity = excluded.entity, instance = excluded.instance,
    checksum = excluded.checksum, version = records.version + 1, updated_at = excluded.updated_at
WHERE records.checksum IS NOT excluded.checksum
"#;

const SQLITE_MARK: &str = "INSERT OR IGNORE INTO marks (key) VALUES (?1)";

const SQLITE_SWEEP: &str = "DELETE FROM records WHERE connector = ?1 \
     AND NOT EXISTS (SELECT 1 FROM marks m WHERE m.key = records.key)";

/// One batch as columns: what a store computes before writing (key and checksum included).
struct Rows {
    keys: Vec<String>,
    ids: Vec<String>,
    names: Vec<String>,
    entities: Vec<String>,
    checksums: Vec<String>,
}

impl Rows {
    fn build(indexes: &[usize]) -> Rows {
        let mut rows = Rows {
            keys: Vec::with_capacity(indexes.len()),
            ids: Vec::with_capacity(indexes.len()),
            names: Vec::with_capacity(indexes.len()),
            entities: Vec::with_capacity(indexes.len()),
            checksums: Vec::with_capacity(indexes.len()),
        };
        for &i in indexes {
            let id = records::id(i);
            let name = records::name(i);
            let entity = records::entity(i);
            let hashed = json!({"entity": entity, "instance": {}, "name": name});
            rows.keys.push(key(&id));
            rows.checksums.push(
                blake3::hash(hashed.to_string().as_bytes())
                    .to_hex()
                    .to_string(),
            );
            rows.entities.push(entity.to_string());
            rows.ids.push(id);
            rows.names.push(name);
        }
        rows
    }
}

/// The public key of a record: SHA-1 of `entity_type \n connector \n id` (SPEC §1).
fn key(id: &str) -> String {
    let mut h = Sha1::new();
    h.update(ENTITY_TYPE.as_bytes());
    h.update(b"\n");
    h.update(CONNECTOR.as_bytes());
    h.update(b"\n");
    h.update(id.as_bytes());
    hex::encode(h.finalize())
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What each phase must have done to the table, checked so a fast but wrong baseline cannot pass.
fn expect_rows(phase: Phase, affected: u64, sent: usize, warnings: &mut Vec<String>) {
    let expected = match phase {
        Phase::FirstLoad => sent as u64,
        Phase::Unchanged | Phase::Replace => 0,
    };
    if affected != expected {
        warnings.push(format!(
            "raw SQL {}: {affected} rows written, expected {expected}",
            phase.label()
        ));
    }
}

/// Runs the workload against a fresh PostgreSQL database at `url`.
pub async fn postgres(url: &str, records: usize, batch: usize) -> Result<Vec<PhaseResult>> {
    migrate_store(url).await?;
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to the raw-SQL database")?;
    conn.execute(PG_MARKS).await?;
    let mut results = Vec::new();
    for phase in Phase::ALL {
        let mut warnings = Vec::new();
        let sql = match phase {
            Phase::FirstLoad => PG_UPSERT,
            Phase::Unchanged | Phase::Replace => PG_UPSERT_IF_CHANGED,
        };
        let batches = phase.batches(records, batch);
        let sent: usize = batches.iter().map(Vec::len).sum();
        let mut elapsed = Duration::ZERO;
        let mut affected = 0;
        for indexes in &batches {
            let rows = Rows::build(indexes);
            let start = Instant::now();
            let mut tx = conn.begin().await?;
            affected += sqlx::query(sql)
                .bind(&rows.keys)
                .bind(&rows.ids)
                .bind(&rows.names)
                .bind(&rows.entities)
                .bind(&rows.checksums)
                .bind(ENTITY_TYPE)
                .bind(CONNECTOR)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if phase == Phase::Replace {
                sqlx::query(PG_MARK)
                    .bind(&rows.keys)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            elapsed += start.elapsed();
        }
        expect_rows(phase, affected, sent, &mut warnings);
        let commit = if phase == Phase::Replace {
            let t = Instant::now();
            let mut tx = conn.begin().await?;
            let swept = sqlx::query(PG_SWEEP)
                .bind(CONNECTOR)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            check_swept(swept, records - sent, &mut warnings);
            let sweep = t.elapsed();
            elapsed += sweep;
            Some(sweep)
        } else {
            None
        };
        results.push(PhaseResult::new(phase, sent, elapsed, commit, warnings));
    }
    conn.close().await?;
    Ok(results)
}

/// Runs the workload against a fresh SQLite file (WAL, synchronous NORMAL) the fastest way
/// SQLite itself takes single rows: one prepared statement stepped per row (rusqlite, no
/// async hop), 1,000 rows (`batch`) a transaction. Only the database's time is counted.
pub async fn sqlite(
    path: &std::path::Path,
    records: usize,
    batch: usize,
) -> Result<Vec<PhaseResult>> {
    migrate_store(&path.to_string_lossy()).await?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || sqlite_blocking(&path, records, batch)).await?
}

fn sqlite_blocking(
    path: &std::path::Path,
    records: usize,
    batch: usize,
) -> Result<Vec<PhaseResult>> {
    let mut conn = rusqlite::Connection::open(path).context("opening the raw-SQL SQLite file")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // The store's page cache and checkpoint threshold (sqlite/mod.rs): with SQLite's defaults a
    // million random keys reread their index pages and checkpoint every batch, and the ceiling
    // would be lower than what Tributary itself gets out of SQLite.
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.pragma_update(None, "wal_autocheckpoint", 10000)?;
    conn.execute_batch(SQLITE_MARKS)?;
    let mut results = Vec::new();
    for phase in Phase::ALL {
        let mut warnings = Vec::new();
        let sql = match phase {
            Phase::FirstLoad => SQLITE_UPSERT,
            Phase::Unchanged | Phase::Replace => SQLITE_UPSERT_IF_CHANGED,
        };
        let batches = phase.batches(records, batch);
        let sent: usize = batches.iter().map(Vec::len).sum();
        let mut elapsed = Duration::ZERO;
        let mut affected = 0;
        for indexes in &batches {
            let rows = Rows::build(indexes);
            let start = Instant::now();
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(sql)?;
                let mut mark = tx.prepare_cached(SQLITE_MARK)?;
                let now = now_micros();
                for j in 0..rows.keys.len() {
                    affected += upsert.execute(rusqlite::params![
                        rows.keys[j],
                        ENTITY_TYPE,
                        CONNECTOR,
                        rows.ids[j],
                        rows.names[j],
                        rows.entities[j],
                        rows.checksums[j],
                        now
                    ])? as u64;
                    if phase == Phase::Replace {
                        mark.execute([&rows.keys[j]])?;
                    }
                }
            }
            tx.commit()?;
            elapsed += start.elapsed();
        }
        expect_rows(phase, affected, sent, &mut warnings);
        let commit = if phase == Phase::Replace {
            let t = Instant::now();
            let tx = conn.transaction()?;
            let swept = tx.execute(SQLITE_SWEEP, [CONNECTOR])? as u64;
            tx.commit()?;
            check_swept(swept, records - sent, &mut warnings);
            let sweep = t.elapsed();
            elapsed += sweep;
            Some(sweep)
        } else {
            None
        };
        results.push(PhaseResult::new(phase, sent, elapsed, commit, warnings));
    }
    Ok(results)
}

/// Creates the store's schema in the database at `url` by opening it as the server does (its
/// migrations), then lets go of it: the baseline writes to the same `records` table, indexes and
/// collations included, without a second copy of the schema to drift from the real one.
async fn migrate_store(url: &str) -> Result<()> {
    tributary_store::open(url)
        .await
        .map_err(|e| anyhow::anyhow!("migrating the raw-SQL database: {e}"))?;
    Ok(())
}

fn check_swept(swept: u64, expected: usize, warnings: &mut Vec<String>) {
    if swept != expected as u64 {
        warnings.push(format!(
            "raw SQL sweep deleted {swept} rows, expected {expected}"
        ));
    }
}

/// Ensures a benchmark database name is a plain identifier before it is spliced into SQL.
pub fn check_db_name(name: &str) -> Result<()> {
    ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "bad database name {name:?}"
    );
    Ok(())
}

/// Creates `name` on the server at `admin_url` and returns the URL of the new database.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String> {
    check_db_name(name)?;
    let mut conn = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    conn.close().await?;
    let mut url = url::Url::parse(admin_url).context("parsing --database-url")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Drops `name` (and any connection still open to it).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    check_db_name(name)?;
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    conn.close().await?;
    Ok(())
}
