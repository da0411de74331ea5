//! `[[pool]]` and `[[route]]`: server pools for reverse listeners and parent
//! proxies, and the routes that send requests to them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use postern_policy::headers::{Anonymity, Scrubber};
use postern_policy::matchers::{Patterns, PortSet, normalize_domain};
use toml::Spanned;

use super::diag::{Problem, did_you_mean, line_col};
use super::policy::{RawHeaderRules, header_rules_from};
use super::raw::{RawConfig, RawHealth, RawOutlier, RawPool, RawPort, RawRoute, RawServer};
use super::validate::duration_or;
use crate::egress::Destination;
use crate::reverse::compress::Compression;
use crate::reverse::spec::*;

pub fn validate_pools(
    raw: &RawConfig,
    base: &std::path::Path,
    p: &mut Vec<Problem>,
) -> Vec<PoolSpec> {
    let mut names = HashSet::new();
    let mut pools = Vec::new();
    for rp in &raw.pool {
        let name = rp.name.get_ref();
        if name.is_empty() || !names.insert(name.clone()) {
            p.push(Problem::new(
                rp.name.span(),
                format!("pool name `{name}` is empty or used twice"),
            ));
            continue;
        }
        if let Some(pool) = pool(rp, base, p) {
            pools.push(pool);
        }
    }
    pools
}

