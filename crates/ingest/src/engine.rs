//! The heartbeat, claims and bursts (SPEC.md §5).
//!
//! The engine sleeps until the earliest time a source could be claimed (at most one heartbeat,
//! and at once when woken by TriggerSource or CreateSource), claims due sources with a lease,
//! and runs one burst per claim: pages from the saved cursor until `burst_length` has passed or
//! the provider is done. After a burst the lease is freed and the next burst is due
//! `burst_interval` later — on whichever engine claims it. A failed page frees the lease and
//! makes the source due after the next backoff interval; after the last one the cycle fails.

use crate::error::FetchError;
use crate::prefetch::{PageSource, Prefetch};
use crate::providers::{provider_for, HttpOptions};
use rand::Rng;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_core::clock::{now_micros, Micros};
use tributary_core::schema::EntitySchema;
use tributary_core::source::service::Waker;
use tributary_core::source::store::Claim;
use tributary_core::source::{after, ClaimedSource, CycleEnd, Lease, Mapping, SourcePage};
use tributary_core::store::Store;
use tributary_core::Error;

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The longest the engine sleeps between looks for due sources (§5 default: 5 min).
    pub heartbeat: Duration,
    /// How long a claim lasts without a page renewing it; a dead holder's source is taken over
    /// after this.
    pub lease: Duration,
    /// Most sources worked at once by this engine.
    pub concurrency: u32,
    /// Most skipped/failed items listed per import result (`reports.max_items`).
    pub max_items: u64,
    pub max_record_bytes: usize,
    /// Largest page body an HTTP source may return, and most bytes one `ndjson` page reads.
    pub max_page_bytes: usize,
    /// Longest line of an `ndjson` source; a longer one is a failed item, and reading never
    /// holds more of a line than this.
    pub max_line_bytes: usize,
    /// Timeout of one HTTP request.
    pub http_timeout: Duration,
    /// How long connecting to a `grpc` provider may take.
    pub provider_connect_timeout: Duration,
    /// How long one `Next` call of a `grpc` provider may take; a provider that does not answer
    /// in time fails the page (and frees the engine's slot).
    pub provider_request_timeout: Duration,
    /// Directories `ndjson` sources may read files under; empty: no file may be read. (A
    /// server gives its engine `ServerOptions::allowed_dirs`, the same list its source
    /// validation uses.)
    pub allowed_dirs: Vec<PathBuf>,
    /// A PEM file of root certificates trusted for HTTPS sources besides the system's (a
    /// private CA's, say).
    pub ca_file: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(300),
            lease: Duration::from_secs(60),
            concurrency: 4,
            max_items: 1000,
            max_record_bytes: 1024 * 1024,
            max_page_bytes: 64 * 1024 * 1024,
            max_line_bytes: 1024 * 1024,
            http_timeout: Duration::from_secs(30),
            provider_connect_timeout: Duration::from_secs(10),
            provider_request_timeout: Duration::from_secs(30),
            allowed_dirs: Vec::new(),
            ca_file: None,
        }
    }
}

/// A pull engine over a store.
pub struct Engine {
    store: Arc<dyn Store>,
    /// This engine's lease holder id; unique per engine.
    holder: String,
    options: EngineOptions,
    http: HttpOptions,
    wake: Arc<Notify>,
}

impl Engine {
    /// An engine with a fresh holder id.
    pub fn new(store: Arc<dyn Store>, options: EngineOptions) -> Result<Self, FetchError> {
        let http = HttpOptions::new(&options)?;
        Ok(Self {
            store,
            holder: format!("engine-{}", uuid::Uuid::new_v4().simple()),
            options,
            http,
            wake: Arc::new(Notify::new()),
        })
    }

    /// This engine's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// A waker that makes the engine look for due sources now (for the admin service).
    pub fn waker(&self) -> Waker {
        let wake = self.wake.clone();
        Arc::new(move || wake.notify_one())
    }

