//! The admin listener (`mode = "admin"`, loopback clients by default):
//! Prometheus `/metrics`, `/healthz` and `/readyz`, a JSON API (status,
//! server states, purge, reload) and the live dashboard at `/`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::app::Shared;
use crate::config::AuthConfig;
use crate::guard::auth::{Credentials, challenge};
use crate::observe::metrics::{ACTIVE_TUNNELS, label};
use crate::reverse::spec::AdminState;

const DASHBOARD: &str = include_str!("dashboard.html");

pub async fn serve(shared: Arc<Shared>, listener: Arc<str>, stream: TcpStream, peer: SocketAddr) {
    let cfg = shared.config();
    // This listener's own `admin_from`, not any admin listener's.
    let Some(own) = cfg
        .listeners
        .iter()
        .find(|l| *l.name == *listener && l.mode == crate::config::Mode::Admin)
    else {
        return;
    };
    if !own.admin_from.iter().any(|c| c.contains(peer.ip())) {
        return;
    }
    // The users this connection was accepted under, for when a reload
    // removes or renames the listener while the connection is open.
    let accepted_with = own.admin_users.clone();
    let shared_shutdown = shared.shutdown_signal();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let listener = listener.clone();
        let accepted_with = accepted_with.clone();
        async move {
            if let Some(refused) = login(&shared, (&listener, accepted_with), peer, &req).await {
                return Ok::<_, Infallible>(refused);
            }
            if let Some(refused) = cross_site(&req) {
                return Ok(refused);
            }
            Ok(route(&shared, req).await)
        }
    });
    // Idle keep-alive connections (an open dashboard between polls) are
    // closed after `client_idle`, and at once on shutdown, so they never
    // hold the drain.
    let mut shutdown = shared_shutdown;
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(cfg.timeouts.client_idle)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = crate::app::stopped(&mut shutdown) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Basic authentication (RFC 7617) when the listener has `admin_htpasswd`;
/// `None` lets the request through. Probes (`/healthz`, `/readyz`) stay open,
/// as load balancers and orchestrators call them without credentials.
async fn login(
    shared: &Shared,
    (listener, accepted_with): (&str, Option<Arc<postern_policy::htpasswd::Htpasswd>>),
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return None;
    }
    let cfg = shared.config();
    // The listener's users as reloaded; a listener removed or renamed by a
    // reload keeps asking its open connections for the users it had.
    let users = match cfg.listeners.iter().find(|l| *l.name == *listener) {
        Some(l) => l.admin_users.clone(),
        None => accepted_with,
    }?;
    let auth = AuthConfig {
        users,
        program: None,
        groups: Default::default(),
        realm: ADMIN_REALM.into(),
        cache_ttl: Duration::from_secs(300),
        max_failures: 10,
        failure_window: Duration::from_secs(60),
    };
    let field = req.headers().get(hyper::header::AUTHORIZATION);
    let outcome = shared
        .guard
        .admin_auth
        .check(&auth, peer.ip(), field.map(|v| v.as_bytes()))
        .await;
    let mut refused = match outcome {
        Credentials::Valid(_) => return None,
        Credentials::Throttled(wait) => {
            let mut r = respond(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain",
                "too many failed logins; try again later\n",
            );
            r.headers_mut()
                .insert("retry-after", wait.as_secs().max(1).into());
            return Some(r);
        }
        Credentials::Absent | Credentials::Invalid | Credentials::Unavailable(_) => respond(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "authentication required\n",
        ),
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(&challenge(ADMIN_REALM)) {
        refused.headers_mut().insert("www-authenticate", v);
    }
    Some(refused)
}

const ADMIN_REALM: &str = "Postern admin";