fn pool(rp: &RawPool, base: &std::path::Path, p: &mut Vec<Problem>) -> Option<PoolSpec> {
    let before = p.len();
    let mut servers = Vec::new();
    let mut seen = HashSet::new();
    for s in &rp.servers {
        let (addr, weight, backup, state) = match s.get_ref() {
            RawServer::Addr(a) => (a.clone(), None, false, None),
            RawServer::Table(t) => (t.addr.clone(), t.weight, t.backup, t.state.clone()),
        };
        let Some((host, port)) = split_host_port(&addr) else {
            p.push(Problem::new(
                s.span(),
                format!(
                    "server `{addr}` is not host:port (e.g. \"127.0.0.1:8081\" or \"[::1]:8081\")"
                ),
            ));
            continue;
        };
        let host = match Destination::parse(host) {
            Ok(h) => h,
            Err(why) => {
                p.push(Problem::new(s.span(), format!("server `{addr}`: {why}")));
                continue;
            }
        };
        if !seen.insert(addr.clone()) {
            p.push(Problem::new(
                s.span(),
                format!("server `{addr}` is listed twice"),
            ));
        }
        let weight = match weight {
            None => 1,
            Some(w) if (1..=1000).contains(&w) => w as u32,
            Some(_) => {
                p.push(Problem::new(
                    s.span(),
                    "server `weight` must be between 1 and 1000",
                ));
                1
            }
        };
        let state = match state.as_deref() {
            None => AdminState::Ready,
            Some(text) => AdminState::parse(text).unwrap_or_else(|| {
                p.push(Problem::new(
                    s.span(),
                    format!("unknown server state `{text}`; states are: ready, drain, maintenance"),
                ));
                AdminState::Ready
            }),
        };
        servers.push(ServerSpec {
            addr,
            host,
            port,
            weight,
            backup,
            state,
        });
    }
    if rp.servers.is_empty() {
        p.push(Problem::new(
            rp.name.span(),
            "a pool needs at least one server",
        ));
    }
    let balance = match &rp.balance {
        None => Balance::RoundRobin,
        Some(b) => Balance::parse(b.get_ref()).unwrap_or_else(|| {
            let hint = did_you_mean(b.get_ref(), Balance::NAMES)
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            p.push(Problem::new(
                b.span(),
                format!(
                    "unknown balance `{}`{hint}; algorithms are: {}",
                    b.get_ref(),
                    Balance::NAMES.join(", ")
                ),
            ));
            Balance::RoundRobin
        }),
    };
    let hash_on = match rp
        .hash_on
        .as_ref()
        .map(|h| (h.get_ref().as_str(), h.span()))
    {
        None | Some(("client", _)) => HashOn::Client,
        Some(("uri", _)) => HashOn::Uri,
        Some((text, span)) => match text.split_once(':') {
            Some(("header", name)) if !name.is_empty() => HashOn::Header(name.to_ascii_lowercase()),
            Some(("cookie", name)) if !name.is_empty() => HashOn::Cookie(name.to_string()),
            _ => {
                p.push(Problem::new(
                    span,
                    "`hash_on` is client, uri, \"header:NAME\" or \"cookie:NAME\"",
                ));
                HashOn::Client
            }
        },
    };
    let sticky_cookie = rp.sticky_cookie.as_ref().and_then(|c| {
        let ok = !c.get_ref().is_empty()
            && c.get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            p.push(Problem::new(
                c.span(),
                "`sticky_cookie` must be a cookie name (letters, digits, - _ .)",
            ));
        }
        ok.then(|| c.get_ref().clone())
    });
    let int = |p: &mut Vec<Problem>,
               v: &Option<Spanned<i64>>,
               range: std::ops::RangeInclusive<i64>,
               default: i64,
               key: &str| match v {
        None => default,
        Some(n) if range.contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            p.push(Problem::new(
                n.span(),
                format!(
                    "`{key}` must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            ));
            default
        }
    };
    let share = |p: &mut Vec<Problem>, v: &Option<Spanned<f64>>, default: f64, key: &str| match v {
        None => default,
        Some(x) if (0.0..=1.0).contains(x.get_ref()) => *x.get_ref(),
        Some(x) => {
            p.push(Problem::new(
                x.span(),
                format!("`{key}` is a share between 0.0 and 1.0"),
            ));
            default
        }
    };
    let retries = int(p, &rp.retries, 0..=10, 2, "retries") as u32;
    let retry_budget = share(p, &rp.retry_budget, 0.2, "retry_budget");
    let per_try_timeout = rp.per_try_timeout.as_ref().map(|_| {
        duration_or(
            p,
            &rp.per_try_timeout,
            Duration::from_secs(5),
            "`per_try_timeout`",
        )
    });
    let max_connections = int(p, &rp.max_connections, 0..=1_000_000, 0, "max_connections") as usize;
    let queue = int(p, &rp.queue, 0..=1_000_000, 1024, "queue") as usize;
    let queue_timeout = duration_or(
        p,
        &rp.queue_timeout,
        Duration::from_secs(5),
        "`queue_timeout`",
    );
    let slow_start = match &rp.slow_start {
        None => Duration::ZERO,
        Some(_) => duration_or(p, &rp.slow_start, Duration::ZERO, "`slow_start`"),
    };
    let health = rp.health.as_ref().map(|h| health(h, p));
    let outlier = outlier(rp.outlier.as_ref(), p);
    let protocol = match rp
        .protocol
        .as_ref()
        .map(|x| (x.get_ref().as_str(), x.span()))
    {
        None | Some(("http", _)) => ParentProtocol::Http,
        Some(("socks5", _)) => ParentProtocol::Socks5,
        Some((other, span)) => {
            p.push(Problem::new(
                span,
                format!("unknown parent protocol `{other}`; protocols are: http, socks5"),
            ));
            ParentProtocol::Http
        }
    };
    let credentials = match (&rp.username, &rp.password) {
        (Some(u), Some(pw)) => {
            if u.get_ref().contains(':') || u.get_ref().is_empty() {
                p.push(Problem::new(
                    u.span(),
                    "`username` must be non-empty and without `:`",
                ));
            }
            Some((u.get_ref().clone(), pw.get_ref().clone()))
        }
        (None, None) => None,
        (Some(s), None) | (None, Some(s)) => {
            p.push(Problem::new(
                s.span(),
                "`username` and `password` go together",
            ));
            None
        }
    };
    let send_proxy = match rp
        .send_proxy
        .as_ref()
        .map(|x| (x.get_ref().as_str(), x.span()))
    {
        None => None,
        Some(("v1", _)) => Some(ProxyProtocolVersion::V1),
        Some(("v2", _)) => Some(ProxyProtocolVersion::V2),
        Some((other, span)) => {
            p.push(Problem::new(
                span,
                format!("`send_proxy` is v1 or v2, not `{other}`"),
            ));
            None
        }
    };
    let http2 = rp.http2.unwrap_or(false);
    let tls = match rp.tls.as_ref().map(|t| *t.get_ref()) {
        Some(true) => super::tls::client_config(rp.tls_ca.as_ref(), base, http2, p).map(|config| {
            UpstreamTls {
                config,
                server_name: rp.tls_server_name.as_ref().map(|n| n.get_ref().clone()),
            }
        }),
        _ => {
            if let Some(x) = rp.tls_ca.as_ref().or(rp.tls_server_name.as_ref()) {
                p.push(Problem::new(
                    x.span(),
                    "`tls_ca` and `tls_server_name` need `tls = true`",
                ));
            }
            None
        }
    };
    (p.len() == before).then(|| PoolSpec {
        name: rp.name.get_ref().clone(),
        servers,
        balance,
        hash_on,
        sticky_cookie,
        retries,
        retry_budget,
        per_try_timeout,
        max_connections,
        queue,
        queue_timeout,
        slow_start,
        health,
        outlier,
        protocol,
        credentials,
        send_proxy,
        tls,
        http2,
    })
}

fn health(h: &RawHealth, p: &mut Vec<Problem>) -> HealthSpec {
    let kind = match h.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("http", _)) => HealthKind::Http,
        Some(("tcp", _)) => HealthKind::Tcp,
        Some((other, span)) => {
            p.push(Problem::new(
                span,
                format!("unknown health check type `{other}`; types are: http, tcp"),
            ));
            HealthKind::Http
        }
    };
    let path = match &h.path {
        None => "/".to_string(),
        Some(x)
            if x.get_ref().starts_with('/')
                && !x.get_ref().bytes().any(|b| b <= b' ' || b == 0x7f) =>
        {
            x.get_ref().clone()
        }
        Some(x) => {
            p.push(Problem::new(
                x.span(),
                "a health check `path` starts with / and has no spaces or controls",
            ));
            "/".into()
        }
    };
    let host = h.host.as_ref().and_then(|x| {
        normalize_domain(x.get_ref()).or_else(|| {
            p.push(Problem::new(
                x.span(),
                "a health check `host` is a host name",
            ));
            None
        })
    });
    let count = |p: &mut Vec<Problem>, v: &Option<Spanned<i64>>, default: u32, key: &str| match v {
        None => default,
        Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            p.push(Problem::new(
                n.span(),
                format!("`{key}` must be between 1 and 100"),
            ));
            default
        }
    };
    let expect = match &h.expect {
        None => PortSet::new(vec![(200, 399)]),
        Some(list) => PortSet::new(
            list.iter()
                .filter_map(|e| {
                    let parsed = match e.get_ref() {
                        RawPort::Number(n) => PortSet::parse_entry(&n.to_string()),
                        RawPort::Text(t) => PortSet::parse_entry(t),
                    };
                    match parsed {
                        Ok((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) => {
                            Some((a, b))
                        }
                        _ => {
                            p.push(Problem::new(
                                e.span(),
                                "`expect` holds statuses (100-599) or ranges like \"200-399\"",
                            ));
                            None
                        }
                    }
                })
                .collect(),
        ),
    };
    HealthSpec {
        kind,
        path,
        host,
        interval: duration_or(p, &h.interval, Duration::from_secs(2), "`interval`"),
        timeout: duration_or(p, &h.timeout, Duration::from_secs(1), "`timeout`"),
        rise: count(p, &h.rise, 2, "rise"),
        fall: count(p, &h.fall, 3, "fall"),
        expect,
    }
}

