//! The end-to-end test sandbox: a real Tributary server on 127.0.0.1:0 over a fresh SQLite or
//! PostgreSQL database, real gRPC clients, and helpers that read like the specification.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tributary::server::{serve, ServerOptions};
use tributary_client::BearerAuth;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1 as contribution;
use tributary_store::testing::TestDb;

pub use prost_types::{value::Kind, Struct, Value};
pub use tributary_test_harness::{postgres_test, within_test_deadline, TEST_DEADLINE};

pub mod proxy;
pub mod raw;
pub mod tls;

/// An admin client with the admin token attached.
pub type AdminClient = admin::admin_client::AdminClient<InterceptedService<Channel, BearerAuth>>;
/// A contribution client with a connector token attached.
pub type ContributionClient =
    contribution::contribution_client::ContributionClient<InterceptedService<Channel, BearerAuth>>;
/// A catalog client with a consumer token attached.
pub type CatalogClient =
    catalog::catalog_client::CatalogClient<InterceptedService<Channel, BearerAuth>>;

/// Which database a sandbox runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How long a graceful shutdown may take (in-flight batches finish, streams end).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// A running server and the database under it.
pub struct Sandbox {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub backend: Backend,
    pub store: Arc<dyn tributary_core::store::Store>,
    channel: Channel,
    db: Option<TestDb>,
    options: ServerOptions,
    /// The running server; replaced by [`Sandbox::restart`].
    running: Mutex<Option<Running>>,
}

/// A server task and the way to stop it.
struct Running {
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn(
        store: Arc<dyn tributary_core::store::Store>,
        options: ServerOptions,
        listener: tokio::net::TcpListener,
    ) -> Running {
        let (shutdown, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(store, options, listener, async move {
            let _ = rx.await;
        }));
        Running { shutdown, server }
    }

    /// Signals shutdown and waits for the server to stop. Panics if it does not within `limit`,
    /// and if it panicked or failed at any time, so a broken server fails its test.
    async fn stop(self, limit: Duration) {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(limit, self.server).await {
            Err(_) => panic!("the server did not shut down within {limit:?}"),
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("the server failed: {error:#}"),
            Ok(Err(join)) if join.is_panic() => {
                panic!("the server panicked: {}", panic_message(join.into_panic()))
            }
            Ok(Err(join)) => panic!("the server task ended abnormally: {join}"),
        }
    }
}

/// The message of a panic's payload (`panic!` makes it a `&str` or a `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&str>()
            .map_or_else(|_| "(not a text payload)".to_owned(), |m| (*m).to_owned()),
    }
}

impl Sandbox {
    /// A sandbox on a fresh SQLite database.
    pub async fn sqlite(options: impl FnOnce(&mut ServerOptions)) -> Sandbox {
        Self::start(TestDb::sqlite().await, Backend::Sqlite, options).await
    }

    /// A sandbox on a fresh PostgreSQL database; panics when none is configured (PostgreSQL
    /// tests are wrapped in [`postgres_test!`], which reports them ignored in that case).
    pub async fn postgres(options: impl FnOnce(&mut ServerOptions)) -> Sandbox {
        Self::start(TestDb::postgres().await, Backend::Postgres, options).await
    }

