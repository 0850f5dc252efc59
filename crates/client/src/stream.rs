//! [`StreamingContributor`]: contributes over the `Contribute` bidirectional stream (SPEC.md
//! §2.3, §2.4), numbering batches, keeping a bounded window of unacknowledged batches, and
//! resuming the session after a broken connection with no batch lost or applied twice.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_client::pb::contribution::{Record, SessionMode};
//! use tributary_client::StreamingContributor;
//!
//! let channel = tributary_client::connect("http://127.0.0.1:50051").await?;
//! let mut stream = StreamingContributor::builder(channel, "tbc_...")
//!     .window(8)
//!     .on_ack(|ack| {
//!         if let Some(error) = &ack.error {
//!             eprintln!("batch {} rejected: {}", ack.batch_seq, error.message);
//!         }
//!     })
//!     .open(SessionMode::Stream)
//!     .await?;
//! stream.upsert(vec![Record { id: "GB".into(), name: "United Kingdom".into(), ..Default::default() }]).await?;
//! let closed = stream.finish(true, false).await?;
//! println!("{:?}", closed.totals);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tributary_proto::contribution::v1 as pb;
use tributary_proto::contribution::v1::contribute_request::Message as Outgoing;
use tributary_proto::contribution::v1::contribute_response::Message as Incoming;

use crate::pre_encoded::{self, encode};
use tributary_core::reconcile::{
    CallLimits, ClientSet, Outcome as ReconcileOutcome, RangeAnswer, RangeQuery, Reconciler,
};
use tributary_grpc::reconcile::{answers_from_proto, ranges_to_proto};

/// Unacknowledged batches a stream keeps in flight unless told otherwise.
pub const DEFAULT_WINDOW: usize = 8;

/// Called with every batch acknowledgement, in batch order.
pub type AckCallback = Box<dyn FnMut(&pb::BatchAck) + Send>;

/// Why a streaming contribution failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The server ended the stream with a status that retrying cannot fix (e.g.
    /// `PERMISSION_DENIED` for a superseded session, `FAILED_PRECONDITION` for a refused
    /// replace commit, `UNAUTHENTICATED`).
    #[error("the server refused: {0}")]
    Status(Status),
    /// The connection kept breaking; the last failure is kept. The session is still open and
    /// can be resumed with [`StreamingContributorBuilder::resume`].
    #[error("gave up reconnecting after {attempts} attempts: {last}")]
    GaveUp { attempts: usize, last: Status },
    /// A digest batch was rejected (its violations are in the error).
    #[error("batch {batch_seq} rejected: {}", .error.message)]
    Rejected {
        batch_seq: u64,
        error: pb::BatchError,
    },
    /// The server answered something the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Whether a stream that failed with `status` should be resumed: transport failures,
/// `UNAVAILABLE` (the server shutting down, the database unreachable) and anything the server
/// asked to retry later (`RetryInfo`, e.g. a rate limit) are; anything else the server decided
/// about the request is not.
pub fn is_retryable(status: &Status) -> bool {
    if crate::retry::retry_delay(status).is_some() {
        return true;
    }
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => true,
        Code::DeadlineExceeded => true,
        // HTTP/2 errors reach us as INTERNAL with the transport error as source; a status the
        // server sent has none.
        Code::Internal => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// The server's answer to one digest batch sent with [`StreamingContributor::send_digests`].
#[derive(Debug, Clone, PartialEq)]
pub struct DigestAnswer {
    /// The batch_seq `send_digests` returned for the batch (kept when the batch had to be asked
    /// again under a new number after a reconnect).
    pub batch_seq: u64,
    /// The ids answered new or changed, in digest order: the records to send in full.
    pub to_send: Vec<String>,
    /// Set when the server rejected the batch (invalid digests); `to_send` is then empty.
    pub error: Option<pb::BatchError>,
}

/// A batch sent and not yet acknowledged.
struct PendingBatch {
    seq: u64,
    /// The request, encoded (shared with the send queue, resent as is after a reconnect).
    request: Bytes,
    /// A digest batch's digests, to ask again if its answer is lost.
    digests: Option<Vec<pb::Digest>>,
    /// For a digest batch, the batch_seq its answer is reported under.
    answer_as: u64,
}

/// Counters of a stream's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Batches acknowledged (applied, already applied, or rejected).
    pub acked: u64,
    /// Batches acknowledged with an error.
    pub rejected: u64,
    /// Batches acknowledged as applied before (resent after a broken stream).
    pub already_applied: u64,
    /// Times the stream was resumed on a new connection.
    pub reconnects: u64,
}

