//! The bounds of one listing query. Parsing is linear in the text and every count is capped
//! before anything is compiled to SQL, so a hostile query costs bounded time and memory; every
//! bound is configurable (`[catalog]` settings, docs/LIMITS.md) up to [`QueryLimits::CEILING`],
//! the largest values both backends are known to execute.

use serde::{Deserialize, Serialize};

/// How large a ListRecords query may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryLimits {
    /// Largest `filter` text, in bytes.
    pub max_filter_bytes: usize,
    /// Most conditions (leaves and combinators) in one filter.
    pub max_filter_conditions: usize,
    /// Deepest nesting of `$and` / `$or` / `$not`.
    pub max_filter_depth: usize,
    /// Most values of one `$in` / `$nin`.
    pub max_in_values: usize,
    /// Largest `$regex` pattern, in bytes.
    pub max_regex_bytes: usize,
    /// Most fields in `order_by`.
    pub max_order_by_fields: usize,
    /// Largest `order_by` text, in bytes.
    pub max_order_by_bytes: usize,
    /// Largest `page_token`, in bytes.
    pub max_page_token_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_filter_bytes: 64 * 1024,
            max_filter_conditions: 2_000,
            max_filter_depth: 16,
            max_in_values: 1_000,
            max_regex_bytes: 1_024,
            max_order_by_fields: 8,
            max_order_by_bytes: 1_024,
            max_page_token_bytes: 16 * 1024,
        }
    }
}

impl QueryLimits {
    /// The largest limits accepted from configuration: beyond them a backend refuses the SQL
    /// (SQLite's expression depth and function arguments, PostgreSQL's 100 function arguments).
    pub const CEILING: QueryLimits = QueryLimits {
        max_filter_bytes: 1024 * 1024,
        max_filter_conditions: 10_000,
        max_filter_depth: 32,
        max_in_values: 5_000,
        max_regex_bytes: 64 * 1024,
        max_order_by_fields: 16,
        max_order_by_bytes: 16 * 1024,
        max_page_token_bytes: 256 * 1024,
    };

    /// These limits, each lowered to the ceiling and raised to at least 1.
    pub fn clamped(self) -> QueryLimits {
        let c = Self::CEILING;
        let fit = |v: usize, max: usize| v.clamp(1, max);
        QueryLimits {
            max_filter_bytes: fit(self.max_filter_bytes, c.max_filter_bytes),
            max_filter_conditions: fit(self.max_filter_conditions, c.max_filter_conditions),
            max_filter_depth: fit(self.max_filter_depth, c.max_filter_depth),
            max_in_values: fit(self.max_in_values, c.max_in_values),
            max_regex_bytes: fit(self.max_regex_bytes, c.max_regex_bytes),
            max_order_by_fields: fit(self.max_order_by_fields, c.max_order_by_fields),
            max_order_by_bytes: fit(self.max_order_by_bytes, c.max_order_by_bytes),
            max_page_token_bytes: fit(self.max_page_token_bytes, c.max_page_token_bytes),
        }
    }
}
