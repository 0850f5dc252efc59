//! The Admin gRPC service (SPEC.md §4): checks the admin token, decodes requests, calls
//! [`AdminService`], encodes replies. Validation lives in `tributary-core`.

mod exports;
mod sources;

use tonic::{Request, Response, Status};
use tracing::Span;
use tributary_core::admin::{AdminService, ConnectorInput, EntityTypeInput};
use tributary_core::export::service::ExportService;
use tributary_core::model::{
    Connector, Consumer, EntityType, ImportItem, ImportResult, ImportStatus, WritePolicy,
};
use tributary_core::page::page_size;
use tributary_core::source::service::SourceService;
use tributary_core::store::ImportResultFilter;
use tributary_core::{Error, Result};
use tributary_grpc::auth::AdminAuth;
use tributary_grpc::convert::{schema_to_struct, struct_arg_to_json, timestamp};
use tributary_grpc::{to_status, traced};
use tributary_proto::admin::v1 as pb;
use tributary_proto::admin::v1::admin_server::{Admin, AdminServer};

/// The tonic adapter over [`AdminService`].
#[derive(Clone)]
pub struct AdminApi {
    svc: AdminService,
    sources: SourceService,
    exports: ExportService,
    auth: AdminAuth,
}

/// The Admin service, ready to add to a tonic router; calls must carry the token `auth` checks.
pub fn admin_server(
    svc: AdminService,
    sources: SourceService,
    exports: ExportService,
    auth: AdminAuth,
    max_request_bytes: usize,
    max_response_bytes: usize,
) -> AdminServer<AdminApi> {
    AdminServer::new(AdminApi {
        svc,
        sources,
        exports,
        auth,
    })
    .max_decoding_message_size(max_request_bytes)
    .max_encoding_message_size(max_response_bytes)
}

fn rpc_span(rpc: &'static str) -> Span {
    tracing::info_span!("rpc", service = "Admin", rpc)
}

pub(crate) fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field, "is required"))
}

