//! Bounds of the gRPC port, per connection and per request (docs/LIMITS.md), as the server
//! applies them and the configuration describes them.

use std::time::Duration;

/// Bounds of the gRPC port, per connection and per request (docs/LIMITS.md).
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged; a peer that does not answer within
    /// `keepalive_timeout` is dropped.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// The longest a call may take to produce its response (unary calls; a stream's messages
    /// are not bounded by it). A client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// Largest request message of the Catalog service.
    pub max_catalog_request_bytes: usize,
    /// Largest request message of the Admin service.
    pub max_admin_request_bytes: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_catalog_request_bytes: 1024 * 1024,
            max_admin_request_bytes: 4 * 1024 * 1024,
        }
    }
}
