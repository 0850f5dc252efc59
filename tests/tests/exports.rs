//! Exports (SPEC.md §7, §11): an entity type's visible records, filtered, written as NDJSON,
//! JSON or CSV to a directory or an S3-compatible store, on demand (RunExport) or on a schedule;
//! every run reported (ListExportRuns). Bad definitions are INVALID_ARGUMENT naming the field.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1 as pb;
use tributary_tests::{
    assert_not_found, bad_request_fields, country, json_struct, on_both_backends, wait_until,
    Sandbox,
};

/// `file://` destinations may be anywhere under the system's temporary directory in tests.
fn temp_allowed(options: &mut tributary::server::ServerOptions) {
    options.exports.allowed_dirs = vec![std::env::temp_dir()];
}

on_both_backends!(
    ndjson_export_writes_every_visible_record_one_per_line with super::temp_allowed,
    json_export_is_one_array_of_the_filtered_records with super::temp_allowed,
    csv_export_flattens_nested_fields_with_a_stable_header with super::temp_allowed,
    bad_exports_are_invalid_argument_naming_the_field with super::temp_allowed,
    unknown_exports_and_entity_types_are_not_found with super::temp_allowed,
    export_calls_need_the_admin_token with super::temp_allowed,
    export_crud_and_runs_newest_first_with_paging with super::temp_allowed,
    a_run_that_cannot_write_fails_with_its_reason_and_leaves_nothing with super::temp_allowed,
    an_interval_export_runs_by_itself with super::temp_allowed,
    two_schedulers_run_a_due_export_once with super::temp_allowed_no_scheduler,
);

fn temp_allowed_no_scheduler(options: &mut tributary::server::ServerOptions) {
    temp_allowed(options);
    options.export_schedules = false;
}

/// Seeds `n` countries (some with an instance and an awkward name) and returns the catalog.
async fn seeded(sandbox: &Sandbox, n: usize) -> BTreeMap<String, catalog::Record> {
    seeded_padded(sandbox, n, 0).await
}