/// A state-changing request a web page made the operator's browser send
/// (cross-site request forgery): browsers name the page's origin in
/// `Origin` (RFC 6454 §7) and say `Sec-Fetch-Site: cross-site`; scripts and
/// curl send neither. Such requests must come from the dashboard itself.
fn cross_site(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let headers = req.headers();
    let host = headers.get(hyper::header::HOST).map(|v| v.as_bytes());
    let same_origin = match headers.get(hyper::header::ORIGIN) {
        None => true,
        Some(origin) => {
            let origin = origin.as_bytes();
            let authority = origin
                .strip_prefix(b"http://")
                .or_else(|| origin.strip_prefix(b"https://"));
            authority.is_some() && authority == host
        }
    };
    let fetched_cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    (!same_origin || fetched_cross_site).then(|| {
        respond(
            StatusCode::FORBIDDEN,
            "text/plain",
            "cross-site requests cannot change the proxy\n",
        )
    })
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    // The API takes its arguments in the query; a body is read (to keep the
    // connection in step) up to a small limit, never held whole.
    if http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .is_err()
    {
        return respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            "the admin API takes no request bodies\n",
        );
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, [""]) => respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        (Method::GET, ["metrics"]) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(shared),
        ),
        (Method::GET | Method::HEAD, ["healthz"]) => respond(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET | Method::HEAD, ["readyz"]) if crate::app::shutting_down() => {
            respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n")
        }
        (Method::GET | Method::HEAD, ["readyz"]) => {
            respond(StatusCode::OK, "text/plain", "ready\n")
        }
        (Method::GET, ["api", "status"]) => {
            respond(StatusCode::OK, "application/json", status_json(shared))
        }
        (Method::POST, ["api", "pools", pool, "servers", server, action]) => {
            server_action(shared, pool, &percent(server), action, &query)
        }
        (Method::POST, ["api", "purge"]) => {
            let Some(cache) = &shared.cache else {
                return respond(StatusCode::NOT_FOUND, "text/plain", "no cache\n");
            };
            let url = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("url="))
                .map(percent)
                .unwrap_or_default();
            let everyone = [
                "0.0.0.0/0".parse().expect("CIDR"),
                "::/0".parse().expect("CIDR"),
            ];
            match crate::cache::purge(cache, &everyone, "127.0.0.1".parse().expect("IP"), &url) {
                Ok(bytes) => {
                    let body = String::from_utf8_lossy(&bytes);
                    let text = body.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                    respond(StatusCode::OK, "text/plain", text)
                }
                Err(e) => respond(StatusCode::BAD_REQUEST, "text/plain", e.detail),
            }
        }
        (Method::POST, ["api", "reload"]) => match crate::app::reload_now(shared) {
            Ok(msg) => respond(StatusCode::OK, "text/plain", msg),
            Err(msg) => respond(StatusCode::UNPROCESSABLE_ENTITY, "text/plain", msg),
        },
        // As SIGUSR2: whether the new process takes over is known later
        // (this process then stops), so that goes to stderr, not here.
        (Method::POST, ["api", "upgrade"]) => match crate::app::start_upgrade(shared) {
            Ok(pid) => respond(
                StatusCode::ACCEPTED,
                "text/plain",
                format!(
                    "upgrade started: process {pid} takes over once it accepts on the listeners (see stderr)\n"
                ),
            ),
            Err(why) => respond(StatusCode::CONFLICT, "text/plain", format!("{why}\n")),
        },
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `drain`, `enable` (`ready`), `maintenance`, or `weight?value=N`: changes
/// that survive reloads until the process restarts.
fn server_action(
    shared: &Shared,
    pool: &str,
    server: &str,
    action: &str,
    query: &str,
) -> Response<Full<Bytes>> {
    // The starting process took the states as they were: a change now
    // would be lost when it takes over.
    if let Some(pid) = crate::app::upgrade_starting(shared) {
        return respond(
            StatusCode::CONFLICT,
            "text/plain",
            format!(
                "an upgrade is under way (process {pid}): change the server once it has taken over\n"
            ),
        );
    }
    let pools = shared.pools.load();
    let Some(p) = pools.get(pool) else {
        return respond(StatusCode::NOT_FOUND, "text/plain", "no such pool\n");
    };
    let Some(s) = p.servers.iter().find(|s| s.spec.addr == server) else {
        return respond(StatusCode::NOT_FOUND, "text/plain", "no such server\n");
    };
    let state = match action {
        "drain" => AdminState::Drain,
        "enable" | "ready" => AdminState::Ready,
        "maintenance" => AdminState::Maintenance,
        "weight" => {
            let value = query.split('&').find_map(|kv| kv.strip_prefix("value="));
            return match value.and_then(|v| v.parse::<u32>().ok()) {
                Some(w @ 1..=1000) => {
                    s.set_weight(w);
                    p.changed();
                    respond(
                        StatusCode::OK,
                        "text/plain",
                        format!("{server}: weight {w}\n"),
                    )
                }
                _ => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "weight needs ?value=N with N from 1 to 1000\n",
                ),
            };
        }
        _ => {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "actions: drain, enable, maintenance, weight?value=N\n",
            );
        }
    };
    s.set_admin(state);
    p.changed();
    respond(
        StatusCode::OK,
        "text/plain",
        format!("{server}: {action}\n"),
    )
}

