//! TLS and mTLS on the gRPC port (SPEC.md §9), end to end over 127.0.0.1 with a private CA made
//! by the test: every service works over TLS, plaintext is refused on a TLS port, an mTLS port
//! refuses clients without a certificate its CA signed.
#![allow(clippy::unwrap_used)]

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tributary_client::TlsOptions;
use tributary_proto::contribution::v1 as pb;
use tributary_tests::tls::{stranger_ca, test_ca};
use tributary_tests::{country, Sandbox};

/// Whether a health check over a channel to `url` with `tls` succeeds.
async fn health_check(url: &str, tls: &TlsOptions) -> Result<(), String> {
    let channel = tributary_client::connect_with(url, tls)
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn trusting_only_the_ca() -> TlsOptions {
    TlsOptions {
        ca_certificate_pem: Some(test_ca().pem.clone().into_bytes()),
        client_identity_pem: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_works_over_tls() {
    let sandbox = Sandbox::sqlite(|o| o.tls = Some(test_ca().server_tls(false))).await;
    assert!(sandbox.url().starts_with("https://"));
    // The sandbox's clients reach the server through TLS: admin, contribution and catalog.
    let mut world = sandbox.country_world().await;
    let session = world.open(pb::SessionMode::Stream).await;
    world
        .upsert(&session, vec![country("GB", 1)])
        .await
        .unwrap();
    assert!(world.get("GB").await.is_some());
    // A client trusting only the test CA (no client certificate) is served too.
    health_check(&sandbox.url(), &trusting_only_the_ca())
        .await
        .unwrap();
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_authority_is_refused() {
    let sandbox = Sandbox::sqlite(|o| o.tls = Some(test_ca().server_tls(false))).await;
    // The system's roots alone do not know the test CA.
    let error = health_check(&sandbox.url(), &TlsOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_on_a_tls_port() {
    let sandbox = Sandbox::sqlite(|o| o.tls = Some(test_ca().server_tls(false))).await;
    let plaintext = format!("http://{}", sandbox.addr);
    assert!(health_check(&plaintext, &TlsOptions::default())
        .await
        .is_err());
    // The server is unharmed by the failed handshake.
    health_check(&sandbox.url(), &trusting_only_the_ca())
        .await
        .unwrap();
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_clients_with_a_certificate_its_ca_signed() {
    let sandbox = Sandbox::sqlite(|o| o.tls = Some(test_ca().server_tls(true))).await;
    // Signed by the CA: admitted (the sandbox's own clients present such a certificate).
    health_check(&sandbox.url(), &test_ca().client_tls())
        .await
        .unwrap();
    sandbox.country_world().await;
    // No certificate: refused.
    assert!(health_check(&sandbox.url(), &trusting_only_the_ca())
        .await
        .is_err());
    // A certificate from another authority: refused.
    assert!(health_check(&sandbox.url(), &stranger_ca().client_tls())
        .await
        .is_err());
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_with_a_plaintext_server_are_refused_rather_than_ignored() {
    let error = tributary_client::connect_with("http://127.0.0.1:1", &trusting_only_the_ca())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("https://"), "{error}");
}
