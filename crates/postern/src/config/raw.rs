//! The configuration file as written: serde structs that mirror the TOML layout.
//!
//! Unknown keys are rejected here (`deny_unknown_fields`); values that need checking
//! keep their position (`Spanned`) so `validate` can name file, line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de;
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
    /// Named, reusable sets of conditions (`[matcher.office]`).
    #[serde(default)]
    pub matcher: BTreeMap<String, RawMatcher>,
    #[serde(default)]
    pub blocklist: Vec<RawBlocklist>,
    pub auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub content: RawContent,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub pool: Vec<RawPool>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    pub cache: Option<RawCache>,
    /// Settings of routes with `compress = true`.
    pub compression: Option<RawCompression>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub types: Option<Vec<Spanned<String>>>,
    pub min_length: Option<Spanned<RawSize>>,
    pub level: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Bytes kept in memory.
    pub memory: Option<Spanned<RawSize>>,
    /// Larger responses are not stored.
    pub max_object_size: Option<Spanned<RawSize>>,
    /// Clients that may PURGE (default: loopback).
    pub purge_from: Option<Vec<Spanned<String>>>,
    /// How stale a response may be to stand in for an unreachable origin.
    pub stale_if_unreachable: Option<Spanned<RawDuration>>,
    pub disk: Option<RawDiskCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiskCache {
    pub path: Spanned<String>,
    pub size: Spanned<RawSize>,
    /// Larger responses are not written to disk.
    pub max_object_size: Option<Spanned<RawSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub bind: Spanned<String>,
    pub mode: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub anonymity: Option<Spanned<String>>,
    /// Reverse listeners: addresses whose X-Forwarded-* and Forwarded are kept.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// Reverse listeners: add X-Forwarded-For/-Proto/-Host and Forwarded.
    pub forwarded_headers: Option<bool>,
    /// Reverse listeners: the field carrying each request's id to servers.
    pub request_id: Option<Spanned<String>>,
    /// Forward listeners: send traffic through this pool of parent proxies.
    pub parent: Option<Spanned<String>>,
    /// Expect a PROXY protocol header (v1 or v2) on every connection.
    pub proxy_protocol: Option<bool>,
    /// Who may send one (default: loopback).
    pub proxy_protocol_from: Option<Vec<Spanned<String>>>,
    /// Terminate TLS on this listener.
    pub tls: Option<RawTls>,
    /// Accept HTTP/2 without TLS from clients that start with its preface
    /// (`true`), or speak only that (`"only"`).
    pub h2c: Option<Spanned<RawH2c>>,
    /// Forward listeners: serve SOCKS4/5 clients on the same port too.
    pub socks: Option<bool>,
    /// Admin listeners: who may connect (default: loopback).
    pub admin_from: Option<Vec<Spanned<String>>>,
    /// Admin listeners: require Basic authentication against this htpasswd file.
    pub admin_htpasswd: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    /// More certificates, chosen by the server name the client asks for.
    #[serde(default)]
    pub sni: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub names: Vec<Spanned<String>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    pub allow_private_destinations: Option<bool>,
    pub connect_ports: Option<Vec<Spanned<i64>>>,
    pub pool_max_idle_per_host: Option<Spanned<i64>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    /// Ports plain HTTP requests may reach (default: Squid's Safe_ports).
    pub http_ports: Option<Vec<Spanned<RawPort>>>,
    /// Non-public addresses allowed anyway, cloud metadata included.
    pub allow_ips: Option<Vec<Spanned<String>>>,
    /// Source addresses for outgoing connections, rotated in turn.
    pub bind: Option<Vec<Spanned<String>>>,
    /// The address SOCKS5 UDP ASSOCIATE replies name (for clients behind NAT).
    pub udp_advertise: Option<Spanned<String>>,
    /// Names answered without DNS: name → address or addresses.
    pub hosts: Option<Spanned<std::collections::BTreeMap<String, RawAddresses>>>,
}

/// One address or a list of them.
#[derive(Debug)]
pub enum RawAddresses {
    One(String),
    Many(Vec<String>),
}

/// `h2c = true | false | "only"`.
#[derive(Debug)]
pub enum RawH2c {
    On(bool),
    Text(String),
}