/// [`seeded`], each record's instance padded with `pad` bytes (to make large exports quickly).
async fn seeded_padded(
    sandbox: &Sandbox,
    n: usize,
    pad: usize,
) -> BTreeMap<String, catalog::Record> {
    let mut world = sandbox.country_world().await;
    let session = world.open(pb::SessionMode::Stream).await;
    let records: Vec<pb::Record> = (0..n)
        .map(|i| {
            let mut r = country(&format!("c{i:03}"), i as i64 * 10);
            if i % 2 == 0 {
                r.name = format!("Country, \"{i}\"");
                r.instance = Some(json_struct(json!({"n": i, "tags": ["a", "b"]})));
            }
            if pad > 0 {
                r.instance = Some(json_struct(json!({"pad": "p".repeat(pad)})));
            }
            r
        })
        .collect();
    world.upsert(&session, records).await.unwrap();
    world.visible().await
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn file_url(dir: &Path) -> String {
    url::Url::from_directory_path(dir).unwrap().to_string()
}

async fn create(sandbox: &Sandbox, export: admin::Export) -> Result<admin::Export, tonic::Status> {
    sandbox
        .admin()
        .create_export(admin::CreateExportRequest {
            export: Some(export),
        })
        .await
        .map(|r| r.into_inner().export.unwrap())
}

async fn run(sandbox: &Sandbox, id: &str) -> admin::ExportRun {
    sandbox
        .admin()
        .run_export(admin::RunExportRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

fn export(name: &str, destination: &str, format: admin::ExportFormat) -> admin::Export {
    admin::Export {
        name: name.into(),
        entity_type: "country".into(),
        format: format as i32,
        destination: destination.into(),
        ..Default::default()
    }
}

/// The file a successful run wrote, read whole.
fn written(run: &admin::ExportRun) -> String {
    assert_eq!(
        run.status,
        admin::ImportStatus::Succeeded as i32,
        "run failed: {}",
        run.error
    );
    let path = url::Url::parse(&run.location)
        .unwrap()
        .to_file_path()
        .unwrap();
    std::fs::read_to_string(path).unwrap()
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    let micros = t.seconds * 1_000_000 + i64::from(t.nanos) / 1000;
    chrono_like(micros)
}

/// RFC 3339 with microseconds, computed independently of the server's code.
fn chrono_like(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn struct_json(s: &Option<prost_types::Struct>) -> Value {
    s.clone()
        .and_then(|s| tributary_grpc::convert::struct_to_json(s).ok())
        .unwrap_or_else(|| json!({}))
}

/// Asserts that an exported object is the catalog's record, field by field.
fn assert_same(line: &Value, r: &catalog::Record) {
    assert_eq!(line["key"], json!(r.key));
    assert_eq!(line["entity_type"], json!(r.entity_type));
    assert_eq!(line["connector"], json!(r.connector));
    assert_eq!(line["id"], json!(r.id));
    assert_eq!(line["name"], json!(r.name));
    assert_eq!(line["checksum"], json!(r.checksum));
    assert_eq!(line["version"], json!(r.version));
    assert_eq!(line["entity"], struct_json(&r.entity));
    assert_eq!(line["instance"], struct_json(&r.instance));
    assert_eq!(
        line["created_at"],
        json!(rfc3339(r.created_at.as_ref().unwrap()))
    );
    assert_eq!(
        line["updated_at"],
        json!(rfc3339(r.updated_at.as_ref().unwrap()))
    );
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
}

fn by_key(catalog: &BTreeMap<String, catalog::Record>) -> Vec<&catalog::Record> {
    let mut records: Vec<&catalog::Record> = catalog.values().collect();
    records.sort_by(|a, b| a.key.cmp(&b.key));
    records
}

async fn ndjson_export_writes_every_visible_record_one_per_line(sandbox: &Sandbox) {
    let catalog = seeded(sandbox, 25).await;
    let out = dir();
    let e = create(
        sandbox,
        export(
            "all-countries",
            &file_url(out.path()),
            admin::ExportFormat::Unspecified,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        e.format,
        admin::ExportFormat::Ndjson as i32,
        "NDJSON is the default"
    );
    let r = run(sandbox, &e.id).await;
    let text = written(&r);
    assert_eq!(r.records, 25);
    assert_eq!(r.bytes, text.len() as u64);
    let name = Path::new(&r.location)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with("all-countries-") && name.ends_with("Z.ndjson"),
        "{name}"
    );
    assert!(r.location.starts_with(&file_url(out.path())));
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let expected = by_key(&catalog);
    assert_eq!(lines.len(), expected.len());
    for (line, record) in lines.iter().zip(expected) {
        assert_same(&serde_json::from_str(line).unwrap(), record);
    }
}

async fn json_export_is_one_array_of_the_filtered_records(sandbox: &Sandbox) {
    let catalog = seeded(sandbox, 30).await;
    let out = dir();
    let filter = json!({"entity.population": {"$gte": 150}}).to_string();
    let e = create(
        sandbox,
        admin::Export {
            filter,
            ..export("big", &file_url(out.path()), admin::ExportFormat::Json)
        },
    )
    .await
    .unwrap();
    let r = run(sandbox, &e.id).await;
    let array: Vec<Value> = serde_json::from_str(&written(&r)).unwrap();
    let expected: Vec<&catalog::Record> = by_key(&catalog)
        .into_iter()
        .filter(|r| struct_json(&r.entity)["population"].as_f64().unwrap() >= 150.0)
        .collect();
    assert_eq!(expected.len(), 15);
    assert_eq!(array.len(), expected.len());
    assert_eq!(r.records, 15);
    for (object, record) in array.iter().zip(expected) {
        assert_same(object, record);
    }
    // A filter that matches nothing writes an empty array.
    let none = create(
        sandbox,
        admin::Export {
            filter: json!({"id": "nope"}).to_string(),
            ..export("none", &file_url(out.path()), admin::ExportFormat::Json)
        },
    )
    .await
    .unwrap();
    let r = run(sandbox, &none.id).await;
    assert_eq!(r.records, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&written(&r)).unwrap(),
        json!([])
    );
}

fn csv_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{}", f as i64)),
        Some(other) => other.to_string(),
    }
}

async fn csv_export_flattens_nested_fields_with_a_stable_header(sandbox: &Sandbox) {
    let catalog = seeded(sandbox, 12).await;
    let out = dir();
    let e = create(
        sandbox,
        export("sheet", &file_url(out.path()), admin::ExportFormat::Csv),
    )
    .await
    .unwrap();
    let r = run(sandbox, &e.id).await;
    let text = written(&r);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "key",
            "entity_type",
            "connector",
            "id",
            "name",
            "checksum",
            "version",
            "created_at",
            "updated_at",
            "source",
            "entity.area",
            "entity.calling_code",
            "entity.capital",
            "entity.code",
            "entity.continent",
            "entity.currency.code",
            "entity.currency.name",
            "entity.population",
            "instance.n",
            "instance.tags",
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let expected = by_key(&catalog);
    assert_eq!(rows.len(), expected.len());
    for (row, record) in rows.iter().zip(expected) {
        let entity = struct_json(&record.entity);
        let instance = struct_json(&record.instance);
        let cell = |column: &str| {
            row.get(header.iter().position(|h| h == column).unwrap())
                .unwrap()
                .to_owned()
        };
        assert_eq!(cell("key"), record.key);
        assert_eq!(cell("name"), record.name);
        assert_eq!(cell("version"), record.version.to_string());
        assert_eq!(
            cell("created_at"),
            rfc3339(record.created_at.as_ref().unwrap())
        );
        assert_eq!(
            cell("entity.currency.code"),
            csv_cell(entity.pointer("/currency/code"))
        );
        assert_eq!(
            cell("entity.population"),
            csv_cell(entity.pointer("/population"))
        );
        assert_eq!(cell("instance.n"), csv_cell(instance.pointer("/n")));
        // Arrays are JSON text.
        let tags = cell("instance.tags");
        if instance.get("tags").is_some() {
            assert_eq!(
                serde_json::from_str::<Value>(&tags).unwrap(),
                json!(["a", "b"])
            );
        } else {
            assert_eq!(tags, "");
        }
    }
    // The same catalog exports the same header and rows again.
    let again = run(sandbox, &e.id).await;
    let second = written(&again);
    assert_eq!(second.lines().next(), text.lines().next());
}

#[track_caller]
fn assert_invalid(result: Result<admin::Export, tonic::Status>, field: &str) {
    let status = result.expect_err(field);
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let fields = bad_request_fields(&status);
    assert!(
        fields.iter().any(|(f, _)| f.starts_with(field)),
        "expected a violation of {field}, got {fields:?}"
    );
}

async fn bad_exports_are_invalid_argument_naming_the_field(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let out = dir();
    let url = file_url(out.path());
    let good = || export("good", &url, admin::ExportFormat::Ndjson);
    for (name, field) in [
        ("", "export.name"),
        (&"x".repeat(101) as &str, "export.name"),
        ("with\0nul", "export.name"),
        ("a/b", "export.name"),
    ] {
        assert_invalid(
            create(
                sandbox,
                admin::Export {
                    name: name.into(),
                    ..good()
                },
            )
            .await,
            field,
        );
    }
    assert_invalid(
        create(
            sandbox,
            admin::Export {
                filter: "{not json".into(),
                ..good()
            },
        )
        .await,
        "export.filter",
    );
    assert_invalid(
        create(
            sandbox,
            admin::Export {
                filter: json!({"entity.population": {"bogus": 1}}).to_string(),
                ..good()
            },
        )
        .await,
        "export.filter",
    );
    for destination in [
        "ftp://host/dir",
        "s3:///no-bucket",
        "file:///etc/exports",
        "nope",
    ] {
        assert_invalid(
            create(
                sandbox,
                admin::Export {
                    destination: destination.into(),
                    ..good()
                },
            )
            .await,
            "export.destination",
        );
    }
    assert_invalid(
        create(
            sandbox,
            admin::Export {
                schedule: Some(admin::export::Schedule::Cron("every tuesday".into())),
                ..good()
            },
        )
        .await,
        "export.cron",
    );
    assert_invalid(
        create(
            sandbox,
            admin::Export {
                schedule: Some(admin::export::Schedule::Interval(prost_types::Duration {
                    seconds: 59,
                    nanos: 0,
                })),
                ..good()
            },
        )
        .await,
        "export.interval",
    );
    assert_invalid(
        create(
            sandbox,
            admin::Export {
                format: 42,
                ..good()
            },
        )
        .await,
        "export.format",
    );
    let missing = sandbox
        .admin()
        .create_export(admin::CreateExportRequest { export: None })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::InvalidArgument);
    // Nothing was created.
    let list = sandbox
        .admin()
        .list_exports(admin::ListExportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.exports.is_empty());
}

