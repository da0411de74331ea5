//! Raw configuration → typed `Config`, collecting every problem rather than
//! stopping at the first.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use postern_policy::Cidr;
use std::sync::Arc;

use postern_policy::headers::{Anonymity, Scrubber};
use postern_policy::matchers::PortSet;
use toml::Spanned;

use super::diag::{Problem, did_you_mean};
use super::raw::{RawConfig, RawDuration, RawH2c, RawPort, RawSize, RawVia};
use super::units;
use super::*;

const MODES: &[&str] = &["forward", "socks5", "ftp", "reverse", "admin"];

/// `h2c = true | false | "only"`; with TLS, ALPN chooses HTTP/2 instead.
fn h2c_mode(p: &mut Vec<Problem>, raw: Option<&Spanned<RawH2c>>, tls: bool) -> H2c {
    let Some(raw) = raw else {
        return H2c::Off;
    };
    let mode = match raw.get_ref() {
        RawH2c::On(false) => H2c::Off,
        RawH2c::On(true) => H2c::Also,
        RawH2c::Text(t) if t == "only" => H2c::Only,
        RawH2c::Text(_) => {
            p.push(Problem::new(
                raw.span(),
                "`h2c` must be true, false or \"only\"",
            ));
            return H2c::Off;
        }
    };
    if tls && mode == H2c::Only {
        p.push(Problem::new(
            raw.span(),
            "`h2c = \"only\"` is for listeners without `tls` (with TLS, ALPN chooses HTTP/2)",
        ));
    }
    mode
}

