//! Merging the GIN index's pending list on a second connection while a commit writes.
//!
//! An accrue commit of a million records is one `INSERT … SELECT`, and PostgreSQL runs it in
//! one backend, on one core. Half of that statement's time was GIN: each record's ~8 entries
//! go to the index's pending list, and the inserting backend itself merges the list into the
//! index whenever it outgrows `gin_pending_list_limit` (ADR 0019). `gin_clean_pending_list`
//! does that merge from any backend, and an inserter that finds a merge already running does
//! not wait for it: it appends and goes on. So while a large commit writes, a second connection
//! merges, on the other core, and the commit's statement is left with the appends. Measured on
//! a table like `records`, 1,000,000 rows of the bench's shape in key order: 27.3–30.3 s with
//! the 32 MiB limit alone, 18.3–21.5 s with a merger beside it (the same limit), 500–1,000
//! pending pages left at the statement's end against 3,160 (ADR 0019, twentieth round).
//!
//! Two large commits at once each start a merger; the second waits on the index's merge lock
//! while the first merges, holding its connection, and merges what is left after.
//!
//! Index pages are not transactional: the merger moves entries of the commit's uncommitted rows
//! as vacuum would, and a rolled-back commit leaves dead entries for vacuum, as any insert does.

use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::oneshot;

/// The GIN index of `records` (migration 3).
const INDEX: &str = "records_entity_containment";

/// A commit that writes fewer rows leaves its entries to the pending list as before: a 32 MiB
/// list holds ~160,000 bench-sized records, so the statement merges seldom if at all, and a
/// second connection would be taken for nothing.
pub(crate) const MERGE_BESIDE_WRITES: u64 = 50_000;

/// How long the merger waits, after finding the list empty, before it looks again.
const IDLE: Duration = Duration::from_millis(20);

/// Whether this process may merge the pending list, found once when the store opens:
/// `gin_clean_pending_list` is for the index's owner (as `VACUUM` is), and a server connected
/// as another role keeps the 32 MiB limit alone.
pub(crate) async fn allowed(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_has_role(c.relowner, 'USAGE') AND NOT pg_is_in_recovery() \
         FROM pg_class c WHERE c.oid = $1::regclass",
    )
    .bind(INDEX)
    .fetch_optional(pool)
    .await
    .map(|allowed| allowed.unwrap_or(false))
}

/// A merger at work; it stops when this is dropped, after one last merge of what the
/// commit's statement left pending.
#[derive(Debug)]
pub(crate) struct Merging {
    _stop: oneshot::Sender<()>,
}

/// Starts merging the pending list on a connection of `pool` until the answer is dropped.
pub(crate) fn start(pool: &PgPool) -> Merging {
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(merge_until(pool.clone(), stopped));
    Merging { _stop: stop }
}

async fn merge_until(pool: PgPool, mut stopped: oneshot::Receiver<()>) {
    loop {
        let merged = match merge(&pool).await {
            Ok(pages) => pages,
            Err(error) => {
                // The commit goes on without help; what is pending is merged by the next
                // writer that outgrows the limit, or by autovacuum.
                tracing::debug!(%error, "merging the GIN pending list beside a commit");
                return;
            }
        };
        let stop = if merged > 0 {
            !matches!(stopped.try_recv(), Err(oneshot::error::TryRecvError::Empty))
        } else {
            tokio::select! {
                _ = &mut stopped => true,
                () = tokio::time::sleep(IDLE) => false,
            }
        };
        if stop {
            if let Err(error) = merge(&pool).await {
                tracing::debug!(%error, "merging the GIN pending list after a commit");
            }
            return;
        }
    }
}

/// Merges the whole pending list (entries appended meanwhile included); answers the pages
/// it took off the list.
async fn merge(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT gin_clean_pending_list($1::regclass)")
        .bind(INDEX)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::super::{connections, prepare_bulk_write, PgStore};
    use super::*;
    use crate::testing::TestDb;

    /// Writes `rows` records in one transaction prepared as a commit's bulk write for `writes`
    /// rows, commits, and answers once no connection of the store is in use (a merger, if one
    /// was started, has ended).
    async fn bulk_write(store: &PgStore, rows: i64, writes: u64) {
        let mut tx = store.pool.begin().await.expect("begins");
        let merging = prepare_bulk_write(store, &mut tx, writes)
            .await
            .expect("prepares");
        sqlx::query(
            "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, \
                                  checksum, version, created_at, updated_at) \
             SELECT lpad(i::text, 40, '0'), 'country', 'c1', i::text, 'n', \
                    jsonb_build_object('code', 'C' || i, 'continent', 'Asia'), '{}', 'x', 1, 0, 0 \
             FROM generate_series(1, $1) AS i",
        )
        .bind(rows)
        .execute(&mut *tx)
        .await
        .expect("writes");
        drop(merging);
        tx.commit().await.expect("commits");
        tokio::time::timeout(Duration::from_secs(60), async {
            while connections(store).0 > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the merger ends after the write");
    }

    /// Pages still on the pending list, which this call then merges.
    async fn pending_pages(store: &PgStore) -> i64 {
        merge(&store.pool).await.expect("merges")
    }

    tributary_test_harness::postgres_test! {
        /// A large write leaves nothing pending once its merger has ended, and the merged
        /// entries answer a containment query through the index; a small write gets no
        /// merger and leaves its entries on the list (so the first assertion can fail).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_large_write_has_its_pending_list_merged_beside_it() {
            let db = TestDb::postgres().await;
            let store = PgStore::open_for_test(&db).await;
            assert!(store.merge_pending_list, "the test role owns the index");
            assert_eq!(pending_pages(&store).await, 0);

            bulk_write(&store, 20_000, MERGE_BESIDE_WRITES).await;
            assert_eq!(pending_pages(&store).await, 0, "the merger merged it all");

            let mut tx = store.pool.begin().await.expect("begins");
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .expect("sets");
            let found: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM records WHERE entity @> '{\"code\": \"C12345\"}'",
            )
            .fetch_one(&mut *tx)
            .await
            .expect("queries");
            assert_eq!(found, 1);
            tx.rollback().await.expect("ends");

            sqlx::query("DELETE FROM records").execute(&store.pool).await.expect("empties");
            bulk_write(&store, 2_000, MERGE_BESIDE_WRITES - 1).await;
            assert!(pending_pages(&store).await > 0, "a small write leaves its entries pending");
            store.close_for_test(db).await;
        }
    }
}
