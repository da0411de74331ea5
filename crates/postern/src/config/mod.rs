//! Configuration: the TOML file (or the built-in default) turned into one validated,
//! typed `Config`. Every problem found is reported as `FILE:LINE:COL: message`.

mod diag;
mod policy;
mod pools;
mod raw;
mod tls;
mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use postern_policy::Cidr;
use postern_policy::RuleSet;
use postern_policy::headers::{Anonymity, Scrubber};
use postern_policy::htpasswd::{Groups, Htpasswd};
use postern_policy::matchers::PortSet;
use postern_policy::rules::NamedList;

use crate::reverse::spec::{PoolSpec, RouteSpec};

pub use diag::ConfigError;

/// The whole validated configuration. Immutable once built.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    /// Worker threads; `None` means one per core.
    pub workers: Option<usize>,
    pub listeners: Vec<ListenerConfig>,
    pub egress: EgressConfig,
    pub http: HttpConfig,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub log: LogConfig,
    pub rules: RuleSet,
    pub blocklists: Vec<Arc<NamedList>>,
    pub auth: Option<AuthConfig>,
    pub content: ContentRules,
    /// Minutes east of UTC for `time` conditions.
    pub utc_offset_minutes: i32,
    /// Problems that do not stop the configuration from loading (bad blocklist
    /// lines), as `FILE:LINE: message`.
    pub warnings: Vec<String>,
    /// Header handling per listener name (anonymity level plus `[headers]`).
    pub scrubbers: Vec<(String, Arc<Scrubber>)>,
    pub pools: Vec<Arc<PoolSpec>>,
    pub routes: Vec<Arc<RouteSpec>>,
    pub cache: Option<CacheConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub memory: usize,
    pub max_object_size: usize,
    pub purge_from: Vec<Cidr>,
    /// RFC 9111 §4.2.4: a disconnected cache may serve stale; up to this
    /// much staleness (zero: never, unless `stale-if-error` allows it).
    pub stale_if_unreachable: Duration,
    pub disk: Option<DiskCacheConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheConfig {
    pub path: PathBuf,
    pub size: u64,
    pub max_object_size: usize,
}