pub fn validate(raw: RawConfig, path: Option<&Path>, text: &str) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    let p = &mut problems;

    let workers = raw.workers.as_ref().and_then(|w| {
        let n = *w.get_ref();
        if (1..=1024).contains(&n) {
            Some(n as usize)
        } else {
            p.push(Problem::new(
                w.span(),
                "`workers` must be between 1 and 1024",
            ));
            None
        }
    });

    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    // (address, listener name) of every bind with a fixed port.
    let mut binds: Vec<(SocketAddr, String)> = Vec::new();
    for (i, l) in raw.listener.iter().enumerate() {
        let name = match &l.name {
            Some(n) if n.get_ref().is_empty() => {
                p.push(Problem::new(n.span(), "listener `name` must not be empty"));
                continue;
            }
            Some(n) => n.get_ref().clone(),
            None => format!("listener{}", i + 1),
        };
        if !names.insert(name.clone()) {
            let span = l.name.as_ref().map(|n| n.span()).unwrap_or(l.bind.span());
            p.push(Problem::new(
                span,
                format!("duplicate listener name `{name}`"),
            ));
        }
        let bind = match parse_bind(l.bind.get_ref()) {
            Ok(addr) => Some(addr),
            Err(msg) => {
                p.push(Problem::new(l.bind.span(), msg));
                None
            }
        };
        if let Some(bind) = bind.filter(|b| b.port() != 0) {
            if let Some(problem) = bind_clash(bind, &binds) {
                p.push(Problem::new(l.bind.span(), problem));
            }
            binds.push((bind, name.clone()));
        }
        let mode = match l.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("forward", _)) => Some(Mode::Forward),
            Some(("reverse", _)) => Some(Mode::Reverse),
            Some(("socks5", _)) => Some(Mode::Socks5),
            Some(("ftp", _)) => Some(Mode::Ftp),
            Some(("admin", _)) => Some(Mode::Admin),
            Some((other, span)) => {
                let hint = did_you_mean(other, MODES)
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                p.push(Problem::new(
                    span,
                    format!(
                        "unknown listener mode `{other}`{hint}; modes are: {}",
                        MODES.join(", ")
                    ),
                ));
                None
            }
        };
        let max_connections = int_in(
            p,
            &l.max_connections,
            1..=10_000_000,
            10_000,
            "max_connections",
        );
        let anonymity = match &l.anonymity {
            None => Anonymity::default(),
            Some(a) => Anonymity::parse(a.get_ref()).unwrap_or_else(|| {
                p.push(Problem::new(
                    a.span(),
                    format!(
                        "unknown anonymity level `{}`; levels are: transparent, anonymous, elite",
                        a.get_ref()
                    ),
                ));
                Anonymity::default()
            }),
        };
        let trusted_proxies = cidrs(p, l.trusted_proxies.as_ref(), false);
        let request_id = l.request_id.as_ref().and_then(|field| {
            let name = field.get_ref();
            if mode != Some(Mode::Reverse) {
                p.push(Problem::new(
                    field.span(),
                    "`request_id` applies to reverse listeners",
                ));
                None
            } else if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                || managed_field(name)
            {
                p.push(Problem::new(
                    field.span(),
                    "`request_id` is a header field name of its own, as \"X-Request-ID\" (not one the proxy manages: Host, framing, hop-by-hop, Via, Forwarded, X-Forwarded-*)",
                ));
                None
            } else {
                Some(name.clone())
            }
        });
        if let Some(parent) = &l.parent {
            if mode != Some(Mode::Forward) {
                p.push(Problem::new(
                    parent.span(),
                    "`parent` applies to forward listeners",
                ));
            } else if !raw
                .pool
                .iter()
                .any(|x| x.name.get_ref() == parent.get_ref())
            {
                p.push(Problem::new(
                    parent.span(),
                    format!("no [[pool]] is named `{}`", parent.get_ref()),
                ));
            }
        }
        let proxy_protocol = l
            .proxy_protocol
            .unwrap_or(false)
            .then(|| cidrs(p, l.proxy_protocol_from.as_ref(), true));
        let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| super::tls::server_config(t, base, p));
        let admin_users = l.admin_htpasswd.as_ref().and_then(|file| {
            if mode != Some(Mode::Admin) {
                p.push(Problem::new(
                    file.span(),
                    "`admin_htpasswd` applies to admin listeners",
                ));
                return None;
            }
            super::policy::read_parsed(p, file, base, "htpasswd file", Htpasswd::parse)
                .map(Arc::new)
        });
        let (Some(bind), Some(mode)) = (bind, mode) else {
            continue;
        };
        listeners.push(ListenerConfig {
            name,
            bind,
            mode,
            max_connections,
            anonymity,
            trusted_proxies,
            forwarded_headers: l.forwarded_headers.unwrap_or(true),
            request_id,
            parent: l.parent.as_ref().map(|x| x.get_ref().clone()),
            proxy_protocol,
            tls,
            h2c: h2c_mode(p, l.h2c.as_ref(), l.tls.is_some()),
            socks: l.socks.unwrap_or(false),
            admin_from: cidrs(p, l.admin_from.as_ref(), true),
            admin_users,
        });
    }
    if raw.listener.is_empty() {
        listeners.push(ListenerConfig {
            name: "proxy".into(),
            bind: DEFAULT_BIND.parse().expect("valid default address"),
            mode: Mode::Forward,
            max_connections: 10_000,
            anonymity: Anonymity::default(),
            trusted_proxies: Vec::new(),
            forwarded_headers: true,
            request_id: None,
            parent: None,
            proxy_protocol: None,
            tls: None,
            h2c: H2c::Off,
            socks: false,
            admin_from: Vec::new(),
            admin_users: None,
        });
    }

    let connect_ports = match &raw.egress.connect_ports {
        None => vec![443],
        Some(ports) => ports
            .iter()
            .filter_map(|port| match u16::try_from(*port.get_ref()) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    p.push(Problem::new(
                        port.span(),
                        format!("`{}` is not a TCP port (1-65535)", port.get_ref()),
                    ));
                    None
                }
            })
            .collect(),
    };
    let http_ports = match &raw.egress.http_ports {
        None => PortSet::squid_safe_ports(),
        Some(ports) => PortSet::new(
            ports
                .iter()
                .filter_map(|port| {
                    let parsed = match port.get_ref() {
                        RawPort::Number(n) => PortSet::parse_entry(&n.to_string()),
                        RawPort::Text(t) => PortSet::parse_entry(t),
                    };
                    parsed
                        .map_err(|e| p.push(Problem::new(port.span(), e)))
                        .ok()
                })
                .collect(),
        ),
    };
    let allow_ips = cidrs(p, raw.egress.allow_ips.as_ref(), false);
    let bind_ips = raw
        .egress
        .bind
        .iter()
        .flatten()
        .filter_map(|s| {
            s.get_ref()
                .parse::<std::net::IpAddr>()
                .map_err(|_| {
                    p.push(Problem::new(
                        s.span(),
                        format!("`{}` is not an IP address", s.get_ref()),
                    ))
                })
                .ok()
        })
        .collect();
    let udp_advertise = raw.egress.udp_advertise.as_ref().and_then(|s| {
        s.get_ref()
            .parse::<std::net::IpAddr>()
            .map_err(|_| {
                p.push(Problem::new(
                    s.span(),
                    format!("`{}` is not an IP address", s.get_ref()),
                ))
            })
            .ok()
    });
    let mut hosts = std::collections::HashMap::new();
    if let Some(map) = &raw.egress.hosts {
        for (name, addrs) in map.get_ref() {
            let texts: Vec<&String> = match addrs {
                super::raw::RawAddresses::One(a) => vec![a],
                super::raw::RawAddresses::Many(list) => list.iter().collect(),
            };
            let ips: Vec<std::net::IpAddr> = texts
                .iter()
                .filter_map(|t| {
                    t.parse()
                        .map_err(|_| {
                            p.push(Problem::new(
                                map.span(),
                                format!("egress.hosts: `{t}` (for `{name}`) is not an IP address"),
                            ))
                        })
                        .ok()
                })
                .collect();
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let valid = !key.is_empty()
                && key.len() <= 253
                && key.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                });
            if !valid {
                p.push(Problem::new(
                    map.span(),
                    format!("egress.hosts: `{name}` is not a host name"),
                ));
            } else if ips.is_empty() && texts.is_empty() {
                p.push(Problem::new(
                    map.span(),
                    format!("egress.hosts: `{name}` has no address"),
                ));
            } else {
                hosts.insert(key, ips);
            }
        }
    }
    let egress = EgressConfig {
        hosts,
        udp_advertise,
        http_ports,
        allow_ips,
        bind: bind_ips,
        allow_private_destinations: raw.egress.allow_private_destinations.unwrap_or(false),
        connect_ports,
        pool_max_idle_per_host: int_in(
            p,
            &raw.egress.pool_max_idle_per_host,
            0..=100_000,
            256,
            "pool_max_idle_per_host",
        ),
        pool_max_idle: int_in(
            p,
            &raw.egress.pool_max_idle,
            0..=1_000_000,
            4096,
            "pool_max_idle",
        ),
    };

    let error_page = raw.http.error_page.as_ref().and_then(|file| {
        let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
        let page = base.join(file.get_ref());
        crate::error::PageTemplate::load(&page)
            .map_err(|why| p.push(Problem::new(file.span(), why)))
            .ok()
    });
    let via = match raw.http.via.as_ref().map(|v| (v.get_ref(), v.span())) {
        None | Some((RawVia::On(true), _)) => Some("postern".to_string()),
        Some((RawVia::On(false), _)) => None,
        Some((RawVia::Pseudonym(name), span)) => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b',' && b != b'(' && b != b')')
            {
                p.push(Problem::new(
                    span,
                    "`via` must be a single token (letters, digits, `.`, `-`, ...) or false",
                ));
                None
            } else {
                Some(name.clone())
            }
        }
    };

    let limits = Limits {
        max_request_line: size_in(
            p,
            &raw.limits.max_request_line,
            256..=1 << 20,
            8 << 10,
            "max_request_line",
        ),
        max_header_size: size_in(
            p,
            &raw.limits.max_header_size,
            1 << 10..=16 << 20,
            64 << 10,
            "max_header_size",
        ),
        max_headers: int_in(p, &raw.limits.max_headers, 1..=10_000, 100, "max_headers"),
        client_requests: rate(p, &raw.limits.client_requests, "client_requests"),
        user_requests: rate(p, &raw.limits.user_requests, "user_requests"),
        client_connections: raw.limits.client_connections.as_ref().map(|_| {
            int_in(
                p,
                &raw.limits.client_connections,
                1..=10_000_000,
                0,
                "client_connections",
            )
        }),
        client_bandwidth: bandwidth(p, &raw.limits.client_bandwidth, "client_bandwidth"),
        user_bandwidth: bandwidth(p, &raw.limits.user_bandwidth, "user_bandwidth"),
    };

    let t = &raw.timeouts;
    let timeouts = Timeouts {
        client_header: dur(p, &t.client_header, 30, "client_header"),
        client_idle: dur(p, &t.client_idle, 60, "client_idle"),
        connect: dur(p, &t.connect, 10, "connect"),
        first_byte: dur(p, &t.first_byte, 60, "first_byte"),
        io: dur(p, &t.io, 300, "io"),
        tunnel_idle: dur(p, &t.tunnel_idle, 600, "tunnel_idle"),
        udp_idle: dur(p, &t.udp_idle, 120, "udp_idle"),
        pool_idle: dur(p, &t.pool_idle, 60, "pool_idle"),
        drain: dur(p, &t.drain, 30, "drain"),
    };

    let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
    let access = match raw.log.access.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("stdout") => AccessLogTarget::Stdout,
        Some("off") => AccessLogTarget::Off,
        Some("") => {
            let span = raw.log.access.as_ref().map(|a| a.span()).unwrap_or(0..0);
            p.push(Problem::new(
                span,
                "`access` must be stdout, off or a file path",
            ));
            AccessLogTarget::Off
        }
        Some(value) => match crate::observe::syslog::parse_destination(value) {
            Some(destination) => {
                let span = raw.log.access.as_ref().map(|a| a.span()).unwrap_or(0..0);
                syslog_target(p, destination, &raw.log.syslog_facility, span)
            }
            None => {
                let path = base.join(value);
                if let (Some(problem), Some(a)) = (access_log_problem(&path), &raw.log.access) {
                    p.push(Problem::new(a.span(), problem));
                }
                AccessLogTarget::File(path)
            }
        },
    };
    let to_syslog = raw
        .log
        .access
        .as_ref()
        .is_some_and(|a| crate::observe::syslog::parse_destination(a.get_ref()).is_some());
    if let Some(f) = &raw.log.syslog_facility
        && !to_syslog
    {
        p.push(Problem::new(
            f.span(),
            "`syslog_facility` applies to access = \"syslog...\"",
        ));
    }
    let format = match raw
        .log
        .format
        .as_ref()
        .map(|f| (f.get_ref().as_str(), f.span()))
    {
        None | Some(("squid", _)) => LogFormat::Squid,
        Some(("combined", _)) => LogFormat::Combined,
        Some(("json", _)) => LogFormat::Json,
        Some(("custom", span)) => match &raw.log.template {
            None => {
                p.push(Problem::new(
                    span,
                    "format = \"custom\" needs a `template` (for example \"$remote_addr $status $request_uri\")",
                ));
                LogFormat::Squid
            }
            Some(t) => match crate::observe::log_template::Template::parse(t.get_ref()) {
                Ok(template) => LogFormat::Custom(template),
                Err(e) => {
                    let names = crate::observe::log_template::Template::names();
                    let hint = e
                        .unknown
                        .as_deref()
                        .and_then(|u| super::diag::did_you_mean(u, &names))
                        .map(|n| format!(" (did you mean `${n}`?)"))
                        .unwrap_or_default();
                    p.push(Problem::new(
                        t.span(),
                        format!("log template: {}{hint}", e.message),
                    ));
                    LogFormat::Squid
                }
            },
        },
        Some((other, span)) => {
            p.push(Problem::new(
                span,
                format!("unknown log format `{other}`; formats are: squid, combined, json, custom"),
            ));
            LogFormat::Squid
        }
    };
    // (A custom format whose template was refused has said so already.)
    if let Some(t) = &raw.log.template
        && !matches!(
            raw.log.format.as_ref().map(|f| f.get_ref().as_str()),
            Some("custom")
        )
    {
        p.push(Problem::new(
            t.span(),
            "`template` applies to format = \"custom\"",
        ));
    }

    let cache = raw.cache.as_ref().map(|c| CacheConfig {
        memory: size_in(p, &c.memory, 1 << 20..=1 << 40, 256 << 20, "memory"),
        max_object_size: size_in(
            p,
            &c.max_object_size,
            1..=1 << 34,
            8 << 20,
            "max_object_size",
        ),
        purge_from: cidrs(p, c.purge_from.as_ref(), true),
        stale_if_unreachable: match &c.stale_if_unreachable {
            None => Duration::from_secs(86_400),
            Some(v) => units::duration(v.get_ref()).unwrap_or_else(|e| {
                p.push(Problem::new(
                    v.span(),
                    format!("`stale_if_unreachable`: {e}"),
                ));
                Duration::ZERO
            }),
        },
        disk: c.disk.as_ref().map(|d| DiskCacheConfig {
            path: base.join(d.path.get_ref()),
            size: size_in(p, &Some(d.size.clone()), 1 << 20..=1 << 50, 1 << 30, "size") as u64,
            max_object_size: size_in(
                p,
                &d.max_object_size,
                1..=1 << 40,
                256 << 20,
                "max_object_size",
            ),
        }),
    });
    let listener_names: Vec<String> = listeners.iter().map(|l| l.name.clone()).collect();
    let pools = super::pools::validate_pools(&raw, base, p);
    let reverse_names: Vec<String> = listeners
        .iter()
        .filter(|l| l.mode == Mode::Reverse)
        .map(|l| l.name.clone())
        .collect();
    let routes = super::pools::validate_routes(&raw, text, &reverse_names, &pools, p);
    let policy = super::policy::validate_policy(&raw, base, text, &listener_names, p);
    if (limits.user_requests.is_some() || limits.user_bandwidth.is_some())
        && policy.auth.is_none()
        && raw.auth.is_none()
    {
        let span = raw
            .limits
            .user_requests
            .as_ref()
            .map(|s| s.span())
            .or(raw.limits.user_bandwidth.as_ref().map(|s| s.span()))
            .unwrap_or(0..0);
        p.push(Problem::new(
            span,
            "per-user limits need an [auth] section (htpasswd or program)",
        ));
    }

    if !problems.is_empty() {
        problems.sort_by_key(|p| p.span.start);
        return Err(problems);
    }
    Ok(Config {
        source: path.map(Path::to_path_buf),
        workers,
        egress,
        http: HttpConfig { via, error_page },
        limits,
        timeouts,
        log: LogConfig { access, format },
        rules: policy.rules,
        blocklists: policy.blocklists,
        auth: policy.auth,
        content: policy.content,
        utc_offset_minutes: policy.utc_offset_minutes,
        warnings: policy.warnings,
        scrubbers: listeners
            .iter()
            .map(|l| {
                let s = Scrubber::new(l.anonymity, policy.headers.clone());
                (l.name.clone(), Arc::new(s))
            })
            .collect(),
        listeners,
        cache,
        pools: pools.into_iter().map(Arc::new).collect(),
        routes: routes.into_iter().map(Arc::new).collect(),
    })
}

