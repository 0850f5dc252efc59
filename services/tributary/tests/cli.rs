//! The `tributary` command line end to end: the built binary against a sandbox server on
//! 127.0.0.1, asserting on exit statuses and output (SPEC.md §9; docs/adr/0005-command-line.md).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tributary_tests::{on_both_backends, wait_until, Sandbox};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit status, showing the output when it differs.
    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit status; output:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn ndjson(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The binary pointed at a sandbox, run in a scratch directory (so no `./tributary-data` is
/// found by accident) with no `TRIBUTARY_*` variables but the ones a test passes.
struct Cli {
    server: String,
    admin_token: String,
    dir: tempfile::TempDir,
}

impl Cli {
    fn new(sandbox: &Sandbox) -> Cli {
        Cli {
            server: sandbox.url(),
            admin_token: sandbox.admin_token.clone(),
            dir: tempfile::tempdir().expect("scratch dir"),
        }
    }

    /// Writes `content` to a file in the scratch directory; returns its path.
    fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write input file");
        path.display().to_string()
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
        command
            .args(args)
            .arg("--server")
            .arg(&self.server)
            .current_dir(self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (var, _) in std::env::vars() {
            if var.starts_with("TRIBUTARY_") {
                command.env_remove(var);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("run the tributary binary");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the command finished within 60 s")
            .expect("wait for the command");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// An admin command, the token from TRIBUTARY_ADMIN_TOKEN.
    async fn admin(&self, args: &[&str]) -> Run {
        self.run(args, &[("TRIBUTARY_ADMIN_TOKEN", &self.admin_token)], None)
            .await
    }

    /// A command with `token` in TRIBUTARY_TOKEN.
    async fn with_token(&self, token: &str, args: &[&str]) -> Run {
        self.run(args, &[("TRIBUTARY_TOKEN", token)], None).await
    }

    /// Creates the country type, a connector and a consumer; returns (connector, token, reader).
    async fn country_world(&self) -> (String, String, String) {
        let schema = self.file(
            "country.schema.json",
            &tributary_tests::country_schema().to_string(),
        );
        self.admin(&["entity-type", "create", "country", "--schema", &schema])
            .await
            .expect(0);
        let connector = self
            .admin(&[
                "connector",
                "create",
                "--name",
                "World",
                "--entity-type",
                "country",
                "--output",
                "json",
            ])
            .await
            .expect(0)
            .json();
        let consumer = self
            .admin(&[
                "consumer",
                "create",
                "--name",
                "site",
                "--entity-type",
                "country",
                "--output",
                "json",
            ])
            .await
            .expect(0)
            .json();
        (
            str_at(&connector, "/connector/id"),
            str_at(&connector, "/token"),
            str_at(&consumer, "/token"),
        )
    }

    /// `contribute` with the connector token.
    async fn contribute(
        &self,
        token: &str,
        connector: &str,
        mode: &str,
        file: &str,
        extra: &[&str],
    ) -> Run {
        let mut args = vec!["contribute", "--connector", connector, "--mode", mode, file];
        args.extend_from_slice(extra);
        self.with_token(token, &args).await
    }

    /// Every visible country as (id, population), via `records list --output ndjson`.
    async fn countries(&self, reader: &str) -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = self
            .with_token(
                reader,
                &[
                    "records",
                    "list",
                    "--entity-type",
                    "country",
                    "--output",
                    "ndjson",
                ],
            )
            .await
            .expect(0)
            .ndjson()
            .iter()
            .map(|r| {
                (
                    str_at(r, "/id"),
                    r.pointer("/entity/population")
                        .and_then(Value::as_i64)
                        .unwrap_or(-1),
                )
            })
            .collect();
        all.sort();
        all
    }
}

fn str_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
        .to_owned()
}

fn country_line(id: &str, population: i64) -> String {
    format!(
        r#"{{"id": "{id}", "name": "Country {id}", "entity": {{"code": "{id}", "population": {population}}}}}"#
    )
}

fn ndjson(records: &[(&str, i64)]) -> String {
    records
        .iter()
        .map(|(id, p)| country_line(id, *p) + "\n")
        .collect()
}

fn pairs(records: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut v: Vec<_> = records.iter().map(|(id, p)| (id.to_string(), *p)).collect();
    v.sort();
    v
}

async fn admin_commands_create_list_update_and_delete(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let schema = cli.file("city.json", r#"{"type": "object", "required": ["code"]}"#);
    let created = cli
        .admin(&[
            "entity-type",
            "create",
            "city",
            "--name",
            "City",
            "--schema",
            &schema,
        ])
        .await
        .expect(0);
    assert!(
        created
            .stdout
            .contains("Created entity type city (City), schema version 1"),
        "{}",
        created.stdout
    );
    let listed = cli.admin(&["entity-type", "list"]).await.expect(0);
    assert!(
        listed
            .stdout
            .lines()
            .next()
            .is_some_and(|h| h.contains("SLUG")),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("city"), "{}", listed.stdout);
    let updated = cli
        .admin(&[
            "entity-type",
            "update",
            "city",
            "--description",
            "Cities",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(updated["description"], "Cities");
    assert_eq!(updated["name"], "City", "what was not given stays");
    assert_eq!(updated["schema"]["required"][0], "code");
    let got = cli
        .admin(&["entity-type", "get", "city", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(got["schema_version"], 1);

    // A schema that is not a JSON Schema: the server's violation is shown, exit 1.
    let bad = cli.file("bad.json", r#"{"type": 12}"#);
    let refused = cli
        .admin(&["entity-type", "create", "bad", "--schema", &bad])
        .await
        .expect(1);
    assert!(
        refused.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        refused.stderr
    );
    // Unknown entity type: NOT_FOUND, exit 1.
    let missing = cli.admin(&["entity-type", "get", "nope"]).await.expect(1);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);

    let connector = cli
        .admin(&[
            "connector",
            "create",
            "--name",
            "Atlas",
            "--entity-type",
            "city",
            "--write-policy",
            "importer-create-only",
        ])
        .await
        .expect(0);
    assert!(
        connector.stdout.contains("shown only this once"),
        "{}",
        connector.stdout
    );
    let token = connector
        .stdout
        .lines()
        .find(|l| l.starts_with("tbc_"))
        .expect("the token line")
        .to_owned();
    let listed = cli
        .admin(&["connector", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    let id = str_at(&listed, "/0/id");
    assert_eq!(listed[0]["write_policy"], "importer-create-only");
    assert!(
        !listed.to_string().contains(&token),
        "list never shows a token"
    );
    let got = cli.admin(&["connector", "get", &id]).await.expect(0);
    assert!(got.stdout.contains("Atlas"), "{}", got.stdout);

    // Rotation: the new token is printed, the old one stops working.
    let rotated = cli
        .admin(&["connector", "rotate", &id, "--output", "json"])
        .await
        .expect(0)
        .json();
    let new_token = str_at(&rotated, "/token");
    assert_ne!(new_token, token);
    let file = cli.file(
        "cities.ndjson",
        "{\"id\": \"PAR\", \"name\": \"Paris\", \"entity\": {\"code\": \"PAR\"}}\n",
    );
    let old = cli
        .contribute(&token, &id, "stream", &file, &[])
        .await
        .expect(1);
    assert!(old.stderr.contains("UNAUTHENTICATED"), "{}", old.stderr);
    assert!(
        old.stderr.contains("TRIBUTARY_TOKEN"),
        "the hint names where the token came from: {}",
        old.stderr
    );
    cli.contribute(&new_token, &id, "stream", &file, &[])
        .await
        .expect(0);

    let consumer = cli
        .admin(&[
            "consumer",
            "create",
            "--name",
            "site",
            "--entity-type",
            "city",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    let consumer_id = str_at(&consumer, "/consumer/id");
    assert!(str_at(&consumer, "/token").starts_with("tbr_"));
    let consumers = cli.admin(&["consumer", "list"]).await.expect(0);
    assert!(
        consumers.stdout.contains(&consumer_id),
        "{}",
        consumers.stdout
    );
    cli.admin(&["consumer", "delete", &consumer_id])
        .await
        .expect(0);
    let consumers = cli
        .admin(&["consumer", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(consumers, serde_json::json!([]));

    // Delete refused while records exist, then forced.
    let refused = cli
        .admin(&["entity-type", "delete", "city"])
        .await
        .expect(1);
    assert!(
        refused.stderr.contains("FAILED_PRECONDITION"),
        "{}",
        refused.stderr
    );
    let deleted = cli
        .admin(&["connector", "delete", &id, "--delete-records"])
        .await
        .expect(0);
    assert!(
        deleted.stdout.contains("and its 1 records"),
        "{}",
        deleted.stdout
    );
    cli.admin(&["entity-type", "delete", "city"])
        .await
        .expect(0);
    let listed = cli
        .admin(&["entity-type", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(listed, serde_json::json!([]));
}

async fn contribute_ndjson_in_each_mode(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, reader) = cli.country_world().await;

    // stream: visible as acknowledged.
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1), ("FR", 2), ("DE", 3)]));
    let run = cli
        .contribute(&token, &connector, "stream", &file, &[])
        .await
        .expect(0);
    assert!(
        run.stdout.contains("created 3, updated 0, unchanged 0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("progress: 3 records read"),
        "plain progress off a terminal: {}",
        run.stderr
    );
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("DE", 3), ("FR", 2), ("GB", 1)])
    );

    // accrue: earlier records kept; updates and creations reported.
    let file = cli.file("b.ndjson", &ndjson(&[("GB", 10), ("IT", 4), ("FR", 2)]));
    let run = cli
        .contribute(&token, &connector, "accrue", &file, &[])
        .await
        .expect(0);
    assert!(
        run.stdout
            .contains("created 1, updated 1, unchanged 1, deleted 0, swept 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("import result: "), "{}", run.stdout);
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("DE", 3), ("FR", 2), ("GB", 10), ("IT", 4)])
    );

    // replace: what is not in the file is swept.
    let file = cli.file("c.ndjson", &ndjson(&[("GB", 10), ("ES", 5)]));
    let run = cli
        .contribute(&token, &connector, "replace", &file, &[])
        .await
        .expect(0);
    assert!(
        run.stdout
            .contains("created 1, updated 0, unchanged 1, deleted 0, swept 3"),
        "{}",
        run.stdout
    );
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("ES", 5), ("GB", 10)])
    );

    // A replace from a file with no records would delete everything: refused without --force.
    let empty = cli.file("empty.ndjson", "\n");
    let run = cli
        .contribute(&token, &connector, "replace", &empty, &[])
        .await
        .expect(1);
    assert!(
        run.stdout.contains("Rolled back: no valid record"),
        "{}",
        run.stdout
    );
    assert_eq!(cli.countries(&reader).await.len(), 2);
}

async fn contribute_csv_in_each_mode(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let csv = "id,name,entity.code:string,entity.population:integer,entity.currency.code,entity.currency.name,instance.note\n\
               GB,United Kingdom,GB,66040229,GBP,Sterling,\n\
               IN,India,IN,1344860000,INR,Rupee,\"big, and \"\"old\"\"\"\n";
    let file = cli.file("countries.csv", csv);
    let run = cli
        .contribute(&token, &connector, "stream", &file, &[])
        .await
        .expect(0);
    assert!(run.stdout.contains("created 2"), "{}", run.stdout);
    let record = cli
        .with_token(
            &reader,
            &[
                "records",
                "get",
                "--entity-type",
                "country",
                "--connector",
                &connector,
                "--id",
                "IN",
                "--output",
                "json",
            ],
        )
        .await
        .expect(0)
        .json();
    assert_eq!(record["entity"]["population"], 1344860000_i64);
    assert_eq!(
        record["entity"]["currency"],
        serde_json::json!({"code": "INR", "name": "Rupee"})
    );
    assert_eq!(record["instance"]["note"], "big, and \"old\"");

    let accrue = cli.file(
        "more.csv",
        "id,name,entity.code,entity.population\nFR,France,FR,67000000\nGB,United Kingdom,GB,1\n",
    );
    let run = cli
        .contribute(&token, &connector, "accrue", &accrue, &[])
        .await
        .expect(0);
    assert!(
        run.stdout.contains("created 1, updated 1"),
        "{}",
        run.stdout
    );

    let replace = cli.file(
        "only.csv",
        "name,id,entity.code,entity.population\nFrance,FR,FR,67000000\n",
    );
    let run = cli
        .contribute(&token, &connector, "replace", &replace, &[])
        .await
        .expect(0);
    assert!(
        run.stdout.contains("unchanged 1, deleted 0, swept 2"),
        "{}",
        run.stdout
    );
    assert_eq!(cli.countries(&reader).await, pairs(&[("FR", 67000000)]));
}

async fn bad_lines_are_reported_with_their_line_numbers(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let content = format!(
        "{}\n{}\nnot json\n\n{}\n{}\n",
        country_line("GB", 1),
        r#"{"id": "FR", "name": "France", "entity": {"code": "FR", "population": "many"}}"#,
        r#"{"name": "no id", "entity": {}}"#,
        country_line("DE", 3),
    );
    let file = cli.file("bad.ndjson", &content);

    // replace: the invalid records would be swept; the session is rolled back, exit 1.
    let run = cli
        .contribute(&token, &connector, "replace", &file, &[])
        .await
        .expect(1);
    let out = run.stdout.clone();
    assert!(out.contains("read 5 records: 2 valid, 3 invalid"), "{out}");
    assert!(
        out.contains("line 2: entity.population (id \"FR\"):"),
        "{out}"
    );
    assert!(out.contains("line 3: invalid JSON"), "{out}");
    assert!(out.contains("line 5: missing \"id\""), "{out}");
    assert!(out.contains("Rolled back"), "{out}");
    assert!(
        cli.countries(&reader).await.is_empty(),
        "nothing of a rolled-back replace is visible"
    );

    // --skip-invalid commits the valid ones and still exits 1.
    let run = cli
        .contribute(&token, &connector, "replace", &file, &["--skip-invalid"])
        .await
        .expect(1);
    assert!(run.stdout.contains("created 2"), "{}", run.stdout);
    assert_eq!(cli.countries(&reader).await, pairs(&[("DE", 3), ("GB", 1)]));

    // stream, in batches of 1 and 2: a rejected batch's valid records are sent again.
    for batch in ["1", "2"] {
        let run = cli
            .contribute(
                &token,
                &connector,
                "stream",
                &file,
                &["--batch-size", batch],
            )
            .await
            .expect(1);
        assert!(run.stdout.contains("unchanged 2"), "{}", run.stdout);
        assert!(
            run.stdout.contains("line 2: entity.population (id \"FR\")"),
            "{}",
            run.stdout
        );
    }

    // CSV rows are numbered by line too (the header is line 1).
    let csv = cli.file(
        "bad.csv",
        "id,name,entity.code,entity.population:integer\nGB,UK,GB,1\nFR,France,FR,many\nIT,Italy,IT,-5\n",
    );
    let run = cli
        .contribute(&token, &connector, "stream", &csv, &[])
        .await
        .expect(1);
    assert!(
        run.stdout
            .contains("line 3: entity.population: \"many\" is not an integer"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("line 4: entity.population (id \"IT\")"),
        "{}",
        run.stdout
    );
}

async fn digest_rerun_sends_only_what_changed(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1), ("FR", 2), ("DE", 3)]));
    cli.contribute(&token, &connector, "replace", &file, &["--digest"])
        .await
        .expect(0);
    let run = cli
        .contribute(&token, &connector, "replace", &file, &["--digest"])
        .await
        .expect(0);
    // A file is reconciled as a whole (range-based sync): three records settle in one round.
    assert!(
        run.stdout.contains(
            "0 sent in full after reconciling (1 round, 0 server records not in the file)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("created 0, updated 0, unchanged 3, deleted 0, swept 0"),
        "{}",
        run.stdout
    );

    let file = cli.file("b.ndjson", &ndjson(&[("GB", 1), ("FR", 20), ("DE", 3)]));
    for mode in ["stream", "accrue", "replace"] {
        let run = cli
            .contribute(&token, &connector, mode, &file, &["--digest"])
            .await
            .expect(0);
        let expected = if mode == "stream" {
            "1 sent in full after reconciling"
        } else {
            "0 sent in full after reconciling"
        };
        assert!(run.stdout.contains(expected), "{mode}: {}", run.stdout);
        let counts = if mode == "stream" {
            "updated 1, unchanged 2"
        } else {
            "updated 0, unchanged 3"
        };
        assert!(run.stdout.contains(counts), "{mode}: {}", run.stdout);
    }
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("DE", 3), ("FR", 20), ("GB", 1)])
    );

    // A replace without DE: the server says it holds one record the file does not name, and
    // the sweep removes it; IT is new.
    let file = cli.file("c.ndjson", &ndjson(&[("GB", 1), ("FR", 20), ("IT", 4)]));
    let run = cli
        .contribute(&token, &connector, "replace", &file, &["--digest"])
        .await
        .expect(0);
    assert!(
        run.stdout.contains(
            "1 sent in full after reconciling (1 round, 1 server records not in the file)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("created 1, updated 0, unchanged 2, deleted 0, swept 1"),
        "{}",
        run.stdout
    );
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("FR", 20), ("GB", 1), ("IT", 4)])
    );
}

