//! The catalog's query language (SPEC.md §3): filters, orders and listing cursors, parsed and
//! validated here into an AST that knows nothing of SQL. Each store backend compiles the AST to
//! its own parameterised SQL (`tributary-store`), so a filter is never applied in memory.

mod field;
mod filter;
mod limits;
mod order;
mod rfc3339;
mod token;

pub use field::{Field, FieldKind, MAX_PATH_DEPTH};
pub use filter::{CompareOp, Filter, Scalar};
pub use limits::QueryLimits;
pub use order::SortKey;
pub use rfc3339::parse_rfc3339_micros;
pub use token::{Cursor, ListToken};

use crate::Result;

/// A parsed listing: what to match, in which order, and a fingerprint of both that ties page
/// tokens to the query they were issued for.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// `None` matches every record of the entity type.
    pub filter: Option<Filter>,
    /// The sort keys, always ending with `key` so the order is total.
    pub order: Vec<SortKey>,
    /// Identifies (entity type, filter, order); a token from another query is refused.
    pub fingerprint: String,
}

impl ListQuery {
    /// Parses a ListRecords request's `filter` (JSON text, empty for none) and `order_by`
    /// (AIP-132, empty for key order) within the default [`QueryLimits`]. Problems are
    /// `InvalidArgument` violations naming where.
    pub fn parse(entity_type: &str, filter: &str, order_by: &str) -> Result<ListQuery> {
        Self::parse_within(entity_type, filter, order_by, &QueryLimits::default())
    }

    /// [`ListQuery::parse`] within `limits`.
    pub fn parse_within(
        entity_type: &str,
        filter: &str,
        order_by: &str,
        limits: &QueryLimits,
    ) -> Result<ListQuery> {
        let (filter, canonical) = filter::parse(filter, limits)?;
        let order = order::parse(order_by, limits)?;
        let mut hasher = blake3::Hasher::new();
        for part in [entity_type, &canonical, &order::normalized(&order)] {
            hasher.update(part.as_bytes());
            hasher.update(b"\0");
        }
        let fingerprint = hasher.finalize().to_hex()[..32].to_owned();
        Ok(ListQuery {
            filter,
            order,
            fingerprint,
        })
    }
}
