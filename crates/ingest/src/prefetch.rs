//! Pages fetched and prepared ahead: while a burst writes page N, page N+1 is fetched from the
//! provider and turned into records in tasks of their own (the preparation — mapping, schema
//! validation, canonical JSON and checksums — on the blocking pool), so the provider's latency
//! and the CPU of preparation overlap the database's write. At most one page is ahead, so a
//! burst holds at most two pages; one HTTP request per source is in flight at a time.

use crate::error::FetchError;
use crate::page::{failed_item, prepare_items};
use crate::providers::Provider;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tributary_core::model::ImportItem;
use tributary_core::record::{PreparedRecord, RecordOwner};
use tributary_core::schema::EntitySchema;
use tributary_core::source::Mapping;

/// Everything that turns a cursor into a prepared page, shared with the prefetch tasks.
pub(crate) struct PageSource {
    pub provider: Box<dyn Provider>,
    pub mapping: Mapping,
    pub schema: EntitySchema,
    pub entity_type: String,
    pub connector: String,
    pub max_record_bytes: usize,
}

/// A fetched page as records ready to write, failed items, and where the next page starts.
pub(crate) struct PreparedPage {
    pub records: Vec<PreparedRecord>,
    pub failed: Vec<ImportItem>,
    pub next_cursor: Value,
    pub done: bool,
    /// Time spent waiting for the provider, then preparing.
    pub fetched: Duration,
    pub prepared: Duration,
}

impl PageSource {
    /// Fetches the page at `cursor` and prepares it.
    async fn page(self: Arc<Self>, cursor: Option<Value>) -> Result<PreparedPage, FetchError> {
        let started = Instant::now();
        let page = self.provider.next(cursor.as_ref()).await?;
        let fetched = started.elapsed();
        let (next_cursor, done) = (page.next_cursor, page.done);
        let (records, failed) = tokio::task::spawn_blocking(move || {
            let owner = RecordOwner {
                entity_type: &self.entity_type,
                connector: &self.connector,
            };
            let (records, mut failed) = prepare_items(
                page.items,
                &self.mapping,
                &self.schema,
                owner,
                self.max_record_bytes,
            );
            for (data, error) in page.unreadable {
                failed.push(failed_item(String::new(), "unreadable", error, &data));
            }
            (records, failed)
        })
        .await
        .map_err(|e| FetchError::new(format!("preparing the page failed: {e}")))?;
        Ok(PreparedPage {
            records,
            failed,
            next_cursor,
            done,
            fetched,
            prepared: started.elapsed() - fetched,
        })
    }
}

/// A page being fetched and prepared; dropping it cancels the work.
pub(crate) struct Prefetch(JoinSet<Result<PreparedPage, FetchError>>);

impl Prefetch {
    /// Starts on the page at `cursor`.
    pub(crate) fn start(source: &Arc<PageSource>, cursor: Option<Value>) -> Self {
        let mut task = JoinSet::new();
        task.spawn(source.clone().page(cursor));
        Self(task)
    }

    /// The page, once fetched and prepared.
    pub(crate) async fn page(mut self) -> Result<PreparedPage, FetchError> {
        match self.0.join_next().await {
            Some(Ok(page)) => page,
            Some(Err(e)) => Err(FetchError::new(format!("fetching the page failed: {e}"))),
            None => Err(FetchError::new("no page was being fetched")),
        }
    }
}