fn percent(s: &str) -> String {
    postern_policy::host::percent_decode(s).unwrap_or_else(|| s.to_string())
}

fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn state_name(s: AdminState) -> &'static str {
    match s {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maintenance => "maintenance",
    }
}

fn metrics(shared: &Shared) -> String {
    shared.metrics.render(&mut |out: &mut String| {
        let _ = writeln!(
            out,
            "# HELP postern_active_connections Client connections open now.\n# TYPE postern_active_connections gauge\npostern_active_connections {}",
            shared.active_connections()
        );
        if let Some(cache) = &shared.cache {
            let s = &cache.store.stats;
            for (name, help, v) in [
                ("postern_cache_hits_total", "Responses served from the cache.", s.hits.load(Ordering::Relaxed)),
                ("postern_cache_misses_total", "Cache misses.", s.misses.load(Ordering::Relaxed)),
                ("postern_cache_revalidations_total", "Stored responses validated with the origin.", s.revalidations.load(Ordering::Relaxed)),
                ("postern_cache_served_bytes_total", "Body bytes served from the cache.", s.bytes_served.load(Ordering::Relaxed)),
                ("postern_cache_evictions_total", "Responses evicted from memory.", s.evictions.load(Ordering::Relaxed)),
                ("postern_cache_admission_rejections_total", "New responses kept out of a full memory tier (TinyLFU).", s.rejections.load(Ordering::Relaxed)),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
            }
            let _ = writeln!(
                out,
                "# HELP postern_cache_objects Responses stored in memory.\n# TYPE postern_cache_objects gauge\npostern_cache_objects {}\n# HELP postern_cache_bytes Bytes stored in memory.\n# TYPE postern_cache_bytes gauge\npostern_cache_bytes {}",
                cache.store.objects(),
                cache.store.bytes()
            );
        }
        let pools = shared.pools.load();
        out.push_str("# HELP postern_pool_server_up Whether a server may take traffic (healthy, not ejected, not in maintenance).\n# TYPE postern_pool_server_up gauge\n");
        for (name, p) in &pools.by_name {
            for s in &p.servers {
                let up = s.is_healthy() && !s.is_ejected() && s.admin() != AdminState::Maintenance;
                let _ = writeln!(out, "postern_pool_server_up{{pool=\"{}\",server=\"{}\",state=\"{}\"}} {}", label(name), label(&s.spec.addr), state_name(s.admin()), u8::from(up));
            }
        }
        out.push_str("# HELP postern_pool_server_in_flight Requests in flight per server.\n# TYPE postern_pool_server_in_flight gauge\n");
        for (name, p) in &pools.by_name {
            for s in &p.servers {
                let _ = writeln!(out, "postern_pool_server_in_flight{{pool=\"{}\",server=\"{}\"}} {}", label(name), label(&s.spec.addr), s.inflight.load(Ordering::Relaxed));
            }
        }
        out.push_str("# HELP postern_pool_server_requests_total Requests sent per server.\n# TYPE postern_pool_server_requests_total counter\n");
        for (name, p) in &pools.by_name {
            for s in &p.servers {
                let _ = writeln!(out, "postern_pool_server_requests_total{{pool=\"{}\",server=\"{}\"}} {}", label(name), label(&s.spec.addr), s.requests.load(Ordering::Relaxed));
            }
        }
    })
}

