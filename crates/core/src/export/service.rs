//! The export use cases (SPEC.md §7): CRUD with validation, runs on demand, the run history.
//! Running is delegated to an [`ExportRunner`] (`tributary-ingest`'s writes to object stores).

use super::{check_export, Export, ExportFormat, ExportRun};
use crate::clock::now_micros;
use crate::error::ResourceKind;
use crate::ids::new_id;
use crate::model::Page;
use crate::page::{decode_token, next_token};
use crate::source::service::Waker;
use crate::source::Schedule;
use crate::store::Store;
use crate::{Error, Result};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

/// Runs an export to its end and records the run (succeeded or failed). `Err` only when the run
/// could not be recorded.
#[async_trait]
pub trait ExportRunner: Send + Sync {
    /// Runs `export` now.
    async fn run(&self, export: &Export) -> Result<ExportRun>;
}

/// What a caller gives to create or update an export; `None` means the default (create) or the
/// current value (update).
#[derive(Debug, Clone, Default)]
pub struct ExportInput {
    pub name: String,
    pub entity_type: String,
    pub filter: String,
    pub format: Option<ExportFormat>,
    pub destination: String,
    pub schedule: Schedule,
    pub enabled: Option<bool>,
}

/// Export use cases over a store.
#[derive(Clone)]
pub struct ExportService {
    store: Arc<dyn Store>,
    runner: Arc<dyn ExportRunner>,
    /// Directories `file://` destinations must be under.
    allowed_dirs: Arc<[PathBuf]>,
    waker: Option<Waker>,
}

impl ExportService {
    /// A service over `store` that runs exports with `runner` and lets `file://` destinations
    /// write only under `allowed_dirs`.
    pub fn new(
        store: Arc<dyn Store>,
        runner: Arc<dyn ExportRunner>,
        allowed_dirs: Vec<PathBuf>,
    ) -> Self {
        Self {
            store,
            runner,
            allowed_dirs: allowed_dirs.into(),
            waker: None,
        }
    }

    /// Also calls `waker` when an export's schedule may have become due sooner.
    pub fn with_waker(mut self, waker: Waker) -> Self {
        self.waker = Some(waker);
        self
    }

    fn wake(&self) {
        if let Some(wake) = &self.waker {
            wake();
        }
    }

    /// Creates an export; an interval export is due at once, a cron export at its next time.
    pub async fn create_export(&self, input: ExportInput) -> Result<Export> {
        let now = now_micros();
        let export = Export {
            id: new_id(),
            name: input.name,
            entity_type: input.entity_type,
            filter: input.filter,
            format: input.format.unwrap_or(ExportFormat::Ndjson),
            destination: input.destination,
            schedule: input.schedule,
            enabled: input.enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        check_export(&export, &self.allowed_dirs)?;
        self.store
            .create_export(&export, export.first_run(now))
            .await?;
        self.wake();
        Ok(export)
    }

    /// The export `id`.
    pub async fn get_export(&self, id: &str) -> Result<Export> {
        self.store.get_export(id).await
    }

    /// A page of exports.
    pub async fn list_exports(&self, limit: u32, token: &str) -> Result<Page<Export>> {
        let items = self
            .store
            .list_exports(decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|e| e.id.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Replaces an export's definition; its schedule restarts from now.
    pub async fn update_export(&self, id: &str, input: ExportInput) -> Result<Export> {
        let current = self.store.get_export(id).await?;
        let now = now_micros();
        let updated = Export {
            name: input.name,
            entity_type: input.entity_type,
            filter: input.filter,
            format: input.format.unwrap_or(current.format),
            destination: input.destination,
            schedule: input.schedule,
            enabled: input.enabled.unwrap_or(current.enabled),
            updated_at: now,
            ..current
        };
        check_export(&updated, &self.allowed_dirs)?;
        let stored = self
            .store
            .update_export(&updated, updated.first_run(now))
            .await?;
        self.wake();
        Ok(stored)
    }

    /// Deletes an export and its run history; what it wrote stays.
    pub async fn delete_export(&self, id: &str) -> Result<()> {
        self.store.delete_export(id).await
    }

    /// Runs export `id` now and answers with its run once it has ended.
    pub async fn run_export(&self, id: &str) -> Result<ExportRun> {
        let export = self.store.get_export(id).await?;
        self.runner.run(&export).await
    }

    /// A page of an export's runs, newest first.
    pub async fn list_export_runs(
        &self,
        export_id: &str,
        limit: u32,
        token: &str,
    ) -> Result<Page<ExportRun>> {
        if export_id.is_empty() {
            return Err(Error::invalid("export_id", "is required"));
        }
        crate::text::refuse_nul([("export_id", export_id)])?;
        let items = self
            .store
            .list_export_runs(export_id, decode_token(token)?.as_deref(), limit)
            .await?;
        let next_page_token = next_token(items.len(), limit, items.last().map(|r| r.id.as_str()));
        Ok(Page {
            items,
            next_page_token,
        })
    }
}

/// `NotFound` for export `id`.
pub fn export_not_found(id: &str) -> Error {
    Error::not_found(ResourceKind::Export, id)
}
