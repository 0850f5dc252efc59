//! The `Contribute` bidirectional stream (SPEC.md §2.3, §2.4, §9).
//!
//! A reader task reads the stream and starts validating each batch in a task of its own, so
//! batches are decoded, validated and keyed in parallel with each other and with the store's
//! write of the previous batch (as several unary calls in flight are); a writer applies them in
//! stream order, committing upsert batches that are ready together in one transaction (ADR
//! 0020), and queues each batch's ack on a small bounded channel. The reader runs at
//! most [`PREPARED_AHEAD`] batches ahead of the writer, so a slow store
//! slows the sender (HTTP/2 flow control pushes back on the client), a client that does not read
//! its acks stalls both tasks rather than growing memory, and memory does not depend on the
//! stream's length.
//!
//! A batch over the connector's rate limit (SPEC.md §4.2) is held back, whole, until the limit
//! admits it: the stream slows down rather than failing, keeps its batches in order, and never
//! applies part of a batch. The connector is read again, by its token, for every batch it
//! prepares and every batch or group it applies (and while a batch waits): UpdateConnector,
//! UpdateEntityType, a rotated token or a deleted connector reach an open stream at its next
//! batch or group.
//!
//! A batch the domain rejects as invalid or too large is acknowledged with a [`pb::BatchError`]
//! and the stream goes on; any other failure (a superseded or expired session, the store
//! unavailable, a refused replace commit) ends the stream with its status.

use futures::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tonic_types::StatusExt;
use tracing::{Instrument, Span};
use tributary_core::contribution::{BatchReport, ContributionService, Contributor, PreparedBatch};
use tributary_core::record::PreparedRecord;
use tributary_core::store::BatchResult;
use tributary_core::Error;
use tributary_grpc::reconcile::{answers_to_proto, ranges_from_proto};
use tributary_grpc::{log_outcome, request_status, to_status};
use tributary_proto::contribution::v1 as pb;
use tributary_proto::contribution::v1::contribute_response::Message as Outbound;
use tributary_proto::contribution::v1::json as json_pb;
use tributary_proto::contribution::v1::json::contribute_request::Message as Inbound;

use crate::metrics;
use crate::{
    digests_from_proto, digests_to_proto, mode_from_proto, mode_to_proto, outcomes_to_proto,
    prepare_upserts, record_session, totals_to_proto, ContributionApi,
};

/// Longest single wait of a held-back batch before the connector is read again.
const LONGEST_HOLD: Duration = Duration::from_secs(1);

/// Acks queued for the client; a full queue stops the stream task until the client reads.
const OUTBOUND_CAPACITY: usize = 4;

type Reply = Result<pb::ContributeResponse, Status>;

/// Starts the task serving one stream; returns the responses the client reads.
pub(crate) fn spawn(
    svc: ContributionService,
    who: Contributor,
    inbound: Streaming<json_pb::ContributeRequest>,
    shutdown: CancellationToken,
    span: Span,
) -> <ContributionApi as json_pb::contribution_server::Contribution>::ContributeStream {
    let (tx, rx) = mpsc::channel::<Reply>(OUTBOUND_CAPACITY);
    // The stream's final status travels apart from the acks, so it can always be delivered
    // (after the queued acks) even when the ack queue is full.
    let (end_tx, end_rx) = oneshot::channel::<Status>();
    let task = StreamTask {
        svc,
        who,
        shutdown,
        tx,
    };
    tokio::spawn(
        async move {
            tracing::debug!("stream started");
            let end = log_outcome(task.run(inbound).await);
            if let Err(status) = end {
                let _ = end_tx.send(status);
            }
        }
        .instrument(span),
    );
    let end = futures::stream::once(end_rx)
        .filter_map(|status| futures::future::ready(status.ok().map(Err)));
    Box::pin(ReceiverStream::new(rx).chain(end))
}

/// The status a stream ends with when the server shuts down: retryable, resume the session.
fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; resume the session on another connection")
}