fn status_json(shared: &Shared) -> String {
    let cfg = shared.config();
    let mut out = String::from("{");
    let _ = write!(out, "\"version\":{},", json(env!("CARGO_PKG_VERSION")));
    let (bytes_in, bytes_out) = shared.metrics.total_bytes();
    let _ = write!(
        out,
        "\"requests\":{},\"bytes_in\":{bytes_in},\"bytes_out\":{bytes_out},\"active_connections\":{},\"active_tunnels\":{},",
        shared.metrics.total_requests(),
        shared.active_connections(),
        ACTIVE_TUNNELS.load(Ordering::Relaxed)
    );
    out.push_str("\"listeners\":[");
    for (i, l) in cfg.listeners.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"name\":{},\"mode\":{},\"bind\":{}}}",
            if i > 0 { "," } else { "" },
            json(&l.name),
            json(l.mode.as_str()),
            json(&l.bind.to_string())
        );
    }
    out.push_str("],\"cache\":");
    match &shared.cache {
        None => out.push_str("null"),
        Some(c) => {
            let s = &c.store.stats;
            let _ = write!(
                out,
                "{{\"hits\":{},\"misses\":{},\"revalidations\":{},\"bytes_served\":{},\"evictions\":{},\"rejections\":{},\"objects\":{},\"bytes\":{}}}",
                s.hits.load(Ordering::Relaxed),
                s.misses.load(Ordering::Relaxed),
                s.revalidations.load(Ordering::Relaxed),
                s.bytes_served.load(Ordering::Relaxed),
                s.evictions.load(Ordering::Relaxed),
                s.rejections.load(Ordering::Relaxed),
                c.store.objects(),
                c.store.bytes()
            );
        }
    }
    out.push_str(",\"pools\":[");
    let pools = shared.pools.load();
    for (i, (name, p)) in pools.by_name.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"name\":{},\"servers\":[",
            if i > 0 { "," } else { "" },
            json(name)
        );
        for (j, s) in p.servers.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"addr\":{},\"state\":{},\"healthy\":{},\"ejected\":{},\"in_flight\":{},\"requests\":{},\"failures\":{},\"weight\":{}}}",
                if j > 0 { "," } else { "" },
                json(&s.spec.addr),
                json(state_name(s.admin())),
                s.is_healthy(),
                s.is_ejected(),
                s.inflight.load(Ordering::Relaxed),
                s.requests.load(Ordering::Relaxed),
                s.failures.load(Ordering::Relaxed),
                s.weight()
            );
        }
        out.push_str("]}");
    }
    out.push_str("],\"recent_denials\":[");
    for (i, (time, client, url, why)) in shared.metrics.recent_denials().iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"time\":{},\"client\":{},\"url\":{},\"reason\":{}}}",
            if i > 0 { "," } else { "" },
            json(time),
            json(client),
            json(url),
            json(why)
        );
    }
    out.push_str("],\"top_destinations\":[");
    for (i, (dest, n)) in shared.metrics.top_destinations(10).iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"destination\":{},\"requests\":{n}}}",
            if i > 0 { "," } else { "" },
            json(dest)
        );
    }
    out.push_str("]}");
    out
}
