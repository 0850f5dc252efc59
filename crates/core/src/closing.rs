//! Sessions being closed in this process, so that each is closed by one call at a time.
//!
//! A close runs to its end even when its call is cancelled (the Contribution service spawns
//! it). Without this, a client could cancel and resend `CloseSession` for one session without
//! end, and every detached close would hold a database connection waiting on the session's row
//! lock until the first commit ends. A second close of a session already closing here is
//! refused at once with `FAILED_PRECONDITION` (`SESSION_CLOSING`); the client retries after the
//! first ends, when the session answers as closed.

use crate::Error;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The sessions being closed, as `(connector, session id)`.
#[derive(Debug, Clone, Default)]
pub struct ClosingSessions(Arc<Mutex<HashSet<(String, String)>>>);

/// Marks a session as closing until dropped.
#[derive(Debug)]
pub struct Closing {
    sessions: ClosingSessions,
    key: (String, String),
}

impl ClosingSessions {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `session_id` of `connector` as closing, or refuses when it already is. Keyed by
    /// both, so another connector naming the id learns nothing from this (it is denied by the
    /// store as before).
    pub fn begin(&self, connector: &str, session_id: &str) -> Result<Closing, Error> {
        let key = (connector.to_owned(), session_id.to_owned());
        if !self.ids().insert(key.clone()) {
            return Err(Error::FailedPrecondition {
                reason: "SESSION_CLOSING",
                message: format!(
                    "session {session_id:?} is being closed by an earlier call; retry when it ends"
                ),
                metadata: vec![("session_id".to_owned(), session_id.to_owned())],
            });
        }
        Ok(Closing {
            sessions: self.clone(),
            key,
        })
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        self.sessions.ids().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_closes_once_at_a_time() {
        let sessions = ClosingSessions::default();
        let first = sessions.begin("c", "s").expect("first close");
        assert!(matches!(
            sessions.begin("c", "s"),
            Err(Error::FailedPrecondition {
                reason: "SESSION_CLOSING",
                ..
            })
        ));
        assert!(
            sessions.begin("c", "t").is_ok(),
            "another session closes freely"
        );
        assert!(
            sessions.begin("d", "s").is_ok(),
            "another connector is not told"
        );
        drop(first);
        assert!(
            sessions.begin("c", "s").is_ok(),
            "free again once the first ends"
        );
    }
}
