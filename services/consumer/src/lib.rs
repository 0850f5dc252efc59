//! The Catalog gRPC service (SPEC.md §3), for consumers: decodes requests, calls
//! [`CatalogService`], encodes replies. Grants, visibility, the query language and the change
//! log's rules are in `tributary-core`; [`watch`] only moves events from the store to the stream.

mod watch;

use std::pin::Pin;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{field, Span};
use tributary_core::catalog::{CatalogService, Reader};
use tributary_core::model::{EntityType, StoredRecord};
use tributary_core::page::page_size;
use tributary_core::Result;
use tributary_grpc::auth::bearer_token;
use tributary_grpc::convert::{json_text_to_struct, schema_to_struct, timestamp};
use tributary_grpc::{to_status, traced};
use tributary_proto::catalog::v1 as pb;
use tributary_proto::catalog::v1::catalog_server::{Catalog, CatalogServer};

/// The tonic adapter over [`CatalogService`].
#[derive(Clone)]
pub struct CatalogApi {
    svc: CatalogService,
    /// Cancelled at shutdown: open Watch streams end with `UNAVAILABLE`.
    shutdown: CancellationToken,
}

/// The Catalog service, ready to add to a tonic router; cancelling `shutdown` ends its open
/// Watch streams with `UNAVAILABLE` (the client resumes after the last sequence it saw).
pub fn catalog_server(
    svc: CatalogService,
    max_request_bytes: usize,
    max_response_bytes: usize,
    shutdown: CancellationToken,
) -> CatalogServer<CatalogApi> {
    CatalogServer::new(CatalogApi { svc, shutdown })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(max_response_bytes)
}

fn rpc_span(rpc: &'static str) -> Span {
    tracing::info_span!("rpc", service = "Catalog", rpc, consumer = field::Empty)
}

impl CatalogApi {
    /// The reader; records the consumer on the current span.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Reader, Status> {
        let reader = self
            .svc
            .authenticate(bearer_token(request))
            .await
            .map_err(to_status)?;
        let who = match &reader {
            Reader::Consumer(c) => c.id.as_str(),
            Reader::Public => "public",
        };
        Span::current().record("consumer", who);
        Ok(reader)
    }
}

/// A stored entity type as consumers see it.
pub fn entity_type_to_proto(e: EntityType) -> Result<pb::EntityType> {
    let schema = schema_to_struct(&e.slug, e.schema)?;
    Ok(pb::EntityType {
        slug: e.slug,
        name: e.name,
        description: e.description,
        schema: Some(schema),
        schema_version: e.schema_version,
    })
}

/// A stored, visible record as consumers see it.
pub fn record_to_proto(r: StoredRecord) -> Result<pb::Record> {
    Ok(pb::Record {
        entity: Some(json_text_to_struct("entity", &r.entity)?),
        instance: Some(json_text_to_struct("instance", &r.instance)?),
        key: r.key,
        entity_type: r.entity_type,
        connector: r.connector,
        id: r.id,
        name: r.name,
        checksum: r.checksum,
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        source: r.source.unwrap_or_default(),
        edited_at: r.edited_at.map(timestamp),
    })
}

fn records_to_proto(records: Vec<StoredRecord>) -> Result<Vec<pb::Record>> {
    records.into_iter().map(record_to_proto).collect()
}