async fn records_list_and_get_in_each_output_format(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1), ("FR", 2), ("DE", 3)]));
    cli.contribute(&token, &connector, "stream", &file, &[])
        .await
        .expect(0);

    let table = cli
        .with_token(&reader, &["records", "list", "--entity-type", "country"])
        .await
        .expect(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(
        lines[0].contains("ID") && lines[0].contains("KEY"),
        "{}",
        table.stdout
    );
    assert!(
        ["GB", "FR", "DE"]
            .iter()
            .all(|id| table.stdout.contains(&format!(" {id} "))),
        "{}",
        table.stdout
    );

    // Small pages are followed to the end; --limit stops early.
    let json = cli
        .with_token(
            &reader,
            &[
                "records",
                "list",
                "--entity-type",
                "country",
                "--output",
                "json",
                "--page-size",
                "1",
            ],
        )
        .await
        .expect(0)
        .json();
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    let limited = cli
        .with_token(
            &reader,
            &[
                "records",
                "list",
                "--entity-type",
                "country",
                "--output",
                "ndjson",
                "--limit",
                "2",
                "--page-size",
                "1",
            ],
        )
        .await
        .expect(0)
        .ndjson();
    assert_eq!(limited.len(), 2);

    let key = str_at(&json[0], "/key");
    let by_key = cli
        .with_token(&reader, &["records", "get", &key, "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(by_key["key"], key.as_str());
    assert_eq!(by_key["connector"], connector.as_str());
    let line = cli
        .with_token(
            &reader,
            &[
                "records",
                "get",
                "--entity-type",
                "country",
                "--connector",
                &connector,
                "--id",
                "FR",
                "--output",
                "ndjson",
            ],
        )
        .await
        .expect(0)
        .ndjson();
    assert_eq!(line[0]["entity"]["population"], 2);
    let table = cli
        .with_token(&reader, &["records", "get", &key, "--output", "table"])
        .await
        .expect(0);
    assert!(
        table.stdout.contains("FIELD") && table.stdout.contains(&key),
        "{}",
        table.stdout
    );

    let missing = cli
        .with_token(&reader, &["records", "get", &"0".repeat(40)])
        .await
        .expect(1);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
    let wrong = cli
        .with_token(
            "tbr_wrong",
            &["records", "list", "--entity-type", "country"],
        )
        .await
        .expect(1);
    assert!(wrong.stderr.contains("UNAUTHENTICATED"), "{}", wrong.stderr);
    let usage = cli
        .with_token(
            &reader,
            &[
                "records",
                "list",
                "--entity-type",
                "country",
                "--filter",
                "{bad",
            ],
        )
        .await
        .expect(2);
    assert!(
        usage.stderr.contains("--filter is not JSON"),
        "{}",
        usage.stderr
    );
}

async fn import_results_list_and_get(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, _) = cli.country_world().await;
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1), ("FR", 2)]));
    let run = cli
        .contribute(&token, &connector, "replace", &file, &[])
        .await
        .expect(0);
    let id = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("import result: "))
        .expect("the summary names the import result")
        .to_owned();
    let listed = cli
        .admin(&["import-results", "list", "--connector", &connector])
        .await
        .expect(0);
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("succeeded"),
        "{}",
        listed.stdout
    );
    let got = cli
        .admin(&["import-results", "get", &id, "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(got["created"], 2);
    assert_eq!(got["status"], "succeeded");
    assert_eq!(got["connector"], connector.as_str());
}

/// `file://` export destinations may be anywhere under the system's temporary directory here.
fn exports_under_tmp(options: &mut tributary::server::ServerOptions) {
    options.exports.allowed_dirs = vec![std::env::temp_dir()];
}

async fn export_commands_create_run_update_list_and_delete(sandbox: &Sandbox) {
    let cli = Cli::new(sandbox);
    let (connector, token, _) = cli.country_world().await;
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1), ("FR", 2)]));
    cli.contribute(&token, &connector, "replace", &file, &[])
        .await
        .expect(0);
    let out = tempfile::tempdir().expect("out dir");
    let destination = format!("file://{}", out.path().display());
    let created = cli
        .admin(&[
            "export",
            "create",
            "--name",
            "countries",
            "--entity-type",
            "country",
            "--format",
            "csv",
            "--destination",
            &destination,
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    let id = str_at(&created, "/id");
    assert_eq!(created["format"], "csv");
    let run = cli
        .admin(&["export", "run", &id, "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["records"], 2);
    let location = str_at(&run, "/location");
    let path = location
        .strip_prefix("file://")
        .expect("a file:// location");
    let written = std::fs::read_to_string(path).expect("the run's file");
    assert_eq!(
        written.lines().count(),
        3,
        "a header and two rows:\n{written}"
    );
    let updated = cli
        .admin(&[
            "export", "update", &id, "--format", "ndjson", "--output", "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(updated["format"], "ndjson");
    assert_eq!(updated["name"], "countries");
    let listed = cli.admin(&["export", "list"]).await.expect(0);
    assert!(listed.stdout.contains(&id), "{}", listed.stdout);
    let runs = cli.admin(&["export", "runs", &id]).await.expect(0);
    assert!(runs.stdout.contains("succeeded"), "{}", runs.stdout);
    cli.admin(&["export", "delete", &id]).await.expect(0);
    cli.admin(&["export", "get", &id]).await.expect(1);
    let bad = cli
        .admin(&[
            "export",
            "create",
            "--name",
            "x",
            "--entity-type",
            "country",
            "--destination",
            "ftp://host/x",
        ])
        .await
        .expect(1);
    assert!(bad.stderr.contains("export.destination"), "{}", bad.stderr);
}

on_both_backends!(
    admin_commands_create_list_update_and_delete,
    contribute_ndjson_in_each_mode,
    contribute_csv_in_each_mode,
    bad_lines_are_reported_with_their_line_numbers,
    digest_rerun_sends_only_what_changed,
    records_list_and_get_in_each_output_format,
    import_results_list_and_get,
    export_commands_create_run_update_list_and_delete with super::exports_under_tmp,
);

/// A paginated JSON API on 127.0.0.1 for `source` tests: `GET /items?page=N&per_page=2` →
/// `{"data": [...]}`, three countries over two pages.
async fn serve_countries_api() -> std::net::SocketAddr {
    async fn page(
        axum::extract::RawQuery(query): axum::extract::RawQuery,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let query = query.unwrap_or_default();
        let page: usize = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        let all = [("GB", 67), ("FR", 68), ("IT", 59)];
        let data: Vec<Value> = all
            .iter()
            .skip((page.saturating_sub(1)) * 2)
            .take(2)
            .map(|(id, p)| {
                serde_json::json!({"id": id, "name": format!("Country {id}"), "code": id,
                                   "population": p})
            })
            .collect();
        (
            [("content-type", "application/json")],
            serde_json::json!({ "data": data }).to_string(),
        )
            .into_response()
    }
    let app = axum::Router::new().route("/items", axum::routing::get(page));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Waits (polling `source status`) until the source has finished a cycle whose import result is
/// not `previous` and is not running; returns that status.
async fn cycle_after(cli: &Cli, id: &str, previous: &str) -> Value {
    wait_until(Duration::from_secs(60), || async {
        let status = cli
            .admin(&["source", "status", id, "--output", "json"])
            .await
            .expect(0)
            .json();
        let result = status["last_import_result"].as_str().unwrap_or_default();
        let done = !result.is_empty() && result != previous && status["state"] != "running";
        done.then_some(status)
    })
    .await
    .unwrap_or_else(|| panic!("source {id}: no cycle after {previous:?} finished within 60 s"))
}

/// `source create/get/list/trigger/status/update/delete` against real pull cycles, and `records
/// edit` on a pulled record. SQLite is
/// enough here: the source RPCs and the engine are tested on both backends in tests/ingest.rs;
/// this covers the command line over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_commands_define_run_and_delete_a_pull_source() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let (connector, _, reader) = cli.country_world().await;
    let api = serve_countries_api().await;
    let definition = serde_json::json!({
        "connector": connector,
        "name": "countries API",
        "kind": "http_json",
        "config": {"url": format!("http://{api}/items"), "items": "/data",
                   "headers": {"Authorization": "Bearer s3cret"},
                   "pagination": {"type": "page", "size_param": "per_page", "size": 2}},
        "mapping": {"id": "/id", "name": "/name",
                    "entity": {"code": "/code", "population": "/population"}},
        "burst_interval": "10ms",
        "rest_length": "1d",
        "backoff": ["50ms"],
    });
    let file = cli.file("source.json", &definition.to_string());
    let created = cli
        .admin(&["source", "create", "--file", &file, "--output", "json"])
        .await
        .expect(0)
        .json();
    let id = str_at(&created, "/id");
    assert_eq!(created["kind"], "http_json");
    assert_eq!(created["rest_length"], "86400s");

    // An enabled source is due at once: its first cycle is over when the status names its
    // import result and the source no longer runs.
    let first = cycle_after(&cli, &id, "").await;
    assert_eq!(first["attempts"], 0, "{first}");
    assert_eq!(first["last_error"], "", "{first}");
    assert!(first["last_run_at"].is_string(), "{first}");
    assert!(first["next_run_at"].is_string(), "{first}");
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("GB", 67), ("FR", 68), ("IT", 59)])
    );
    let first_result = str_at(&first, "/last_import_result");

    // Resting for a day: `trigger` runs it again now.
    let triggered = cli
        .admin(&["source", "trigger", &id, "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(triggered["source_id"], id.as_str());
    let second = cycle_after(&cli, &id, &first_result).await;
    let second_result = str_at(&second, "/last_import_result");
    let table = cli.admin(&["source", "status", &id]).await.expect(0);
    for field in [
        "state",
        "cursor",
        "attempts",
        "last_error",
        "next_run_at",
        "marks",
    ] {
        assert!(table.stdout.contains(field), "{field}: {}", table.stdout);
    }

    // Header values never come back.
    let got = cli
        .admin(&["source", "get", &id, "--output", "json"])
        .await
        .expect(0);
    assert!(!got.stdout.contains("s3cret"), "{}", got.stdout);
    assert_eq!(got.json()["name"], "countries API");
    let listed = cli.admin(&["source", "list"]).await.expect(0);
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("http_json"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("s3cret"), "{}", listed.stdout);
    let listed = cli
        .admin(&["source", "list", "--output", "ndjson"])
        .await
        .expect(0)
        .ndjson();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].to_string().contains("s3cret"));

    // The cycle's import result, reported as the source's.
    let results = cli
        .admin(&[
            "import-results",
            "list",
            "--connector",
            &connector,
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    let result = |id: &str| {
        results
            .as_array()
            .and_then(|all| all.iter().find(|r| r["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {results}"))
    };
    let (first, second) = (result(&first_result), result(&second_result));
    assert_eq!(first["created"], 3, "{first}");
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["source"], id.as_str(), "{first}");
    assert_eq!(second["unchanged"], 3, "{second}");
    assert_eq!(second["status"], "succeeded", "{second}");

    // `get --output json` is a valid definition to edit and send back (header kept redacted).
    let mut edited = got.json();
    edited["name"] = "renamed".into();
    let edited_file = cli.file("edited.json", &edited.to_string());
    let updated = cli
        .admin(&["source", "update", &id, "--file", &edited_file])
        .await
        .expect(0);
    assert!(
        updated.stdout.contains("Updated source"),
        "{}",
        updated.stdout
    );
    let got = cli
        .admin(&["source", "get", &id, "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(got["name"], "renamed");

    // A bad definition is a usage error naming the file and the field; nothing is sent.
    let bad = cli.file("bad.json", r#"{"connector": "x", "kind": "ftp"}"#);
    let run = cli
        .admin(&["source", "create", "--file", &bad])
        .await
        .expect(2);
    assert!(
        run.stderr.contains("bad.json") && run.stderr.contains("\"kind\" must be one of"),
        "{}",
        run.stderr
    );
    let not_json = cli.file("not.json", "{nope");
    let run = cli
        .admin(&["source", "create", "--file", &not_json])
        .await
        .expect(2);
    assert!(run.stderr.contains("not JSON"), "{}", run.stderr);
    let run = cli
        .admin(&["source", "create", "--file", "missing.json"])
        .await
        .expect(2);
    assert!(
        run.stderr.contains("cannot read missing.json"),
        "{}",
        run.stderr
    );

    // `records edit` (admin token) corrects a pulled record and stamps edited_at.
    let gb = cli
        .with_token(
            &reader,
            &[
                "records",
                "get",
                "--entity-type",
                "country",
                "--connector",
                &connector,
                "--id",
                "GB",
                "--output",
                "json",
            ],
        )
        .await
        .expect(0)
        .json();
    let key = str_at(&gb, "/key");
    let entity = cli.file("gb.json", r#"{"code": "GB", "population": 70}"#);
    let edited = cli
        .admin(&[
            "records",
            "edit",
            &key,
            "--name",
            "United Kingdom",
            "--entity-file",
            &entity,
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(edited["name"], "United Kingdom", "{edited}");
    assert_eq!(edited["entity"]["population"], 70, "{edited}");
    assert!(edited["edited_at"].is_string(), "{edited}");
    let invalid = cli.file("invalid.json", r#"{"code": "GB"}"#);
    let run = cli
        .admin(&["records", "edit", &key, "--entity-file", &invalid])
        .await
        .expect(1);
    assert!(run.stderr.contains("population"), "{}", run.stderr);
    let run = cli.admin(&["records", "edit", &key]).await.expect(2);
    assert!(run.stderr.contains("nothing to edit"), "{}", run.stderr);

    // `source push-delta`: an event between cycles adds ES and removes IT; a bad line stops
    // the whole delta before anything is sent.
    let bad_delta = cli.file(
        "bad-delta.ndjson",
        &format!("{}\n{{\"name\": \"no id\"}}\n", country_line("ES", 48)),
    );
    let run = cli
        .admin(&[
            "source",
            "push-delta",
            &id,
            "--added",
            &bad_delta,
            "--removed",
            "IT",
        ])
        .await
        .expect(2);
    assert!(
        run.stderr.contains("line 2") && run.stderr.contains("missing \"id\""),
        "{}",
        run.stderr
    );
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("GB", 70), ("FR", 68), ("IT", 59)])
    );
    let delta = cli.file("delta.ndjson", &country_line("ES", 48));
    let pushed = cli
        .admin(&[
            "source",
            "push-delta",
            &id,
            "--added",
            &delta,
            "--removed",
            "IT",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(
        (&pushed["created"], &pushed["deleted"]),
        (&1.into(), &1.into()),
        "{pushed}"
    );
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("GB", 70), ("FR", 68), ("ES", 48)])
    );

    let deleted = cli.admin(&["source", "delete", &id]).await.expect(0);
    assert!(
        deleted.stdout.contains("Deleted source"),
        "{}",
        deleted.stdout
    );
    let run = cli.admin(&["source", "get", &id]).await.expect(1);
    assert!(!run.stderr.is_empty());
    assert!(cli
        .admin(&["source", "list", "--output", "ndjson"])
        .await
        .expect(0)
        .ndjson()
        .is_empty());
    // Its records stay.
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("GB", 70), ("FR", 68), ("ES", 48)])
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_read_for_dash_with_and_without_digests() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let input = ndjson(&[("GB", 1), ("FR", 2)]);
    let args = [
        "contribute",
        "--connector",
        &connector,
        "--mode",
        "replace",
        "-",
    ];
    let run = cli
        .run(&args, &[("TRIBUTARY_TOKEN", &token)], Some(&input))
        .await
        .expect(0);
    assert!(run.stdout.contains("Contributed stdin"), "{}", run.stdout);
    assert!(run.stdout.contains("created 2"), "{}", run.stdout);
    let mut with_digest = args.to_vec();
    with_digest.push("--digest");
    let run = cli
        .run(&with_digest, &[("TRIBUTARY_TOKEN", &token)], Some(&input))
        .await
        .expect(0);
    assert!(
        run.stdout.contains("0 sent in full after digests"),
        "{}",
        run.stdout
    );
    let mut csv = args.to_vec();
    csv.extend(["--format", "csv"]);
    let run = cli
        .run(
            &csv,
            &[("TRIBUTARY_TOKEN", &token)],
            Some("id,name,entity.code,entity.population\nIT,Italy,IT,4\n"),
        )
        .await
        .expect(0);
    assert!(run.stdout.contains("swept 2"), "{}", run.stdout);
    assert_eq!(cli.countries(&reader).await, pairs(&[("IT", 4)]));
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_before_anything_is_sent() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let (other, ..) = {
        let created = cli
            .admin(&[
                "connector",
                "create",
                "--name",
                "Other",
                "--entity-type",
                "country",
                "--output",
                "json",
            ])
            .await
            .expect(0)
            .json();
        (str_at(&created, "/connector/id"), ())
    };
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1)]));

    // The token's connector is not --connector: refused before any record is sent.
    let run = cli
        .contribute(&token, &other, "replace", &file, &[])
        .await
        .expect(2);
    assert!(
        run.stderr
            .contains(&format!("the token belongs to connector {connector}")),
        "{}",
        run.stderr
    );
    assert!(cli.countries(&reader).await.is_empty());

    let run = cli
        .contribute(&token, &connector, "stream", "missing.ndjson", &[])
        .await
        .expect(2);
    assert!(
        run.stderr.contains("cannot open missing.ndjson"),
        "{}",
        run.stderr
    );
    let bad_header = cli.file("bad.csv", "id,name,population\nGB,UK,1\n");
    let run = cli
        .contribute(&token, &connector, "stream", &bad_header, &[])
        .await
        .expect(2);
    assert!(
        run.stderr.contains("column \"population\""),
        "{}",
        run.stderr
    );
    let run = cli
        .run(
            &[
                "contribute",
                "--connector",
                &connector,
                "--mode",
                "stream",
                &file,
            ],
            &[],
            None,
        )
        .await
        .expect(2);
    assert!(run.stderr.contains("no connector token"), "{}", run.stderr);
    let run = cli
        .run(&["contribute", "--mode", "sometimes", &file], &[], None)
        .await
        .expect(2);
    assert!(run.stderr.contains("sometimes"), "{}", run.stderr);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_comes_from_flag_env_or_the_local_token_file() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let run = cli.run(&["entity-type", "list"], &[], None).await.expect(2);
    assert!(run.stderr.contains("no admin token"), "{}", run.stderr);
    cli.run(
        &["entity-type", "list", "--token", &sandbox.admin_token],
        &[],
        None,
    )
    .await
    .expect(0);
    cli.run(
        &["entity-type", "list"],
        &[("TRIBUTARY_TOKEN", &sandbox.admin_token)],
        None,
    )
    .await
    .expect(0);
    // TRIBUTARY_ADMIN_TOKEN wins over TRIBUTARY_TOKEN (which may hold a connector's token).
    cli.run(
        &["entity-type", "list"],
        &[
            ("TRIBUTARY_ADMIN_TOKEN", &sandbox.admin_token),
            ("TRIBUTARY_TOKEN", "tbc_other"),
        ],
        None,
    )
    .await
    .expect(0);
    // A server on this machine: ./tributary-data/admin.token, as `tributary serve` writes it.
    std::fs::create_dir_all(cli.dir.path().join("tributary-data")).expect("mkdir");
    cli.file(
        "tributary-data/admin.token",
        &format!("{}\n", sandbox.admin_token),
    );
    cli.run(&["entity-type", "list"], &[], None).await.expect(0);
    let wrong = cli
        .run(&["entity-type", "list", "--token", "tba_wrong"], &[], None)
        .await
        .expect(1);
    assert!(
        wrong
            .stderr
            .contains("the server refused the admin token from --token: UNAUTHENTICATED"),
        "{}",
        wrong.stderr
    );
    sandbox.stop().await;
}

/// The connection drops mid-file (the server restarts): the contribution resumes the session and
/// every record arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contribute_resumes_after_the_server_restarts() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .args([
            "contribute",
            "--connector",
            &connector,
            "--mode",
            "stream",
            "-",
            "--batch-size",
            "1",
        ])
        .args(["--server", &cli.server])
        .env("TRIBUTARY_TOKEN", &token)
        .env_remove("TRIBUTARY_ADMIN_TOKEN")
        .current_dir(cli.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run the tributary binary");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(ndjson(&[("GB", 1), ("FR", 2)]).as_bytes())
        .await
        .expect("write");
    stdin.flush().await.expect("flush");
    // The first two batches are acknowledged (a stream session shows them at once) ...
    let visible = wait_until(Duration::from_secs(20), || async {
        (cli.countries(&reader).await.len() == 2).then_some(())
    })
    .await;
    assert!(visible.is_some(), "the first batches were not applied");
    // ... then the connection breaks while the command waits for more input.
    sandbox.restart().await;
    stdin
        .write_all(ndjson(&[("DE", 3), ("IT", 4)]).as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("finished")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("read 4 records: 4 valid, 0 invalid"),
        "{stdout}"
    );
    // Acks still unread when the connection broke are answered `already_applied` on resend.
    assert!(
        stdout.contains("reconnected after a broken connection: 1 time"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        cli.countries(&reader).await,
        pairs(&[("DE", 3), ("FR", 2), ("GB", 1), ("IT", 4)])
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_explains_each_command() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let top = cli.run(&["--help"], &[], None).await.expect(0);
    for command in [
        "serve",
        "entity-type",
        "connector",
        "consumer",
        "contribute",
        "records",
        "import-results",
        "source",
        "export",
    ] {
        assert!(
            top.stdout.contains(command),
            "{command} missing from:\n{}",
            top.stdout
        );
    }
    let contribute = cli
        .run(&["contribute", "--help"], &[], None)
        .await
        .expect(0);
    for needle in [
        "--digest",
        "entity.<path>",
        "Exit status",
        "TRIBUTARY_TOKEN",
        "stdin",
    ] {
        assert!(
            contribute.stdout.contains(needle),
            "{needle} missing from:\n{}",
            contribute.stdout
        );
    }
    let source = cli.run(&["source", "--help"], &[], None).await.expect(0);
    for needle in [
        "\"connector\"",
        "http_json",
        "Durations",
        "<redacted>",
        "trigger",
    ] {
        assert!(
            source.stdout.contains(needle),
            "{needle} missing from:\n{}",
            source.stdout
        );
    }
    let admin = cli
        .run(&["entity-type", "--help"], &[], None)
        .await
        .expect(0);
    assert!(
        admin.stdout.contains("TRIBUTARY_ADMIN_TOKEN"),
        "{}",
        admin.stdout
    );
    sandbox.stop().await;
}

/// The filter language, orders and Watch through the command line (issue 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_list_filters_orders_and_watch_streams_changes() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    let cli = Cli::new(&sandbox);
    let (connector, token, reader) = cli.country_world().await;
    let file = cli.file("a.ndjson", &ndjson(&[("GB", 1), ("FR", 20), ("DE", 300)]));
    cli.contribute(&token, &connector, "stream", &file, &[])
        .await
        .expect(0);
    let big = cli
        .with_token(
            &reader,
            &[
                "records",
                "list",
                "--entity-type",
                "country",
                "--output",
                "ndjson",
                "--filter",
                r#"{"entity.population": {"$gte": 20}}"#,
                "--order-by",
                "entity.population desc",
            ],
        )
        .await
        .expect(0)
        .ndjson();
    let ids: Vec<String> = big.iter().map(|r| str_at(r, "/id")).collect();
    assert_eq!(ids, ["DE", "FR"]);
    let bad = cli
        .with_token(
            &reader,
            &[
                "records",
                "list",
                "--entity-type",
                "country",
                "--filter",
                r#"{"id": {"$like": "G"}}"#,
            ],
        )
        .await
        .expect(1);
    assert!(
        bad.stderr.contains("INVALID_ARGUMENT") && bad.stderr.contains("$like"),
        "{}",
        bad.stderr
    );

    // Watch from the beginning of the change log: the three upserts, then a new one.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .args([
            "records",
            "watch",
            "--entity-type",
            "country",
            "--after",
            "0",
            "--count",
            "4",
        ])
        .args(["--server", &cli.server])
        .env("TRIBUTARY_TOKEN", &reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("run watch");
    let file = cli.file("b.ndjson", &ndjson(&[("IT", 4)]));
    cli.contribute(&token, &connector, "stream", &file, &[])
        .await
        .expect(0);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("watch printed 4 events")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert_eq!(events.len(), 4, "{stdout}");
    assert_eq!(events[3]["upserted"]["id"], "IT");
    assert!(events
        .windows(2)
        .all(|w| w[0]["sequence"].as_u64() < w[1]["sequence"].as_u64()));
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_an_mtls_server_with_a_ca_file_and_a_client_certificate() {
    let ca = tributary_tests::tls::test_ca();
    let sandbox = Sandbox::sqlite(|o| o.tls = Some(ca.server_tls(true))).await;
    let cli = Cli::new(&sandbox);
    assert!(cli.server.starts_with("https://"), "{}", cli.server);
    let client = ca.issue(&[]);
    let cert = cli.file("client.pem", &client.cert_pem);
    let key = cli.file("client.key", &client.key_pem);
    let ca_file = ca.pem_file.display().to_string();
    let tls = [
        "--ca-file",
        &ca_file,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];

    let mut args = vec!["entity-type", "list"];
    args.extend_from_slice(&tls);
    cli.admin(&args).await.expect(0);
    // The same through the environment.
    cli.run(
        &["entity-type", "list"],
        &[
            ("TRIBUTARY_ADMIN_TOKEN", &sandbox.admin_token),
            ("TRIBUTARY_CA_FILE", &ca_file),
            ("TRIBUTARY_CLIENT_CERT", &cert),
            ("TRIBUTARY_CLIENT_KEY", &key),
        ],
        None,
    )
    .await
    .expect(0);

    // The system's roots do not know the test CA: refused, saying why.
    let run = cli.admin(&["entity-type", "list"]).await.expect(1);
    assert!(run.stderr.contains("certificate"), "{}", run.stderr);
    // Without a client certificate, the mTLS server refuses.
    cli.admin(&["entity-type", "list", "--ca-file", &ca_file])
        .await
        .expect(1);
    // Half a client identity is a usage error.
    cli.admin(&[
        "entity-type",
        "list",
        "--ca-file",
        &ca_file,
        "--client-cert",
        &cert,
    ])
    .await
    .expect(2);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contribute_goes_on_at_the_connectors_rate_limit() {
    let sandbox = Sandbox::sqlite(|o| o.limits.max_batch_records = 10).await;
    let cli = Cli::new(&sandbox);
    let (_, _, reader) = cli.country_world().await;
    let limited = cli
        .admin(&[
            "connector",
            "create",
            "--name",
            "Limited",
            "--entity-type",
            "country",
            "--rate-limit",
            "20",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    let (connector, token) = (
        str_at(&limited, "/connector/id"),
        str_at(&limited, "/token"),
    );
    let records: Vec<(String, i64)> = (0..40).map(|i| (format!("C{i:02}"), i)).collect();
    let refs: Vec<(&str, i64)> = records.iter().map(|(id, n)| (id.as_str(), *n)).collect();
    let file = cli.file("many.ndjson", &ndjson(&refs));
    let started = std::time::Instant::now();
    let run = cli
        .contribute(&token, &connector, "accrue", &file, &["--batch-size", "10"])
        .await
        .expect(0);
    assert!(run.stdout.contains("created 40"), "{}", run.stdout);
    assert_eq!(cli.countries(&reader).await.len(), 40);
    // The limit held: 40 records at 20/s with a bucket of 20 take at least about 1 s.
    assert!(started.elapsed() >= Duration::from_millis(900));
    sandbox.stop().await;
}

/// A free port on 127.0.0.1 for a server process to bind (the kernel picks it; released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_turn_on_mtls_and_the_metrics_endpoint() {
    let ca = tributary_tests::tls::test_ca();
    let dir = tempfile::tempdir().expect("scratch dir");
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    };
    let server = ca.issue(&["127.0.0.1"]);
    let (cert, key) = (
        write("server.pem", &server.cert_pem),
        write("server.key", &server.key_pem),
    );
    let (grpc, metrics) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .args(["--tls-client-ca", &ca.pem_file.display().to_string()])
        .env("TRIBUTARY_METRICS__LISTEN", format!("127.0.0.1:{metrics}"))
        .env("TRIBUTARY_ADMIN_TOKEN", "tba_serve_flags_test")
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tributary serve");

    // gRPC over mTLS: a client with a certificate the CA signed is served.
    let url = format!("https://127.0.0.1:{grpc}");
    let channel = wait_until(Duration::from_secs(30), || async {
        let channel = tributary_client::connect_with(&url, &ca.client_tls())
            .await
            .ok()?;
        tributary_client::admin(channel.clone(), "tba_serve_flags_test")
            .list_entity_types(tributary_client::pb::admin::ListEntityTypesRequest::default())
            .await
            .ok()
            .map(|_| channel)
    })
    .await
    .expect("the server answers over mTLS");
    drop(channel);
    // Plaintext is refused.
    let plaintext = tributary_client::connect(&format!("http://127.0.0.1:{grpc}")).await;
    if let Ok(channel) = plaintext {
        tributary_client::admin(channel, "tba_serve_flags_test")
            .list_entity_types(tributary_client::pb::admin::ListEntityTypesRequest::default())
            .await
            .expect_err("plaintext on a TLS port");
    }

    // The metrics endpoint counted that call. The server records a call once its response has
    // gone out, which can be just after the client has read it: scrape until it shows.
    let scrape = || async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", metrics))
            .await
            .expect("connect to the metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
            .await
            .expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    };
    let counted = wait_until(Duration::from_secs(10), || async {
        let response = scrape().await;
        response
            .contains("grpc_method=\"ListEntityTypes\"")
            .then_some(())
    })
    .await;
    assert!(counted.is_some(), "{}", scrape().await);

    // SIGTERM: a clean stop.
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped within 30 s")
        .expect("wait");
    assert!(status.success(), "{status}");
}