    /// A sandbox on a fresh database of `backend` whose server opens its own store with
    /// `store_options`, at the URL `via` makes of the database's (e.g. through a proxy).
    pub async fn with_store(
        backend: Backend,
        store_options: tributary_store::StoreOptions,
        via: impl FnOnce(&str) -> String,
        options: impl FnOnce(&mut ServerOptions),
    ) -> Sandbox {
        let mut db = match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        };
        let url = via(&db.url);
        db.store = tributary_store::open_with(&url, store_options)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        Self::start(db, backend, options).await
    }

    async fn start(
        db: TestDb,
        backend: Backend,
        options: impl FnOnce(&mut ServerOptions),
    ) -> Sandbox {
        let admin_token = tributary_core::auth::new_token(tributary_core::auth::ADMIN_TOKEN_PREFIX);
        let mut server_options = ServerOptions::all(admin_token.clone());
        options(&mut server_options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let store = db.store.clone();
        let running = Running::spawn(store.clone(), server_options.clone(), listener);
        let channel = tributary_client::connect_with(
            &Self::url_of(addr, &server_options),
            &Self::client_tls_of(&server_options),
        )
        .await
        .expect("connect to the sandbox server");
        Sandbox {
            addr,
            admin_token,
            backend,
            store,
            channel,
            db: Some(db),
            options: server_options,
            running: Mutex::new(Some(running)),
        }
    }

    /// Shuts the server down gracefully (open streams finish their batch in flight and end with
    /// `UNAVAILABLE`) and serves again on the same address and store. Panics if shutdown hangs or
    /// the server had panicked or failed.
    pub async fn restart(&self) {
        let running = self.running.lock().expect("sandbox lock").take();
        if let Some(running) = running {
            running.stop(SHUTDOWN_LIMIT).await;
        }
        // The old listener is closed once shutdown returns; a capped retry covers a port the
        // kernel has not released yet.
        let listener = wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpListener::bind(self.addr).await.ok()
        })
        .await
        .expect("bind the same address again");
        let running = Running::spawn(self.store.clone(), self.options.clone(), listener);
        *self.running.lock().expect("sandbox lock") = Some(running);
    }

    /// The sandbox's database, for test support that reaches past the API (e.g. ageing a
    /// session instead of waiting for it to age).
    pub fn db(&self) -> &TestDb {
        self.db
            .as_ref()
            .expect("the sandbox's database is kept until stop")
    }

    /// The server's URL: `https://127.0.0.1:port` when it serves TLS, else `http://…`.
    pub fn url(&self) -> String {
        Self::url_of(self.addr, &self.options)
    }

    fn url_of(addr: SocketAddr, options: &ServerOptions) -> String {
        match options.tls {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        }
    }

    /// A TLS server is trusted through the test CA, which also signs the client certificate
    /// an mTLS server asks for.
    fn client_tls_of(options: &ServerOptions) -> tributary_client::TlsOptions {
        match options.tls {
            Some(_) => tls::test_ca().client_tls(),
            None => tributary_client::TlsOptions::default(),
        }
    }

    /// The URL of the sandbox's database (to open more stores on it, as other replicas would).
    pub fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// A fresh channel to the server.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// An admin client.
    pub fn admin(&self) -> AdminClient {
        tributary_client::admin(self.channel(), &self.admin_token)
    }

    /// A contribution client acting with `token`.
    pub fn contributor(&self, token: &str) -> ContributionClient {
        tributary_client::contribution(self.channel(), token)
    }

    /// A catalog client acting with `token`.
    pub fn reader(&self, token: &str) -> CatalogClient {
        tributary_client::catalog(self.channel(), token)
    }

    /// Stops the server and drops the database. Panics if the server panicked or failed at any
    /// time, or does not shut down gracefully.
    pub async fn stop(mut self) {
        let running = self.running.lock().expect("sandbox lock").take();
        if let Some(running) = running {
            running.stop(SHUTDOWN_LIMIT).await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }

    /// Creates the `country` entity type (seed 004's shape).
    pub async fn create_country_type(&self) {
        self.admin()
            .create_entity_type(admin::CreateEntityTypeRequest {
                entity_type: Some(admin::EntityType {
                    slug: "country".into(),
                    name: "Country".into(),
                    description: "Countries of the world".into(),
                    schema: Some(json_struct(country_schema())),
                    ..Default::default()
                }),
            })
            .await
            .expect("create entity type");
    }

    /// Creates a connector for `entity_type`; returns its id and token.
    pub async fn create_connector(
        &self,
        entity_type: &str,
        configure: impl FnOnce(&mut admin::Connector),
    ) -> (String, String) {
        let mut connector = admin::Connector {
            name: "test connector".into(),
            entity_type: entity_type.into(),
            ..Default::default()
        };
        configure(&mut connector);
        let response = self
            .admin()
            .create_connector(admin::CreateConnectorRequest {
                connector: Some(connector),
            })
            .await
            .expect("create connector")
            .into_inner();
        (
            response.connector.expect("connector in response").id,
            response.token,
        )
    }

    /// Creates a consumer granted `entity_types`; returns its token.
    pub async fn create_consumer(&self, entity_types: &[&str]) -> String {
        self.admin()
            .create_consumer(admin::CreateConsumerRequest {
                consumer: Some(admin::Consumer {
                    name: "test consumer".into(),
                    entity_types: entity_types.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
            })
            .await
            .expect("create consumer")
            .into_inner()
            .token
    }

    /// The country type, one connector and one consumer: the setting of most tests.
    pub async fn country_world(&self) -> World {
        self.create_country_type().await;
        let (connector, token) = self.create_connector("country", |_| {}).await;
        let reader_token = self.create_consumer(&["country"]).await;
        World {
            connector,
            contributor: self.contributor(&token),
            reader: self.reader(&reader_token),
            token,
        }
    }
}

/// One connector and one consumer of the `country` type.
pub struct World {
    pub connector: String,
    pub token: String,
    pub contributor: ContributionClient,
    pub reader: CatalogClient,
}

impl World {
    /// Opens a session of `mode`.
    pub async fn open(&mut self, mode: contribution::SessionMode) -> String {
        self.contributor
            .open_session(contribution::OpenSessionRequest { mode: mode as i32 })
            .await
            .expect("open session")
            .into_inner()
            .session_id
    }

    /// Upserts `records` into `session`.
    pub async fn upsert(
        &mut self,
        session: &str,
        records: Vec<contribution::Record>,
    ) -> Result<Vec<contribution::RecordOutcome>, tonic::Status> {
        self.contributor
            .upsert(contribution::UpsertRequest {
                session_id: session.into(),
                records,
            })
            .await
            .map(|r| r.into_inner().outcomes)
    }

    /// Deletes `ids` in `session`.
    pub async fn delete(
        &mut self,
        session: &str,
        ids: &[&str],
    ) -> Result<Vec<contribution::RecordOutcome>, tonic::Status> {
        self.contributor
            .delete(contribution::DeleteRequest {
                session_id: session.into(),
                ids: ids.iter().map(|s| s.to_string()).collect(),
            })
            .await
            .map(|r| r.into_inner().outcomes)
    }

    /// Closes `session`.
    pub async fn close(
        &mut self,
        session: &str,
        commit: bool,
        force: bool,
    ) -> Result<contribution::CloseSessionResponse, tonic::Status> {
        self.contributor
            .close_session(contribution::CloseSessionRequest {
                session_id: session.into(),
                commit,
                force,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Every visible country, by external id.
    pub async fn visible(&mut self) -> BTreeMap<String, catalog::Record> {
        list_all(&mut self.reader, "country").await
    }

    /// The visible record `id` of this world's connector, if any.
    pub async fn get(&mut self, id: &str) -> Option<catalog::Record> {
        match self
            .reader
            .get_record_by_id(catalog::GetRecordByIdRequest {
                entity_type: "country".into(),
                connector: self.connector.clone(),
                id: id.into(),
            })
            .await
        {
            Ok(r) => r.into_inner().record,
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => panic!("get_record_by_id({id}): {s}"),
        }
    }
}

/// Polls `probe` until it answers `Some`, for at most `limit` (a condition wait, not a sleep
/// for synchronisation); `None` if it never did.
pub async fn wait_until<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every visible record of `entity_type`, by external id, read page by page.
pub async fn list_all(
    reader: &mut CatalogClient,
    entity_type: &str,
) -> BTreeMap<String, catalog::Record> {
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = reader
            .list_records(catalog::ListRecordsRequest {
                entity_type: entity_type.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list records")
            .into_inner();
        for r in page.records {
            all.insert(r.id.clone(), r);
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The JSON Schema of a country entity.
pub fn country_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 2, "maxLength": 3},
            "capital": {"type": "string"},
            "area": {"type": "integer", "minimum": 0},
            "population": {"type": "integer", "minimum": 0},
            "calling_code": {"type": "integer"},
            "continent": {"type": "string"},
            "currency": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "name": {"type": "string"}},
                "required": ["code", "name"]
            }
        },
        "required": ["code", "population"]
    })
}

/// A country entity shaped like seed 004's example (~230 bytes as a record).
pub fn country_entity(code: &str, population: i64) -> serde_json::Value {
    serde_json::json!({
        "area": 242900,
        "calling_code": 44,
        "capital": "London",
        "code": code,
        "continent": "Europe",
        "currency": {"code": "GBP", "name": "Sterling"},
        "population": population
    })
}

/// A contribution record for a country.
pub fn country(id: &str, population: i64) -> contribution::Record {
    contribution::Record {
        id: id.into(),
        name: format!("Country {id}"),
        entity: Some(json_struct(country_entity("XX", population))),
        instance: None,
        checksum: String::new(),
    }
}

/// A JSON object as a protobuf Struct (numbers become f64, as on the wire); panics on anything
/// else, which is a mistake in the test.
pub fn json_struct(value: serde_json::Value) -> Struct {
    tributary_grpc::convert::json_to_struct(value).expect("json_struct needs a JSON object")
}

/// The number at `field` of a record's entity.
pub fn entity_number(record: &catalog::Record, field: &str) -> f64 {
    match record
        .entity
        .as_ref()
        .and_then(|e| e.fields.get(field))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::NumberValue(n)) => *n,
        other => panic!("entity.{field} is not a number: {other:?}"),
    }
}

