//! The Contribution gRPC service (SPEC.md §2): decodes requests, calls
//! [`ContributionService`], encodes replies. Rules live in `tributary-core`; errors map to
//! statuses only through [`tributary_grpc::to_status`]. The `Contribute` stream's loop lives in
//! the `stream` module.

mod close;
mod metrics;
mod stream;

use std::pin::Pin;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{field, Span};
use tributary_core::contribution::{
    BatchReport, ContributionService, Contributor, DigestInput, DigestOutcome, PreparedBatch,
};
use tributary_core::model::{DigestState, Outcome, RecordOutcome, SessionMode, SessionTotals};
use tributary_core::record::RecordInput;
use tributary_core::store::BatchResult;
use tributary_core::{Error, Violation};
use tributary_grpc::auth::bearer_token;
use tributary_grpc::convert::{object_field_to_json, JsonObject};
use tributary_grpc::reconcile::{answers_to_proto, ranges_from_proto};
use tributary_grpc::status::traced;
use tributary_grpc::to_status;
use tributary_proto::contribution::v1 as pb;
// Requests carrying records decode their entities straight into JSON (ADR 0022).
use tributary_proto::contribution::v1::json as json_pb;
use tributary_proto::contribution::v1::json::contribution_server::{
    Contribution, ContributionServer,
};

/// The tonic adapter over [`ContributionService`].
#[derive(Clone)]
pub struct ContributionApi {
    svc: ContributionService,
    /// Cancelled when the server shuts down: open `Contribute` streams finish the batch in
    /// flight, then end with `UNAVAILABLE` (SPEC.md §9).
    shutdown: CancellationToken,
}

/// The Contribution service, ready to add to a tonic router; cancelling `shutdown` ends its open
/// streams gracefully.
pub fn contribution_server(
    svc: ContributionService,
    max_message_bytes: usize,
    shutdown: CancellationToken,
) -> ContributionServer<ContributionApi> {
    ContributionServer::new(ContributionApi { svc, shutdown })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

fn rpc_span(rpc: &'static str) -> Span {
    tracing::info_span!(
        "rpc",
        service = "Contribution",
        rpc,
        connector = field::Empty,
        session = field::Empty
    )
}

impl ContributionApi {
    /// The calling connector; records it on the current span.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Contributor, Status> {
        let who = self
            .svc
            .authenticate(bearer_token(request))
            .await
            .map_err(to_status)?;
        Span::current().record("connector", who.connector.id.as_str());
        Ok(who)
    }
}

fn record_session(session_id: &str) {
    Span::current().record("session", session_id);
}

fn mode_from_proto(mode: i32) -> Result<SessionMode, Error> {
    match pb::SessionMode::try_from(mode) {
        Ok(pb::SessionMode::Stream) => Ok(SessionMode::Stream),
        Ok(pb::SessionMode::Accrue) => Ok(SessionMode::Accrue),
        Ok(pb::SessionMode::Replace) => Ok(SessionMode::Replace),
        Ok(pb::SessionMode::Unspecified) | Err(_) => Err(Error::invalid(
            "mode",
            "must be SESSION_MODE_STREAM, SESSION_MODE_ACCRUE or SESSION_MODE_REPLACE",
        )),
    }
}

fn mode_to_proto(mode: SessionMode) -> pb::SessionMode {
    match mode {
        SessionMode::Stream => pb::SessionMode::Stream,
        SessionMode::Accrue => pb::SessionMode::Accrue,
        SessionMode::Replace => pb::SessionMode::Replace,
    }
}

fn outcome_to_proto(outcome: Outcome) -> pb::Outcome {
    match outcome {
        Outcome::Created => pb::Outcome::Created,
        Outcome::Updated => pb::Outcome::Updated,
        Outcome::Unchanged => pb::Outcome::Unchanged,
        Outcome::Deleted => pb::Outcome::Deleted,
        Outcome::NotFound => pb::Outcome::NotFound,
        Outcome::Skipped => pb::Outcome::Skipped,
    }
}

fn outcomes_to_proto(outcomes: Vec<RecordOutcome>) -> Vec<pb::RecordOutcome> {
    outcomes
        .into_iter()
        .map(|o| pb::RecordOutcome {
            id: o.id,
            key: o.key,
            outcome: outcome_to_proto(o.outcome).into(),
        })
        .collect()
}

fn digest_state_to_proto(state: DigestState) -> pb::DigestState {
    match state {
        DigestState::New => pb::DigestState::New,
        DigestState::Changed => pb::DigestState::Changed,
        DigestState::Unchanged => pb::DigestState::Unchanged,
    }
}

