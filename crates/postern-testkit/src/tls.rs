//! A throwaway certificate authority ([`TestCa`]) and an HTTPS origin
//! ([`TlsOrigin`]) serving the same routes as [`Origin`](crate::Origin).
//! All TLS configs use the ring provider explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::origin::{SeenRequest, Stats, spawn_server};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed CA that issues leaf certificates for test servers.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// Generates a fresh CA key and self-signed certificate.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Postern Test CA");
        dn.push(DnType::OrganizationName, "Postern tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// The CA certificate in PEM form.
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate in DER form.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns that path.
    pub fn write_ca_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca_pem())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Issues a leaf certificate for `names` (entries that parse as IP
    /// addresses become IP SANs, the rest DNS SANs). Returns the chain
    /// (leaf, CA) and the PKCS#8 private key.
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.issue_raw(names);
        (
            vec![cert.der().clone(), self.ca_der()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// Like [`issue`](Self::issue), in PEM form: (certificate chain, key).
    pub fn issue_pem(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.issue_raw(names);
        (
            format!("{}{}", cert.pem(), self.ca_pem()),
            key.serialize_pem(),
        )
    }

    fn issue_raw(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("postern test leaf"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf certificate");
        (cert, key)
    }

    /// Server config presenting a fresh leaf for `names`, ALPN `http/1.1`.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let (chain, key) = self.issue(names);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Client config trusting only this CA, ALPN `http/1.1`.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA to root store");
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// HTTPS origin on `127.0.0.1` with a certificate for `localhost` and
/// `127.0.0.1` issued by a [`TestCa`]. Dropping it stops the server.
pub struct TlsOrigin {
    addr: SocketAddr,
    stats: Arc<Stats>,
    _shutdown: watch::Sender<()>,
}

impl TlsOrigin {
    /// Binds `127.0.0.1:0` and starts serving in the background.
    pub async fn start(ca: &TestCa) -> TlsOrigin {
        let acceptor = TlsAcceptor::from(ca.server_config(&["localhost", "127.0.0.1"]));
        let (addr, stats, shutdown) = spawn_server(Some(acceptor)).await;
        TlsOrigin {
            addr,
            stats,
            _shutdown: shutdown,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    /// Number of requests received so far.
    pub fn requests(&self) -> usize {
        self.stats.requests()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections()
    }

    /// The most recent request received.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.stats.last_request()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern_bytes;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    #[test]
    fn builds_configs() {
        let ca = TestCa::new();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let config = ca.server_config(&["example.test", "127.0.0.1", "::1"]);
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let _ = ca.client_config();
        let (chain, key) = ca.issue_pem(&["localhost"]);
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(key.contains("PRIVATE KEY"));

        let dir = std::env::temp_dir().join(format!("postern-testkit-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = ca.write_ca_pem(&dir);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.ca_pem());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn fetch(ca: &TestCa, origin: &TlsOrigin, name: &'static str) -> Vec<u8> {
        let connector = TlsConnector::from(ca.client_config());
        let tcp = TcpStream::connect(origin.addr()).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from(name).unwrap(), tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.write_all(b"GET /bytes/5 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        // The server may close without close_notify; keep what arrived.
        let _ = tls.read_to_end(&mut out).await;
        out
    }

    #[tokio::test]
    async fn tls_origin_serves_trusted_clients() {
        let ca = TestCa::new();
        let origin = TlsOrigin::start(&ca).await;
        assert_eq!(
            origin.url("/a"),
            format!("https://localhost:{}/a", origin.addr().port())
        );
        for name in ["localhost", "127.0.0.1"] {
            let out = fetch(&ca, &origin, name).await;
            assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
            assert!(out.ends_with(&pattern_bytes(5)));
        }
        assert_eq!(origin.requests(), 2);
        assert_eq!(origin.connections(), 2);

        // A client trusting another CA fails the handshake.
        let other = TestCa::new();
        let connector = TlsConnector::from(other.client_config());
        let tcp = TcpStream::connect(origin.addr()).await.unwrap();
        assert!(
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .is_err()
        );
    }
}
