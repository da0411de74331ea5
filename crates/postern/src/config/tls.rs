//! TLS for listeners: certificates and keys read from PEM files when the
//! configuration is loaded (so a reload picks up renewed certificates), one
//! default certificate and any number chosen by SNI.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use toml::Spanned;

use super::diag::Problem;
use super::raw::RawTls;

/// Picks the certificate for a handshake by its server name: exact names
/// first, then `*.domain` wildcards, else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    named: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        if let Some((_, key)) = self.named.iter().find(|(n, _)| *n == name) {
            return Some(key.clone());
        }
        let wildcard = self.named.iter().find(|(n, _)| {
            n.strip_prefix("*.").is_some_and(|suffix| {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                    && !name[..name.len() - suffix.len() - 1].contains('.')
            })
        });
        Some(wildcard.map_or_else(|| self.default.clone(), |(_, k)| k.clone()))
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the listener's TLS configuration, or records why not.
pub fn server_config(
    raw: &RawTls,
    base: &Path,
    p: &mut Vec<Problem>,
) -> Option<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let default = certified_key(&raw.cert, &raw.key, base, &provider, p);
    let mut named = Vec::new();
    for extra in &raw.sni {
        let key = certified_key(&extra.cert, &extra.key, base, &provider, p);
        if extra.names.is_empty() {
            p.push(Problem::new(
                extra.cert.span(),
                "an `sni` certificate needs `names` (the server names it answers for)",
            ));
        }
        if let Some(key) = key {
            for n in &extra.names {
                named.push((n.get_ref().to_ascii_lowercase(), key.clone()));
            }
        }
    }
    let resolver = SniResolver {
        default: default?,
        named,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // RFC 7301: HTTP/2 preferred, HTTP/1.1 for clients without it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(Arc::new(config))
}

fn certified_key(
    cert: &Spanned<String>,
    key: &Spanned<String>,
    base: &Path,
    provider: &CryptoProvider,
    p: &mut Vec<Problem>,
) -> Option<Arc<CertifiedKey>> {
    let cert_path = base.join(cert.get_ref());
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&cert_path) {
        Ok(iter) => match iter.collect::<Result<Vec<_>, _>>() {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                p.push(Problem::new(
                    cert.span(),
                    format!("{}: no certificate in the file", cert_path.display()),
                ));
                return None;
            }
            Err(e) => {
                p.push(Problem::new(
                    cert.span(),
                    format!("{}: {e}", cert_path.display()),
                ));
                return None;
            }
        },
        Err(e) => {
            p.push(Problem::new(
                cert.span(),
                format!("cannot read {}: {e}", cert_path.display()),
            ));
            return None;
        }
    };
    let key_path = base.join(key.get_ref());
    let private = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(k) => k,
        Err(e) => {
            p.push(Problem::new(
                key.span(),
                format!("{}: no usable private key ({e})", key_path.display()),
            ));
            return None;
        }
    };
    let signing = match provider.key_provider.load_private_key(private) {
        Ok(k) => k,
        Err(e) => {
            p.push(Problem::new(
                key.span(),
                format!("{}: {e}", key_path.display()),
            ));
            return None;
        }
    };
    let certified = CertifiedKey::new(certs, signing);
    if let Err(e) = certified.keys_match() {
        p.push(Problem::new(
            key.span(),
            format!(
                "{} does not belong to {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
        ));
        return None;
    }
    Some(Arc::new(certified))
}

/// A client configuration for TLS to servers: trusting `ca` (PEM), or the
/// system's roots.
pub fn client_config(
    ca: Option<&Spanned<String>>,
    base: &Path,
    http2: bool,
    p: &mut Vec<Problem>,
) -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let path = base.join(ca.get_ref());
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| {
                    p.push(Problem::new(
                        ca.span(),
                        format!("cannot read {}: {e}", path.display()),
                    ))
                })
                .ok()?;
            for cert in certs {
                match cert {
                    Ok(c) => {
                        if let Err(e) = roots.add(c) {
                            p.push(Problem::new(ca.span(), format!("{}: {e}", path.display())));
                        }
                    }
                    Err(e) => p.push(Problem::new(ca.span(), format!("{}: {e}", path.display()))),
                }
            }
            if roots.is_empty() {
                p.push(Problem::new(
                    ca.span(),
                    format!("{}: no CA certificate", path.display()),
                ));
                return None;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Some(Arc::new(config))
}