fn digests_to_proto(results: Vec<DigestOutcome>) -> Vec<pb::DigestResult> {
    results
        .into_iter()
        .map(|d| pb::DigestResult {
            id: d.id,
            key: d.key,
            state: digest_state_to_proto(d.state).into(),
        })
        .collect()
}

fn digests_from_proto(digests: Vec<pb::Digest>) -> Vec<DigestInput> {
    digests
        .into_iter()
        .map(|d| DigestInput {
            id: d.id,
            checksum: d.checksum,
        })
        .collect()
}

/// Maps a unary batch call's error to its status, counting rate-limit refusals of `rpc`.
fn refused(rpc: &'static str) -> impl Fn(Error) -> Status {
    move |error| {
        if matches!(error, Error::RateLimited { .. }) {
            metrics::count_rate_limited(rpc);
        }
        to_status(error)
    }
}

/// Decodes, validates and keys an upsert batch (the CPU half of applying it) on Tokio's blocking
/// pool: milliseconds of CPU a batch, which on a runtime worker would hold up other calls'
/// transactions waiting for a worker to take their next step (ADR 0020, "Preparing off the
/// workers").
async fn prepare_upserts(
    svc: &ContributionService,
    who: &Contributor,
    records: Vec<json_pb::Record>,
) -> Result<PreparedBatch, Error> {
    let preparer = svc.upsert_preparer(who).await?;
    tokio::task::spawn_blocking(move || {
        preparer.check_size(records.len())?;
        preparer.prepare(records_from_proto(records)?)
    })
    .await
    .map_err(|join| Error::Internal(format!("preparing a batch failed: {join}")))?
}

/// The result of an unsequenced call: the store answers `AlreadyApplied` only for a `batch_seq`.
fn applied<T>(result: BatchResult<T>) -> Result<T, Error> {
    match result {
        BatchResult::Applied(value) => Ok(value),
        BatchResult::AlreadyApplied => Err(Error::Internal(
            "an unsequenced batch was reported as already applied".into(),
        )),
    }
}

fn totals_to_proto(t: SessionTotals) -> pb::SessionTotals {
    pb::SessionTotals {
        created: t.created,
        updated: t.updated,
        unchanged: t.unchanged,
        deleted: t.deleted,
        swept: t.swept,
        skipped: t.skipped,
    }
}

