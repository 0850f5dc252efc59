//! Wake-ups for change-log readers: the highest change-log sequence this process knows to be
//! committed, as a `tokio::sync::watch` value. Writers in this process raise it after their
//! commit; on PostgreSQL a LISTEN connection raises it for commits made by other processes.
//! Readers wait on it without holding a database connection.

use tokio::sync::watch;

/// What a change-log entry says happened to its record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Upsert,
    Delete,
}

impl Op {
    /// As stored in `change_log.op`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// The PostgreSQL NOTIFY channel a commit that logged changes signals, with its last sequence
/// as the payload.
pub(crate) const PG_CHANNEL: &str = "tributary_changes";

/// The highest committed change-log sequence known to this process.
#[derive(Debug)]
pub(crate) struct ChangeSignal {
    latest: watch::Sender<u64>,
}

impl Default for ChangeSignal {
    fn default() -> Self {
        Self {
            latest: watch::Sender::new(0),
        }
    }
}

impl ChangeSignal {
    /// Records that changes up to `sequence` are committed; wakes waiters if it is news.
    pub(crate) fn publish(&self, sequence: u64) {
        self.latest.send_if_modified(|latest| {
            let news = sequence > *latest;
            if news {
                *latest = sequence;
            }
            news
        });
    }

    /// Resolves once a sequence above `after` has been published.
    pub(crate) async fn wait_above(&self, after: u64) {
        let mut rx = self.latest.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail while we are borrowed.
        let _ = rx.wait_for(|latest| *latest > after).await;
    }
}