/// Rejections that concern one batch only; the stream goes on after them.
fn is_batch_error(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidArgument(_) | Error::ResourceExhausted { .. }
    )
}

/// A rejected batch's error, from the same mapping as the unary calls' statuses.
fn batch_error(error: Error) -> pb::BatchError {
    let status = to_status(error);
    let violations = status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| pb::Violation {
                    field: v.field,
                    description: v.description,
                })
                .collect()
        })
        .unwrap_or_default();
    pb::BatchError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        violations,
    }
}

fn reply(message: Outbound) -> pb::ContributeResponse {
    pb::ContributeResponse {
        message: Some(message),
    }
}

/// Batches handed to the writer and not yet taken. With a group being written ([`GROUPED_MAX`])
/// and one being read, a stream holds at most ten batches in memory however long it runs. Four,
/// not two, so that groups of five form when the store is the bottleneck: fewer transactions, each
/// writing the pages its batches share once (thirty-first round of ADR 0020: the stream's first
/// load +11 % on SQLite, +3 % on PostgreSQL, where two made it tie with unary calls).
const PREPARED_AHEAD: usize = 4;

/// What the reader hands the writer, in stream order.
enum Step {
    /// A batch being checked and keyed in its own task, to apply once ready.
    Apply {
        seq: u64,
        batch: AbortOnDrop<Result<PreparedBatch, Error>>,
    },
    /// A batch rejected before reaching the store; acknowledged with its error in its turn.
    Reject { seq: u64, error: Error },
    /// Close the session and end the stream.
    Close(pb::StreamClose),
}

/// Most upsert batches the writer commits in one transaction: the one it takes and those the
/// reader has prepared meanwhile. Fewer, larger transactions write each page the batches share
/// once (ADR 0020); memory stays bounded, as no more batches are held than without grouping.
const GROUPED_MAX: usize = PREPARED_AHEAD + 1;

/// A step the writer has taken from the reader and not yet applied.
enum Pending {
    /// As the reader sent it.
    Step(Step),
    /// A batch whose preparation has finished.
    Ready {
        seq: u64,
        prepared: Result<PreparedBatch, Error>,
    },
}

/// The prepared batch of an `Apply` step, once its task finishes.
async fn prepared(
    seq: u64,
    mut batch: AbortOnDrop<Result<PreparedBatch, Error>>,
) -> Result<Result<PreparedBatch, Error>, Status> {
    (&mut batch.0)
        .await
        .map_err(|join| Status::internal(format!("preparing batch {seq} failed: {join}")))
}

/// The state of one stream: the writer half, which applies batches in order and acks them.
struct StreamTask {
    svc: ContributionService,
    who: Contributor,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Reply>,
}

/// The reader half: reads, decodes and validates the next batch while the writer's store call
/// for the previous one is in flight, so a stream overlaps CPU and database work the way
/// several unary calls in flight do, while still applying one batch at a time in order.
struct StreamReader {
    svc: ContributionService,
    who: Contributor,
    shutdown: CancellationToken,
    /// The highest batch_seq seen on this stream (0 before the first batch).
    last_seq: u64,
}