/// Decodes a batch's records; a number JSON cannot hold is a violation naming the record.
fn records_from_proto(records: Vec<json_pb::Record>) -> Result<Vec<RecordInput>, Error> {
    let mut violations: Vec<Violation> = Vec::new();
    // The field's name is formatted only for a violation.
    let mut decode = |i: usize, part: &str, object: Option<JsonObject>| {
        object.and_then(|object| {
            object_field_to_json(format_args!("records[{i}].{part}"), object)
                .map_err(|v| violations.push(v))
                .ok()
        })
    };
    let inputs: Vec<RecordInput> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| RecordInput {
            entity: decode(i, "entity", r.entity),
            instance: decode(i, "instance", r.instance),
            id: r.id,
            name: r.name,
            checksum: r.checksum,
        })
        .collect();
    if violations.is_empty() {
        Ok(inputs)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

#[tonic::async_trait]
impl Contribution for ContributionApi {
    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        traced(rpc_span("OpenSession"), async move {
            let who = self.authenticate(&request).await?;
            let mode = mode_from_proto(request.get_ref().mode).map_err(to_status)?;
            let opened = self.svc.open_session(&who, mode).await.map_err(to_status)?;
            record_session(&opened.session.id);
            metrics::count_opened(opened.session.mode, opened.superseded.len());
            Ok(Response::new(pb::OpenSessionResponse {
                session_id: opened.session.id,
                mode: mode_to_proto(opened.session.mode).into(),
                superseded_session_ids: opened.superseded,
            }))
        })
        .await
    }

    async fn upsert(
        &self,
        request: Request<json_pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        traced(rpc_span("Upsert"), async move {
            let who = self.authenticate(&request).await?;
            let req = request.into_inner();
            record_session(&req.session_id);
            self.svc
                .admit_batch(&who, req.records.len(), "records")
                .map_err(refused("Upsert"))?;
            let batch = prepare_upserts(&self.svc, &who, req.records)
                .await
                .map_err(refused("Upsert"))?;
            let outcomes = self
                .svc
                .apply(&who, &req.session_id, batch, None)
                .await
                .map_err(refused("Upsert"))?
                .map(BatchReport::into_outcomes)
                .applied() // unsequenced calls are always applied
                .unwrap_or_default();
            metrics::count_outcomes(&who.connector.entity_type, &outcomes);
            tracing::debug!(records = outcomes.len(), "upserted");
            Ok(Response::new(pb::UpsertResponse {
                outcomes: outcomes_to_proto(outcomes),
            }))
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        traced(rpc_span("Delete"), async move {
            let who = self.authenticate(&request).await?;
            let req = request.into_inner();
            record_session(&req.session_id);
            let outcomes = self
                .svc
                .delete(&who, &req.session_id, req.ids, None)
                .await
                .map_err(refused("Delete"))?
                .applied() // unsequenced calls are always applied
                .unwrap_or_default();
            metrics::count_outcomes(&who.connector.entity_type, &outcomes);
            tracing::debug!(ids = outcomes.len(), "deleted");
            Ok(Response::new(pb::DeleteResponse {
                outcomes: outcomes_to_proto(outcomes),
            }))
        })
        .await
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        traced(rpc_span("CloseSession"), async move {
            let who = self.authenticate(&request).await?;
            let req = request.into_inner();
            record_session(&req.session_id);
            let closed =
                close::close_to_the_end(&self.svc, &who, &req.session_id, req.commit, req.force)
                    .await?;
            metrics::count_closed(&who.connector.entity_type, &closed, req.commit);
            tracing::info!(
                commit = req.commit,
                mode = closed.mode.as_str(),
                "session closed"
            );
            Ok(Response::new(pb::CloseSessionResponse {
                totals: Some(totals_to_proto(closed.totals)),
                import_result_id: closed.import_result_id.unwrap_or_default(),
            }))
        })
        .await
    }
    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        traced(rpc_span("Diff"), async move {
            let who = self.authenticate(&request).await?;
            let req = request.into_inner();
            record_session(&req.session_id);
            let results = self
                .svc
                .diff(&who, &req.session_id, digests_from_proto(req.digests), None)
                .await
                .and_then(applied)
                .map_err(refused("Diff"))?;
            tracing::debug!(digests = results.len(), "diffed");
            Ok(Response::new(pb::DiffResponse {
                results: digests_to_proto(results),
            }))
        })
        .await
    }

    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileResponse>, Status> {
        traced(rpc_span("Reconcile"), async move {
            let who = self.authenticate(&request).await?;
            let req = request.into_inner();
            record_session(&req.session_id);
            let ranges = ranges_from_proto(req.ranges).map_err(to_status)?;
            let answers = self
                .svc
                .reconcile(&who, &req.session_id, ranges, None)
                .await
                .and_then(applied)
                .map_err(refused("Reconcile"))?;
            tracing::debug!(ranges = answers.len(), "reconciled");
            Ok(Response::new(pb::ReconcileResponse {
                ranges: answers_to_proto(answers),
            }))
        })
        .await
    }

    type ContributeStream = Pin<
        Box<dyn futures::Stream<Item = Result<pb::ContributeResponse, Status>> + Send + 'static>,
    >;

    async fn contribute(
        &self,
        request: Request<Streaming<json_pb::ContributeRequest>>,
    ) -> Result<Response<Self::ContributeStream>, Status> {
        // One span for the stream's whole life; the connector is known now, the session after
        // the first message.
        let span = rpc_span("Contribute");
        let who = traced(span.clone(), self.authenticate(&request)).await?;
        let stream = stream::spawn(
            self.svc.clone(),
            who,
            request.into_inner(),
            self.shutdown.clone(),
            span,
        );
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn unspecified_mode_is_invalid() {
        assert!(matches!(mode_from_proto(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            mode_from_proto(99),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            mode_from_proto(pb::SessionMode::Replace as i32).ok(),
            Some(SessionMode::Replace)
        );
    }

    #[test]
    fn non_finite_numbers_name_the_record() {
        let entity = prost_types::Struct {
            fields: [(
                "n".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
                },
            )]
            .into_iter()
            .collect(),
        };
        // Sent as a client sends it, decoded as the server decodes it.
        let sent = pb::UpsertRequest {
            records: vec![
                pb::Record::default(),
                pb::Record {
                    entity: Some(entity),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let received = json_pb::UpsertRequest::decode(sent.encode_to_vec().as_slice())
            .expect("a Struct holding NaN is valid protobuf");
        match records_from_proto(received.records) {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "records[1].entity.n"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
}
