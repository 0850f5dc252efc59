//! Batches as parameters. Both backends take a batch of rows as array parameters rather than
//! thousands of bound scalars (PERF.md: binding is what costs); how the arrays are spelled and
//! bound is the backend's (`json_each` over one JSON text on SQLite, one `unnest`ed array per
//! column on PostgreSQL). This module holds the rows; each backend's `rowset` and `bind_rows`
//! say how they travel.

/// Rows of text columns, row-major, bound as a batch parameter.
#[derive(Debug, Clone)]
pub(crate) struct TextRows<'a> {
    width: usize,
    cells: Vec<&'a str>,
}

impl<'a> TextRows<'a> {
    /// Empty rows of `width` columns.
    pub(crate) fn new(width: usize) -> Self {
        Self {
            width,
            cells: Vec::new(),
        }
    }

    /// Appends a row; it must have `width` cells.
    pub(crate) fn push(&mut self, row: &[&'a str]) {
        debug_assert_eq!(row.len(), self.width);
        self.cells.extend_from_slice(row);
    }

    /// How many columns each row has.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// The rows, in order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &[&'a str]> {
        self.cells.chunks(self.width.max(1))
    }

    /// Rows of one column.
    pub(crate) fn column(items: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            width: 1,
            cells: items.into_iter().collect(),
        }
    }
}

/// The columns of a record batch, in the order [`record_rows`] fills them.
pub(crate) const RECORD_COLUMNS: [&str; 6] =
    ["key", "id", "name", "entity", "instance", "checksum"];

/// A batch of prepared records as rows of [`RECORD_COLUMNS`].
pub(crate) fn record_rows<'a>(
    records: impl IntoIterator<Item = &'a tributary_core::record::PreparedRecord>,
) -> TextRows<'a> {
    let mut rows = TextRows::new(RECORD_COLUMNS.len());
    for r in records {
        rows.push(&[&r.key, &r.id, &r.name, &r.entity, &r.instance, &r.checksum]);
    }
    rows
}
