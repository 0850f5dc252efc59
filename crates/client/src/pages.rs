//! Paging helpers: every `List*` RPC pages with `page_size`/`page_token`; these follow the
//! tokens so callers see one sequence of items.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::catalog::v1::catalog_client::CatalogClient;

use crate::BearerAuth;

/// Pages of `ListRecords`, one request at a time (memory holds one page, however many records).
#[derive(Debug)]
pub struct RecordPages {
    client: CatalogClient<InterceptedService<Channel, BearerAuth>>,
    request: catalog::ListRecordsRequest,
    done: bool,
    sequence: Option<u64>,
}

impl RecordPages {
    /// Pages through `request` from its `page_token` on.
    pub fn new(
        client: CatalogClient<InterceptedService<Channel, BearerAuth>>,
        request: catalog::ListRecordsRequest,
    ) -> Self {
        Self {
            client,
            request,
            done: false,
            sequence: None,
        }
    }

    /// The next page's records; `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<catalog::Record>>, Status> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .list_records(self.request.clone())
            .await?
            .into_inner();
        self.sequence.get_or_insert(page.sequence);
        self.done = page.next_page_token.is_empty();
        self.request.page_token = page.next_page_token;
        Ok(Some(page.records))
    }

    /// The change-log sequence of the first page's snapshot (`Watch` after it misses nothing).
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }
}

/// Collects every page of a `List*` RPC: `call(page_token)` answers `(items, next_page_token)`.
pub async fn collect_all<T, F, Fut>(mut call: F) -> Result<Vec<T>, Status>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = call(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}