/// The stream of change events a Watch returns.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Catalog for CatalogApi {
    async fn list_entity_types(
        &self,
        request: Request<pb::ListEntityTypesRequest>,
    ) -> Result<Response<pb::ListEntityTypesResponse>, Status> {
        traced(rpc_span("ListEntityTypes"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let result = async {
                let page = self
                    .svc
                    .list_entity_types(&reader, page_size(req.page_size)?, &req.page_token)
                    .await?;
                Ok(pb::ListEntityTypesResponse {
                    entity_types: page
                        .items
                        .into_iter()
                        .map(entity_type_to_proto)
                        .collect::<Result<_>>()?,
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            };
            result.await.map(Response::new).map_err(to_status)
        })
        .await
    }

    async fn get_entity_type(
        &self,
        request: Request<pb::GetEntityTypeRequest>,
    ) -> Result<Response<pb::GetEntityTypeResponse>, Status> {
        traced(rpc_span("GetEntityType"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let result = async {
                let entity_type = self.svc.get_entity_type(&reader, &req.slug).await?;
                Ok(pb::GetEntityTypeResponse {
                    entity_type: Some(entity_type_to_proto(entity_type)?),
                })
            };
            result.await.map(Response::new).map_err(to_status)
        })
        .await
    }

    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        traced(rpc_span("GetRecord"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let result = async {
                let record = self.svc.get_record(&reader, &req.key).await?;
                Ok(pb::GetRecordResponse {
                    record: Some(record_to_proto(record)?),
                })
            };
            result.await.map(Response::new).map_err(to_status)
        })
        .await
    }

    async fn get_record_by_id(
        &self,
        request: Request<pb::GetRecordByIdRequest>,
    ) -> Result<Response<pb::GetRecordByIdResponse>, Status> {
        traced(rpc_span("GetRecordById"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let result = async {
                let record = self
                    .svc
                    .get_record_by_id(&reader, &req.entity_type, &req.connector, &req.id)
                    .await?;
                Ok(pb::GetRecordByIdResponse {
                    record: Some(record_to_proto(record)?),
                })
            };
            result.await.map(Response::new).map_err(to_status)
        })
        .await
    }

    async fn lookup_by_external_ids(
        &self,
        request: Request<pb::LookupByExternalIdsRequest>,
    ) -> Result<Response<pb::LookupByExternalIdsResponse>, Status> {
        traced(rpc_span("LookupByExternalIds"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let connector = Some(req.connector.as_str()).filter(|c| !c.is_empty());
            let result = async {
                let records = self
                    .svc
                    .lookup_by_external_ids(&reader, &req.entity_type, &req.ids, connector)
                    .await?;
                Ok(pb::LookupByExternalIdsResponse {
                    records: records_to_proto(records)?,
                })
            };
            result.await.map(Response::new).map_err(to_status)
        })
        .await
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        traced(rpc_span("ListRecords"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let result = async {
                let limit = page_size(req.page_size)?;
                let listing = self
                    .svc
                    .list_records(
                        &reader,
                        &req.entity_type,
                        &req.filter,
                        &req.order_by,
                        limit,
                        &req.page_token,
                    )
                    .await?;
                Ok(pb::ListRecordsResponse {
                    records: records_to_proto(listing.page.items)?,
                    next_page_token: listing.page.next_page_token.unwrap_or_default(),
                    sequence: listing.sequence,
                })
            };
            result.await.map(Response::new).map_err(to_status)
        })
        .await
    }

    async fn count_records(
        &self,
        request: Request<pb::CountRecordsRequest>,
    ) -> Result<Response<pb::CountRecordsResponse>, Status> {
        traced(rpc_span("CountRecords"), async move {
            let reader = self.authenticate(&request).await?;
            let req = request.into_inner();
            let (count, sequence) = self
                .svc
                .count_records(&reader, &req.entity_type, &req.filter)
                .await
                .map_err(to_status)?;
            Ok(Response::new(pb::CountRecordsResponse { count, sequence }))
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let span = rpc_span("Watch");
        traced(span.clone(), async move {
            let reader = self.authenticate(&request).await?;
            let token = bearer_token(&request).map(str::to_owned);
            let req = request.into_inner();
            self.svc
                .authorize_watch(&reader, &req.entity_type)
                .await
                .map_err(to_status)?;
            let slot = self.svc.admit_watch(&reader).map_err(to_status)?;
            let stream = watch::start(
                watch::Subscription {
                    svc: self.svc.clone(),
                    token,
                    entity_type: req.entity_type,
                    _slot: slot,
                },
                req.after,
                self.shutdown.clone(),
                span,
            )
            .await
            .map_err(to_status)?;
            Ok(Response::new(stream))
        })
        .await
    }
}
