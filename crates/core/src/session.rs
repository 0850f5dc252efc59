//! The session state machine of SPEC.md §2.1.

use crate::model::{SessionMode, SessionState};

/// How a session ends, and the state it ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// CloseSession(commit = true).
    Commit,
    /// CloseSession(commit = false).
    Rollback,
    /// The connector opened another accrue/replace session.
    Superseded,
    /// Idle for longer than the idle timeout.
    Expired,
}

impl SessionEnd {
    /// The state a session of `mode` is left in. Stream sessions have nothing to commit or
    /// discard, so any close leaves them `Closed`.
    pub fn final_state(self, mode: SessionMode) -> SessionState {
        if !mode.is_staged() {
            return SessionState::Closed;
        }
        match self {
            Self::Commit => SessionState::Committed,
            Self::Rollback => SessionState::RolledBack,
            Self::Superseded => SessionState::Superseded,
            Self::Expired => SessionState::Expired,
        }
    }
}

/// Whether opening a session of `mode` supersedes the connector's open accrue/replace session:
/// a connector has at most one open accrue/replace session; stream sessions are unlimited.
pub fn supersedes(mode: SessionMode) -> bool {
    mode.is_staged()
}

/// Whether the idle timeout applies to a session of `mode` (stream sessions may stay open forever).
pub fn expires_when_idle(mode: SessionMode) -> bool {
    mode.is_staged()
}

/// Whether a replace commit that would sweep `swept` of `total` records is refused by a guard of
/// `limit_percent`.
pub fn sweep_refused(swept: u64, total: u64, limit_percent: Option<f64>) -> bool {
    match limit_percent {
        Some(limit) if total > 0 => (swept as f64) * 100.0 / (total as f64) > limit,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sessions_only_close() {
        assert_eq!(
            SessionEnd::Commit.final_state(SessionMode::Stream),
            SessionState::Closed
        );
        assert_eq!(
            SessionEnd::Rollback.final_state(SessionMode::Accrue),
            SessionState::RolledBack
        );
        assert_eq!(
            SessionEnd::Superseded.final_state(SessionMode::Replace),
            SessionState::Superseded
        );
    }

    #[test]
    fn sweep_guard_compares_percentages() {
        assert!(!sweep_refused(10, 100, Some(10.0)));
        assert!(sweep_refused(11, 100, Some(10.0)));
        assert!(!sweep_refused(100, 100, None));
        assert!(!sweep_refused(0, 0, Some(0.0)));
    }
}
