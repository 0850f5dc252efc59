//! TLS on 127.0.0.1 for tests: a private certificate authority made for the test process, an
//! axum app served over HTTPS with a certificate that authority signed, and the PEM material a
//! Tributary server (TLS, mTLS) and its clients need.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The test process's certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate as a PEM file, for a client to trust.
    pub pem_file: PathBuf,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The certificate authority of this test process (made once, its PEM file written to the
/// temporary directory).
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        // One small file per test process, left in the temporary directory (statics are
        // never dropped).
        let pem_file =
            std::env::temp_dir().join(format!("tributary-test-ca-{}.pem", std::process::id()));
        TestCa::new("Tributary test CA", pem_file)
    })
}

/// Another authority, whose certificates Tributary's test servers do not trust.
pub fn stranger_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let pem_file =
            std::env::temp_dir().join(format!("tributary-stranger-ca-{}.pem", std::process::id()));
        TestCa::new("A stranger's CA", pem_file)
    })
}

impl TestCa {
    /// A self-signed authority named `name`, its certificate written to `pem_file`.
    fn new(name: &str, pem_file: PathBuf) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(&pem_file, cert.pem()).expect("writing the CA's PEM file");
        TestCa {
            issuer: Issuer::new(params, key),
            pem_file,
            pem: cert.pem(),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses; none for a client) signed by this
    /// authority.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("certificate params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// TLS for a Tributary server on 127.0.0.1 (and `localhost`), with mTLS against this
    /// authority when `mtls`.
    pub fn server_tls(&self, mtls: bool) -> tributary::tls::ServerTls {
        let issued = self.issue(&["127.0.0.1", "localhost"]);
        tributary::tls::ServerTls {
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
            client_ca_pem: mtls.then(|| self.pem.clone().into_bytes()),
        }
    }

    /// What a client uses: the test CA as its root (so it trusts the test servers), and a
    /// client certificate this authority signed (presented only to servers that ask for one).
    pub fn client_tls(&self) -> tributary_client::TlsOptions {
        let client = self.issue(&[]);
        tributary_client::TlsOptions {
            ca_certificate_pem: Some(test_ca().pem.clone().into_bytes()),
            client_identity_pem: Some((client.cert_pem.into_bytes(), client.key_pem.into_bytes())),
        }
    }

    /// A server configuration with a certificate for `name` (a DNS name or an IP address).
    fn server_config(&self, name: &str) -> ServerConfig {
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("server params")
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS configuration")
    }
}

/// Accepts TCP connections and completes their TLS handshakes; failed handshakes (a client
/// that refused the certificate) are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves `app` over HTTPS on a free port of 127.0.0.1 with a certificate for `name` signed by
/// [`test_ca`]; a client reaching it as `https://127.0.0.1:port` verifies only when `name` is
/// `127.0.0.1`.
pub async fn serve_https(app: axum::Router, name: &str) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(Arc::new(test_ca().server_config(name)));
    tokio::spawn(async move { axum::serve(TlsListener { tcp, acceptor }, app).await });
    addr
}
