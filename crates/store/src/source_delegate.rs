//! Implements `SourceStore` for a backend by delegating to its `sources` module, like
//! [`crate::delegate_store`] does for `Store`.

/// Implements `SourceStore` for `$store` with the free functions of module `$ops`.
macro_rules! delegate_source_store {
    ($store:ty, $ops:ident) => {
        #[async_trait::async_trait]
        impl tributary_core::source::store::SourceStore for $store {
            async fn create_source(
                &self,
                source: &tributary_core::source::Source,
            ) -> tributary_core::Result<()> {
                Ok($ops::create_source(self, source).await?)
            }
            async fn get_source(
                &self,
                id: &str,
            ) -> tributary_core::Result<tributary_core::source::Source> {
                Ok($ops::get_source(self, id).await?)
            }
            async fn list_sources(
                &self,
                connector: Option<&str>,
                after: Option<&str>,
                limit: u32,
            ) -> tributary_core::Result<Vec<tributary_core::source::Source>> {
                Ok($ops::list_sources(self, connector, after, limit).await?)
            }
            async fn update_source(
                &self,
                source: &tributary_core::source::Source,
            ) -> tributary_core::Result<tributary_core::source::Source> {
                Ok($ops::update_source(self, source).await?)
            }
            async fn delete_source(&self, id: &str) -> tributary_core::Result<()> {
                Ok($ops::delete_source(self, id).await?)
            }
            async fn source_status(
                &self,
                id: &str,
            ) -> tributary_core::Result<tributary_core::source::SourceStatus> {
                Ok($ops::source_status(self, id).await?)
            }
            async fn trigger_source(
                &self,
                id: &str,
                now: tributary_core::clock::Micros,
            ) -> tributary_core::Result<tributary_core::source::SourceStatus> {
                Ok($ops::trigger_source(self, id, now).await?)
            }
            async fn cancel_source(
                &self,
                id: &str,
                now: tributary_core::clock::Micros,
                next_run_at: tributary_core::clock::Micros,
            ) -> tributary_core::Result<Option<tributary_core::model::ImportResult>> {
                Ok($ops::cancel_source(self, id, now, next_run_at).await?)
            }
            async fn next_source_due(
                &self,
            ) -> tributary_core::Result<Option<tributary_core::clock::Micros>> {
                Ok($ops::next_source_due(self).await?)
            }
            async fn claim_sources(
                &self,
                claim: &tributary_core::source::store::Claim<'_>,
            ) -> tributary_core::Result<Vec<tributary_core::source::ClaimedSource>> {
                Ok($ops::claim_sources(self, claim).await?)
            }
            async fn apply_source_page(
                &self,
                lease: &tributary_core::source::Lease,
                page: &tributary_core::source::SourcePage,
            ) -> tributary_core::Result<tributary_core::source::PageTotals> {
                Ok($ops::apply_source_page(self, lease, page).await?)
            }
            async fn source_page_failed(
                &self,
                lease: &tributary_core::source::Lease,
                error: &str,
                now: tributary_core::clock::Micros,
                retry_at: tributary_core::clock::Micros,
            ) -> tributary_core::Result<()> {
                Ok($ops::source_page_failed(self, lease, error, now, retry_at).await?)
            }
            async fn release_source(
                &self,
                lease: &tributary_core::source::Lease,
                next_run_at: tributary_core::clock::Micros,
            ) -> tributary_core::Result<()> {
                Ok($ops::release_source(self, lease, next_run_at).await?)
            }
            async fn finish_source_cycle(
                &self,
                lease: &tributary_core::source::Lease,
                end: &tributary_core::source::CycleEnd,
                now: tributary_core::clock::Micros,
                next_run_at: tributary_core::clock::Micros,
            ) -> tributary_core::Result<tributary_core::model::ImportResult> {
                Ok($ops::finish_source_cycle(self, lease, end, now, next_run_at).await?)
            }
            async fn push_source_delta(
                &self,
                source: &tributary_core::source::Source,
                connector: &tributary_core::model::Connector,
                added: &[tributary_core::record::PreparedRecord],
                removed: &[tributary_core::record::KeyedId],
                now: tributary_core::clock::Micros,
            ) -> tributary_core::Result<tributary_core::source::DeltaTotals> {
                Ok($ops::push_source_delta(self, source, connector, added, removed, now).await?)
            }
            async fn edit_record(
                &self,
                edit: &tributary_core::source::store::RecordEdit,
            ) -> tributary_core::Result<tributary_core::model::StoredRecord> {
                Ok($ops::edit_record(self, edit).await?)
            }
        }
    };
}

pub(crate) use delegate_source_store;