/// A list of CIDR blocks; `None` (the key absent) gives loopback when
/// `loopback_default`, else nothing.
fn cidrs(
    p: &mut Vec<Problem>,
    list: Option<&Vec<Spanned<String>>>,
    loopback_default: bool,
) -> Vec<Cidr> {
    match list {
        None if loopback_default => vec![
            "127.0.0.0/8".parse().expect("valid CIDR"),
            "::1".parse().expect("valid CIDR"),
        ],
        None => Vec::new(),
        Some(list) => list
            .iter()
            .filter_map(|s| {
                s.get_ref()
                    .parse::<Cidr>()
                    .map_err(|e| p.push(Problem::new(s.span(), e.to_string())))
                    .ok()
            })
            .collect(),
    }
}

fn rate(p: &mut Vec<Problem>, v: &Option<Spanned<String>>, key: &str) -> Option<Rate> {
    let v = v.as_ref()?;
    units::rate(v.get_ref())
        .map_err(|e| p.push(Problem::new(v.span(), format!("`{key}`: {e}"))))
        .ok()
}

fn bandwidth(p: &mut Vec<Problem>, v: &Option<Spanned<RawSize>>, key: &str) -> Option<u64> {
    let v = v.as_ref()?;
    units::bandwidth(v.get_ref())
        .map_err(|e| p.push(Problem::new(v.span(), format!("`{key}`: {e}"))))
        .ok()
}

