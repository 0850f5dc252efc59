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
use tributary_core::catalog::{CatalogService, Change, ChangeBatch};
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

/// Reads the first page now, so an `after` older than the retention (`OUT_OF_RANGE`) or beyond
/// the log fails the call itself; then streams from a task.
pub(crate) async fn start(
    svc: CatalogService,
    entity_type: String,
    after: u64,
    shutdown: CancellationToken,
    span: Span,
) -> Result<WatchStream> {
    let first = svc.read_changes(&entity_type, after, PAGE).await?;
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    // The final status travels apart from the events, so it is delivered (after the queued
    // events) even when the event queue is full.
    let (end_tx, end_rx) = oneshot::channel::<Status>();
    let task = Task {
        svc,
        entity_type,
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
    svc: CatalogService,
    entity_type: String,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
}

impl Task {
    /// Streams until the client goes away (`Ok`), or ends the stream with a status: the store
    /// failing, a pruned position, or shutdown (`UNAVAILABLE`).
    async fn run(&self, first: ChangeBatch) -> Result<(), Status> {
        let mut batch = first;
        loop {
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
                    () = self.svc.wait_for_changes(through) => {}
                    () = tokio::time::sleep(REREAD_EVERY) => {}
                }
            }
            if self.shutdown.is_cancelled() {
                return Err(shutting_down());
            }
            batch = self
                .svc
                .read_changes(&self.entity_type, through, PAGE)
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
