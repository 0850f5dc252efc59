//! Calls that honour the server's `RetryInfo`: a connector over its rate limit (SPEC.md §4.2)
//! is told how long to wait (`RESOURCE_EXHAUSTED` with `QuotaFailure` and `RetryInfo`; nothing
//! of the call was applied), waits that long, and sends the same call again.
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
//! use tributary_client::pb::contribution::UpsertRequest;
//! let client = tributary_client::contribution(channel, "tbc_...");
//! let request = UpsertRequest { session_id: "...".into(), records: vec![] };
//! let outcomes = tributary_client::retry::honouring_retry_info(|| {
//!     let (mut client, request) = (client.clone(), request.clone());
//!     async move { client.upsert(request).await }
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use tonic::Status;
use tonic_types::StatusExt;

/// Most times one call is sent again on `RetryInfo` before its refusal is returned.
pub const MAX_RETRIES: usize = 100;

/// How long the server asked the client to wait before retrying, if it did.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// Runs `call` until it succeeds or fails without `RetryInfo`, waiting as the server asks in
/// between (at most [`MAX_RETRIES`] times).
pub async fn honouring_retry_info<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut retries = 0;
    loop {
        match call().await {
            Err(status) if retries < MAX_RETRIES => match retry_delay(&status) {
                Some(delay) => {
                    retries += 1;
                    tracing::debug!(
                        ?delay,
                        message = status.message(),
                        "waiting as the server asks"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => return Err(status),
            },
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic::Code;
    use tonic_types::ErrorDetails;

    fn rate_limited(delay: Duration) -> Status {
        let mut details = ErrorDetails::with_quota_failure_violation("connector:c", "5/s");
        details.set_retry_info(Some(delay));
        Status::with_error_details(Code::ResourceExhausted, "over the rate limit", details)
    }

    #[tokio::test]
    async fn waits_as_asked_then_goes_on() {
        let calls = AtomicUsize::new(0);
        let result = honouring_retry_info(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(rate_limited(Duration::from_millis(5))),
                _ => Ok("done"),
            }
        })
        .await;
        assert_eq!(result.ok(), Some("done"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_refusals_are_returned_at_once() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), Status> = honouring_retry_info(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Status::resource_exhausted("batch too large"))
        })
        .await;
        assert_eq!(result.map_err(|s| s.code()), Err(Code::ResourceExhausted));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            retry_delay(&rate_limited(Duration::from_millis(7))),
            Some(Duration::from_millis(7))
        );
    }
}