/// Asserts that `rpc` answered NOT_FOUND with `ResourceInfo` naming a `kind` called `name`
/// (SPEC.md §8).
#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(
    rpc: &str,
    result: Result<T, tonic::Status>,
    kind: &str,
    name: &str,
) {
    use tonic_types::StatusExt;
    let status = result.expect_err(rpc);
    assert_eq!(status.code(), tonic::Code::NotFound, "{rpc}: {status:?}");
    let info = status
        .get_details_resource_info()
        .unwrap_or_else(|| panic!("{rpc}: NOT_FOUND without ResourceInfo"));
    assert_eq!(
        (info.resource_type.as_str(), info.resource_name.as_str()),
        (kind, name),
        "{rpc}"
    );
}

/// The BadRequest field violations of a status, as (field, description).
pub fn bad_request_fields(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// Generates one `#[tokio::test]` per backend for each `async fn name(sandbox: &Sandbox)`.
/// `configure` (optional) adjusts the server options. Each body runs within [`TEST_DEADLINE`];
/// the PostgreSQL tests are [`postgres_test!`]s.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $(with $configure:expr)?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let sandbox = $crate::Sandbox::sqlite(|_o| { $( ($configure)(_o); )? }).await;
                    $crate::within_test_deadline(super::$name(&sandbox)).await;
                    sandbox.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                $crate::postgres_test! {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let sandbox = $crate::Sandbox::postgres(|_o| { $( ($configure)(_o); )? }).await;
                        $crate::within_test_deadline(super::$name(&sandbox)).await;
                        sandbox.stop().await;
                    }
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(server: impl Future<Output = anyhow::Result<()>> + Send + 'static) -> Running {
        let (shutdown, _) = oneshot::channel();
        Running {
            shutdown,
            server: tokio::spawn(server),
        }
    }

    #[tokio::test]
    #[should_panic(expected = "the server panicked: boom")]
    async fn a_server_that_panicked_fails_its_test() {
        running(async { panic!("boom") })
            .stop(Duration::from_secs(5))
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "the server failed: cannot serve")]
    async fn a_server_that_failed_fails_its_test() {
        running(async { Err(anyhow::anyhow!("cannot serve")) })
            .stop(Duration::from_secs(5))
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "did not shut down")]
    async fn a_server_that_does_not_shut_down_fails_its_test() {
        running(std::future::pending())
            .stop(Duration::from_millis(50))
            .await;
    }

    #[tokio::test]
    async fn a_server_that_stopped_cleanly_passes() {
        running(async { Ok(()) }).stop(Duration::from_secs(5)).await;
    }
}