/// `via = "name"` sets the pseudonym; `via = false` leaves Via out.
#[derive(Debug)]
pub enum RawVia {
    On(bool),
    Pseudonym(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub via: Option<Spanned<RawVia>>,
    /// An HTML file for the error pages the proxy makes.
    pub error_page: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_request_line: Option<Spanned<RawSize>>,
    pub max_header_size: Option<Spanned<RawSize>>,
    pub max_headers: Option<Spanned<i64>>,
    /// Requests per client address, e.g. `"100/s"`, `"6000/min"`.
    pub client_requests: Option<Spanned<String>>,
    /// Requests per authenticated user.
    pub user_requests: Option<Spanned<String>>,
    /// Connections open at once per client address.
    pub client_connections: Option<Spanned<i64>>,
    /// Bytes per second per client address (`"1MiB"` or `"1MiB/s"`).
    pub client_bandwidth: Option<Spanned<RawSize>>,
    /// Bytes per second per authenticated user.
    pub user_bandwidth: Option<Spanned<RawSize>>,
}

/// Sizes are written as a number of bytes or a string such as `"64KiB"`.
#[derive(Debug, Clone)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// Durations are written as seconds or a string such as `"500ms"`, `"30s"`, `"5m"`.
#[derive(Debug)]
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
    pub udp_idle: Option<Spanned<RawDuration>>,
    pub pool_idle: Option<Spanned<RawDuration>>,
    pub drain: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub access: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    /// The line of `format = "custom"`, with `$variables`.
    pub template: Option<Spanned<String>>,
    /// The facility of lines sent to syslog (`local0`).
    pub syslog_facility: Option<Spanned<String>>,
}

/// A port (`443`) or a range (`"8000-8999"`).
#[derive(Debug)]
pub enum RawPort {
    Number(i64),
    Text(String),
}

/// Declares a struct with the given fields plus every rule condition, and
/// `conditions()` to read the conditions whichever struct holds them (serde's
/// `flatten` cannot be combined with refusing unknown keys).
macro_rules! with_conditions {
    ($name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty,)* }) => {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
            #[serde(default)] pub src: Vec<Spanned<String>>,
            #[serde(default)] pub user: Vec<Spanned<String>>,
            #[serde(default)] pub group: Vec<Spanned<String>>,
            #[serde(default)] pub dst_domain: Vec<Spanned<String>>,
            #[serde(default)] pub dst_regex: Vec<Spanned<String>>,
            #[serde(default)] pub url_regex: Vec<Spanned<String>>,
            #[serde(default)] pub url_ext: Vec<Spanned<String>>,
            #[serde(default)] pub dst_ip: Vec<Spanned<String>>,
            #[serde(default)] pub dst_port: Vec<Spanned<RawPort>>,
            #[serde(default)] pub method: Vec<Spanned<String>>,
            #[serde(default)] pub scheme: Vec<Spanned<String>>,
            #[serde(default)] pub listener: Vec<Spanned<String>>,
            #[serde(default)] pub time: Vec<Spanned<String>>,
            #[serde(default)] pub blocklist: Vec<Spanned<String>>,
        }

        impl $name {
            pub fn conditions(&self) -> RawConditions<'_> {
                RawConditions {
                    src: &self.src,
                    user: &self.user,
                    group: &self.group,
                    dst_domain: &self.dst_domain,
                    dst_regex: &self.dst_regex,
                    url_regex: &self.url_regex,
                    url_ext: &self.url_ext,
                    dst_ip: &self.dst_ip,
                    dst_port: &self.dst_port,
                    method: &self.method,
                    scheme: &self.scheme,
                    listener: &self.listener,
                    time: &self.time,
                    blocklist: &self.blocklist,
                }
            }
        }
    };
}

pub struct RawConditions<'a> {
    pub src: &'a [Spanned<String>],
    pub user: &'a [Spanned<String>],
    pub group: &'a [Spanned<String>],
    pub dst_domain: &'a [Spanned<String>],
    pub dst_regex: &'a [Spanned<String>],
    pub url_regex: &'a [Spanned<String>],
    pub url_ext: &'a [Spanned<String>],
    pub dst_ip: &'a [Spanned<String>],
    pub dst_port: &'a [Spanned<RawPort>],
    pub method: &'a [Spanned<String>],
    pub scheme: &'a [Spanned<String>],
    pub listener: &'a [Spanned<String>],
    pub time: &'a [Spanned<String>],
    pub blocklist: &'a [Spanned<String>],
}

