//! Pause points inside the store's writes, for tests that must look at the database while a
//! write is under way (SPEC.md §2.1: a reader never sees part of an accrue/replace commit).
//! Without the `testing` feature every hook is an empty function: a server build carries nothing.
//!
//! A backend calls [`before_session_commit`] when closing an accrue/replace session has made all
//! its writes, just before its final COMMIT. A test that called `pause_session_commit` for that
//! session holds the commit there until it releases the pause.

/// Called by a backend when closing accrue/replace session `session_id` has made every write and
/// is about to COMMIT; waits while a test holds that session's commit (`testing` feature only).
pub(crate) async fn before_session_commit(session_id: &str) {
    #[cfg(feature = "testing")]
    pauses::wait_if_paused(session_id).await;
    #[cfg(not(feature = "testing"))]
    let _ = session_id;
}

#[cfg(feature = "testing")]
pub use pauses::{pause_session_commit, CommitPause};

#[cfg(feature = "testing")]
mod pauses {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex, PoisonError};
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// A pause as the backend finds it: whom to tell it arrived, and what to wait for.
    struct Pending {
        reached: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    /// Pauses asked for, by session id (tests run in parallel in one process).
    static PENDING: LazyLock<Mutex<HashMap<String, Pending>>> = LazyLock::new(Default::default);

    fn pending() -> std::sync::MutexGuard<'static, HashMap<String, Pending>> {
        PENDING.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn wait_if_paused(session_id: &str) {
        let found = pending().remove(session_id);
        if let Some(pause) = found {
            let _ = pause.reached.send(());
            // Released, or the pause was dropped.
            let _ = pause.release.await;
        }
    }

    /// A test's hold on one session's commit; dropping it releases the commit.
    pub struct CommitPause {
        session_id: String,
        reached: oneshot::Receiver<()>,
        release: Option<oneshot::Sender<()>>,
    }

    /// Holds the next close of accrue/replace session `session_id` after its writes, before its
    /// COMMIT, until the returned pause is released or dropped.
    pub fn pause_session_commit(session_id: &str) -> CommitPause {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        pending().insert(
            session_id.to_owned(),
            Pending {
                reached: reached_tx,
                release: release_rx,
            },
        );
        CommitPause {
            session_id: session_id.to_owned(),
            reached,
            release: Some(release),
        }
    }

    impl CommitPause {
        /// Waits until the commit is held at the pause point; `false` if `limit` passed first.
        pub async fn reached(&mut self, limit: Duration) -> bool {
            matches!(
                tokio::time::timeout(limit, &mut self.reached).await,
                Ok(Ok(()))
            )
        }

        /// Lets the commit go on.
        pub fn release(self) {}
    }

    impl Drop for CommitPause {
        fn drop(&mut self) {
            pending().remove(&self.session_id);
            if let Some(release) = self.release.take() {
                let _ = release.send(());
            }
        }
    }
}
