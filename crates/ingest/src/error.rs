//! Why fetching a page failed. Every fetch failure is retried after the source's next backoff
//! interval, from the saved cursor; store errors are the core [`tributary_core::Error`].

/// A page could not be fetched or read (network, HTTP status, unreadable body or file).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

impl FetchError {
    /// A fetch error saying `what` went wrong.
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}