with_conditions!(RawRule {
    action: Spanned<String>,
    /// Named matchers, `"!name"` negated.
    #[serde(default, rename = "match")]
    matchers: Vec<Spanned<String>>,
    status: Option<Spanned<i64>>,
    message: Option<Spanned<String>>,
    redirect: Option<Spanned<String>>,
});

with_conditions!(RawMatcher {});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocklist {
    pub name: Spanned<String>,
    pub file: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub htpasswd: Option<Spanned<String>>,
    /// A program that checks credentials (Squid's basic helper protocol),
    /// with its arguments.
    pub program: Option<Spanned<Vec<Spanned<String>>>>,
    /// Copies of `program` running at once.
    pub children: Option<Spanned<i64>>,
    /// How long `program` may take to answer.
    pub program_timeout: Option<Spanned<RawDuration>>,
    pub groups: Option<Spanned<String>>,
    pub realm: Option<Spanned<String>>,
    /// How long verified credentials are remembered.
    pub cache_ttl: Option<Spanned<RawDuration>>,
    /// Failed attempts per client address within `failure_window` before 429.
    pub max_failures: Option<Spanned<i64>>,
    pub failure_window: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default)]
    pub request_remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub request_set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub request_replace: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub response_remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub response_set: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContent {
    /// Response media types refused (`"video/*"`, `"application/x-msdownload"`).
    #[serde(default)]
    pub deny_types: Vec<Spanned<String>>,
    pub max_response_size: Option<Spanned<RawSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The time zone `time` conditions are written in, as an offset from UTC.
    pub utc_offset: Option<Spanned<String>>,
}

/// A server of a pool: `"127.0.0.1:8081"` or a table with options.
#[derive(Debug)]
pub enum RawServer {
    Addr(String),
    Table(RawServerTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTable {
    pub addr: String,
    pub weight: Option<i64>,
    #[serde(default)]
    pub backup: bool,
    /// ready | drain | maintenance
    pub state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: Spanned<String>,
    pub servers: Vec<Spanned<RawServer>>,
    pub balance: Option<Spanned<String>>,
    /// For `hash`: client | uri | "header:NAME" | "cookie:NAME".
    pub hash_on: Option<Spanned<String>>,
    /// Cookie that pins a client to a server.
    pub sticky_cookie: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_budget: Option<Spanned<f64>>,
    pub per_try_timeout: Option<Spanned<RawDuration>>,
    /// In-flight requests per server (0: no limit).
    pub max_connections: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<RawDuration>>,
    pub slow_start: Option<Spanned<RawDuration>>,
    pub health: Option<RawHealth>,
    pub outlier: Option<RawOutlier>,
    /// Parent pools: http | socks5.
    pub protocol: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    /// Send a PROXY protocol header to servers: v1 | v2.
    pub send_proxy: Option<Spanned<String>>,
    /// TLS to the servers.
    pub tls: Option<Spanned<bool>>,
    /// CA certificates (PEM) the servers' certificates are checked against
    /// (default: the system's roots).
    pub tls_ca: Option<Spanned<String>>,
    pub tls_server_name: Option<Spanned<String>>,
    /// HTTP/2 to the servers (for HTTP/2 clients; gRPC).
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// http | tcp
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub interval: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    /// Expected statuses: `"200-399"` or a list.
    pub expect: Option<Vec<Spanned<RawPort>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub ejection_time: Option<Spanned<RawDuration>>,
    pub max_ejected: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub listener: Spanned<String>,
    pub pool: Option<Spanned<String>>,
    /// Answer with a redirect to this URL (`$scheme`, `$host`,
    /// `$request_uri`) instead of going to a pool.
    pub redirect: Option<Spanned<String>>,
    /// 301 (default), 302, 303, 307 or 308.
    pub redirect_status: Option<Spanned<i64>>,
    /// gzip responses for clients that accept it (`[compression]`).
    pub compress: Option<Spanned<bool>>,
    #[serde(default)]
    pub host: Vec<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub path_regex: Option<Spanned<String>>,
    #[serde(default)]
    pub header: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub request_set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub request_remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub response_set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub response_remove: Vec<Spanned<String>>,
}

// The values above that take more than one form. Serde's untagged enums
// would answer "data did not match any variant of untagged enum RawServer"
// for any mistake; these say which forms the key takes and, for tables,
// which keys (unknown ones get the did-you-mean hint like any table).

/// A visitor for a value written in one of several forms; `expecting` is
/// what the error message says the key takes.
struct Forms<T> {
    expecting: &'static str,
    make: std::marker::PhantomData<T>,
}

impl<T> Forms<T> {
    fn new(expecting: &'static str) -> Forms<T> {
        Forms {
            expecting,
            make: std::marker::PhantomData,
        }
    }
}

/// How a form-taking value is built from each kind of TOML value; the
/// kinds a type leaves out are refused with its `expecting` text.
trait FromForms: Sized {
    fn integer<E: de::Error>(v: i64, f: &Forms<Self>) -> Result<Self, E> {
        Err(E::invalid_type(de::Unexpected::Signed(v), f))
    }
    fn text<E: de::Error>(v: &str, f: &Forms<Self>) -> Result<Self, E> {
        Err(E::invalid_type(de::Unexpected::Str(v), f))
    }
    fn boolean<E: de::Error>(v: bool, f: &Forms<Self>) -> Result<Self, E> {
        Err(E::invalid_type(de::Unexpected::Bool(v), f))
    }
    fn table<'de, A: de::MapAccess<'de>>(map: A, f: &Forms<Self>) -> Result<Self, A::Error> {
        let _ = map;
        Err(de::Error::invalid_type(de::Unexpected::Map, f))
    }
    fn array<'de, A: de::SeqAccess<'de>>(seq: A, f: &Forms<Self>) -> Result<Self, A::Error> {
        let _ = seq;
        Err(de::Error::invalid_type(de::Unexpected::Seq, f))
    }
}

impl<'de, T: FromForms> de::Visitor<'de> for Forms<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::integer(v, &self)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        // TOML integers are 64-bit signed; larger ones are out of any range.
        T::integer(i64::try_from(v).unwrap_or(i64::MAX), &self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::text(v, &self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        T::boolean(v, &self)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::table(map, &self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::array(seq, &self)
    }
}

macro_rules! deserialize_forms {
    ($ty:ty, $expecting:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                d.deserialize_any(Forms::<$ty>::new($expecting))
            }
        }
    };
}

deserialize_forms!(
    RawDuration,
    "a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\", or a whole number of seconds"
);

impl FromForms for RawDuration {
    fn integer<E: de::Error>(v: i64, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawDuration::Seconds(v))
    }
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawDuration::Text(v.to_string()))
    }
}