async fn unknown_exports_and_entity_types_are_not_found(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let out = dir();
    let mut a = sandbox.admin();
    assert_not_found(
        "CreateExport",
        create(
            sandbox,
            admin::Export {
                entity_type: "planet".into(),
                ..export("p", &file_url(out.path()), admin::ExportFormat::Ndjson)
            },
        )
        .await,
        "entity_type",
        "planet",
    );
    let id = "nope".to_owned();
    assert_not_found(
        "GetExport",
        a.get_export(admin::GetExportRequest { id: id.clone() })
            .await,
        "export",
        &id,
    );
    assert_not_found(
        "RunExport",
        a.run_export(admin::RunExportRequest { id: id.clone() })
            .await,
        "export",
        &id,
    );
    assert_not_found(
        "DeleteExport",
        a.delete_export(admin::DeleteExportRequest { id: id.clone() })
            .await,
        "export",
        &id,
    );
    assert_not_found(
        "ListExportRuns",
        a.list_export_runs(admin::ListExportRunsRequest {
            export_id: id.clone(),
            ..Default::default()
        })
        .await,
        "export",
        &id,
    );
    assert_not_found(
        "UpdateExport",
        a.update_export(admin::UpdateExportRequest {
            export: Some(admin::Export {
                id: id.clone(),
                ..export("x", &file_url(out.path()), admin::ExportFormat::Ndjson)
            }),
        })
        .await,
        "export",
        &id,
    );
}

