//! Wake-ups for change-log readers: per entity type, the highest change-log sequence this
//! process knows to be committed, as a `tokio::sync::watch` value. Writers in this process raise it after their
//! commit; on PostgreSQL a LISTEN connection raises it for commits made by other processes.
//! Readers wait on it without holding a database connection.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// The PostgreSQL NOTIFY channel a commit that logged changes signals; the payload is
/// `"<last sequence> <entity type>"`.
pub(crate) const PG_CHANNEL: &str = "tributary_changes";

/// What one transaction logged: every change-writing transaction concerns one entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logged {
    pub entity_type: String,
    /// The last sequence it logged.
    pub last: u64,
    /// How many entries it logged (0 when read from another process's NOTIFY).
    pub entries: u64,
}

impl Logged {
    /// The NOTIFY payload.
    pub(crate) fn payload(&self) -> String {
        format!("{} {}", self.last, self.entity_type)
    }

    /// Reads a NOTIFY payload.
    pub(crate) fn parse(payload: &str) -> Option<Logged> {
        let (last, entity_type) = payload.split_once(' ')?;
        Some(Logged {
            entity_type: entity_type.to_owned(),
            last: last.parse().ok()?,
            entries: 0,
        })
    }
}

/// The highest committed change-log sequence known to this process for each entity type that
/// has readers or changes: a commit wakes only the readers of its own type.
#[derive(Debug, Default)]
pub(crate) struct ChangeSignal {
    by_type: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl ChangeSignal {
    fn of(&self, entity_type: &str) -> watch::Sender<u64> {
        let mut by_type = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
        by_type
            .entry(entity_type.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .clone()
    }

    /// Records that `logged` is committed; wakes that type's waiters if it is news.
    pub(crate) fn publish(&self, logged: &Logged) {
        raise(&self.of(&logged.entity_type), logged.last);
    }

    /// Wakes the waiters of every type up to `sequence` (after wake-ups may have been lost).
    pub(crate) fn publish_all(&self, sequence: u64) {
        let senders: Vec<watch::Sender<u64>> = {
            let by_type = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
            by_type.values().cloned().collect()
        };
        for sender in senders {
            raise(&sender, sequence);
        }
    }

    /// Resolves once a sequence above `after` has been published for `entity_type`.
    pub(crate) async fn wait_above(&self, entity_type: &str, after: u64) {
        let mut rx = self.of(entity_type).subscribe();
        // The sender is kept in the map as long as `self` lives, so waiting cannot fail.
        let _ = rx.wait_for(|latest| *latest > after).await;
    }
}

fn raise(sender: &watch::Sender<u64>, sequence: u64) {
    sender.send_if_modified(|latest| {
        let news = sequence > *latest;
        if news {
            *latest = sequence;
        }
        news
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let logged = Logged {
            entity_type: "country".into(),
            last: 42,
            entries: 0,
        };
        assert_eq!(Logged::parse(&logged.payload()), Some(logged));
        assert_eq!(Logged::parse("42"), None);
    }
}