/// Why `bind` cannot be bound beside the binds before it: the same address
/// and port, or the same port where one of the two is the unspecified
/// address of their family (0.0.0.0, or [::], which is bound IPv6-only).
fn bind_clash(bind: SocketAddr, before: &[(SocketAddr, String)]) -> Option<String> {
    let (other, name) = before.iter().find(|(other, _)| {
        other.port() == bind.port()
            && other.is_ipv4() == bind.is_ipv4()
            && (other.ip() == bind.ip()
                || other.ip().is_unspecified()
                || bind.ip().is_unspecified())
    })?;
    Some(if *other == bind {
        format!("two listeners bind {bind}")
    } else {
        let (wildcard, family) = if bind.is_ipv4() {
            ("0.0.0.0", "IPv4")
        } else {
            ("[::]", "IPv6")
        };
        format!(
            "`{bind}` overlaps listener `{name}` on {other}: {wildcard} takes port {} on every {family} address, so only one of them can bind",
            bind.port(),
        )
    })
}

/// Why the access log at `path` could not be opened as the running process
/// opens it (for appending, created if missing), found without creating
/// anything.
/// `access = "syslog..."`: the destination (a local socket must exist) and
/// the facility.
fn syslog_target(
    p: &mut Vec<Problem>,
    destination: Result<crate::observe::syslog::SyslogDestination, String>,
    facility: &Option<Spanned<String>>,
    span: std::ops::Range<usize>,
) -> AccessLogTarget {
    use crate::observe::syslog::{FACILITIES, SyslogDestination, SyslogTarget};
    use std::os::unix::fs::FileTypeExt;
    let destination = match destination {
        Ok(d) => d,
        Err(why) => {
            p.push(Problem::new(span, why));
            return AccessLogTarget::Off;
        }
    };
    if let SyslogDestination::Unix(path) = &destination {
        let problem = match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_socket() => None,
            Ok(_) => Some(format!("{} is not a socket", path.display())),
            Err(e) => Some(format!("cannot reach syslog at {}: {e}", path.display())),
        };
        if let Some(problem) = problem {
            p.push(Problem::new(span.clone(), problem));
        }
    }
    let facility = match facility {
        None => 16,
        Some(f) => match FACILITIES.iter().find(|(name, _)| name == f.get_ref()) {
            Some((_, n)) => *n,
            None => {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                let hint = super::diag::did_you_mean(f.get_ref(), &names)
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                p.push(Problem::new(
                    f.span(),
                    format!(
                        "unknown syslog facility `{}`{hint}; facilities are: {}",
                        f.get_ref(),
                        names.join(", ")
                    ),
                ));
                16
            }
        },
    };
    AccessLogTarget::Syslog(SyslogTarget {
        destination,
        facility,
    })
}