impl StreamTask {
    /// Serves the stream until it closes; `Err` is the status it ends with.
    async fn run(
        mut self,
        mut inbound: Streaming<json_pb::ContributeRequest>,
    ) -> Result<(), Status> {
        let Some(first) = next_message(&self.shutdown, &mut inbound).await? else {
            return Ok(());
        };
        let session_id = match first.message {
            Some(Inbound::Open(open)) => self.open(open).await?,
            _ => {
                return Err(to_status(Error::invalid(
                    "open",
                    "the first message of a Contribute stream must be `open`",
                )))
            }
        };
        let (steps_tx, steps_rx) = mpsc::channel(PREPARED_AHEAD);
        let reader = StreamReader {
            svc: self.svc.clone(),
            who: self.who.clone(),
            shutdown: self.shutdown.clone(),
            last_seq: 0,
        };
        let reading = tokio::spawn(reader.run(inbound, steps_tx).in_current_span());
        // Aborts the reader however this returns, so it never outlives the stream.
        let mut reading = AbortOnDrop(reading);
        match self.write(&session_id, steps_rx).await? {
            // The session is closed; whatever the client sent after `close` is ignored.
            Written::Closed => Ok(()),
            // The reader stopped: the client half-closed (the session stays open for a later
            // resume), or reading failed after every earlier batch was acknowledged.
            Written::ReaderDone => match (&mut reading.0).await {
                Ok(read) => read,
                Err(join) => Err(Status::internal(format!("stream reader failed: {join}"))),
            },
        }
    }