fn outlier(o: Option<&RawOutlier>, p: &mut Vec<Problem>) -> OutlierSpec {
    let default = OutlierSpec {
        consecutive_failures: 5,
        ejection_time: Duration::from_secs(30),
        max_ejected: 0.5,
    };
    let Some(o) = o else { return default };
    let consecutive_failures = match &o.consecutive_failures {
        None => default.consecutive_failures,
        Some(n) if (0..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            p.push(Problem::new(
                n.span(),
                "`consecutive_failures` must be between 0 (off) and 1000",
            ));
            default.consecutive_failures
        }
    };
    let max_ejected = match &o.max_ejected {
        None => default.max_ejected,
        Some(x) if (0.0..=1.0).contains(x.get_ref()) => *x.get_ref(),
        Some(x) => {
            p.push(Problem::new(
                x.span(),
                "`max_ejected` is a share between 0.0 and 1.0",
            ));
            default.max_ejected
        }
    };
    OutlierSpec {
        consecutive_failures,
        ejection_time: duration_or(
            p,
            &o.ejection_time,
            default.ejection_time,
            "`ejection_time`",
        ),
        max_ejected,
    }
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = if addr.starts_with('[') {
        let close = addr.find(']')?;
        (&addr[..=close], addr[close + 1..].strip_prefix(':')?)
    } else {
        addr.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then_some((host, port))
}

/// Routes, checked against the listeners and pools they name.
pub fn validate_routes(
    raw: &RawConfig,
    text: &str,
    reverse_listeners: &[String],
    pools: &[PoolSpec],
    p: &mut Vec<Problem>,
) -> Vec<RouteSpec> {
    let compression = std::sync::Arc::new(compression_settings(raw, p));
    let mut routes = Vec::new();
    for (i, r) in raw.route.iter().enumerate() {
        let before = p.len();
        if !reverse_listeners.iter().any(|l| l == r.listener.get_ref()) {
            let names: Vec<&str> = reverse_listeners.iter().map(String::as_str).collect();
            let hint = did_you_mean(r.listener.get_ref(), &names)
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            p.push(Problem::new(
                r.listener.span(),
                format!(
                    "no reverse listener is named `{}`{hint}",
                    r.listener.get_ref()
                ),
            ));
        }
        let redirect = route_redirect(r, p);
        match (&r.pool, &r.redirect) {
            (Some(pool), None) => check_route_pool(pool, pools, p),
            (None, Some(_)) => {}
            (Some(pool), Some(_)) => p.push(Problem::new(
                pool.span(),
                "a route takes `pool` (where requests go) or `redirect` (a URL to send clients to), not both",
            )),
            (None, None) => p.push(Problem::new(
                r.listener.span(),
                "a route needs `pool` (where requests go) or `redirect` (a URL to send clients to)",
            )),
        }
        let mut hosts = Vec::new();
        for h in &r.host {
            let text = h.get_ref().to_ascii_lowercase();
            let (wild, name) = match text.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            match normalize_domain(name) {
                Some(n) if wild => hosts.push(HostPattern::Wildcard(format!(".{n}"))),
                Some(n) => hosts.push(HostPattern::Exact(n)),
                None => p.push(Problem::new(
                    h.span(),
                    format!("`{}` is not a host name or *.domain", h.get_ref()),
                )),
            }
        }
        let path_prefix = r.path_prefix.as_ref().and_then(|x| {
            if x.get_ref().starts_with('/') {
                Some(x.get_ref().clone())
            } else {
                p.push(Problem::new(x.span(), "`path_prefix` starts with /"));
                None
            }
        });
        let path_regex = r.path_regex.as_ref().and_then(|x| {
            Patterns::parse(&[x.get_ref().clone()])
                .map_err(|e| p.push(Problem::new(x.span(), e)))
                .ok()
        });
        let headers = r
            .header
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.get_ref().clone()))
            .collect();
        let empty = BTreeMap::new();
        let rewrite = header_rules_from(
            p,
            RawHeaderRules {
                request_remove: &r.request_remove,
                request_set: &r.request_set,
                request_replace: &empty,
                response_remove: &r.response_remove,
                response_set: &r.response_set,
            },
        );
        if p.len() > before {
            continue;
        }
        let (line, _) = line_col(text, r.listener.span().start);
        routes.push(RouteSpec {
            label: format!("route #{} (line {line})", i + 1),
            listener: r.listener.get_ref().clone(),
            pool: r
                .pool
                .as_ref()
                .map(|x| x.get_ref().clone())
                .unwrap_or_default(),
            redirect,
            hosts,
            path_prefix,
            path_regex,
            headers,
            rewrite: Scrubber::new(Anonymity::Transparent, rewrite),
            compress: r
                .compress
                .as_ref()
                .is_some_and(|c| *c.get_ref())
                .then(|| compression.clone()),
        });
    }
    routes
}

