//! Wake-ups across processes: a LISTEN connection that raises this process's change signal for
//! commits made anywhere (each commit that logged changes NOTIFYs its last sequence).

use crate::changes::{ChangeSignal, Logged, PG_CHANNEL};
use crate::rows::count;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::Weak;
use std::time::Duration;

/// Listens for commits of any process and publishes their sequences to `signal`, until the
/// store is dropped. After a lost connection (notifications may have been missed meanwhile) it
/// publishes the counter as it stands, so waiting readers re-read.
pub(super) async fn listen(pool: PgPool, signal: Weak<ChangeSignal>) {
    let mut listener: Option<PgListener> = None;
    loop {
        if signal.strong_count() == 0 {
            return;
        }
        let active = match listener.as_mut() {
            Some(active) => active,
            None => match PgListener::connect_with(&pool).await {
                Ok(mut fresh) => match fresh.listen(PG_CHANNEL).await {
                    Ok(()) => {
                        publish_counter(&pool, &signal).await;
                        listener.insert(fresh)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot LISTEN for change-log commits; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to LISTEN for change-log commits; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        // Wake up now and then to notice a dropped store.
        match tokio::time::timeout(Duration::from_secs(5), active.try_recv()).await {
            Err(_elapsed) => {}
            Ok(Ok(Some(notification))) => {
                if let (Some(signal), Some(logged)) =
                    (signal.upgrade(), Logged::parse(notification.payload()))
                {
                    signal.publish(&logged);
                }
            }
            // The connection was lost; the next try_recv reconnects and re-listens.
            Ok(Ok(None)) => publish_counter(&pool, &signal).await,
            Ok(Err(error)) => {
                tracing::warn!(%error, "LISTEN connection failed; reconnecting");
                listener = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn publish_counter(pool: &PgPool, signal: &Weak<ChangeSignal>) {
    let last: Result<i64, _> =
        sqlx::query_scalar("SELECT last_seq FROM change_sequence WHERE id = 1")
            .fetch_one(pool)
            .await;
    if let (Ok(last), Some(signal)) = (last, signal.upgrade()) {
        signal.publish_all(count(last));
    }
}
