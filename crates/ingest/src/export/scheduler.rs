//! Runs interval and cron exports when they are due, in every process that serves Admin.
//!
//! Like the pull engine's claims of sources: a due export is claimed with one atomic `UPDATE`
//! that sets a lease (holder and expiry) only where no live lease is held, so with any number of
//! replicas on one database exactly one runs it. The lease is renewed while the run lasts; a
//! holder that dies leaves it to expire, and another scheduler takes the export over. After the
//! run (succeeded or failed, reported in its run) the lease is released and the export is due at
//! its schedule's next time.

use super::Exporter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_core::clock::now_micros;
use tributary_core::export::service::ExportRunner;
use tributary_core::export::Export;
use tributary_core::source::after;
use tributary_core::source::service::Waker;
use tributary_core::source::store::Claim;

/// Most scheduled exports run at once by one scheduler.
const CONCURRENCY: u32 = 2;

/// The scheduler of one process.
pub struct ExportScheduler {
    exporter: Arc<Exporter>,
    holder: String,
    wake: Arc<Notify>,
}

impl ExportScheduler {
    /// A scheduler with a fresh holder id, running exports with `exporter`.
    pub fn new(exporter: Arc<Exporter>) -> Self {
        Self {
            exporter,
            holder: format!("exports-{}", uuid::Uuid::new_v4().simple()),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A waker that makes the scheduler look for due exports now (for the admin service).
    pub fn waker(&self) -> Waker {
        let wake = self.wake.clone();
        Arc::new(move || wake.notify_one())
    }

    /// Runs until `stop` is cancelled; runs under way finish first.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!(holder = %self.holder, "export scheduler started");
        let mut runs = JoinSet::new();
        loop {
            let room = CONCURRENCY.saturating_sub(runs.len() as u32);
            if room > 0 {
                match self.claim(room).await {
                    Ok(claimed) => {
                        for export in claimed {
                            let me = self.clone();
                            runs.spawn(async move { me.run_claimed(export).await });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not claim due exports"),
                }
            }
            let sleep = self.sleep_for().await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
            }
        }
        while runs.join_next().await.is_some() {}
        tracing::info!(holder = %self.holder, "export scheduler stopped");
    }

    /// Claims the due exports and runs them to their end (for tests driving it step by step).
    /// Returns how many ran.
    pub async fn tick(&self) -> tributary_core::Result<usize> {
        let claimed = self.claim(CONCURRENCY).await?;
        let n = claimed.len();
        for export in claimed {
            self.run_claimed(export).await;
        }
        Ok(n)
    }

    async fn claim(&self, limit: u32) -> tributary_core::Result<Vec<Export>> {
        let now = now_micros();
        self.exporter
            .store
            .claim_exports(&Claim {
                holder: &self.holder,
                now,
                lease_until: after(now, self.exporter.options.lease),
                limit,
            })
            .await
    }

    async fn sleep_for(&self) -> Duration {
        let heartbeat = self
            .exporter
            .options
            .heartbeat
            .max(Duration::from_millis(10));
        match self.exporter.store.next_export_due().await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due.saturating_sub(now_micros())).unwrap_or(0);
                Duration::from_micros(wait).clamp(Duration::from_millis(10), heartbeat)
            }
            Ok(None) => heartbeat,
            Err(error) => {
                tracing::warn!(%error, "could not read the next due export");
                heartbeat
            }
        }
    }

    /// Runs a claimed export while renewing its lease, then releases it until its next time.
    async fn run_claimed(&self, export: Export) {
        let store = &self.exporter.store;
        let lease = self.exporter.options.lease;
        let renew = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = after(now_micros(), lease);
                match store
                    .renew_export_lease(&export.id, &self.holder, until)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(export = %export.id, "export lease lost during a run")
                    }
                    Err(error) => {
                        tracing::warn!(export = %export.id, %error, "could not renew an export lease")
                    }
                }
            }
        };
        let started = now_micros();
        let outcome = tokio::select! {
            outcome = self.exporter.run(&export) => outcome,
            () = renew => unreachable!("renewing loops forever"),
        };
        if let Err(error) = outcome {
            tracing::warn!(export = %export.id, %error, "a scheduled export run could not be recorded");
        }
        let next = export.next_run(started, now_micros());
        if let Err(error) = store.release_export(&export.id, &self.holder, next).await {
            tracing::warn!(export = %export.id, %error, "could not release an export; its lease will expire");
        }
    }
}
