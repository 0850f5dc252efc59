//! SPEC.md §9 with real processes: each service runs alone (the `tributary-contributor`,
//! `tributary-consumer` and `tributary-admin` binaries, and `tributary serve --only admin`) on a
//! shared database, and `tributary serve` with nothing but a port runs every service on SQLite
//! under `./tributary-data`, with a generated admin token that survives a restart.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1 as contribution;
use tributary_tests::{country, json_struct, on_both_backends, wait_until, Sandbox};

const WAIT: Duration = Duration::from_secs(60);

const CONTRIBUTION: &str = "tributary.contribution.v1.Contribution";
const CATALOG: &str = "tributary.catalog.v1.Catalog";
const ADMIN: &str = "tributary.admin.v1.Admin";

/// A server process on a free loopback port; killed when dropped.
struct Process {
    child: Child,
    endpoint: String,
}

impl Process {
    /// Runs `binary args --listen 127.0.0.1:PORT` in `dir`, with no `TRIBUTARY_*` variables but
    /// `env`, and waits until it answers.
    async fn start(binary: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Process {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(binary);
        command
            .args(args)
            .args(["--listen", &listen])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (var, _) in std::env::vars() {
            if var.starts_with("TRIBUTARY_") {
                command.env_remove(var);
            }
        }
        command.envs(env.iter().copied());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("run {binary}: {e}"));
        let process = Process {
            child,
            endpoint: format!("http://{listen}"),
        };
        process.channel().await;
        process
    }

    /// A channel to the process, once it answers health checks.
    async fn channel(&self) -> Channel {
        wait_until(WAIT, || async {
            let channel = tributary_client::connect(&self.endpoint).await.ok()?;
            HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()
                .map(|_| channel)
        })
        .await
        .unwrap_or_else(|| panic!("{} did not come up within {WAIT:?}", self.endpoint))
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The health of each Tributary service on `channel`: SERVING, or the status code of the check
/// (NOT_FOUND for a service the process does not run).
async fn health(channel: &Channel) -> Vec<(&'static str, Result<ServingStatus, Code>)> {
    let mut health = HealthClient::new(channel.clone());
    let mut answers = Vec::new();
    for service in [CONTRIBUTION, CATALOG, ADMIN] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status())
            .map_err(|s| s.code());
        answers.push((service, answer));
    }
    answers
}

/// Asserts that `channel` serves exactly `service` of the three.
async fn serves_only(channel: &Channel, service: &str) {
    for (name, answer) in health(channel).await {
        let expected = if name == service {
            Ok(ServingStatus::Serving)
        } else {
            Err(Code::NotFound)
        };
        assert_eq!(answer, expected, "{name} on a process running {service}");
    }
}