fn access_log_problem(path: &Path) -> Option<String> {
    use std::io::ErrorKind::NotFound;
    use std::os::unix::fs::OpenOptionsExt;

    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Some(format!("the access log {shown} is a directory")),
        // O_NONBLOCK: opening a FIFO that has no reader yet must not hang.
        Ok(_) => match std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(_) => None,
            // A FIFO without a reader: the process waits for one at start.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
            Err(e) => Some(format!(
                "cannot open the access log {shown} for appending: {e}"
            )),
        },
        Err(e) if e.kind() == NotFound => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let why = match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => may_create_in(dir).err()?.to_string(),
                Ok(_) => format!("{} is not a directory", dir.display()),
                Err(e) if e.kind() == NotFound => {
                    format!("the directory {} does not exist", dir.display())
                }
                Err(e) => format!("{}: {e}", dir.display()),
            };
            Some(format!("cannot create the access log {shown}: {why}"))
        }
        Err(e) => Some(format!("cannot open the access log {shown}: {e}")),
    }
}

/// Whether a file may be created in `dir`: an unnamed file (O_TMPFILE)
/// needs the same rights as a named one and is gone once closed. File
/// systems without unnamed files tell nothing; the start will.
#[cfg(target_os = "linux")]
fn may_create_in(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

#[cfg(not(target_os = "linux"))]
fn may_create_in(_: &Path) -> std::io::Result<()> {
    Ok(())
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        if text.contains(':') && !text.starts_with('[') && text.matches(':').count() > 1 {
            format!(
                "`{text}` is not an address: write IPv6 addresses in brackets, e.g. \"[::1]:3128\""
            )
        } else {
            format!("`{text}` is not an address:port (e.g. \"127.0.0.1:3128\" or \"[::1]:3128\")")
        }
    })
}