/// Configures and opens a [`StreamingContributor`].
pub struct StreamingContributorBuilder {
    channel: Channel,
    token: String,
    window: usize,
    backoff: ExponentialBuilder,
    on_ack: Option<AckCallback>,
}

impl std::fmt::Debug for StreamingContributorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContributorBuilder")
            .field("window", &self.window)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl StreamingContributorBuilder {
    /// At most `window` batches in flight without an ack (at least 1; default 8). Memory is
    /// bounded by this many batches, however long the stream.
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Reconnect backoff: exponential from `min` to `max` with jitter, giving up after
    /// `max_attempts` consecutive failed attempts (default 50 ms .. 2 s, 20 attempts).
    pub fn backoff(mut self, min: Duration, max: Duration, max_attempts: usize) -> Self {
        self.backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_max_times(max_attempts);
        self
    }

    /// Calls `callback` with every acknowledgement, in batch order (applied, already applied
    /// or rejected); the way to collect outcomes and violations without buffering them.
    pub fn on_ack(mut self, callback: impl FnMut(&pb::BatchAck) + Send + 'static) -> Self {
        self.on_ack = Some(Box::new(callback));
        self
    }

    /// Opens a new session of `mode` over a stream.
    pub async fn open(self, mode: pb::SessionMode) -> Result<StreamingContributor, StreamError> {
        self.start(String::new(), mode).await
    }

    /// Resumes the open session `session_id`; batches are numbered after the last one it
    /// applied ([`StreamingContributor::resumed_after`]).
    pub async fn resume(
        self,
        session_id: impl Into<String>,
    ) -> Result<StreamingContributor, StreamError> {
        self.start(session_id.into(), pb::SessionMode::Unspecified)
            .await
    }

    async fn start(
        self,
        session_id: String,
        mode: pb::SessionMode,
    ) -> Result<StreamingContributor, StreamError> {
        let mut contributor = StreamingContributor {
            channel: self.channel,
            token: self.token,
            session_id,
            mode,
            connector: String::new(),
            entity_type: String::new(),
            resumed_after: 0,
            next_seq: 1,
            window: self.window,
            backoff: self.backoff,
            on_ack: self.on_ack,
            pending: VecDeque::with_capacity(self.window),
            reask: VecDeque::new(),
            answers: VecDeque::new(),
            closing: None,
            conn: None,
            stats: StreamStats::default(),
        };
        let opened = match contributor.connect().await {
            Ok(opened) => opened,
            Err(status) => contributor.reconnect(status).await?,
        };
        contributor.resumed_after = opened.last_batch_seq;
        contributor.connector = opened.connector;
        contributor.entity_type = opened.entity_type;
        contributor.next_seq = opened.last_batch_seq + 1;
        contributor.stats.reconnects = 0;
        Ok(contributor)
    }
}

/// One live `Contribute` call.
struct Connection {
    outgoing: mpsc::Sender<Bytes>,
    incoming: Streaming<pb::ContributeResponse>,
}

/// A connector's session fed over the `Contribute` stream.
///
/// Batches are numbered from 1 (or after the session's last applied batch when resumed) and
/// sent without waiting for their acks, up to the window; each call waits only when the window
/// is full. When the connection breaks (a transport error, `UNAVAILABLE`, the stream ending
/// early) it reconnects with exponential backoff, resumes the session by id and resends every
/// unacknowledged batch; the server acknowledges those it had applied with `already_applied`
/// instead of applying them again. Other failures surface as [`StreamError`].
///
/// Dropping it without [`finish`](Self::finish) leaves the session open, to be resumed by id.
pub struct StreamingContributor {
    channel: Channel,
    token: String,
    session_id: String,
    mode: pb::SessionMode,
    /// Who the token acts for, as the server said when the stream opened.
    connector: String,
    entity_type: String,
    resumed_after: u64,
    next_seq: u64,
    window: usize,
    backoff: ExponentialBuilder,
    on_ack: Option<AckCallback>,
    /// Sent and not yet acknowledged, oldest first; resent in order after a reconnect.
    pending: VecDeque<PendingBatch>,
    /// Digest batches answered `already_applied` (their answer was lost with a broken stream),
    /// to ask again under a new batch_seq: (answer_as, digests).
    reask: VecDeque<(u64, Vec<pb::Digest>)>,
    /// Digest answers not yet taken by the caller, in arrival order.
    answers: VecDeque<DigestAnswer>,
    /// The close message once sent; resent after a reconnect until `closed` arrives.
    closing: Option<Bytes>,
    conn: Option<Connection>,
    stats: StreamStats,
}

