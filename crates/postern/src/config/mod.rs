//! Configuration: the TOML file (or the built-in default) turned into one validated,
//! typed `Config`. Every problem found is reported as `FILE:LINE:COL: message`.

mod diag;
mod raw;
mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_policy::RuleSet;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
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
}

#[derive(Debug, Clone)]
pub struct EgressConfig {
    pub allow_private_destinations: bool,
    pub connect_ports: Vec<u16>,
    pub pool_max_idle_per_host: usize,
    pub pool_max_idle: usize,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The pseudonym written in `Via`, or `None` to send no Via.
    pub via: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub client_header: Duration,
    pub client_idle: Duration,
    pub connect: Duration,
    pub first_byte: Duration,
    pub io: Duration,
    pub tunnel_idle: Duration,
    pub pool_idle: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Squid,
    Combined,
    Json,
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
