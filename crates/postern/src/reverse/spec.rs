//! Pools, servers and routes as configured: what the balancing, health and
//! routing code works from. Immutable; runtime state lives in `pool`.

use std::time::Duration;

use postern_policy::headers::Scrubber;
use postern_policy::matchers::{Patterns, PortSet};

use crate::egress::Destination;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConnections,
    /// Power of two random choices on in-flight requests × latency EWMA.
    P2c,
    Random,
    /// Consistent hashing (Maglev) on `hash_on`.
    Hash,
}

impl Balance {
    pub const NAMES: &[&str] = &["round-robin", "least-connections", "p2c", "random", "hash"];

    pub fn parse(s: &str) -> Option<Balance> {
        Some(match s {
            "round-robin" => Balance::RoundRobin,
            "least-connections" => Balance::LeastConnections,
            "p2c" => Balance::P2c,
            "random" => Balance::Random,
            "hash" => Balance::Hash,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Client,
    Uri,
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    /// No new clients; sticky clients finish their sessions.
    Drain,
    /// No traffic at all.
    Maintenance,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<AdminState> {
        Some(match s {
            "ready" => AdminState::Ready,
            "drain" => AdminState::Drain,
            "maintenance" => AdminState::Maintenance,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// As written (`127.0.0.1:8081`, `app1.internal:80`): the server's identity.
    pub addr: String,
    pub host: Destination,
    pub port: u16,
    pub weight: u32,
    pub backup: bool,
    pub state: AdminState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthKind {
    Http,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub kind: HealthKind,
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect: PortSet,
}

#[derive(Debug, Clone)]
pub struct OutlierSpec {
    /// Connect failures or 5xx in a row before a server is ejected (0: off).
    pub consecutive_failures: u32,
    pub ejection_time: Duration,
    /// At most this share of the servers is ejected at once.
    pub max_ejected: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentProtocol {
    Http,
    Socks5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    pub servers: Vec<ServerSpec>,
    pub balance: Balance,
    pub hash_on: HashOn,
    pub sticky_cookie: Option<String>,
    pub retries: u32,
    pub retry_budget: f64,
    pub per_try_timeout: Option<Duration>,
    pub max_connections: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
    pub slow_start: Duration,
    pub health: Option<HealthSpec>,
    pub outlier: OutlierSpec,
    pub protocol: ParentProtocol,
    /// Credentials for parent proxies.
    pub credentials: Option<(String, String)>,
    pub send_proxy: Option<ProxyProtocolVersion>,
    /// TLS to the servers.
    pub tls: Option<UpstreamTls>,
    /// Speak HTTP/2 to the servers (h2c, or h2 over TLS) for HTTP/2 clients.
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name checked in the servers' certificates (default: each server's host).
    pub server_name: Option<String>,
}

/// A host condition of a route: exact, or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Stored without `*`: `.example.com`.
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// `route #N (line L)`.
    pub label: String,
    pub listener: String,
    /// Empty when the route redirects.
    pub pool: String,
    /// Answer with a redirect instead of going to a pool.
    pub redirect: Option<RouteRedirect>,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<Patterns>,
    /// Lowercase name and exact value.
    pub headers: Vec<(String, String)>,
    /// The route's header rules (client-sent fields pass, as at `transparent`).
    pub rewrite: Scrubber,
    /// Responses gzip-encoded for clients that accept it.
    pub compress: Option<std::sync::Arc<super::compress::Compression>>,
}

/// A route that answers `status` with a `Location` made from `to`, as
/// nginx's `return 301 https://$host$request_uri`.
#[derive(Debug, Clone)]
pub struct RouteRedirect {
    pub to: String,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// The variables a redirect may use.
pub const REDIRECT_VARIABLES: &[&str] = &["scheme", "host", "request_uri"];

impl RouteRedirect {
    /// The first variable in `to` that is not one of [`REDIRECT_VARIABLES`].
    pub fn unknown_variable(to: &str) -> Option<String> {
        let mut unknown = None;
        expand(to, |name, _| {
            if unknown.is_none() && !REDIRECT_VARIABLES.contains(&name) {
                unknown = Some(name.to_string());
            }
        });
        unknown
    }

    /// The `Location`: `$scheme` (`http` or `https`), `$host` (the request's
    /// host, lowercase, without port) and `$request_uri` (path and query as
    /// the client wrote them; checked already to hold no space or control;
    /// `/` for `OPTIONS *`). A request without a host cannot fill `$host`:
    /// an empty one would make `https:///evil.example/` of a path, which
    /// browsers read as a host of the client's choosing.
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        request_uri: &str,
    ) -> Result<String, crate::error::ProxyError> {
        if host.is_empty() && (self.to.contains("$host") || self.to.contains("${host}")) {
            return Err(crate::error::ProxyError::new(
                crate::error::ErrorKind::BadRequest,
                "a redirect to the request's host needs a Host",
            ));
        }
        let request_uri = if request_uri == "*" { "/" } else { request_uri };
        Ok(expand(&self.to, |name, out| match name {
            "scheme" => out.push_str(scheme),
            "host" => out.push_str(host),
            "request_uri" => out.push_str(request_uri),
            _ => {}
        }))
    }
}

/// Copies `text`, handing each `$name` (or `${name}`) to `var`; `$$` is a
/// dollar sign.
fn expand(text: &str, mut var: impl FnMut(&str, &mut String)) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => (braced, ""),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        var(name, &mut out);
        rest = tail;
    }
    out.push_str(rest);
    out
}

impl RouteSpec {
    /// `host` lowercase without port; `path` the origin-form target.
    pub fn matches(&self, host: &str, path: &str, header: impl Fn(&str) -> Option<String>) -> bool {
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|h| match h {
                HostPattern::Exact(e) => e == host,
                HostPattern::Wildcard(suffix) => {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }
            });
        host_ok
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
            && self.path_regex.as_ref().is_none_or(|r| r.is_match(path))
            && self
                .headers
                .iter()
                .all(|(name, value)| header(name).is_some_and(|v| v == *value))
    }
}