/// Asserts that the other services' calls answer UNIMPLEMENTED on `channel`.
async fn others_unimplemented(channel: &Channel, token: &str, except: &str) {
    if except != CONTRIBUTION {
        let status = tributary_client::contribution(channel.clone(), token)
            .open_session(contribution::OpenSessionRequest {
                mode: contribution::SessionMode::Stream as i32,
            })
            .await
            .expect_err("not served");
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
    if except != CATALOG {
        let status = tributary_client::catalog(channel.clone(), token)
            .list_entity_types(catalog::ListEntityTypesRequest::default())
            .await
            .expect_err("not served");
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
    if except != ADMIN {
        let status = tributary_client::admin(channel.clone(), token)
            .list_connectors(admin::ListConnectorsRequest::default())
            .await
            .expect_err("not served");
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
}

/// Streams one record through the Contribution service on `channel` as the connector of `token`.
async fn stream_one(channel: Channel, token: &str, record: contribution::Record) {
    let mut client = tributary_client::contribution(channel, token);
    let session = client
        .open_session(contribution::OpenSessionRequest {
            mode: contribution::SessionMode::Stream as i32,
        })
        .await
        .expect("open a stream session")
        .into_inner()
        .session_id;
    client
        .upsert(contribution::UpsertRequest {
            session_id: session,
            records: vec![record],
        })
        .await
        .expect("upsert");
}

async fn each_service_runs_alone_in_its_own_binary(sandbox: &Sandbox) {
    let w = sandbox.country_world().await;
    let reader_token = sandbox.create_consumer(&["country"]).await;
    let url = sandbox.database_url().expect("database url").to_owned();
    let dir = tempfile::tempdir().expect("scratch dir");
    let database = ["--database-url", url.as_str()];
    let admin_env = [("TRIBUTARY_ADMIN_TOKEN", sandbox.admin_token.as_str())];

    let contributor = Process::start(
        env!("CARGO_BIN_EXE_tributary-contributor"),
        &database,
        dir.path(),
        &[],
    )
    .await;
    let channel = contributor.channel().await;
    serves_only(&channel, CONTRIBUTION).await;
    others_unimplemented(&channel, &w.token, CONTRIBUTION).await;
    stream_one(channel, &w.token, country("GB", 66)).await;

    let consumer = Process::start(
        env!("CARGO_BIN_EXE_tributary-consumer"),
        &database,
        dir.path(),
        &[],
    )
    .await;
    let channel = consumer.channel().await;
    serves_only(&channel, CATALOG).await;
    others_unimplemented(&channel, &reader_token, CATALOG).await;
    let record = tributary_client::catalog(channel, &reader_token)
        .get_record_by_id(catalog::GetRecordByIdRequest {
            entity_type: "country".into(),
            connector: w.connector.clone(),
            id: "GB".into(),
        })
        .await
        .expect("the contributor process's record, read on the consumer process")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(record.name, "Country GB");

    let admin_alone = Process::start(
        env!("CARGO_BIN_EXE_tributary-admin"),
        &database,
        dir.path(),
        &admin_env,
    )
    .await;
    let serve_only_admin = Process::start(
        env!("CARGO_BIN_EXE_tributary"),
        &["serve", "--only", "admin", "--database-url", &url],
        dir.path(),
        &admin_env,
    )
    .await;
    for process in [&admin_alone, &serve_only_admin] {
        let channel = process.channel().await;
        serves_only(&channel, ADMIN).await;
        others_unimplemented(&channel, &sandbox.admin_token, ADMIN).await;
        let connectors = tributary_client::admin(channel, &sandbox.admin_token)
            .list_connectors(admin::ListConnectorsRequest::default())
            .await
            .expect("list connectors on an admin-only process")
            .into_inner()
            .connectors;
        assert_eq!(
            connectors.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            [w.connector.as_str()]
        );
    }
    for process in [contributor, consumer, admin_alone, serve_only_admin] {
        process.stop().await;
    }
}

on_both_backends!(each_service_runs_alone_in_its_own_binary);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_every_service_on_sqlite_under_tributary_data_by_default() {
    let dir = tempfile::tempdir().expect("scratch dir");
    let tributary = env!("CARGO_BIN_EXE_tributary");
    let server = Process::start(tributary, &["serve"], dir.path(), &[]).await;
    let channel = server.channel().await;
    for (name, answer) in health(&channel).await {
        assert_eq!(answer, Ok(ServingStatus::Serving), "{name}");
    }
    let data = dir.path().join("tributary-data");
    assert!(
        data.join("tributary.db").is_file(),
        "the SQLite database is ./tributary-data/tributary.db"
    );
    let token_file = data.join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("the generated admin token");
    let token = token.trim().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }

    let mut a = tributary_client::admin(channel.clone(), &token);
    a.create_entity_type(admin::CreateEntityTypeRequest {
        entity_type: Some(admin::EntityType {
            slug: "country".into(),
            name: "Country".into(),
            schema: Some(json_struct(tributary_tests::country_schema())),
            ..Default::default()
        }),
    })
    .await
    .expect("the generated token is the admin token");
    let created = a
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "c".into(),
                entity_type: "country".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("connector")
        .into_inner();
    let connector = created.connector.expect("connector").id;
    stream_one(channel, &created.token, country("GB", 66)).await;
    server.stop().await;

    // Started again in the same directory: the same token, the same data.
    let server = Process::start(tributary, &["serve"], dir.path(), &[]).await;
    let again = std::fs::read_to_string(&token_file).expect("token file");
    assert_eq!(again.trim(), token, "the token is generated once");
    let channel = server.channel().await;
    let consumer = tributary_client::admin(channel.clone(), &token)
        .create_consumer(admin::CreateConsumerRequest {
            consumer: Some(admin::Consumer {
                name: "r".into(),
                entity_types: vec!["country".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("consumer")
        .into_inner()
        .token;
    let record = tributary_client::catalog(channel, &consumer)
        .get_record_by_id(catalog::GetRecordByIdRequest {
            entity_type: "country".into(),
            connector,
            id: "GB".into(),
        })
        .await
        .expect("the record survived the restart")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(record.name, "Country GB");
    server.stop().await;
}
