//! Range-based sync (SPEC.md §2.5) with unary `Reconcile` calls: learn which of a large set of
//! records changed in a few round trips and kilobytes, instead of one digest per record.
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel, session_id: &str) -> Result<(), tonic::Status> {
//! use tributary_client::reconcile::{reconcile, ClientSet, CallLimits};
//! let mut client = tributary_client::contribution(channel, "tbc_...");
//! let set = ClientSet::new([("FR".to_owned(), "checksum of FR".to_owned())]);
//! let outcome = reconcile(&mut client, session_id, &set, CallLimits::default()).await?;
//! for i in outcome.send { println!("send {} in full", set.id(i)); }
//! # Ok(()) }
//! ```
//! The same exchange runs inside the `Contribute` stream with
//! [`StreamingContributor::reconcile`](crate::StreamingContributor::reconcile).

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;
pub use tributary_core::reconcile::{CallLimits, ClientSet, Outcome};
use tributary_core::reconcile::{RangeQuery, Reconciler};
use tributary_grpc::reconcile::{answers_from_proto, ranges_to_proto};
use tributary_proto::contribution::v1 as pb;
use tributary_proto::contribution::v1::contribution_client::ContributionClient;

use crate::BearerAuth;

type Client = ContributionClient<InterceptedService<Channel, BearerAuth>>;

/// Reconciles `set` (the client's `(id, checksum)` items, checksums as
/// [`digest::checksum`](crate::digest::checksum) computes them) with the connector's visible
/// records in `session_id`, round after round, each cut into calls within `limits` (the
/// server's `limits.max_reconcile_ranges` and `limits.max_batch_records`). Calls refused with
/// `RetryInfo` (a rate limit) wait and go on. In a replace session, what matched is kept by the
/// sweep; the outcome's `send` are the items to send in full.
pub async fn reconcile(
    client: &mut Client,
    session_id: &str,
    set: &ClientSet,
    limits: CallLimits,
) -> Result<Outcome, Status> {
    let mut reconciler = Reconciler::new(set);
    loop {
        let round = reconciler.next_round();
        if round.is_empty() {
            return Ok(reconciler.outcome());
        }
        for call in Reconciler::calls(round, limits) {
            let answers = one_call(client, session_id, &call).await?;
            reconciler
                .absorb(&call, &answers)
                .map_err(|e| Status::internal(format!("the server's answer: {e}")))?;
        }
    }
}

async fn one_call(
    client: &mut Client,
    session_id: &str,
    call: &[RangeQuery],
) -> Result<Vec<tributary_core::reconcile::RangeAnswer>, Status> {
    let request = pb::ReconcileRequest {
        session_id: session_id.to_owned(),
        ranges: ranges_to_proto(call),
    };
    let response = crate::retry::honouring_retry_info(|| {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.reconcile(request).await }
    })
    .await?;
    answers_from_proto(response.into_inner().ranges)
        .map_err(|e| Status::internal(format!("the server's answer: {e}")))
}
