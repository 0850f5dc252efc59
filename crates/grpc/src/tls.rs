//! TLS of Tributary's outbound gRPC (the Rust client, the CLI, `grpc` pull providers): the
//! system's root certificates, plus a PEM bundle of one's own (a private CA).

use tonic::transport::{Certificate, ClientTlsConfig};

/// A client TLS configuration trusting the system's roots and `extra_roots_pem`.
///
/// tonic refuses to connect when asked for the system's roots on a system that has none (a
/// slim container), even with a bundle given; so with a bundle the system's roots are asked for
/// only when there are some, and the bundle alone is trusted otherwise.
pub fn client_tls_config(extra_roots_pem: Option<&[u8]>) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    if extra_roots_pem.is_none() || has_system_roots() {
        config = config.with_native_roots();
    }
    match extra_roots_pem {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config,
    }
}

fn has_system_roots() -> bool {
    !rustls_native_certs::load_native_certs().certs.is_empty()
}
