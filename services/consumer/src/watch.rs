//! The Watch stream (SPEC.md §3): one task per stream reads the change log a page at a time and
//! forwards the events through a small bounded channel, so memory is bounded by a page whatever
//! the backlog, and a client that stops reading stalls its task instead of growing a queue.
//! Between reads the task holds no database connection: it waits for the store's wake-up (a
//! local commit or, on PostgreSQL, a NOTIFY from any process), with a periodic re-read as a
//! safety net for wake-ups that cannot reach it (another process on a SQLite file, a LISTEN
//! connection being re-established).

use futures::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument, Span};
use tributary_core::catalog::{CatalogService, Change, ChangeBatch, WatchSlot};
use tributary_core::Result;
use tributary_grpc::{log_outcome, to_status};
use tributary_proto::catalog::v1 as pb;

use crate::{record_to_proto, WatchStream};

/// Change-log entries read per query.
const PAGE: u32 = 500;
/// Events queued for the client.
const OUTBOUND_CAPACITY: usize = 64;
/// Re-read this often even without a wake-up.
const REREAD_EVERY: Duration = Duration::from_secs(5);

/// Who watches what: the service, the caller's token (checked again while the stream is open,
/// so revocation ends it), the entity type, and the stream's place in its reader's limit.
pub(crate) struct Subscription {
    pub svc: CatalogService,
    pub token: Option<String>,
    pub entity_type: String,
    /// Held, not read: dropping it when the stream ends frees the place.
    pub _slot: WatchSlot,
}

/// Reads the first page now, so an `after` older than the retention (`OUT_OF_RANGE`) or beyond
/// the log fails the call itself; then streams from a task.
pub(crate) async fn start(
    subscription: Subscription,
    after: u64,
    shutdown: CancellationToken,
    span: Span,
) -> Result<WatchStream> {
    let first = subscription
        .svc
        .read_changes(&subscription.entity_type, after, PAGE)
        .await?;
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    // The final status travels apart from the events, so it is delivered (after the queued
    // events) even when the event queue is full.
    let (end_tx, end_rx) = oneshot::channel::<Status>();
    let task = Task {
        subscription,
        shutdown,
        tx,
    };
    tokio::spawn(
        async move {
            tracing::debug!(after, "watch started");
            let _subscriber = Subscriber::new();
            if let Err(status) = log_outcome(task.run(first).await) {
                let _ = end_tx.send(status);
            }
        }
        .instrument(span),
    );
    let end = futures::stream::once(end_rx)
        .filter_map(|status| futures::future::ready(status.ok().map(Err)));
    Ok(Box::pin(ReceiverStream::new(rx).chain(end)))
}

/// Counts an open Watch in `tributary_watch_subscribers` (this process's) while it lives.
struct Subscriber;

impl Subscriber {
    fn new() -> Self {
        metrics::gauge!("tributary_watch_subscribers").increment(1.0);
        Self
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        metrics::gauge!("tributary_watch_subscribers").decrement(1.0);
    }
}

struct Task {
    subscription: Subscription,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
}

impl Task {
    /// Streams until the client goes away (`Ok`), or ends the stream with a status: the store
    /// failing, a pruned position, or shutdown (`UNAVAILABLE`).
    async fn run(&self, first: ChangeBatch) -> Result<(), Status> {
        let sub = &self.subscription;
        let every = sub.svc.limits().watch_revalidate;
        let mut next_check = tokio::time::Instant::now() + every;
        let mut batch = first;
        loop {
            // Revocation reaches busy streams too: checked between pages, not only when idle.
            if tokio::time::Instant::now() >= next_check {
                sub.svc
                    .revalidate_watch(sub.token.as_deref(), &sub.entity_type)
                    .await
                    .map_err(to_status)?;
                next_check = tokio::time::Instant::now() + every;
            }
            let mut through = batch.through;
            for event in batch.events {
                let sequence = event.sequence;
                let event = match event.change {
                    Change::Upserted(record) => pb::watch_response::Event::Upserted(
                        record_to_proto(*record).map_err(to_status)?,
                    ),
                    Change::Deleted(key) => pb::watch_response::Event::DeletedKey(key),
                };
                let message = pb::WatchResponse {
                    sequence,
                    event: Some(event),
                };
                if !self.send(message).await? {
                    return Ok(());
                }
                through = through.max(sequence);
            }
            if !batch.more {
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return Err(shutting_down()),
                    () = self.tx.closed() => return Ok(()),
                    () = tokio::time::sleep_until(next_check) => {
                        batch = ChangeBatch { events: Vec::new(), through, more: false };
                        continue;
                    }
                    () = sub.svc.wait_for_changes(&sub.entity_type, through) => {}
                    () = tokio::time::sleep(REREAD_EVERY) => {}
                }
            }
            if self.shutdown.is_cancelled() {
                return Err(shutting_down());
            }
            batch = sub
                .svc
                .read_changes(&sub.entity_type, through, PAGE)
                .await
                .map_err(to_status)?;
        }
    }

    /// Queues one event; `Ok(false)` when the client has gone, `Err` at shutdown.
    async fn send(&self, message: pb::WatchResponse) -> Result<bool, Status> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(shutting_down()),
            sent = self.tx.send(Ok(message)) => Ok(sent.is_ok()),
        }
    }
}

/// The status a stream ends with when the server shuts down: retryable, resume after the last
/// sequence seen.
fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; watch again after the last sequence seen")
}
