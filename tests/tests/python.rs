//! A client in another language: `tests/python/client_test.py` generates Python stubs from
//! `proto/` with grpcio-tools and drives a sandbox server through Admin, Contribution and
//! Catalog, including a validation error's `BadRequest` details (SPEC.md §8, §11), and checks
//! every checksum vector of `tests/vectors/checksums.json` with Python's `rfc8785` and `blake3`
//! packages and against the checksums the server computes (§1.1).

use std::path::Path;
use std::time::Duration;

use tributary_tests::Sandbox;

/// How to get the Python packages the test needs.
const INSTALL: &str = "python3 -m pip install -r tests/python/requirements.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_generates_stubs_and_uses_every_service() {
    let sandbox = Sandbox::sqlite(|_| {}).await;
    run_python_client(&sandbox, &[]).await;
    sandbox.stop().await;
}

/// The same script over TLS and mTLS: grpcio trusts the test CA and presents a client
/// certificate it signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_works_over_mtls() {
    let ca = tributary_tests::tls::test_ca();
    let sandbox = Sandbox::sqlite(|o| o.tls = Some(ca.server_tls(true))).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let client = ca.issue(&[]);
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert, client.cert_pem).expect("write client cert");
    std::fs::write(&key, client.key_pem).expect("write client key");
    let ca_file = ca.pem_file.to_string_lossy().into_owned();
    let tls = [
        "--ca-file",
        &ca_file,
        "--client-cert",
        &cert.to_string_lossy(),
        "--client-key",
        &key.to_string_lossy(),
    ]
    .map(str::to_owned);
    run_python_client(&sandbox, &tls).await;
    sandbox.stop().await;
}

/// Runs tests/python/client_test.py against `sandbox` with `extra` arguments; panics with its
/// output unless every check passed.
async fn run_python_client(sandbox: &Sandbox, extra: &[String]) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // Fails (never skips) without Python's gRPC packages: CI installs them, and a developer
    // is told how.
    let probe = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, google.rpc.error_details_pb2, rfc8785, blake3",
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); install Python 3, then: {INSTALL}"));
    assert!(
        probe.status.success(),
        "Python's test packages are missing ({}); install them with: {INSTALL}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_test.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--server", &sandbox.addr.to_string()])
        .args(["--admin-token", &sandbox.admin_token])
        .args(extra)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Python client test finished within 120 s")
        .expect("run the Python client test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // Every vector was checked three ways: canonical JSON, checksum, and the server's checksum.
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/checksums.json"),
        )
        .expect("read tests/vectors/checksums.json"),
    )
    .expect("checksums.json is JSON");
    let count = vectors["vectors"].as_array().map_or(0, Vec::len);
    assert!(count > 0, "no checksum vectors");
    for check in [
        "ok: canonical JSON of vector",
        "ok: BLAKE3 checksum of vector",
        "ok: the server's checksum of vector",
    ] {
        assert_eq!(stdout.matches(check).count(), count, "{check}:\n{stdout}");
    }
}