    /// Applies the reader's steps in order until `close` or the reader stops. Upsert batches
    /// the reader has already prepared when the writer takes one are committed with it in one
    /// transaction ([`GROUPED_MAX`] at most, ADR 0020), then acknowledged one by one.
    async fn write(
        &mut self,
        session_id: &str,
        mut steps: mpsc::Receiver<Step>,
    ) -> Result<Written, Status> {
        let mut pending = None;
        loop {
            let next = match pending.take() {
                Some(next) => next,
                None => match steps.recv().await {
                    Some(step) => Pending::Step(step),
                    None => return Ok(Written::ReaderDone),
                },
            };
            let (seq, prepared) = match next {
                Pending::Ready { seq, prepared } => (seq, prepared),
                Pending::Step(Step::Apply { seq, batch }) => (seq, prepared(seq, batch).await?),
                Pending::Step(Step::Reject { seq, error }) => (seq, Err(error)),
                Pending::Step(Step::Close(close)) => {
                    self.close(session_id, close).await?;
                    return Ok(Written::Closed);
                }
            };
            let outcome = match prepared {
                Ok(prepared) => match self.admit(prepared.len()).await? {
                    Ok(()) => match prepared {
                        PreparedBatch::Upsert(records) => {
                            let mut group = vec![(seq, records)];
                            pending = self.join_ready(&mut steps, &mut group).await?;
                            if group.len() > 1 {
                                self.apply_group(session_id, group).await?;
                                continue;
                            }
                            let records = group.pop().map(|(_, r)| r).unwrap_or_default();
                            self.apply(session_id, seq, PreparedBatch::Upsert(records))
                                .await
                        }
                        prepared => self.apply(session_id, seq, prepared).await,
                    },
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            self.acknowledge(seq, outcome).await?;
        }
    }

    /// Adds to `group` the upsert batches that follow it already prepared, while the rate limit
    /// admits them at once; answers the first step taken that could not join.
    async fn join_ready(
        &mut self,
        steps: &mut mpsc::Receiver<Step>,
        group: &mut Vec<(u64, Vec<PreparedRecord>)>,
    ) -> Result<Option<Pending>, Status> {
        while group.len() < GROUPED_MAX {
            let Ok(step) = steps.try_recv() else {
                return Ok(None);
            };
            let (seq, batch) = match step {
                Step::Apply { seq, batch } if batch.0.is_finished() => (seq, batch),
                step => return Ok(Some(Pending::Step(step))),
            };
            match prepared(seq, batch).await? {
                Ok(PreparedBatch::Upsert(records))
                    if self.svc.admit(&self.who, records.len()).is_ok() =>
                {
                    group.push((seq, records));
                }
                prepared => return Ok(Some(Pending::Ready { seq, prepared })),
            }
        }
        Ok(None)
    }

    /// Applies a group of upsert batches in one transaction and acknowledges each in order. A
    /// batch error fails the whole group, so the batches are then applied one by one, each
    /// acknowledged with its own outcome or error.
    async fn apply_group(
        &mut self,
        session_id: &str,
        group: Vec<(u64, Vec<PreparedRecord>)>,
    ) -> Result<(), Status> {
        match self.svc.apply_upserts(&self.who, session_id, &group).await {
            Ok(results) => {
                for ((seq, _), result) in group.iter().zip(results) {
                    self.acknowledge(*seq, Ok(self.ack(*seq, result))).await?;
                }
            }
            Err(error) if is_batch_error(&error) => {
                for (seq, records) in group {
                    let outcome = self
                        .apply(session_id, seq, PreparedBatch::Upsert(records))
                        .await;
                    self.acknowledge(seq, outcome).await?;
                }
            }
            Err(error) => return Err(to_status(error)),
        }
        Ok(())
    }

    /// Sends batch `seq`'s ack, or its error: a batch error as the ack's error (the stream
    /// goes on), any other as the status that ends the stream.
    async fn acknowledge(
        &self,
        seq: u64,
        outcome: Result<pb::BatchAck, Error>,
    ) -> Result<(), Status> {
        let ack = match outcome {
            Ok(ack) => ack,
            Err(error) if is_batch_error(&error) => {
                tracing::info!(batch_seq = seq, %error, "batch rejected");
                pb::BatchAck {
                    batch_seq: seq,
                    error: Some(batch_error(error)),
                    ..Default::default()
                }
            }
            Err(error) => return Err(to_status(error)),
        };
        self.send(reply(Outbound::Ack(ack))).await
    }

    /// Holds a batch of `records` back until the rate limit admits it, unless the server shuts
    /// down first (`Err` status); the inner `Err` is a refusal that waiting cannot fix.
    async fn admit(&mut self, records: usize) -> Result<Result<(), Error>, Status> {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(shutting_down()),
            admitted = self.hold_back(records) => Ok(admitted),
        }
    }

    /// Waits until the connector's rate limit admits `records`, taking them from its budget;
    /// `Err` for a refusal that waiting cannot fix (a deleted connector, a batch larger than
    /// the limit ever admits). The caller stops waiting at shutdown.
    async fn hold_back(&mut self, records: usize) -> Result<(), Error> {
        let mut held = false;
        loop {
            // Every batch is applied under the connector as it is now (rotated token, deleted
            // connector, new rate limit or write policy).
            self.who = self.svc.refresh(&self.who).await?;
            let wait = match self.svc.admit(&self.who, records) {
                Err(Error::RateLimited { retry_after, .. }) => retry_after,
                admitted => return admitted,
            };
            if !held {
                held = true;
                metrics::count_rate_limited("Contribute");
            }
            tracing::debug!(records, ?wait, "batch held back by the rate limit");
            tokio::time::sleep(wait.min(LONGEST_HOLD)).await;
        }
    }

    /// Queues a response; waits while the client is not reading, unless the server shuts down.
    async fn send(&self, response: pb::ContributeResponse) -> Result<(), Status> {
        tokio::select! {
            biased;
            sent = self.tx.send(Ok(response)) => {
                sent.map_err(|_| Status::cancelled("the client went away"))
            }
            () = self.shutdown.cancelled() => Err(shutting_down()),
        }
    }

    /// Opens a session or resumes `open.session_id`; answers `opened`.
    async fn open(&self, open: pb::StreamOpen) -> Result<String, Status> {
        let opened = if open.session_id.is_empty() {
            let mode = mode_from_proto(open.mode).map_err(to_status)?;
            let opened = self
                .svc
                .open_session(&self.who, mode)
                .await
                .map_err(to_status)?;
            metrics::count_opened(opened.session.mode, opened.superseded.len());
            pb::StreamOpened {
                session_id: opened.session.id,
                mode: mode_to_proto(opened.session.mode).into(),
                last_batch_seq: 0,
                superseded_session_ids: opened.superseded,
                connector: self.who.connector.id.clone(),
                entity_type: self.who.connector.entity_type.clone(),
            }
        } else {
            let resumed = self
                .svc
                .resume(&self.who, &open.session_id)
                .await
                .map_err(to_status)?;
            pb::StreamOpened {
                session_id: open.session_id,
                mode: mode_to_proto(resumed.mode).into(),
                last_batch_seq: resumed.last_batch_seq,
                superseded_session_ids: Vec::new(),
                connector: self.who.connector.id.clone(),
                entity_type: self.who.connector.entity_type.clone(),
            }
        };
        record_session(&opened.session_id);
        tracing::info!(
            resumed_after = opened.last_batch_seq,
            mode = ?opened.mode(),
            "stream opened"
        );
        let session_id = opened.session_id.clone();
        self.send(reply(Outbound::Opened(opened))).await?;
        Ok(session_id)
    }

    /// Applies one prepared batch; `Err` for a rejected batch or a session-level failure.
    async fn apply(
        &self,
        session_id: &str,
        seq: u64,
        batch: PreparedBatch,
    ) -> Result<pb::BatchAck, Error> {
        let result = self
            .svc
            .apply(&self.who, session_id, batch, Some(seq))
            .await?;
        Ok(self.ack(seq, result))
    }

    /// The ack of batch `seq`, applied (or found applied before) with `result`.
    fn ack(&self, seq: u64, result: BatchResult<BatchReport>) -> pb::BatchAck {
        let mut ack = pb::BatchAck {
            batch_seq: seq,
            ..Default::default()
        };
        match result {
            BatchResult::Applied(BatchReport::Records(outcomes)) => {
                metrics::count_outcomes(&self.who.connector.entity_type, &outcomes);
                ack.outcomes = outcomes_to_proto(outcomes);
            }
            BatchResult::Applied(BatchReport::Digests(results)) => {
                ack.digests = digests_to_proto(results);
            }
            BatchResult::Applied(BatchReport::Ranges(answers)) => {
                ack.ranges = answers_to_proto(answers);
            }
            BatchResult::AlreadyApplied => ack.already_applied = true,
        }
        tracing::debug!(
            batch_seq = seq,
            outcomes = ack.outcomes.len(),
            digests = ack.digests.len(),
            already_applied = ack.already_applied,
            "batch acknowledged"
        );
        ack
    }

    /// Closes the session, answers `closed`, and ends the stream.
    async fn close(&self, session_id: &str, close: pb::StreamClose) -> Result<(), Status> {
        let closed = crate::close::close_to_the_end(
            &self.svc,
            &self.who,
            session_id,
            close.commit,
            close.force,
        )
        .await?;
        metrics::count_closed(&self.who.connector.entity_type, &closed, close.commit);
        tracing::info!(
            commit = close.commit,
            mode = closed.mode.as_str(),
            "session closed"
        );
        self.send(reply(Outbound::Closed(pb::StreamClosed {
            totals: Some(totals_to_proto(closed.totals)),
            import_result_id: closed.import_result_id.unwrap_or_default(),
        })))
        .await
    }
}

/// A batch as the stream carries it.
enum Batch {
    Upsert(Vec<json_pb::Record>),
    Delete(Vec<String>),
    Diff(Vec<pb::Digest>),
    Reconcile(Vec<pb::ReconcileRange>),
}

/// How the writer stopped without an error.
enum Written {
    Closed,
    ReaderDone,
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next inbound message, unless the server is shutting down (checked first, so a shutdown
/// ends the stream between batches, never inside one).
async fn next_message(
    shutdown: &CancellationToken,
    inbound: &mut Streaming<json_pb::ContributeRequest>,
) -> Result<Option<json_pb::ContributeRequest>, Status> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Err(shutting_down()),
        message = inbound.message() => message.map_err(request_status),
    }
}

impl StreamReader {
    /// Reads and prepares batches until the client half-closes, sends `close`, or the writer
    /// stops; `Err` is the status the stream ends with once earlier batches are acknowledged.
    async fn run(
        mut self,
        mut inbound: Streaming<json_pb::ContributeRequest>,
        steps: mpsc::Sender<Step>,
    ) -> Result<(), Status> {
        while let Some(message) = next_message(&self.shutdown, &mut inbound).await? {
            let step = match message.message {
                Some(Inbound::Upsert(b)) => self.prepare(b.batch_seq, Batch::Upsert(b.records)),
                Some(Inbound::Delete(b)) => self.prepare(b.batch_seq, Batch::Delete(b.ids)),
                Some(Inbound::Diff(b)) => self.prepare(b.batch_seq, Batch::Diff(b.digests)),
                Some(Inbound::Reconcile(b)) => {
                    self.prepare(b.batch_seq, Batch::Reconcile(b.ranges))
                }
                Some(Inbound::Close(close)) => {
                    let _ = steps.send(Step::Close(close)).await;
                    return Ok(());
                }
                Some(Inbound::Open(_)) => {
                    return Err(to_status(Error::invalid(
                        "open",
                        "`open` is only allowed as the first message of a stream",
                    )))
                }
                None => {
                    return Err(to_status(Error::invalid(
                        "message",
                        "one of upsert, delete, diff, reconcile or close is required",
                    )))
                }
            };
            if steps.send(step).await.is_err() {
                // The writer stopped; its status ends the stream.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Checks a batch's sequence number (in stream order, here) and starts preparing it in a
    /// task of its own; a bad sequence number becomes a [`Step::Reject`].
    fn prepare(&mut self, seq: u64, batch: Batch) -> Step {
        if let Err(error) = self.check_seq(seq) {
            return Step::Reject { seq, error };
        }
        let (svc, who) = (self.svc.clone(), self.who.clone());
        let task = tokio::spawn(prepare_batch(svc, who, batch).in_current_span());
        Step::Apply {
            seq,
            batch: AbortOnDrop(task),
        }
    }

    fn check_seq(&mut self, seq: u64) -> Result<(), Error> {
        if seq == 0 {
            return Err(Error::invalid("batch_seq", "must be 1 or more"));
        }
        if seq <= self.last_seq {
            return Err(Error::invalid(
                "batch_seq",
                format!(
                    "{seq} is not above {}, the previous batch_seq of this stream",
                    self.last_seq
                ),
            ));
        }
        self.last_seq = seq;
        Ok(())
    }
}

/// Decodes, validates and keys a batch (the CPU half of applying it).
async fn prepare_batch(
    svc: ContributionService,
    who: Contributor,
    batch: Batch,
) -> Result<PreparedBatch, Error> {
    match batch {
        Batch::Upsert(records) => {
            // Validated against the schema as it is now (UpdateEntityType reaches open streams).
            let who = svc.refresh(&who).await?;
            prepare_upserts(&svc, &who, records).await
        }
        Batch::Delete(ids) => svc.prepare_delete(&who, ids),
        Batch::Diff(digests) => svc.prepare_diff(&who, digests_from_proto(digests)),
        Batch::Reconcile(ranges) => svc.prepare_reconcile(ranges_from_proto(ranges)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_carry_code_and_violations() {
        let error = batch_error(Error::invalid(
            "records[1].entity.population",
            "must be an integer",
        ));
        assert_eq!(error.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(error.violations.len(), 1);
        assert_eq!(error.violations[0].field, "records[1].entity.population");
        assert!(error.message.contains("records[1].entity.population"));
    }

    #[test]
    fn only_invalid_and_too_large_batches_keep_the_stream_going() {
        assert!(is_batch_error(&Error::invalid("batch_seq", "x")));
        assert!(is_batch_error(&Error::ResourceExhausted {
            subject: "records".into(),
            description: "too many".into(),
        }));
        assert!(!is_batch_error(&Error::PermissionDenied(
            "superseded".into()
        )));
        assert!(!is_batch_error(&Error::Unavailable("db down".into())));
    }
}