fn int_in(
    p: &mut Vec<Problem>,
    v: &Option<Spanned<i64>>,
    range: std::ops::RangeInclusive<i64>,
    default: usize,
    key: &str,
) -> usize {
    match v {
        None => default,
        Some(n) if range.contains(n.get_ref()) => *n.get_ref() as usize,
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
    }
}

fn size_in(
    p: &mut Vec<Problem>,
    v: &Option<Spanned<RawSize>>,
    range: std::ops::RangeInclusive<usize>,
    default: usize,
    key: &str,
) -> usize {
    let Some(v) = v else { return default };
    match units::size(v.get_ref()) {
        Ok(n) if range.contains(&n) => n,
        Ok(_) => {
            p.push(Problem::new(
                v.span(),
                format!(
                    "`{key}` must be between {} and {} bytes",
                    range.start(),
                    range.end()
                ),
            ));
            default
        }
        Err(msg) => {
            p.push(Problem::new(v.span(), format!("`{key}`: {msg}")));
            default
        }
    }
}

fn dur(
    p: &mut Vec<Problem>,
    v: &Option<Spanned<RawDuration>>,
    default_secs: u64,
    key: &str,
) -> Duration {
    duration_or(
        p,
        v,
        Duration::from_secs(default_secs),
        &format!("timeout `{key}`"),
    )
}

/// A positive duration, or the default (with a problem naming `what`).
pub fn duration_or(
    p: &mut Vec<Problem>,
    v: &Option<Spanned<RawDuration>>,
    default: Duration,
    what: &str,
) -> Duration {
    let Some(v) = v else { return default };
    match units::duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            p.push(Problem::new(
                v.span(),
                format!("{what} must be more than zero"),
            ));
            default
        }
        Err(msg) => {
            p.push(Problem::new(v.span(), format!("{what}: {msg}")));
            default
        }
    }
}

/// A field the proxy writes itself, which `request_id` cannot name (`_`
/// read as `-`, as servers may).
fn managed_field(name: &str) -> bool {
    const MANAGED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "forwarded",
        "via",
    ];
    let folded: String = name
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    MANAGED.contains(&folded.as_str())
        || folded.starts_with("proxy-")
        || folded.starts_with("x-forwarded-")
}
