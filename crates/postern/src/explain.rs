//! `postern explain`: what the proxy would do with one request, computed by the
//! code the proxy runs (target planning, the guard, the SSRF check, the
//! upstream head builder), without sending anything.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::config::Config;
use crate::egress::{Destination, Resolver};
use crate::error::{ErrorKind, ProxyError, reason_phrase};
use crate::forward::http::{Outbound, upstream_head};
use crate::forward::plan::Plan;
use crate::guard::{Admission, Guard};
use crate::http1::RequestHead;
use crate::http1::fields::{connection_options, request_body};
use crate::http1::head::{HeadLimits, parse_request};

pub struct Question {
    pub client: IpAddr,
    pub user: Option<String>,
    pub listener: Option<String>,
    pub method: String,
    pub headers: Vec<String>,
    /// An absolute URL, or `host:port` for a tunnel.
    pub target: String,
}

/// The report and whether the request would pass.
pub async fn explain(cfg: &Config, q: &Question) -> Result<(String, bool), String> {
    let listener = match &q.listener {
        Some(name) => cfg
            .listeners
            .iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| format!("no listener is named `{name}`"))?,
        None => cfg.listeners.first().ok_or("no listener is configured")?,
    };
    // Forward proxying is what is explained; a reverse listener's routes
    // and pools would need a different report, and a wrong one is worse.
    if listener.mode != crate::config::Mode::Forward {
        return Err(format!(
            "listener `{}` is a {} listener; explain answers for forward listeners",
            listener.name,
            listener.mode.as_str()
        ));
    }
    let tunnel = !q.target.contains("://");
    let method = if tunnel {
        "CONNECT".to_string()
    } else {
        q.method.to_ascii_uppercase()
    };
    let mut text = format!("{method} {} HTTP/1.1\r\n", q.target);
    let has_host = q.headers.iter().any(|h| {
        h.split(':')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("host"))
    });
    if !has_host {
        let authority = if tunnel {
            q.target.as_str()
        } else {
            let rest = q.target.split_once("://").map_or("", |(_, r)| r);
            rest.split(['/', '?']).next().unwrap_or(rest)
        };
        let _ = write!(text, "Host: {authority}\r\n");
    }
    for h in &q.headers {
        let _ = write!(text, "{h}\r\n");
    }
    text.push_str("\r\n");
    let limits = HeadLimits {
        max_line: cfg.limits.max_request_line,
        max_size: cfg.limits.max_header_size,
        max_fields: cfg.limits.max_headers,
    };
    let (n, parts) = match parse_request(text.as_bytes(), limits) {
        Ok(Some(parsed)) => parsed,
        Ok(None) | Err(_) => return Err(format!("not a valid request:\n{text}")),
    };
    let head = RequestHead::new(Bytes::from(text.clone()).slice(..n), parts);

    let mut out = format!(
        "request: {method} {} from {} on listener `{}`{}\n",
        q.target,
        q.client,
        listener.name,
        q.user
            .as_deref()
            .map(|u| format!(" as user `{u}`"))
            .unwrap_or_default()
    );
    let resolver = Resolver::from_system();
    resolver.set_hosts(cfg.egress.hosts.clone());
    match decide(cfg, &resolver, &head, q, &listener.name, listener.bind).await {
        Ok((plan, admission, reached)) => {
            let _ = writeln!(out, "decision: allow, by {}", admission.by);
            if let Some(r) = reached {
                let _ = writeln!(out, "destination: {r}");
            }
            match &plan {
                Plan::Http(target) => {
                    let scrubber = cfg.scrubber(&listener.name);
                    let conn = connection_options(&head);
                    let body = request_body(&head).map_err(|m| m.to_string())?;
                    let bytes = upstream_head(
                        cfg,
                        &Outbound::forwarded(cfg, (&head, body, &conn), &admission, &scrubber),
                        target,
                        false,
                        q.client,
                    );
                    let _ = writeln!(
                        out,
                        "upstream request head (anonymity `{}`):",
                        scrubber.level.as_str()
                    );
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        if !line.is_empty() {
                            let _ = writeln!(out, "  {line}");
                        }
                    }
                }
                Plan::Tunnel { .. } => {
                    out.push_str(
                        "tunnel: 200 Connection established, then bytes relayed as sent\n",
                    );
                }
                Plan::Local(_) => out.push_str("answered by the proxy itself\n"),
                Plan::Ftp(t) => {
                    let _ = writeln!(out, "fetched with FTP as user `{}`", t.user);
                }
            }
            Ok((out, true))
        }
        Err(e) => {
            let status = e.status();
            let _ = writeln!(
                out,
                "decision: refuse, {status} {} (Proxy-Status error={})",
                reason_phrase(status),
                e.kind.proxy_status()
            );
            let _ = writeln!(out, "reason: {}", e.detail);
            Ok((out, false))
        }
    }
}

/// The proxy's own sequence: plan, admit, then the egress address check.
async fn decide<'c>(
    cfg: &'c Config,
    resolver: &Resolver,
    head: &RequestHead,
    q: &Question,
    listener: &str,
    local: SocketAddr,
) -> Result<(Plan, Admission<'c>, Option<String>), ProxyError> {
    let plan = Plan::new(cfg, head, local)?;
    let host = plan.rule_host();
    let url = plan.rule_url(head, cfg.rules.uses_url());
    let mut subject = plan.subject(head, SocketAddr::new(q.client, 0), listener, &host, &url);
    subject.assume_user = q.user.as_deref();
    let guard = Guard::default();
    let admission = guard.admit(cfg, resolver, &subject).await?;
    let (dest, port) = match &plan {
        Plan::Local(_) => return Ok((plan, admission, None)),
        Plan::Tunnel { dest, port } => (dest.clone(), *port),
        Plan::Http(t) => (t.dest.clone(), t.port),
        Plan::Ftp(t) => (t.dest.clone(), t.port),
    };
    let ips = match (&admission.pinned, &dest) {
        (Some(ips), _) => ips.clone(),
        (None, Destination::Ip(ip)) => vec![*ip],
        (None, Destination::Name(name)) => resolver
            .resolve(name)
            .await
            .map_err(|e| crate::egress::connect::resolve_error(name, e))?,
    };
    let allowed = cfg.address_permit().filter(&host, &ips)?;
    let list: Vec<String> = allowed
        .iter()
        .map(|ip| format!("{ip} ({})", postern_policy::classify(*ip).as_str()))
        .collect();
    let reached = format!("{host}:{port} -> {}", list.join(", "));
    if allowed.is_empty() {
        return Err(ProxyError::new(ErrorKind::DestinationProhibited, reached));
    }
    Ok((plan, admission, Some(reached)))
}