    /// Runs until `stop` is cancelled; bursts under way finish their current page and free
    /// their lease before this returns.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!(holder = %self.holder, heartbeat = ?self.options.heartbeat, "pull engine started");
        let mut bursts = JoinSet::new();
        loop {
            let room = self.options.concurrency.saturating_sub(bursts.len() as u32);
            if room > 0 {
                match self.claim(room).await {
                    Ok(claimed) => {
                        for c in claimed {
                            let engine = self.clone();
                            let stop = stop.clone();
                            bursts.spawn(async move { engine.burst(c, stop).await });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not claim sources"),
                }
            }
            let sleep = self.sleep_for().await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                Some(_) = bursts.join_next(), if !bursts.is_empty() => {}
            }
        }
        while bursts.join_next().await.is_some() {}
        tracing::info!(holder = %self.holder, "pull engine stopped");
    }

    async fn claim(&self, limit: u32) -> tributary_core::Result<Vec<ClaimedSource>> {
        let now = now_micros();
        self.store
            .claim_sources(&Claim {
                holder: &self.holder,
                now,
                lease_until: after(now, self.options.lease),
                limit,
            })
            .await
    }

    /// Until the earliest time a source could be claimed, within (10 ms, heartbeat).
    async fn sleep_for(&self) -> Duration {
        let heartbeat = self.options.heartbeat.max(Duration::from_millis(10));
        match self.store.next_source_due().await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due.saturating_sub(now_micros())).unwrap_or(0);
                Duration::from_micros(wait).clamp(Duration::from_millis(10), heartbeat)
            }
            Ok(None) => heartbeat,
            Err(error) => {
                tracing::warn!(%error, "could not read the next due source");
                heartbeat
            }
        }
    }

    /// Claims and runs the due sources once, to completion of their bursts (for tests and
    /// benchmarks that drive the engine step by step). Returns how many bursts ran.
    pub async fn tick(&self) -> tributary_core::Result<usize> {
        let claimed = self.claim(self.options.concurrency.max(1)).await?;
        let n = claimed.len();
        for c in claimed {
            self.burst(c, CancellationToken::new()).await;
        }
        Ok(n)
    }

    /// One burst of a claimed source; every outcome is written to the store, so errors here
    /// are only logged (a write refused for a lost lease means another engine took over).
    async fn burst(&self, claimed: ClaimedSource, stop: CancellationToken) {
        let source_id = claimed.source.id.clone();
        if let Err(error) = self.run_burst(claimed, stop).await {
            match &error {
                Error::FailedPrecondition {
                    reason: "LEASE_LOST",
                    ..
                } => tracing::info!(source = %source_id, "lease lost; another engine took over"),
                _ => {
                    tracing::warn!(source = %source_id, %error, "burst ended by a store error; the lease will expire and the page be retried")
                }
            }
        }
    }

    async fn run_burst(
        &self,
        claimed: ClaimedSource,
        stop: CancellationToken,
    ) -> tributary_core::Result<()> {
        let ClaimedSource { source, status } = claimed;
        let lease = Lease {
            source_id: source.id.clone(),
            holder: self.holder.clone(),
            cycle_id: status.cycle_id.clone().ok_or_else(|| {
                Error::Internal(format!("claimed source {} has no cycle", source.id))
            })?,
        };
        let started = Instant::now();
        let cycle_started = status.cycle_started_at.unwrap_or_else(now_micros);
        let mut attempts = status.attempts;
        let connector = self.store.get_connector(&source.connector).await?;
        let entity_type = self.store.get_entity_type(&connector.entity_type).await?;
        let setup = (|| {
            let schema = EntitySchema::compile(&entity_type.schema)
                .map_err(|e| FetchError::new(format!("entity type schema: {e}")))?;
            let mapping = Mapping::compile_for(source.kind, "mapping", &source.mapping)
                .map_err(|e| FetchError::new(format!("source mapping is invalid: {e}")))?;
            let provider = provider_for(&source, &self.http)?;
            Ok::<_, FetchError>(Arc::new(PageSource {
                provider,
                mapping,
                schema,
                entity_type: connector.entity_type.clone(),
                connector: connector.id.clone(),
                max_record_bytes: self.options.max_record_bytes,
            }))
        })();
        let pages = match setup {
            Ok(pages) => pages,
            Err(error) => {
                return self
                    .page_failed(&source, &lease, attempts, cycle_started, &error)
                    .await
            }
        };
        let cursor: Option<Value> = match status.cursor.as_deref() {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                Error::Internal(format!(
                    "saved cursor of source {} is not JSON: {e}",
                    source.id
                ))
            })?),
            None => None,
        };
        let mut next = Prefetch::start(&pages, cursor);
        loop {
            let page = match next.page().await {
                Ok(page) => page,
                Err(error) => {
                    return self
                        .page_failed(&source, &lease, attempts, cycle_started, &error)
                        .await;
                }
            };
            attempts = 0;
            // Whether the burst goes on is decided before the write, and the next page fetched
            // during it; a page once asked for is written, so a burst ends at most one page
            // write after `burst_length`, as it did without the prefetch.
            let more = !page.done
                && started.elapsed() < source.pacing.burst_length
                && !stop.is_cancelled();
            let following = more.then(|| Prefetch::start(&pages, Some(page.next_cursor.clone())));
            let write_started = Instant::now();
            let now = now_micros();
            let items = page.records.len() + page.failed.len();
            let totals = self
                .store
                .apply_source_page(
                    &lease,
                    &SourcePage {
                        records: page.records,
                        failed_items: page.failed,
                        next_cursor: page.next_cursor.to_string(),
                        now,
                        lease_until: after(now, self.options.lease),
                        max_items: self.options.max_items,
                    },
                )
                .await?;
            crate::metrics::count_pulled(&pages.entity_type, &totals);
            tracing::debug!(source = %source.id, items, fetched = ?page.fetched, prepared = ?page.prepared,
                written = ?write_started.elapsed(), "page imported");
            if page.done {
                let now = now_micros();
                let next = source
                    .schedule
                    .next_run(cycle_started, now, source.pacing.rest_length);
                let end = CycleEnd::Done {
                    reject_empty: source.reject_empty,
                    reject_removals_above_percent: source.reject_removals_above_percent,
                };
                let result = self
                    .store
                    .finish_source_cycle(&lease, &end, now, next)
                    .await?;
                crate::metrics::count_cycle(result.status.as_str(), cycle_started, now);
                tracing::info!(source = %source.id, import_result = %result.id, status = result.status.as_str(),
                    created = result.totals.created, updated = result.totals.updated,
                    swept = result.totals.swept, "cycle finished");
                return Ok(());
            }
            match following {
                Some(following) if !stop.is_cancelled() => next = following,
                _ => {
                    let next = after(now_micros(), source.pacing.burst_interval);
                    return self.store.release_source(&lease, next).await;
                }
            }
        }
    }

    /// A page failed: back off (with jitter) from the saved cursor, or after the last interval
    /// fail the cycle; the next one then starts afresh.
    async fn page_failed(
        &self,
        source: &tributary_core::source::Source,
        lease: &Lease,
        attempts: u32,
        cycle_started: Micros,
        error: &FetchError,
    ) -> tributary_core::Result<()> {
        let now = now_micros();
        let attempt = attempts as usize + 1;
        match source.pacing.backoff.get(attempt - 1) {
            Some(interval) => {
                let jitter = rand::rng().random_range(0.9..1.1);
                let wait = interval.mul_f64(jitter);
                tracing::info!(source = %source.id, attempt, ?wait, %error, "page failed; backing off");
                self.store
                    .source_page_failed(lease, &error.0, now, after(now, wait))
                    .await
            }
            None => {
                tracing::warn!(source = %source.id, attempt, %error, "page failed after the last backoff interval; cycle failed");
                let next = source
                    .schedule
                    .next_run(now, now, source.pacing.rest_length);
                let end = CycleEnd::Failed {
                    error: format!("gave up after {attempt} attempts: {error}"),
                };
                let result = self
                    .store
                    .finish_source_cycle(lease, &end, now, next)
                    .await?;
                crate::metrics::count_cycle(result.status.as_str(), cycle_started, now);
                Ok(())
            }
        }
    }
}