impl std::fmt::Debug for StreamingContributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContributor")
            .field("session_id", &self.session_id)
            .field("mode", &self.mode)
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl StreamingContributor {
    /// A builder for a stream over `channel` acting with the connector `token`.
    pub fn builder(channel: Channel, token: &str) -> StreamingContributorBuilder {
        StreamingContributorBuilder {
            channel,
            token: token.to_owned(),
            window: DEFAULT_WINDOW,
            backoff: ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(20),
            on_ack: None,
        }
    }

    /// The session's id (to resume it from another process).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The session's mode.
    pub fn mode(&self) -> pb::SessionMode {
        self.mode
    }

    /// The connector the token acts for, as the server reported when the stream opened (empty
    /// from a server too old to say).
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// The entity type of [`connector`](Self::connector) (empty from a server too old to say).
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The session's last applied batch_seq when this contributor opened it (0 for a new one).
    pub fn resumed_after(&self) -> u64 {
        self.resumed_after
    }

    /// The batch_seq the next batch will carry.
    pub fn next_batch_seq(&self) -> u64 {
        self.next_seq
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// What happened so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Sends an upsert batch; returns its batch_seq. Its ack (outcomes or violations) goes to
    /// the [`on_ack`](StreamingContributorBuilder::on_ack) callback.
    pub async fn upsert(&mut self, records: Vec<pb::Record>) -> Result<u64, StreamError> {
        self.submit(|batch_seq| Outgoing::Upsert(pb::UpsertBatch { batch_seq, records }))
            .await
    }

    /// Sends a delete batch; returns its batch_seq.
    pub async fn delete(&mut self, ids: Vec<String>) -> Result<u64, StreamError> {
        self.submit(|batch_seq| Outgoing::Delete(pb::DeleteBatch { batch_seq, ids }))
            .await
    }

    /// Sends `(id, checksum)` digests and waits for the answer; returns the ids to send in full
    /// (new or changed), in digest order. In a replace session the unchanged ones are kept by
    /// the sweep without being sent. One round trip per call: to keep a window of digest
    /// batches in flight, use [`send_digests`](Self::send_digests) instead.
    pub async fn diff(&mut self, digests: Vec<pb::Digest>) -> Result<Vec<String>, StreamError> {
        let seq = self.send_digests(digests).await?;
        loop {
            if let Some(at) = self.answers.iter().position(|a| a.batch_seq == seq) {
                let answer = self.answers.remove(at).expect("position is in range");
                return match answer.error {
                    Some(error) => Err(StreamError::Rejected {
                        batch_seq: seq,
                        error,
                    }),
                    None => Ok(answer.to_send),
                };
            }
            if !self.pending.is_empty() {
                self.next_ack().await?;
            } else if !self.reask.is_empty() {
                self.submit_reasks().await?;
            } else {
                return Err(StreamError::Protocol(format!(
                    "digest batch {seq} was never answered"
                )));
            }
        }
    }

    /// Sends `(id, checksum)` digests without waiting for the answer (waiting only while the
    /// window is full); returns the batch_seq the answer will carry. Answers arrive as acks are
    /// read, in batch order except that a batch asked again after a reconnect is answered after
    /// those sent behind it, and are collected until taken with
    /// [`take_digest_answers`](Self::take_digest_answers): a connector sends digests for a
    /// window of batches and the records answered new or changed as answers come in, so a
    /// digest sync costs no round trip per batch. A digest batch whose answer was lost with a
    /// broken connection is asked again transparently (a diff changes nothing but the replace
    /// session's keeps, which asking again re-marks).
    pub async fn send_digests(&mut self, digests: Vec<pb::Digest>) -> Result<u64, StreamError> {
        self.submit_reasks().await?;
        self.submit(|batch_seq| Outgoing::Diff(pb::DigestBatch { batch_seq, digests }))
            .await
    }

    /// The digest answers received so far and not yet taken, in arrival order. Memory grows with
    /// answers left untaken, so take them as you go.
    pub fn take_digest_answers(&mut self) -> Vec<DigestAnswer> {
        self.answers.drain(..).collect()
    }

    /// Waits until every batch sent so far is acknowledged (digest batches answered).
    pub async fn flush(&mut self) -> Result<(), StreamError> {
        loop {
            while !self.pending.is_empty() {
                self.next_ack().await?;
            }
            if self.reask.is_empty() {
                return Ok(());
            }
            self.submit_reasks().await?;
        }
    }

    /// Asks again the digest batches whose answers were lost.
    async fn submit_reasks(&mut self) -> Result<(), StreamError> {
        while let Some((answer_as, digests)) = self.reask.pop_front() {
            self.submit_as(Some(answer_as), |batch_seq| {
                Outgoing::Diff(pb::DigestBatch { batch_seq, digests })
            })
            .await?;
        }
        Ok(())
    }

    /// Runs a range-based sync (SPEC.md §2.5) of `set` in the stream: rounds of `reconcile`
    /// batches, each cut within `limits`, until every difference is pinned down. In a replace
    /// session what matched is kept by the sweep; the outcome's `send` are the items to send in
    /// full. Waits for every batch sent before; a call whose answer was lost with a broken
    /// connection is asked again under a new batch_seq (asking again only re-marks keeps).
    pub async fn reconcile(
        &mut self,
        set: &ClientSet,
        limits: CallLimits,
    ) -> Result<ReconcileOutcome, StreamError> {
        self.flush().await?;
        let mut reconciler = Reconciler::new(set);
        loop {
            let round = reconciler.next_round();
            if round.is_empty() {
                return Ok(reconciler.outcome());
            }
            for call in Reconciler::calls(round, limits) {
                let answers = self.reconcile_call(&call).await?;
                reconciler
                    .absorb(&call, &answers)
                    .map_err(|e| StreamError::Protocol(e.to_string()))?;
            }
        }
    }

    /// Sends one reconcile batch and waits for its answers (nothing else is in flight).
    async fn reconcile_call(
        &mut self,
        call: &[RangeQuery],
    ) -> Result<Vec<RangeAnswer>, StreamError> {
        let ranges = ranges_to_proto(call);
        loop {
            let ranges = ranges.clone();
            let seq = self
                .submit(|batch_seq| Outgoing::Reconcile(pb::ReconcileBatch { batch_seq, ranges }))
                .await?;
            let ack = loop {
                let ack = self.next_ack().await?;
                if ack.batch_seq == seq {
                    break ack;
                }
            };
            if ack.already_applied {
                continue;
            }
            if let Some(error) = ack.error {
                return Err(StreamError::Rejected {
                    batch_seq: seq,
                    error,
                });
            }
            return answers_from_proto(ack.ranges)
                .map_err(|e| StreamError::Protocol(e.to_string()));
        }
    }

    /// Drops the live connection as a network failure would; the next call resumes the session
    /// and resends the unacknowledged batches.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Waits for every ack, then commits (`commit = true`) or rolls back an accrue/replace
    /// session (closes a stream session); `force` commits a replace session past the removal
    /// guard. Returns the session's totals and import result.
    ///
    /// If the connection breaks after the close was sent and the server closed the session
    /// before the stream could be resumed (a commit runs to its end without its stream), the
    /// resume is refused (`PERMISSION_DENIED`); the close is then sent again as a unary
    /// `CloseSession`, which answers the totals and import result of the close that ended the
    /// session, or `PERMISSION_DENIED` naming how it ended when that was not this close
    /// ([`StreamError::Status`]). A refused replace commit (`FAILED_PRECONDITION`) leaves the
    /// session open, to be resumed and closed with `force` or without `commit`.
    pub async fn finish(
        mut self,
        commit: bool,
        force: bool,
    ) -> Result<pb::StreamClosed, StreamError> {
        self.flush().await?;
        match self.close_on_stream(commit, force).await {
            Err(StreamError::Status(denied)) if denied.code() == Code::PermissionDenied => {
                tracing::info!(
                    session = %self.session_id,
                    "session closed while the stream was broken; asking how it ended"
                );
                self.close_unary(commit, force).await
            }
            answered => answered,
        }
    }

    /// Sends the close on the stream (again after a reconnect) and waits for `closed`.
    async fn close_on_stream(
        &mut self,
        commit: bool,
        force: bool,
    ) -> Result<pb::StreamClosed, StreamError> {
        let close = encode(&pb::ContributeRequest {
            message: Some(Outgoing::Close(pb::StreamClose { commit, force })),
        });
        self.closing = Some(close.clone());
        if let Err(status) = self.send(close).await {
            self.reconnect(status).await?;
        }
        match self.receive().await?.message {
            Some(Incoming::Closed(closed)) => Ok(closed),
            other => Err(StreamError::Protocol(format!(
                "expected `closed`, got {other:?}"
            ))),
        }
    }

    /// The same close as a unary `CloseSession`: the server answers a close of an ended session
    /// as the close that ended it did. (`&mut`: a shared borrow held across the call would make
    /// `finish`'s future not `Send`, the ack callback not being `Sync`.)
    async fn close_unary(
        &mut self,
        commit: bool,
        force: bool,
    ) -> Result<pb::StreamClosed, StreamError> {
        let closed = crate::contribution(self.channel.clone(), &self.token)
            .close_session(pb::CloseSessionRequest {
                session_id: self.session_id.clone(),
                commit,
                force,
            })
            .await
            .map_err(StreamError::Status)?
            .into_inner();
        Ok(pb::StreamClosed {
            totals: closed.totals,
            import_result_id: closed.import_result_id,
        })
    }

    /// Numbers a batch, waits for room in the window, and sends it.
    async fn submit(&mut self, batch: impl FnOnce(u64) -> Outgoing) -> Result<u64, StreamError> {
        self.submit_as(None, batch).await
    }

    /// [`Self::submit`], reporting a digest batch's answer under `answer_as` when given.
    async fn submit_as(
        &mut self,
        answer_as: Option<u64>,
        batch: impl FnOnce(u64) -> Outgoing,
    ) -> Result<u64, StreamError> {
        while self.pending.len() >= self.window {
            self.next_ack().await?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut request = pb::ContributeRequest {
            message: Some(batch(seq)),
        };
        let encoded = encode(&request);
        // A digest batch keeps its digests (small) in case its answer must be asked again.
        let digests = match request.message.take() {
            Some(Outgoing::Diff(diff)) => Some(diff.digests),
            _ => None,
        };
        self.pending.push_back(PendingBatch {
            seq,
            request: encoded.clone(),
            digests,
            answer_as: answer_as.unwrap_or(seq),
        });
        let request = encoded;
        if let Err(status) = self.send(request).await {
            // The reconnect resends every pending batch, this one included.
            self.reconnect(status).await?;
        }
        Ok(seq)
    }

    /// The next ack, which must be the oldest pending batch's.
    async fn next_ack(&mut self) -> Result<pb::BatchAck, StreamError> {
        let ack = match self.receive().await?.message {
            Some(Incoming::Ack(ack)) => ack,
            other => {
                return Err(StreamError::Protocol(format!(
                    "expected an ack, got {other:?}"
                )))
            }
        };
        let batch = match self.pending.pop_front() {
            Some(batch) if batch.seq == ack.batch_seq => batch,
            expected => {
                return Err(StreamError::Protocol(format!(
                    "ack for batch {} while batch {:?} was expected",
                    ack.batch_seq,
                    expected.map(|b| b.seq)
                )))
            }
        };
        if let Some(digests) = batch.digests {
            if ack.already_applied {
                self.reask.push_back((batch.answer_as, digests));
            } else {
                self.answers.push_back(DigestAnswer {
                    batch_seq: batch.answer_as,
                    to_send: ack
                        .digests
                        .iter()
                        .filter(|d| d.state() != pb::DigestState::Unchanged)
                        .map(|d| d.id.clone())
                        .collect(),
                    error: ack.error.clone(),
                });
            }
        }
        self.stats.acked += 1;
        if ack.error.is_some() {
            self.stats.rejected += 1;
        }
        if ack.already_applied {
            self.stats.already_applied += 1;
        }
        if let Some(callback) = self.on_ack.as_mut() {
            callback(&ack);
        }
        Ok(ack)
    }

    /// The next response, reconnecting (and resending) as often as the backoff allows.
    async fn receive(&mut self) -> Result<pb::ContributeResponse, StreamError> {
        loop {
            let received = match self.conn.as_mut() {
                Some(conn) => conn.incoming.message().await,
                None => Err(Status::unavailable("not connected")),
            };
            match received {
                Ok(Some(response)) => return Ok(response),
                Ok(None) => {
                    self.reconnect(Status::unavailable("the stream ended early"))
                        .await?;
                }
                Err(status) => {
                    self.reconnect(status).await?;
                }
            }
        }
    }

    async fn send(&mut self, request: Bytes) -> Result<(), Status> {
        match self.conn.as_ref() {
            Some(conn) => conn
                .outgoing
                .send(request)
                .await
                .map_err(|_| Status::unavailable("the stream is closed")),
            None => Err(Status::unavailable("not connected")),
        }
    }

    /// Starts a `Contribute` call opening (or resuming) the session; returns `opened`.
    async fn connect(&mut self) -> Result<pb::StreamOpened, Status> {
        self.conn = None;
        // Room for the open message, a full window of resent batches and the close message, so
        // queueing never waits.
        let (outgoing, rx) = mpsc::channel(self.window + 2);
        let open = pb::StreamOpen {
            mode: self.mode.into(),
            session_id: self.session_id.clone(),
        };
        outgoing
            .try_send(encode(&pb::ContributeRequest {
                message: Some(Outgoing::Open(open)),
            }))
            .map_err(|_| Status::internal("the outgoing queue is full"))?;
        let mut incoming =
            pre_encoded::contribute(self.channel.clone(), &self.token, ReceiverStream::new(rx))
                .await?;
        match incoming.message().await? {
            Some(pb::ContributeResponse {
                message: Some(Incoming::Opened(opened)),
            }) => {
                self.session_id.clone_from(&opened.session_id);
                self.mode = opened.mode();
                self.conn = Some(Connection { outgoing, incoming });
                Ok(opened)
            }
            // Not retryable: a server that answers the open with something else will again.
            Some(other) => Err(Status::failed_precondition(format!(
                "expected `opened`, got {other:?}"
            ))),
            None => Err(Status::unavailable("the stream ended before `opened`")),
        }
    }

    /// Reconnects after `cause` with backoff, resumes the session and resends what is
    /// unacknowledged; returns the `opened` answer of the new stream.
    async fn reconnect(&mut self, cause: Status) -> Result<pb::StreamOpened, StreamError> {
        self.conn = None;
        let mut delays = self.backoff.build();
        let mut last = cause;
        let mut attempts = 0;
        loop {
            if !is_retryable(&last) {
                return Err(StreamError::Status(last));
            }
            let Some(backoff) = delays.next() else {
                return Err(StreamError::GaveUp { attempts, last });
            };
            // A server that said how long to wait is taken at its word.
            let delay =
                crate::retry::retry_delay(&last).map_or(backoff, |asked| asked.max(backoff));
            tracing::warn!(
                session = %self.session_id,
                code = ?last.code(),
                message = last.message(),
                retry_in = ?delay,
                "contribution stream broken; resuming"
            );
            tokio::time::sleep(delay).await;
            attempts += 1;
            match self.connect().await {
                Ok(opened) => match self.resend().await {
                    Ok(()) => {
                        self.stats.reconnects += 1;
                        tracing::info!(
                            session = %self.session_id,
                            last_batch_seq = opened.last_batch_seq,
                            resent = self.pending.len(),
                            "contribution stream resumed"
                        );
                        return Ok(opened);
                    }
                    Err(status) => last = status,
                },
                Err(status) => last = status,
            }
        }
    }

    /// Resends every unacknowledged batch, oldest first, then the close message if one is due.
    async fn resend(&mut self) -> Result<(), Status> {
        let requests: Vec<Bytes> = self
            .pending
            .iter()
            .map(|batch| batch.request.clone())
            .chain(self.closing.clone())
            .collect();
        for request in requests {
            self.send(request).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_retried_and_refusals_are_not() {
        assert!(is_retryable(&Status::unavailable("shutting down")));
        assert!(is_retryable(&Status::unknown("transport error")));
        assert!(!is_retryable(&Status::internal("a server-side bug")));
        assert!(!is_retryable(&Status::permission_denied("superseded")));
        assert!(!is_retryable(&Status::failed_precondition("sweep refused")));
        assert!(!is_retryable(&Status::invalid_argument("first message")));
        assert!(!is_retryable(&Status::unauthenticated("token")));
        let mut details = tonic_types::ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_millis(10)));
        assert!(is_retryable(
            &<Status as tonic_types::StatusExt>::with_error_details(
                Code::ResourceExhausted,
                "over the rate limit",
                details
            )
        ));
        assert!(!is_retryable(&Status::resource_exhausted(
            "batch too large"
        )));
    }
}
