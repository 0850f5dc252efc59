//! A background job that runs one at a time: asked to run while it runs, it runs once more
//! when it ends, so no request is lost and requests in a burst cost one extra run, not one each.

use std::sync::Mutex;

/// Whether the job runs, and whether it was asked again meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Coalesced {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    Running,
    /// Asked to run while running: runs once more.
    Again,
}

impl Coalesced {
    /// Asks for a run: answers whether the caller is to start it (nothing runs yet).
    pub(crate) fn start(&self) -> bool {
        let mut state = self.lock();
        let start = *state == State::Idle;
        *state = if start { State::Running } else { State::Again };
        start
    }

    /// Ends a run: answers whether to run once more (asked meanwhile).
    pub(crate) fn finish(&self) -> bool {
        let mut state = self.lock();
        let again = *state == State::Again;
        *state = if again { State::Running } else { State::Idle };
        again
    }

    /// Whether no run is under way (a test awaits the run a store starts when it opens).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        *self.lock() == State::Idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, valid whatever a panicking holder did.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_while_running_runs_once_more() {
        let job = Coalesced::default();
        assert!(job.start());
        assert!(!job.start(), "already running");
        assert!(!job.start(), "still one run more, not two");
        assert!(job.finish(), "asked meanwhile: once more");
        assert!(!job.finish(), "nothing asked since");
        assert!(job.start(), "idle again");
        assert!(!job.finish());
    }
}