async fn export_calls_need_the_admin_token(sandbox: &Sandbox) {
    let mut anonymous =
        tributary_proto::admin::v1::admin_client::AdminClient::new(sandbox.channel());
    let codes = [
        anonymous
            .create_export(admin::CreateExportRequest::default())
            .await
            .map(|_| ()),
        anonymous
            .get_export(admin::GetExportRequest::default())
            .await
            .map(|_| ()),
        anonymous
            .list_exports(admin::ListExportsRequest::default())
            .await
            .map(|_| ()),
        anonymous
            .update_export(admin::UpdateExportRequest::default())
            .await
            .map(|_| ()),
        anonymous
            .delete_export(admin::DeleteExportRequest::default())
            .await
            .map(|_| ()),
        anonymous
            .run_export(admin::RunExportRequest::default())
            .await
            .map(|_| ()),
        anonymous
            .list_export_runs(admin::ListExportRunsRequest::default())
            .await
            .map(|_| ()),
    ];
    for result in codes {
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }
}

async fn export_crud_and_runs_newest_first_with_paging(sandbox: &Sandbox) {
    seeded(sandbox, 3).await;
    let out = dir();
    let mut a = sandbox.admin();
    let e = create(
        sandbox,
        export("crud", &file_url(out.path()), admin::ExportFormat::Ndjson),
    )
    .await
    .unwrap();
    assert_eq!(e.enabled, Some(true));
    let got = a
        .get_export(admin::GetExportRequest { id: e.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .export
        .unwrap();
    assert_eq!(got, e);
    let duplicate = create(
        sandbox,
        export("crud", &file_url(out.path()), admin::ExportFormat::Json),
    )
    .await;
    assert_eq!(duplicate.unwrap_err().code(), Code::AlreadyExists);
    let updated = a
        .update_export(admin::UpdateExportRequest {
            export: Some(admin::Export {
                format: admin::ExportFormat::Csv as i32,
                filter: json!({"id": "c001"}).to_string(),
                ..e.clone()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .export
        .unwrap();
    assert_eq!(updated.format, admin::ExportFormat::Csv as i32);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(run(sandbox, &e.id).await);
        // Runs are named by the second they start; distinct names need distinct seconds.
        tokio::time::sleep(Duration::from_millis(1001)).await;
    }
    assert!(runs
        .iter()
        .all(|r| r.records == 1 && r.location.ends_with(".csv")));
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = a
            .list_export_runs(admin::ListExportRunsRequest {
                export_id: e.id.clone(),
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.runs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    runs.reverse();
    assert_eq!(seen, runs, "newest first");
    let locations: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.location.as_str()).collect();
    assert_eq!(locations.len(), 3, "each run writes its own file");

    let list = a
        .list_exports(admin::ListExportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.exports, [updated]);
    a.delete_export(admin::DeleteExportRequest { id: e.id.clone() })
        .await
        .unwrap();
    assert_eq!(
        a.get_export(admin::GetExportRequest { id: e.id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // What the runs wrote stays.
    for r in &runs {
        assert!(url::Url::parse(&r.location)
            .unwrap()
            .to_file_path()
            .unwrap()
            .exists());
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

async fn a_run_that_cannot_write_fails_with_its_reason_and_leaves_nothing(sandbox: &Sandbox) {
    seeded(sandbox, 3).await;
    let out = dir();
    // The destination directory's place is taken by a file, so the run cannot write there.
    let blocked = out.path().join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let e = create(
        sandbox,
        export("blocked", &file_url(&blocked), admin::ExportFormat::Ndjson),
    )
    .await
    .unwrap();
    let r = run(sandbox, &e.id).await;
    assert_eq!(r.status, admin::ImportStatus::Failed as i32);
    assert!(!r.error.is_empty());
    assert_eq!(r.records, 0);
    assert_eq!(files_under(out.path()), [blocked]);
    let runs = sandbox
        .admin()
        .list_export_runs(admin::ListExportRunsRequest {
            export_id: e.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs, [r]);
}

async fn an_interval_export_runs_by_itself(sandbox: &Sandbox) {
    seeded(sandbox, 4).await;
    let out = dir();
    let e = create(
        sandbox,
        admin::Export {
            schedule: Some(admin::export::Schedule::Interval(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            })),
            ..export("hourly", &file_url(out.path()), admin::ExportFormat::Ndjson)
        },
    )
    .await
    .unwrap();
    let mut a = sandbox.admin();
    let runs = wait_until(Duration::from_secs(20), || {
        let mut a = a.clone();
        let id = e.id.clone();
        async move {
            let runs = a
                .list_export_runs(admin::ListExportRunsRequest {
                    export_id: id,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .runs;
            (!runs.is_empty()).then_some(runs)
        }
    })
    .await
    .expect("the scheduler ran the export");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].records, 4);
    assert_eq!(written(&runs[0]).lines().count(), 4);
    // The next run is an hour away: nothing more runs meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = a
        .list_export_runs(admin::ListExportRunsRequest {
            export_id: e.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(again.len(), 1);
}

/// An S3-compatible server (s3s over a temporary directory) on 127.0.0.1, with one bucket,
/// `exports`, and one access key.
struct S3Server {
    root: tempfile::TempDir,
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

const S3_KEY: &str = "test-access-key";
const S3_SECRET: &str = "test-secret-key";

impl S3Server {
    async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("exports")).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            root,
            endpoint,
            task,
        }
    }

    /// Server options that reach this server, path-style over plain HTTP, with parts as small
    /// as S3 allows, so that a few thousand padded records make a multipart upload.
    fn configure(&self, secret: &str) -> impl FnOnce(&mut tributary::server::ServerOptions) {
        let endpoint = self.endpoint.clone();
        let secret = secret.to_owned();
        move |o| {
            o.exports.s3 = tributary_ingest::S3Options {
                endpoint: Some(endpoint),
                region: Some("us-east-1".into()),
                allow_http: true,
                access_key_id: Some(S3_KEY.into()),
                secret_access_key: Some(secret),
            };
            // S3's smallest part but the last.
            o.exports.part_bytes = 5 * 1024 * 1024;
            o.exports.s3_retry_timeout = Duration::from_secs(5);
        }
    }

    /// The object `key` of bucket `bucket` as the server stored it.
    fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The key of an `s3://bucket/key` location.
fn s3_key(location: &str) -> (String, String) {
    let rest = location.strip_prefix("s3://").unwrap();
    let (bucket, key) = rest.split_once('/').unwrap();
    (bucket.to_owned(), key.to_owned())
}

async fn s3_exports_are_multipart_objects_and_an_unreachable_store_fails_leaving_nothing(
    sandbox: &Sandbox,
    s3: &mut S3Server,
) {
    let catalog = seeded_padded(sandbox, 3000, 2500).await;
    let e = create(
        sandbox,
        export(
            "to-s3",
            "s3://exports/daily/catalog",
            admin::ExportFormat::Ndjson,
        ),
    )
    .await
    .unwrap();
    let r = run(sandbox, &e.id).await;
    assert_eq!(
        r.status,
        admin::ImportStatus::Succeeded as i32,
        "{}",
        r.error
    );
    assert_eq!(r.records, 3000);
    assert!(
        r.bytes > 6 * 1024 * 1024,
        "two parts at least: {} bytes",
        r.bytes
    );
    let (bucket, key) = s3_key(&r.location);
    assert_eq!(bucket, "exports");
    assert!(
        key.starts_with("daily/catalog/to-s3-") && key.ends_with("Z.ndjson"),
        "{key}"
    );
    let text = std::fs::read_to_string(s3.object(&bucket, &key)).unwrap();
    assert_eq!(text.len() as u64, r.bytes);
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let expected = by_key(&catalog);
    assert_eq!(lines.len(), expected.len());
    for (line, record) in lines.iter().zip(expected) {
        assert_same(&serde_json::from_str(line).unwrap(), record);
    }

    // A small export is one object too, read back whole.
    let small = create(
        sandbox,
        admin::Export {
            filter: json!({"id": "c001"}).to_string(),
            ..export("small", "s3://exports", admin::ExportFormat::Json)
        },
    )
    .await
    .unwrap();
    let r = run(sandbox, &small.id).await;
    assert_eq!(
        r.status,
        admin::ImportStatus::Succeeded as i32,
        "{}",
        r.error
    );
    let (bucket, key) = s3_key(&r.location);
    let array: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(s3.object(&bucket, &key)).unwrap()).unwrap();
    assert_eq!(array.len(), 1);
    assert_eq!(array[0]["id"], json!("c001"));

    // The server is gone (s3s-fs creates missing buckets on demand, so an unreachable store
    // stands in for a bucket that refuses): the run fails with the reason and writes nothing.
    s3.task.abort();
    let _ = (&mut s3.task).await;
    let r = run(sandbox, &e.id).await;
    assert_eq!(r.status, admin::ImportStatus::Failed as i32);
    assert!(!r.error.is_empty());
    let (bucket, key) = s3_key(&r.location);
    assert!(key.starts_with("daily/catalog/to-s3-"), "{key}");
    assert!(!s3.object(&bucket, &key).exists());
    let runs = sandbox
        .admin()
        .list_export_runs(admin::ListExportRunsRequest {
            export_id: e.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0], r, "newest first");
}

async fn s3_wrong_credentials_fail_the_run_leaving_no_object(sandbox: &Sandbox, s3: &mut S3Server) {
    seeded(sandbox, 10).await;
    let e = create(
        sandbox,
        export("refused", "s3://exports/p", admin::ExportFormat::Csv),
    )
    .await
    .unwrap();
    let r = run(sandbox, &e.id).await;
    assert_eq!(r.status, admin::ImportStatus::Failed as i32);
    assert!(!r.error.is_empty());
    let (bucket, key) = s3_key(&r.location);
    assert!(!s3.object(&bucket, &key).exists());
}

macro_rules! on_s3 {
    ($($name:ident with secret $secret:expr),* $(,)?) => {
        mod s3_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut s3 = super::S3Server::start().await;
                    let sandbox = super::Sandbox::sqlite(s3.configure($secret)).await;
                    tributary_tests::within_test_deadline(super::$name(&sandbox, &mut s3)).await;
                    sandbox.stop().await;
                }
            )*
        }
        mod s3_postgres {
            $(
                tributary_tests::postgres_test! {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let mut s3 = super::S3Server::start().await;
                        let sandbox = super::Sandbox::postgres(s3.configure($secret)).await;
                        tributary_tests::within_test_deadline(super::$name(&sandbox, &mut s3)).await;
                        sandbox.stop().await;
                    }
                }
            )*
        }
    };
}

on_s3!(
    s3_exports_are_multipart_objects_and_an_unreachable_store_fails_leaving_nothing with secret super::S3_SECRET,
    s3_wrong_credentials_fail_the_run_leaving_no_object with secret "not-the-secret",
);

/// Two schedulers (as two replicas would run) on one database: a due export is claimed by one
/// of them only, and runs once.
async fn two_schedulers_run_a_due_export_once(sandbox: &Sandbox) {
    seeded(sandbox, 3).await;
    let out = dir();
    let e = create(
        sandbox,
        admin::Export {
            schedule: Some(admin::export::Schedule::Interval(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            })),
            ..export("once", &file_url(out.path()), admin::ExportFormat::Ndjson)
        },
    )
    .await
    .unwrap();
    let options = tributary_ingest::ExportOptions {
        allowed_dirs: vec![std::env::temp_dir()],
        ..Default::default()
    };
    let scheduler = || {
        tributary_ingest::ExportScheduler::new(std::sync::Arc::new(
            tributary_ingest::Exporter::new(sandbox.store.clone(), options.clone()),
        ))
    };
    let (one, two) = (scheduler(), scheduler());
    let (a, b) = tokio::join!(one.tick(), two.tick());
    assert_eq!(a.unwrap() + b.unwrap(), 1, "exactly one scheduler ran it");
    // Released until its next time: neither runs it again now.
    let (a, b) = tokio::join!(one.tick(), two.tick());
    assert_eq!(a.unwrap() + b.unwrap(), 0);
    let runs = sandbox
        .admin()
        .list_export_runs(admin::ListExportRunsRequest {
            export_id: e.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].records, 3);
}
