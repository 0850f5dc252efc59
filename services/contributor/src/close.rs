//! Closing a session on a task of its own (docs/adr/0019-write-path-at-a-million.md).
//!
//! A call is cancelled by dropping its future: at `grpc.request_timeout_secs`, at the client's
//! own `grpc-timeout`, or when a `Contribute` stream goes away. Dropped in the middle of a
//! commit, the transaction rolls back and every second of its work is lost; a retry of a commit
//! that takes longer than the deadline would meet the same end every time, so a large session
//! on a slow disk could never commit. The commit therefore runs on a spawned task that the call
//! only waits for: cancelling the call stops the waiting, not the commit, which ends as it would
//! have (committed, or rolled back on its own error) and writes its import result either way.
//! A session is closed by one call at a time (`tributary_core::closing`), so cancelled and
//! resent closes cannot pile up.

use tonic::Status;
use tracing::Instrument;
use tributary_core::contribution::{ContributionService, Contributor};
use tributary_core::store::ClosedSession;
use tributary_core::Error;
use tributary_grpc::to_status;

/// Closes `session_id` (committing when `commit`) to its end even if the caller is cancelled.
pub(crate) async fn close_to_the_end(
    svc: &ContributionService,
    who: &Contributor,
    session_id: &str,
    commit: bool,
    force: bool,
) -> Result<ClosedSession, Status> {
    let (svc, who, session_id) = (svc.clone(), who.clone(), session_id.to_owned());
    let closing = tokio::spawn(
        async move { svc.close(&who, &session_id, commit, force).await }.in_current_span(),
    );
    match closing.await {
        Ok(closed) => closed.map_err(to_status),
        // Only a panic in the store ends the task early (the runtime is alive while we wait).
        Err(panicked) => Err(to_status(Error::Internal(format!(
            "closing the session failed unexpectedly: {panicked}"
        )))),
    }
}