deserialize_forms!(
    RawSize,
    "a size such as \"64KiB\" or \"1MiB\", or a whole number of bytes"
);

impl FromForms for RawSize {
    fn integer<E: de::Error>(v: i64, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawSize::Bytes(v))
    }
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawSize::Text(v.to_string()))
    }
}

deserialize_forms!(
    RawPort,
    "a number such as 443, or a range such as \"8000-8999\""
);

impl FromForms for RawPort {
    fn integer<E: de::Error>(v: i64, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawPort::Number(v))
    }
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawPort::Text(v.to_string()))
    }
}

deserialize_forms!(RawH2c, "true, false or \"only\"");

impl FromForms for RawH2c {
    fn boolean<E: de::Error>(v: bool, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawH2c::On(v))
    }
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawH2c::Text(v.to_string()))
    }
}

deserialize_forms!(
    RawVia,
    "a pseudonym such as \"proxy-1\", true (the default one) or false (no Via)"
);

impl FromForms for RawVia {
    fn boolean<E: de::Error>(v: bool, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawVia::On(v))
    }
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawVia::Pseudonym(v.to_string()))
    }
}

deserialize_forms!(
    RawAddresses,
    "an IP address such as \"10.0.0.5\", or a list of them"
);

impl FromForms for RawAddresses {
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawAddresses::One(v.to_string()))
    }
    fn array<'de, A: de::SeqAccess<'de>>(seq: A, _: &Forms<Self>) -> Result<Self, A::Error> {
        Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
            .map(RawAddresses::Many)
    }
}

deserialize_forms!(
    RawServer,
    "a list of servers, each \"host:port\" or a table such as { addr = \"host:port\", weight = 2 }"
);

impl FromForms for RawServer {
    fn text<E: de::Error>(v: &str, _: &Forms<Self>) -> Result<Self, E> {
        Ok(RawServer::Addr(v.to_string()))
    }
    fn table<'de, A: de::MapAccess<'de>>(map: A, _: &Forms<Self>) -> Result<Self, A::Error> {
        RawServerTable::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(RawServer::Table)
    }
}
