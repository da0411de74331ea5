//! From a request head to what the guard is asked and where the request goes:
//! the target parsed into canonical form and the safe-default port checks.
//! The proxy and `postern explain` both start here.

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::config::Config;
use crate::egress::Destination;
use crate::error::{ErrorKind, ProxyError};
use crate::guard::Subject;
use crate::http1::RequestHead;
use crate::http1::head::Fields;

use super::target::{HttpTarget, TargetError, parse_absolute, parse_authority};

/// Where a request goes.
pub enum Plan {
    /// Origin-form or `*`: a request to the proxy itself.
    Local(SocketAddr),
    /// CONNECT to `dest:port`.
    Tunnel { dest: Destination, port: u16 },
    /// An absolute-form `http://` request.
    Http(HttpTarget),
    /// An `ftp://` request, fetched with FTP.
    Ftp(super::ftp::FtpTarget),
}

impl Plan {
    /// Parses the target and applies the safe defaults that come before any
    /// rule: CONNECT only to `egress.connect_ports`, plain HTTP only to
    /// `egress.http_ports`, no encoded control characters.
    pub fn new(cfg: &Config, head: &RequestHead, local: SocketAddr) -> Result<Plan, ProxyError> {
        let target = head.target();
        if target.starts_with('/') || target == "*" {
            return Ok(Plan::Local(local));
        }
        if head.is_method("CONNECT") {
            let (_, dest, port) = parse_authority(target, None).map_err(|e| {
                let why = match e {
                    TargetError::Malformed(m) => m.to_string(),
                    TargetError::UnsupportedScheme(s) => s,
                };
                ProxyError::new(ErrorKind::BadRequest, format!("CONNECT target: {why}"))
            })?;
            if !cfg.egress.connect_ports.contains(&port) {
                return Err(ProxyError::new(
                    ErrorKind::PortNotAllowed,
                    format!("CONNECT to port {port} is not allowed (egress.connect_ports)"),
                ));
            }
            return Ok(Plan::Tunnel { dest, port });
        }
        if postern_policy::host::has_encoded_control(target) {
            return Err(ProxyError::new(
                ErrorKind::BadRequest,
                "percent-encoded control characters in the request target",
            ));
        }
        if target
            .as_bytes()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"ftp://"))
        {
            let ftp =
                super::ftp::parse(target).map_err(|m| ProxyError::new(ErrorKind::BadRequest, m))?;
            if !cfg.egress.http_ports.contains(ftp.port) {
                return Err(ProxyError::new(
                    ErrorKind::PortNotAllowed,
                    format!(
                        "port {} is not among the allowed ports (egress.http_ports)",
                        ftp.port
                    ),
                ));
            }
            return Ok(Plan::Ftp(ftp));
        }
        let http = parse_absolute(target).map_err(|e| match e {
            TargetError::Malformed(m) => ProxyError::new(ErrorKind::BadRequest, m),
            TargetError::UnsupportedScheme(s) => ProxyError::new(
                ErrorKind::NotImplemented,
                format!("{s}:// requests are not supported by this proxy"),
            ),
        })?;
        if !cfg.egress.http_ports.contains(http.port) {
            return Err(ProxyError::new(
                ErrorKind::PortNotAllowed,
                format!(
                    "port {} is not among the ports plain HTTP may reach (egress.http_ports)",
                    http.port
                ),
            ));
        }
        Ok(Plan::Http(http))
    }

    /// The host as rules see it.
    pub fn rule_host(&self) -> Cow<'_, str> {
        match self {
            Plan::Local(a) => Cow::Owned(postern_policy::addr::ip_string(a.ip())),
            Plan::Tunnel { dest, .. } => dest.rule_host(),
            Plan::Http(t) => t.dest.rule_host(),
            Plan::Ftp(t) => t.dest.rule_host(),
        }
    }

    /// What the guard is asked; `host` and `url` come from `rule_host` and
    /// `rule_url` (owned by the caller).
    pub fn subject<'a>(
        &'a self,
        head: &'a RequestHead,
        client: SocketAddr,
        listener: &'a str,
        host: &'a str,
        url: &'a str,
    ) -> Subject<'a> {
        let (scheme, literal_ip, port) = match self {
            Plan::Local(a) => ("http", Some(a.ip()), a.port()),
            Plan::Tunnel { dest, port } => ("tunnel", dest.literal_ip(), *port),
            Plan::Http(t) => ("http", t.dest.literal_ip(), t.port),
            Plan::Ftp(t) => ("ftp", t.dest.literal_ip(), t.port),
        };
        Subject {
            client: client.ip(),
            listener,
            method: head.method(),
            scheme,
            host,
            literal_ip,
            port,
            url,
            proxy_authorization: head.first("proxy-authorization"),
            assume_user: None,
        }
    }

    /// The URL rules see: `host:port` for tunnels. For HTTP and FTP, when
    /// `canonical` (some rule looks at URLs), the URL in one spelling: scheme
    /// and host in canonical form, the port only when it is not the scheme's
    /// default, and the path normalised (`postern_policy::url`), so that no
    /// spelling of a URL gets past a URL rule; otherwise the target as received.
    pub fn rule_url<'h>(&self, head: &'h RequestHead, canonical: bool) -> Cow<'h, str> {
        let (scheme, dest, port, default_port, rest) = match self {
            Plan::Tunnel { dest, port } => {
                let mut url = String::with_capacity(32);
                push_authority(&mut url, dest, *port, None);
                return Cow::Owned(url);
            }
            _ if !canonical => return Cow::Borrowed(head.target()),
            Plan::Http(t) => ("http://", &t.dest, t.port, 80, t.path.as_str()),
            Plan::Ftp(t) => {
                // The path as written (the plan keeps it decoded).
                let target = head.target();
                let after = target.find("://").map_or(target.len(), |i| i + 3);
                let path = target[after..]
                    .find(['/', '?'])
                    .map_or("/", |i| &target[after + i..]);
                ("ftp://", &t.dest, t.port, 21, path)
            }
            Plan::Local(_) => return Cow::Borrowed(head.target()),
        };
        let path = postern_policy::url::normalize_path_and_query(rest);
        let mut url = String::with_capacity(scheme.len() + 32 + path.len());
        url.push_str(scheme);
        push_authority(&mut url, dest, port, Some(default_port));
        url.push_str(&path);
        Cow::Owned(url)
    }
}

/// `host:port` (IPv6 in brackets), leaving the port out when it is `default`.
fn push_authority(url: &mut String, dest: &Destination, port: u16, default: Option<u16>) {
    match dest {
        Destination::Ip(std::net::IpAddr::V6(v6)) => {
            url.push('[');
            postern_policy::addr::push_ip(url, (*v6).into());
            url.push(']');
        }
        _ => url.push_str(&dest.rule_host()),
    }
    if default != Some(port) {
        url.push(':');
        url.push_str(crate::http1::decimal(u64::from(port), &mut [0; 20]));
    }
}
