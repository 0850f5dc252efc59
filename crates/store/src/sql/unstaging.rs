//! A session's staged rows are deleted after its end, not in it (ADR 0019, twenty-third round).
//!
//! The transaction that ends a staged session (commit, rollback, supersede, idle expiry) lists
//! it in `unstaging`; once that transaction has committed, a background task deletes the staged
//! rows and notes of every listed session, and its listing, one session per transaction. At
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

    /// Deletes the staged rows of every session listed in `unstaging`, one session per
    /// transaction (each a session's `DELETE`s as before, ADR 0019), walking the listing in id
    /// order. A session another process is unstaging meanwhile waits for its listing's row lock
    /// and then finds it gone.
    async fn unstage_listed(&self) -> StoreResult<()> {
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
}