/// A route's `pool` must name a pool of web servers.
fn check_route_pool(pool: &Spanned<String>, pools: &[PoolSpec], p: &mut Vec<Problem>) {
    let named = pools.iter().find(|x| x.name == *pool.get_ref());
    if named.is_some_and(|x| x.protocol == ParentProtocol::Socks5) {
        p.push(Problem::new(
            pool.span(),
            format!(
                "pool `{}` is a pool of SOCKS5 parent proxies (`protocol = \"socks5\"`), for a forward listener's `parent`; a route needs a pool of web servers",
                pool.get_ref()
            ),
        ));
    }
    if named.is_none() {
        let names: Vec<&str> = pools.iter().map(|x| x.name.as_str()).collect();
        let hint = did_you_mean(pool.get_ref(), &names)
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_default();
        p.push(Problem::new(
            pool.span(),
            format!("no [[pool]] is named `{}`{hint}", pool.get_ref()),
        ));
    }
}

/// `[compression]`: the media types, least length and gzip level of routes
/// with `compress = true`.
fn compression_settings(raw: &RawConfig, p: &mut Vec<Problem>) -> Compression {
    let mut settings = Compression::default();
    let Some(c) = &raw.compression else {
        return settings;
    };
    if let Some(types) = &c.types {
        settings.types = super::policy::media_types(types, "\"text/html\" or \"text/*\"", p);
    }
    if let Some(n) = &c.min_length {
        match super::units::size(n.get_ref()) {
            Ok(n) => settings.min_length = n as u64,
            Err(e) => p.push(Problem::new(n.span(), format!("`min_length`: {e}"))),
        }
    }
    if let Some(level) = &c.level {
        match u32::try_from(*level.get_ref()) {
            Ok(l @ 1..=9) => settings.level = l,
            _ => p.push(Problem::new(
                level.span(),
                "`level` is a gzip level from 1 (fastest) to 9 (smallest)",
            )),
        }
    }
    settings
}