fn optional(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

fn entity_type_input(e: pb::EntityType) -> Result<EntityTypeInput> {
    Ok(EntityTypeInput {
        schema: e
            .schema
            .map(|s| struct_arg_to_json("entity_type.schema", s))
            .transpose()?,
        slug: e.slug,
        name: e.name,
        description: e.description,
    })
}

fn entity_type_to_proto(e: EntityType) -> Result<pb::EntityType> {
    let schema = schema_to_struct(&e.slug, e.schema)?;
    Ok(pb::EntityType {
        slug: e.slug,
        name: e.name,
        description: e.description,
        schema: Some(schema),
        schema_version: e.schema_version,
        created_at: Some(timestamp(e.created_at)),
        updated_at: Some(timestamp(e.updated_at)),
    })
}

fn write_policy_from_proto(policy: i32) -> Result<WritePolicy> {
    match pb::WritePolicy::try_from(policy) {
        // Unspecified means the default policy: the connector is the source of truth.
        Ok(pb::WritePolicy::Unspecified | pb::WritePolicy::Importer) => Ok(WritePolicy::Importer),
        Ok(pb::WritePolicy::ImporterCreateOnly) => Ok(WritePolicy::ImporterCreateOnly),
        Ok(pb::WritePolicy::ImporterUpdateUnlessEdited) => {
            Ok(WritePolicy::ImporterUpdateUnlessEdited)
        }
        Err(_) => Err(Error::invalid(
            "connector.write_policy",
            format!("{policy} is not a WritePolicy"),
        )),
    }
}

fn write_policy_to_proto(policy: WritePolicy) -> pb::WritePolicy {
    match policy {
        WritePolicy::Importer => pb::WritePolicy::Importer,
        WritePolicy::ImporterCreateOnly => pb::WritePolicy::ImporterCreateOnly,
        WritePolicy::ImporterUpdateUnlessEdited => pb::WritePolicy::ImporterUpdateUnlessEdited,
    }
}

fn connector_input(c: pb::Connector) -> Result<ConnectorInput> {
    Ok(ConnectorInput {
        write_policy: write_policy_from_proto(c.write_policy)?,
        name: c.name,
        entity_type: c.entity_type,
        reject_removals_above_percent: c.reject_removals_above_percent,
        rate_limit: c.rate_limit,
    })
}

fn connector_to_proto(c: Connector) -> pb::Connector {
    pb::Connector {
        write_policy: write_policy_to_proto(c.write_policy).into(),
        id: c.id,
        name: c.name,
        entity_type: c.entity_type,
        reject_removals_above_percent: c.reject_removals_above_percent,
        rate_limit: c.rate_limit,
        created_at: Some(timestamp(c.created_at)),
    }
}

fn consumer_to_proto(c: Consumer) -> pb::Consumer {
    pb::Consumer {
        id: c.id,
        name: c.name,
        entity_types: c.entity_types,
        created_at: Some(timestamp(c.created_at)),
    }
}

/// A status filter: UNSPECIFIED admits every status.
fn import_status_from_proto(status: i32) -> Result<Option<ImportStatus>> {
    match pb::ImportStatus::try_from(status) {
        Ok(pb::ImportStatus::Unspecified) => Ok(None),
        Ok(pb::ImportStatus::Succeeded) => Ok(Some(ImportStatus::Succeeded)),
        Ok(pb::ImportStatus::Partial) => Ok(Some(ImportStatus::Partial)),
        Ok(pb::ImportStatus::Failed) => Ok(Some(ImportStatus::Failed)),
        Ok(pb::ImportStatus::Canceled) => Ok(Some(ImportStatus::Canceled)),
        Err(_) => Err(Error::invalid(
            "status",
            format!("{status} is not an ImportStatus"),
        )),
    }
}

pub(crate) fn import_status_to_proto(status: ImportStatus) -> pb::ImportStatus {
    match status {
        ImportStatus::Succeeded => pb::ImportStatus::Succeeded,
        ImportStatus::Partial => pb::ImportStatus::Partial,
        ImportStatus::Failed => pb::ImportStatus::Failed,
        ImportStatus::Canceled => pb::ImportStatus::Canceled,
    }
}

fn import_item_to_proto(i: ImportItem) -> pb::ImportItem {
    pb::ImportItem {
        id: i.id,
        reason: i.reason,
        error: i.error,
        data: i.data,
    }
}

/// An import result as the Admin API reports it.
pub fn import_result_to_proto(r: ImportResult) -> pb::ImportResult {
    pb::ImportResult {
        id: r.id,
        connector: r.connector,
        session_id: r.session_id.unwrap_or_default(),
        source: r.source.unwrap_or_default(),
        started_at: Some(timestamp(r.started_at)),
        ended_at: Some(timestamp(r.ended_at)),
        status: import_status_to_proto(r.status).into(),
        created: r.totals.created,
        updated: r.totals.updated,
        unchanged: r.totals.unchanged,
        skipped: r.totals.skipped,
        failed: r.failed,
        deleted: r.totals.deleted,
        swept: r.totals.swept,
        sweep_refused: r.sweep_refused,
        pages: r.pages,
        skipped_items: r
            .skipped_items
            .into_iter()
            .map(import_item_to_proto)
            .collect(),
        failed_items: r
            .failed_items
            .into_iter()
            .map(import_item_to_proto)
            .collect(),
        items_not_listed: r.items_not_listed,
        errors: r.errors,
    }
}

impl AdminApi {
    /// Runs one call: a span, the admin token check, then `body` with `svc` (the admin or the
    /// source domain) and the decoded request; domain errors become statuses in one place.
    async fn handle<S, Req, Resp, F, Fut>(
        &self,
        svc: &S,
        rpc: &'static str,
        request: Request<Req>,
        body: F,
    ) -> Result<Response<Resp>, Status>
    where
        S: Clone,
        F: FnOnce(S, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp>>,
    {
        traced(rpc_span(rpc), async move {
            self.auth.check(&request)?;
            body(svc.clone(), request.into_inner())
                .await
                .map(Response::new)
                .map_err(to_status)
        })
        .await
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_entity_type(
        &self,
        request: Request<pb::CreateEntityTypeRequest>,
    ) -> Result<Response<pb::CreateEntityTypeResponse>, Status> {
        self.handle(
            &self.svc,
            "CreateEntityType",
            request,
            |svc, req| async move {
                let input = entity_type_input(required("entity_type", req.entity_type)?)?;
                let created = svc.create_entity_type(input).await?;
                Ok(pb::CreateEntityTypeResponse {
                    entity_type: Some(entity_type_to_proto(created)?),
                })
            },
        )
        .await
    }

    async fn get_entity_type(
        &self,
        request: Request<pb::GetEntityTypeRequest>,
    ) -> Result<Response<pb::GetEntityTypeResponse>, Status> {
        self.handle(&self.svc, "GetEntityType", request, |svc, req| async move {
            let entity_type = svc.get_entity_type(&req.slug).await?;
            Ok(pb::GetEntityTypeResponse {
                entity_type: Some(entity_type_to_proto(entity_type)?),
            })
        })
        .await
    }

    async fn list_entity_types(
        &self,
        request: Request<pb::ListEntityTypesRequest>,
    ) -> Result<Response<pb::ListEntityTypesResponse>, Status> {
        self.handle(
            &self.svc,
            "ListEntityTypes",
            request,
            |svc, req| async move {
                let page = svc
                    .list_entity_types(page_size(req.page_size)?, &req.page_token)
                    .await?;
                Ok(pb::ListEntityTypesResponse {
                    entity_types: page
                        .items
                        .into_iter()
                        .map(entity_type_to_proto)
                        .collect::<Result<_>>()?,
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn update_entity_type(
        &self,
        request: Request<pb::UpdateEntityTypeRequest>,
    ) -> Result<Response<pb::UpdateEntityTypeResponse>, Status> {
        self.handle(
            &self.svc,
            "UpdateEntityType",
            request,
            |svc, req| async move {
                let input = entity_type_input(required("entity_type", req.entity_type)?)?;
                let updated = svc.update_entity_type(input).await?;
                Ok(pb::UpdateEntityTypeResponse {
                    entity_type: Some(entity_type_to_proto(updated)?),
                })
            },
        )
        .await
    }

    async fn delete_entity_type(
        &self,
        request: Request<pb::DeleteEntityTypeRequest>,
    ) -> Result<Response<pb::DeleteEntityTypeResponse>, Status> {
        self.handle(
            &self.svc,
            "DeleteEntityType",
            request,
            |svc, req| async move {
                svc.delete_entity_type(&req.slug, req.force).await?;
                Ok(pb::DeleteEntityTypeResponse {})
            },
        )
        .await
    }

    async fn validate_entity_type(
        &self,
        request: Request<pb::ValidateEntityTypeRequest>,
    ) -> Result<Response<pb::ValidateEntityTypeResponse>, Status> {
        self.handle(
            &self.svc,
            "ValidateEntityType",
            request,
            |svc, req| async move {
                let schema = req
                    .schema
                    .map(|s| struct_arg_to_json("schema", s))
                    .transpose()?;
                let check = svc.validate_entity_type(&req.slug, schema).await?;
                Ok(pb::ValidateEntityTypeResponse {
                    records_checked: check.records_checked,
                    records_invalid: check.records_invalid,
                    examples: check.examples,
                })
            },
        )
        .await
    }

    async fn create_connector(
        &self,
        request: Request<pb::CreateConnectorRequest>,
    ) -> Result<Response<pb::CreateConnectorResponse>, Status> {
        self.handle(&self.svc, "CreateConnector", request, |svc, req| async move {
            let input = connector_input(required("connector", req.connector)?)?;
            let (connector, token) = svc.create_connector(input).await?;
            tracing::info!(connector = %connector.id, entity_type = %connector.entity_type, "connector created");
            Ok(pb::CreateConnectorResponse { connector: Some(connector_to_proto(connector)), token })
        })
        .await
    }

    async fn get_connector(
        &self,
        request: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::GetConnectorResponse>, Status> {
        self.handle(&self.svc, "GetConnector", request, |svc, req| async move {
            let connector = svc.get_connector(&req.id).await?;
            Ok(pb::GetConnectorResponse {
                connector: Some(connector_to_proto(connector)),
            })
        })
        .await
    }

    async fn list_connectors(
        &self,
        request: Request<pb::ListConnectorsRequest>,
    ) -> Result<Response<pb::ListConnectorsResponse>, Status> {
        self.handle(
            &self.svc,
            "ListConnectors",
            request,
            |svc, req| async move {
                let page = svc
                    .list_connectors(page_size(req.page_size)?, &req.page_token)
                    .await?;
                Ok(pb::ListConnectorsResponse {
                    connectors: page.items.into_iter().map(connector_to_proto).collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn update_connector(
        &self,
        request: Request<pb::UpdateConnectorRequest>,
    ) -> Result<Response<pb::UpdateConnectorResponse>, Status> {
        self.handle(
            &self.svc,
            "UpdateConnector",
            request,
            |svc, req| async move {
                let connector = required("connector", req.connector)?;
                let id = connector.id.clone();
                let updated = svc
                    .update_connector(&id, connector_input(connector)?)
                    .await?;
                Ok(pb::UpdateConnectorResponse {
                    connector: Some(connector_to_proto(updated)),
                })
            },
        )
        .await
    }

    async fn delete_connector(
        &self,
        request: Request<pb::DeleteConnectorRequest>,
    ) -> Result<Response<pb::DeleteConnectorResponse>, Status> {
        self.handle(
            &self.svc,
            "DeleteConnector",
            request,
            |svc, req| async move {
                let records_deleted = svc.delete_connector(&req.id, req.delete_records).await?;
                Ok(pb::DeleteConnectorResponse { records_deleted })
            },
        )
        .await
    }

    async fn rotate_connector_token(
        &self,
        request: Request<pb::RotateConnectorTokenRequest>,
    ) -> Result<Response<pb::RotateConnectorTokenResponse>, Status> {
        self.handle(
            &self.svc,
            "RotateConnectorToken",
            request,
            |svc, req| async move {
                let token = svc.rotate_connector_token(&req.id).await?;
                tracing::info!(connector = %req.id, "connector token rotated");
                Ok(pb::RotateConnectorTokenResponse { token })
            },
        )
        .await
    }

    async fn create_consumer(
        &self,
        request: Request<pb::CreateConsumerRequest>,
    ) -> Result<Response<pb::CreateConsumerResponse>, Status> {
        self.handle(
            &self.svc,
            "CreateConsumer",
            request,
            |svc, req| async move {
                let consumer = required("consumer", req.consumer)?;
                let (consumer, token) = svc
                    .create_consumer(consumer.name, consumer.entity_types)
                    .await?;
                tracing::info!(consumer = %consumer.id, "consumer created");
                Ok(pb::CreateConsumerResponse {
                    consumer: Some(consumer_to_proto(consumer)),
                    token,
                })
            },
        )
        .await
    }

    async fn get_consumer(
        &self,
        request: Request<pb::GetConsumerRequest>,
    ) -> Result<Response<pb::GetConsumerResponse>, Status> {
        self.handle(&self.svc, "GetConsumer", request, |svc, req| async move {
            let consumer = svc.get_consumer(&req.id).await?;
            Ok(pb::GetConsumerResponse {
                consumer: Some(consumer_to_proto(consumer)),
            })
        })
        .await
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        self.handle(&self.svc, "ListConsumers", request, |svc, req| async move {
            let page = svc
                .list_consumers(page_size(req.page_size)?, &req.page_token)
                .await?;
            Ok(pb::ListConsumersResponse {
                consumers: page.items.into_iter().map(consumer_to_proto).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn delete_consumer(
        &self,
        request: Request<pb::DeleteConsumerRequest>,
    ) -> Result<Response<pb::DeleteConsumerResponse>, Status> {
        self.handle(
            &self.svc,
            "DeleteConsumer",
            request,
            |svc, req| async move {
                svc.delete_consumer(&req.id).await?;
                Ok(pb::DeleteConsumerResponse {})
            },
        )
        .await
    }

    async fn list_import_results(
        &self,
        request: Request<pb::ListImportResultsRequest>,
    ) -> Result<Response<pb::ListImportResultsResponse>, Status> {
        self.handle(
            &self.svc,
            "ListImportResults",
            request,
            |svc, req| async move {
                let filter = ImportResultFilter {
                    connector: optional(&req.connector),
                    source: optional(&req.source),
                    status: import_status_from_proto(req.status)?,
                };
                let page = svc
                    .list_import_results(&filter, page_size(req.page_size)?, &req.page_token)
                    .await?;
                Ok(pb::ListImportResultsResponse {
                    import_results: page.items.into_iter().map(import_result_to_proto).collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn get_import_result(
        &self,
        request: Request<pb::GetImportResultRequest>,
    ) -> Result<Response<pb::GetImportResultResponse>, Status> {
        self.handle(
            &self.svc,
            "GetImportResult",
            request,
            |svc, req| async move {
                let result = svc.get_import_result(&req.id).await?;
                Ok(pb::GetImportResultResponse {
                    import_result: Some(import_result_to_proto(result)),
                })
            },
        )
        .await
    }

    async fn create_source(
        &self,
        request: Request<pb::CreateSourceRequest>,
    ) -> Result<Response<pb::CreateSourceResponse>, Status> {
        self.handle(&self.sources, "CreateSource", request, |svc, req| async move {
            let input = sources::source_input(sources::required_source(req.source)?)?;
            let created = svc.create_source(input).await?;
            tracing::info!(source = %created.id, connector = %created.connector, "source created");
            Ok(pb::CreateSourceResponse {
                source: Some(sources::source_to_proto(created)),
            })
        })
        .await
    }

    async fn get_source(
        &self,
        request: Request<pb::GetSourceRequest>,
    ) -> Result<Response<pb::GetSourceResponse>, Status> {
        self.handle(&self.sources, "GetSource", request, |svc, req| async move {
            let source = svc.get_source(&req.id).await?;
            Ok(pb::GetSourceResponse {
                source: Some(sources::source_to_proto(source)),
            })
        })
        .await
    }

    async fn list_sources(
        &self,
        request: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        self.handle(
            &self.sources,
            "ListSources",
            request,
            |svc, req| async move {
                let page = svc
                    .list_sources(
                        optional(&req.connector),
                        page_size(req.page_size)?,
                        &req.page_token,
                    )
                    .await?;
                Ok(pb::ListSourcesResponse {
                    sources: page
                        .items
                        .into_iter()
                        .map(sources::source_to_proto)
                        .collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn update_source(
        &self,
        request: Request<pb::UpdateSourceRequest>,
    ) -> Result<Response<pb::UpdateSourceResponse>, Status> {
        self.handle(
            &self.sources,
            "UpdateSource",
            request,
            |svc, req| async move {
                let source = sources::required_source(req.source)?;
                let id = source.id.clone();
                let updated = svc
                    .update_source(&id, sources::source_input(source)?)
                    .await?;
                Ok(pb::UpdateSourceResponse {
                    source: Some(sources::source_to_proto(updated)),
                })
            },
        )
        .await
    }

    async fn delete_source(
        &self,
        request: Request<pb::DeleteSourceRequest>,
    ) -> Result<Response<pb::DeleteSourceResponse>, Status> {
        self.handle(
            &self.sources,
            "DeleteSource",
            request,
            |svc, req| async move {
                svc.delete_source(&req.id).await?;
                Ok(pb::DeleteSourceResponse {})
            },
        )
        .await
    }

    async fn trigger_source(
        &self,
        request: Request<pb::TriggerSourceRequest>,
    ) -> Result<Response<pb::TriggerSourceResponse>, Status> {
        self.handle(
            &self.sources,
            "TriggerSource",
            request,
            |svc, req| async move {
                let status = svc.trigger_source(&req.id).await?;
                Ok(pb::TriggerSourceResponse {
                    status: Some(sources::status_to_proto(status)),
                })
            },
        )
        .await
    }

    async fn cancel_source(
        &self,
        request: Request<pb::CancelSourceRequest>,
    ) -> Result<Response<pb::CancelSourceResponse>, Status> {
        self.handle(&self.sources, "CancelSource", request, |svc, req| async move {
            Ok(sources::cancel_to_proto(svc.cancel_source(&req.id).await?))
        })
        .await
    }

    async fn get_source_status(
        &self,
        request: Request<pb::GetSourceStatusRequest>,
    ) -> Result<Response<pb::GetSourceStatusResponse>, Status> {
        self.handle(
            &self.sources,
            "GetSourceStatus",
            request,
            |svc, req| async move {
                let status = svc.source_status(&req.id).await?;
                Ok(pb::GetSourceStatusResponse {
                    status: Some(sources::status_to_proto(status)),
                })
            },
        )
        .await
    }

    async fn push_delta(
        &self,
        request: Request<pb::PushDeltaRequest>,
    ) -> Result<Response<pb::PushDeltaResponse>, Status> {
        self.handle(&self.sources, "PushDelta", request, |svc, req| async move {
            let added = sources::delta_records(req.added)?;
            let t = svc.push_delta(&req.source_id, added, req.removed).await?;
            Ok(pb::PushDeltaResponse {
                created: t.created,
                updated: t.updated,
                unchanged: t.unchanged,
                skipped: t.skipped,
                deleted: t.deleted,
            })
        })
        .await
    }

    async fn edit_record(
        &self,
        request: Request<pb::EditRecordRequest>,
    ) -> Result<Response<pb::EditRecordResponse>, Status> {
        self.handle(
            &self.sources,
            "EditRecord",
            request,
            |svc, req| async move {
                let entity = req
                    .entity
                    .map(|e| struct_arg_to_json("entity", e))
                    .transpose()?;
                let instance = req
                    .instance
                    .map(|e| struct_arg_to_json("instance", e))
                    .transpose()?;
                let record = svc
                    .edit_record(&req.key, req.name, entity, instance)
                    .await?;
                tracing::info!(key = %record.key, "record edited");
                Ok(pb::EditRecordResponse {
                    record: Some(sources::edited_to_proto(record)?),
                })
            },
        )
        .await
    }

    async fn create_export(
        &self,
        request: Request<pb::CreateExportRequest>,
    ) -> Result<Response<pb::CreateExportResponse>, Status> {
        self.handle(
            &self.exports,
            "CreateExport",
            request,
            |svc, req| async move {
                let input = exports::export_input(exports::required_export(req.export)?)?;
                let export = svc.create_export(input).await?;
                tracing::info!(export = %export.id, name = %export.name, "export created");
                Ok(pb::CreateExportResponse {
                    export: Some(exports::export_to_proto(export)),
                })
            },
        )
        .await
    }

    async fn get_export(
        &self,
        request: Request<pb::GetExportRequest>,
    ) -> Result<Response<pb::GetExportResponse>, Status> {
        self.handle(&self.exports, "GetExport", request, |svc, req| async move {
            let export = svc.get_export(&req.id).await?;
            Ok(pb::GetExportResponse {
                export: Some(exports::export_to_proto(export)),
            })
        })
        .await
    }

    async fn list_exports(
        &self,
        request: Request<pb::ListExportsRequest>,
    ) -> Result<Response<pb::ListExportsResponse>, Status> {
        self.handle(
            &self.exports,
            "ListExports",
            request,
            |svc, req| async move {
                let page = svc
                    .list_exports(page_size(req.page_size)?, &req.page_token)
                    .await?;
                Ok(pb::ListExportsResponse {
                    exports: page
                        .items
                        .into_iter()
                        .map(exports::export_to_proto)
                        .collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn update_export(
        &self,
        request: Request<pb::UpdateExportRequest>,
    ) -> Result<Response<pb::UpdateExportResponse>, Status> {
        self.handle(
            &self.exports,
            "UpdateExport",
            request,
            |svc, req| async move {
                let export = exports::required_export(req.export)?;
                let id = export.id.clone();
                let updated = svc
                    .update_export(&id, exports::export_input(export)?)
                    .await?;
                Ok(pb::UpdateExportResponse {
                    export: Some(exports::export_to_proto(updated)),
                })
            },
        )
        .await
    }

    async fn delete_export(
        &self,
        request: Request<pb::DeleteExportRequest>,
    ) -> Result<Response<pb::DeleteExportResponse>, Status> {
        self.handle(
            &self.exports,
            "DeleteExport",
            request,
            |svc, req| async move {
                svc.delete_export(&req.id).await?;
                Ok(pb::DeleteExportResponse {})
            },
        )
        .await
    }

    async fn run_export(
        &self,
        request: Request<pb::RunExportRequest>,
    ) -> Result<Response<pb::RunExportResponse>, Status> {
        self.handle(&self.exports, "RunExport", request, |svc, req| async move {
            let run = svc.run_export(&req.id).await?;
            Ok(pb::RunExportResponse {
                run: Some(exports::run_to_proto(run)),
            })
        })
        .await
    }

    async fn list_export_runs(
        &self,
        request: Request<pb::ListExportRunsRequest>,
    ) -> Result<Response<pb::ListExportRunsResponse>, Status> {
        self.handle(
            &self.exports,
            "ListExportRuns",
            request,
            |svc, req| async move {
                let page = svc
                    .list_export_runs(&req.export_id, page_size(req.page_size)?, &req.page_token)
                    .await?;
                Ok(pb::ListExportRunsResponse {
                    runs: page.items.into_iter().map(exports::run_to_proto).collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_write_policy_means_importer() {
        assert_eq!(write_policy_from_proto(0).ok(), Some(WritePolicy::Importer));
        assert_eq!(
            write_policy_from_proto(2).ok(),
            Some(WritePolicy::ImporterCreateOnly)
        );
        assert!(matches!(
            write_policy_from_proto(42),
            Err(Error::InvalidArgument(_))
        ));
    }
}
