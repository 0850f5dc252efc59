//! A session's staged rows are deleted after its end, not in it (ADR 0019, twenty-third round).
//!
//! The transaction that ends a staged session (commit, rollback, supersede, idle expiry) lists
//! it in `unstaging`; once that transaction has committed, a background task deletes the staged
//! rows and notes of every listed session, and its listing: the whole table at once when no open
//! session has staged rows (twenty-fourth round), else one session per transaction. At
//! 1,000,000 staged records that `DELETE` took 1.5–3 s of a commit's call on PostgreSQL, which
//! the caller no longer waits for. Nothing reads an ended session's staged rows (every read of
//! them is by an open session's id), so deleting them late changes no answer. A process that
//! stops before its task is done leaves its sessions listed: the next drain of any process on
//! the database (each starts one when it opens, and on every idle-expiry pass) deletes them.

use super::{Backend, Tx};
use crate::error::StoreResult;

/// What unstaging runs for each session: one session per statement, by `session_id = $1`.
/// SQLite deletes that in one pass, while a list (`IN (SELECT … json_each)`) makes it collect
/// every rowid first, ~24 MB of `RowSet` for a million staged rows at a commit (ADR 0019,
/// nineteenth round). The notes' delete stays two-pass on SQLite (the table has a foreign key),
/// but they are one row per batch.
pub(super) const UNSTAGE: [&str; 2] = [
    "DELETE FROM staged_records WHERE session_id = $1",
    "DELETE FROM staged_unchanged WHERE session_id = $1",
];

/// Lists the `sessions` just ended for their staged rows to be deleted after the ending
/// transaction; a session that staged nothing is not listed. Answers whether any was listed
/// (then start [`Backend::drain_unstaging`] once the transaction has committed).
pub(super) async fn unstage_later(tx: &mut Tx, sessions: &[&str]) -> StoreResult<bool> {
    let mut listed = 0;
    for session in sessions {
        listed += sqlx::query(
            "INSERT INTO unstaging (session_id) SELECT $1 \
             WHERE EXISTS (SELECT 1 FROM staged_records WHERE session_id = $1) \
                OR EXISTS (SELECT 1 FROM staged_unchanged WHERE session_id = $1)",
        )
        .bind(session)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(listed > 0)
}

impl Backend {
    /// Deletes the listed sessions' staged rows on a task of its own, unless this store's task
    /// already runs (it then looks again when done). A failure is logged and left listed for
    /// the next drain.
    pub(super) fn drain_unstaging(&self) {
        if !self.unstaging.start() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = store.unstage_listed().await {
                    tracing::warn!(%error, "deleting ended sessions' staged rows; left for the next try");
                }
                if !store.unstaging.finish() {
                    break;
                }
            }
        });
    }

    /// Deletes the staged rows of every session listed in `unstaging`: all at once when
    /// [`Backend::unstage_whole`] can, else one session per transaction (each a session's
    /// `DELETE`s as before, ADR 0019), walking the listing in id order. A session another
    /// process is unstaging meanwhile waits for its listing's row lock and then finds it gone.
    pub(super) async fn unstage_listed(&self) -> StoreResult<()> {
        // Every expiry pass and every open drains: with nothing listed, nothing is taken (on
        // PostgreSQL no lock on the table, no truncation of an empty one).
        let listed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM unstaging)")
            .fetch_one(self.reader())
            .await?;
        if !listed {
            return Ok(());
        }
        match self.unstage_whole().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(%error, "staged rows not emptied whole; one session at a time")
            }
        }
        let mut after = String::new();
        loop {
            let mut tx = self.write().await?;
            let next: Option<String> = sqlx::query_scalar(
                "SELECT session_id FROM unstaging WHERE session_id > $1 \
                 ORDER BY session_id LIMIT 1",
            )
            .bind(&after)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(session) = next else {
                tx.rollback().await?;
                return Ok(());
            };
            let listed = sqlx::query("DELETE FROM unstaging WHERE session_id = $1")
                .bind(&session)
                .execute(&mut *tx)
                .await?;
            if listed.rows_affected() > 0 {
                for staged in UNSTAGE {
                    sqlx::query(staged).bind(&session).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            after = session;
        }
    }

    /// Empties `staged_records` whole when every row left in it belongs to an ended session,
    /// as it does whenever no staged session is open: at a million rows a `TRUNCATE` instead of
    /// a `DELETE` that visits each row and writes its WAL (PostgreSQL), a truncation that frees
    /// the pages (SQLite). Their notes and listings go in the same transaction. Answers whether
    /// it did; when an open session has staged rows, or (PostgreSQL) another transaction uses
    /// the table this instant, the drain goes one session at a time instead. Under the lock no
    /// session can stage, end, or list itself: each of those reads `staged_records` first.
    async fn unstage_whole(&self) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        for lock in lock_whole!("staged_records") {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let open_staged: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sessions s WHERE s.state = 'open' \
                            AND EXISTS (SELECT 1 FROM staged_records r WHERE r.session_id = s.id))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if open_staged {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(empty_table!("staged_records"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM staged_unchanged WHERE session_id IN (SELECT session_id FROM unstaging)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM unstaging")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