impl Config {
    /// The header plan for a listener (the default level if the name is unknown).
    pub fn scrubber(&self, listener: &str) -> Arc<Scrubber> {
        self.scrubbers
            .iter()
            .find(|(name, _)| name == listener)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    pub fn address_permit(&self) -> crate::egress::AddressPermit<'_> {
        crate::egress::AddressPermit {
            private: self.egress.allow_private_destinations,
            ips: &self.egress.allow_ips,
            any: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub users: Arc<Htpasswd>,
    /// Checks credentials instead of `users`, when configured.
    pub program: Option<Arc<crate::guard::auth_program::AuthProgram>>,
    pub groups: Arc<Groups>,
    pub realm: String,
    pub cache_ttl: Duration,
    pub max_failures: u32,
    pub failure_window: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ContentRules {
    /// Lowercase media types; `type/*` entries match the whole type.
    pub deny_types: Vec<String>,
    pub max_response_size: Option<u64>,
}

impl ContentRules {
    pub fn denies_type(&self, content_type: &str) -> Option<&str> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.deny_types
            .iter()
            .find(|d| match d.strip_suffix("/*") {
                Some(main) => media.split('/').next() == Some(main),
                None => **d == media,
            })
            .map(String::as_str)
    }
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// HTTP/2 without TLS (h2c) by prior knowledge (RFC 9113 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum H2c {
    #[default]
    Off,
    /// Beside HTTP/1.x: told apart by the client's first bytes.
    Also,
    /// Only HTTP/2, like HAProxy's `proto h2`: a connection that does not
    /// open with the preface is closed (RFC 9113 §3.4).
    Only,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Reverse,
    Socks5,
    Ftp,
    Admin,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Reverse => "reverse",
            Mode::Socks5 => "socks5",
            Mode::Ftp => "ftp",
            Mode::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub mode: Mode,
    /// Connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    pub anonymity: Anonymity,
    /// Reverse: peers whose X-Forwarded-* and Forwarded fields are kept.
    pub trusted_proxies: Vec<Cidr>,
    /// Reverse: add X-Forwarded-For/-Proto/-Host and Forwarded.
    pub forwarded_headers: bool,
    /// Reverse: the field that carries each request's id to servers.
    pub request_id: Option<String>,
    /// Forward: the pool of parent proxies traffic goes through.
    pub parent: Option<String>,
    /// Peers allowed to send a PROXY protocol header; `None`: not expected.
    pub proxy_protocol: Option<Vec<Cidr>>,
    /// TLS terminated on this listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP/2 by prior knowledge on a plain listener.
    pub h2c: H2c,
    /// Forward: SOCKS clients on the same port (told apart by the first byte).
    pub socks: bool,
    /// Admin: clients allowed (default: loopback).
    pub admin_from: Vec<Cidr>,
    /// Admin: users who may use it (Basic authentication); `None`: no login.
    pub admin_users: Option<Arc<Htpasswd>>,
}

#[derive(Debug, Clone)]
pub struct EgressConfig {
    pub allow_private_destinations: bool,
    pub connect_ports: Vec<u16>,
    pub pool_max_idle_per_host: usize,
    pub pool_max_idle: usize,
    pub http_ports: PortSet,
    /// Non-public destinations allowed anyway (cloud metadata only this way).
    pub allow_ips: Vec<Cidr>,
    /// Source addresses for outgoing connections, used in turn.
    pub bind: Vec<std::net::IpAddr>,
    /// The address SOCKS5 UDP ASSOCIATE replies name (behind NAT).
    pub udp_advertise: Option<std::net::IpAddr>,
    /// Names answered without DNS (lowercase, no trailing dot), like a
    /// hosts file of the proxy's own.
    pub hosts: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The pseudonym written in `Via`, or `None` to send no Via.
    pub via: Option<String>,
    /// The operator's HTML for error pages, instead of the built-in one.
    pub error_page: Option<crate::error::PageTemplate>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub client_requests: Option<Rate>,
    pub user_requests: Option<Rate>,
    pub client_connections: Option<usize>,
    pub client_bandwidth: Option<u64>,
    pub user_bandwidth: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub client_header: Duration,
    pub client_idle: Duration,
    pub connect: Duration,
    pub first_byte: Duration,
    pub io: Duration,
    pub tunnel_idle: Duration,
    pub udp_idle: Duration,
    pub pool_idle: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(PathBuf),
    Syslog(crate::observe::syslog::SyslogTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    Squid,
    Combined,
    Json,
    /// The operator's own line (`template`).
    Custom(crate::observe::log_template::Template),
}

impl LogFormat {
    /// Whether lines show the request's Referer and User-Agent (which are
    /// then kept for them).
    pub fn wants_request_fields(&self) -> bool {
        match self {
            LogFormat::Combined => true,
            LogFormat::Custom(t) => t.wants_request_fields(),
            LogFormat::Squid | LogFormat::Json => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub access: AccessLogTarget,
    pub format: LogFormat,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:3128";

impl Config {
    /// The built-in default: a forward proxy on 127.0.0.1:3128 for loopback clients,
    /// access log to stdout.
    pub fn builtin() -> Config {
        validate::validate(raw::RawConfig::default(), None, "")
            .expect("the built-in configuration is valid")
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        Config::parse(&text, Some(path))
    }

    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        let raw: raw::RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid(vec![diag::from_toml_error(&file, text, &e)]))?;
        validate::validate(raw, path, text).map_err(|problems| {
            ConfigError::Invalid(
                problems
                    .into_iter()
                    .map(|p| p.located(&file, text))
                    .collect(),
            )
        })
    }
}

#[cfg(test)]
mod tests;