/// A route's `redirect` and `redirect_status`.
fn route_redirect(r: &RawRoute, p: &mut Vec<Problem>) -> Option<RouteRedirect> {
    if let (Some(s), None) = (&r.redirect_status, &r.redirect) {
        p.push(Problem::new(
            s.span(),
            "`redirect_status` applies to a route with `redirect`",
        ));
    }
    let to = r.redirect.as_ref()?;
    // Nothing goes to a server, and the answer is Postern's own.
    let rewrites = [
        ("compress", r.compress.as_ref().map(|v| v.span())),
        (
            "request_set",
            r.request_set.values().next().map(|v| v.span()),
        ),
        ("request_remove", r.request_remove.first().map(|v| v.span())),
        (
            "response_set",
            r.response_set.values().next().map(|v| v.span()),
        ),
        (
            "response_remove",
            r.response_remove.first().map(|v| v.span()),
        ),
    ];
    for (key, span) in rewrites {
        if let Some(span) = span {
            p.push(Problem::new(
                span,
                format!("`{key}` does not apply to a route that redirects"),
            ));
        }
    }
    let status = match &r.redirect_status {
        None => 301,
        Some(s) if [301, 302, 303, 307, 308].contains(s.get_ref()) => *s.get_ref() as u16,
        Some(s) => {
            p.push(Problem::new(
                s.span(),
                "`redirect_status` is one of 301, 302, 303, 307, 308",
            ));
            return None;
        }
    };
    let text = to.get_ref();
    let starts_well = ["http://", "https://", "$scheme://", "/"]
        .iter()
        .any(|start| text.starts_with(start));
    if !starts_well || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.push(Problem::new(
            to.span(),
            "`redirect` is a URL (http://, https://, $scheme:// or a path) without spaces",
        ));
        return None;
    }
    if let Some(name) = RouteRedirect::unknown_variable(text) {
        let hint = did_you_mean(&name, REDIRECT_VARIABLES)
            .map(|m| format!(" (did you mean `${m}`?)"))
            .unwrap_or_default();
        p.push(Problem::new(
            to.span(),
            format!(
                "unknown variable `${name}` in `redirect`{hint}; variables are $scheme, $host, $request_uri"
            ),
        ));
        return None;
    }
    Some(RouteRedirect {
        to: text.clone(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("127.0.0.1:80"), Some(("127.0.0.1", 80)));
        assert_eq!(split_host_port("[::1]:8080"), Some(("[::1]", 8080)));
        assert_eq!(split_host_port("app:1"), Some(("app", 1)));
        for bad in ["app", "app:0", ":80", "[::1]", "[::1]80", "a:99999"] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }
}
