//! The configuration file as written: serde structs that mirror the TOML layout.
//!
//! Unknown keys are rejected here (`deny_unknown_fields`); values that need checking
//! keep their position (`Spanned`) so `validate` can name file, line and column.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub workers: Option<Spanned<i64>>,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub egress: RawEgress,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub bind: Spanned<String>,
    pub mode: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    pub allow_private_destinations: Option<bool>,
    pub connect_ports: Option<Vec<Spanned<i64>>>,
    pub pool_max_idle_per_host: Option<Spanned<i64>>,
    pub pool_max_idle: Option<Spanned<i64>>,
}

/// `via = "name"` sets the pseudonym; `via = false` leaves Via out.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawVia {
    On(bool),
    Pseudonym(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub via: Option<Spanned<RawVia>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_request_line: Option<Spanned<RawSize>>,
    pub max_header_size: Option<Spanned<RawSize>>,
    pub max_headers: Option<Spanned<i64>>,
}

/// Sizes are written as a number of bytes or a string such as `"64KiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// Durations are written as seconds or a string such as `"500ms"`, `"30s"`, `"5m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub client_header: Option<Spanned<RawDuration>>,
    pub client_idle: Option<Spanned<RawDuration>>,
    pub connect: Option<Spanned<RawDuration>>,
    pub first_byte: Option<Spanned<RawDuration>>,
    pub io: Option<Spanned<RawDuration>>,
    pub tunnel_idle: Option<Spanned<RawDuration>>,
    pub pool_idle: Option<Spanned<RawDuration>>,
    pub drain: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub action: Spanned<String>,
    #[serde(default)]
    pub src: Vec<Spanned<String>>,
}
