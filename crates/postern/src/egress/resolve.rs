//! Asynchronous name resolution with a cache (hickory-resolver), reading the
//! system's resolver configuration and hosts file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;

#[derive(Debug, Clone)]
pub enum ResolveError {
    /// The name does not exist or has no addresses.
    NotFound(String),
    Timeout,
    Failed(String),
}

/// RFC 6761 §6.3: `localhost` and names under it always mean the loopback
/// interface of whoever resolves them.
pub fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host
            .len()
            .checked_sub(".localhost".len())
            .is_some_and(|at| {
                host.is_char_boundary(at) && host[at..].eq_ignore_ascii_case(".localhost")
            })
}

pub struct Resolver {
    inner: TokioResolver,
    /// `egress.hosts`: names answered without DNS (replaced on reload).
    hosts: arc_swap::ArcSwap<std::collections::HashMap<String, Vec<IpAddr>>>,
}

impl Resolver {
    pub fn from_system() -> Resolver {
        let mut builder = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("postern: no usable system resolver configuration ({e}); using defaults");
                TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioConnectionProvider::default(),
                )
            }
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.cache_size = 4096;
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        Resolver {
            inner: builder.build(),
            hosts: Default::default(),
        }
    }

    /// Sets the configured names (`egress.hosts`).
    pub fn set_hosts(&self, hosts: std::collections::HashMap<String, Vec<IpAddr>>) {
        self.hosts.store(std::sync::Arc::new(hosts));
    }

    /// All addresses of `host`, which is a name (IP literals never reach here).
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if is_localhost(host) {
            return Ok(vec![Ipv6Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()]);
        }
        let hosts = self.hosts.load();
        if !hosts.is_empty()
            && let Some(ips) = hosts.get(&host.trim_end_matches('.').to_ascii_lowercase())
        {
            return Ok(ips.clone());
        }
        // A trailing dot makes the name absolute, so no search domains are tried.
        let fqdn = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        crate::observe::metrics::DNS_LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.lookup(host, fqdn).await;
        if result.is_err() {
            crate::observe::metrics::DNS_FAILURES
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn lookup(&self, host: &str, fqdn: String) -> Result<Vec<IpAddr>, ResolveError> {
        match self.inner.lookup_ip(fqdn).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    Err(ResolveError::NotFound(format!("{host} has no addresses")))
                } else {
                    Ok(ips)
                }
            }
            Err(e) if e.is_nx_domain() => Err(ResolveError::NotFound(format!(
                "{host}: no such domain (NXDOMAIN)"
            ))),
            Err(e) if e.is_no_records_found() => {
                Err(ResolveError::NotFound(format!("{host} has no addresses")))
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("timed out") || text.contains("timeout") {
                    Err(ResolveError::Timeout)
                } else {
                    Err(ResolveError::Failed(format!("{host}: {text}")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_localhost;

    #[test]
    fn localhost_names() {
        for name in ["localhost", "LOCALHOST.", "a.localhost", "x.y.LocalHost"] {
            assert!(is_localhost(name), "{name}");
        }
        for name in ["localhost.example", "notlocalhost", "xlocalhost", "é", ""] {
            assert!(!is_localhost(name), "{name}");
        }
    }
}
