//! The reverse-proxy path (`mode = "reverse"`): route the request by host,
//! path and header to a pool, choose a server, forward, and on failure retry
//! on another server when that is safe; every outcome is reported to the pool
//! (latency, passive ejection).
//!
//! Retry rules: a connect failure may be retried for any request (nothing was
//! sent); a reset before the response head, or a 502/503/504, only for
//! idempotent requests without a body (RFC 9110 §9.2.2). Retries go to servers
//! not tried yet, within `retries` and the pool's retry budget.

pub mod balance;
pub(crate) mod bridge;
pub mod compress;
pub mod extended_connect;
pub mod health;
pub mod pool;
pub mod spec;
pub mod target;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::app::Shared;
use crate::config::{Config, ListenerConfig};
use crate::context::RequestCtx;
use crate::egress::{AddressPermit, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::forward::http::{Failure, Forwarded, FromOrigin, Outbound, exchange, upstream_head};
use crate::forward::target::HttpTarget;
use crate::guard::{Admission, Subject};
use crate::http1::RequestHead;
use crate::http1::body::BodyKind;
use crate::http1::fields::ConnectionOptions;
use crate::http1::head::{Fields, Known, copy_field_lines, push_field, push_next_hop_fields};
use crate::ingress::Client;
use crate::ingress::stream::ClientStream;
use pool::{Pick, PickInput, Pool};
use postern_policy::headers::{FieldFate, Scrubber};
use spec::{HashOn, ParentProtocol, ProxyProtocolVersion, RouteSpec};

/// Serves one request on a reverse listener; returns whether the client
/// connection may carry another.
pub async fn serve(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    head: &RequestHead,
    body: BodyKind,
    conn: &ConnectionOptions<'_>,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    let listener = cfg
        .listeners
        .iter()
        .find(|l| *l.name == *ctx.listener)
        .ok_or_else(|| ProxyError::new(ErrorKind::NoRoute, "listener not configured"))?;
    let limits = crate::http1::head::HeadLimits {
        max_line: cfg.limits.max_request_line,
        max_size: cfg.limits.max_header_size,
        max_fields: cfg.limits.max_headers,
    };
    let origin_form = target::normalize(head, limits)?;
    let head = origin_form.as_ref().unwrap_or(head);
    let host_field = head.first("host").map(crate::http1::text);
    let host = lowercase(
        host_field
            .as_deref()
            .map(host_without_port)
            .unwrap_or_default(),
    );
    // Routes match the path in one spelling (`/%61dmin`, `//admin` and
    // `/x/../admin` are all `/admin`); the server gets it as written.
    let path = postern_policy::url::normalize_path_and_query(head.target());
    let route = cfg
        .routes
        .iter()
        .find(|r| {
            r.listener == *ctx.listener
                && r.matches(&host, &path, |name| {
                    head.first(name)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
        })
        .ok_or_else(|| {
            ProxyError::new(
                ErrorKind::NoRoute,
                format!(
                    "no route of listener {} matches host `{host}` and path",
                    ctx.listener
                ),
            )
        })?;
    // The listener's port is asked of the socket only when a rule may test it.
    let local = if cfg.rules.rules().is_empty() {
        0
    } else {
        client.stream.local_addr().map(|a| a.port()).unwrap_or(80)
    };
    let admission = admit(
        cfg,
        shared,
        client.peer.ip(),
        &ctx.listener,
        head,
        &host,
        local,
    )
    .await?;
    ctx.user = admission.user.clone();
    ctx.request_id = request_id(listener, head, client.peer.ip());
    let scheme = if listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(redirect) = &route.redirect {
        let location = redirect.location(scheme, &host, head.target())?;
        let head_only = head.is_method("HEAD");
        // A request body is left unread: the connection ends with the answer.
        let keep = body == BodyKind::None && conn.persistent(head.minor);
        let connection = match (keep, head.minor) {
            (false, _) => Some("close"),
            // An HTTP/1.0 client keeps the connection only when told so.
            (true, 0) => Some("keep-alive"),
            (true, _) => None,
        };
        let answer = redirect_response(redirect.status, &location, head_only, connection);
        redirected(ctx, redirect.status);
        if !client.send(&answer, cfg.timeouts.io).await {
            return Ok(false);
        }
        ctx.bytes_out += answer.len() as u64;
        return Ok(keep);
    }
    let pools = shared.pools.load();
    let pool = pools
        .get(&route.pool)
        .cloned()
        .ok_or_else(|| ProxyError::new(ErrorKind::NoServer, "pool not running"))?;
    drop(pools);
    // The cache's key (the target as written; https on TLS listeners, so
    // that absolute https locations and purges name it); plain forwarding
    // needs none.
    let url = || {
        format!(
            "{scheme}://{}{}",
            host_field.as_deref().unwrap_or(&host),
            head.target()
        )
    };
    if let Some(cache) = &shared.cache
        && head.is_method("PURGE")
    {
        let keep = body == BodyKind::None && conn.persistent(head.minor);
        return crate::cache::flow::answer_purge(cfg, cache, client, &url(), keep, ctx).await;
    }
    if pool.spec.http2 {
        return Box::pin(bridge::serve(
            cfg,
            shared,
            client,
            (head, body, conn),
            (listener, route, &admission.buckets),
            &pool,
            url(),
            ctx,
        ))
        .await;
    }
    let via = Via::Server { listener, route };
    let Some(cache) = &shared.cache else {
        let mut none = None;
        let done = Box::pin(dispatch(
            cfg, shared, client, head, body, conn, &via, &pool, &admission, &mut none, ctx,
        ))
        .await?;
        return origin_done(done);
    };
    let ends = (client.peer, client.stream.local_addr().ok());
    let id = ctx.request_id.clone();
    let refresh = |stale, req_cc| {
        refresh_stale(
            cfg,
            shared,
            ends,
            head,
            (listener, route),
            &pool,
            (stale, req_cc),
            id.as_deref(),
        );
    };
    let to = (&via, &pool, &admission, &route.rewrite);
    dispatch_cached(
        cfg,
        shared,
        client,
        (head, body, conn),
        to,
        (cache, url()),
        Some(&refresh),
        ctx,
    )
    .await
}

/// Where a request goes through a pool: the pool's kind, the pool, the
/// rules' verdict, and the header rewriting.
pub type Destination<'r> = (&'r Via<'r>, &'r Arc<Pool>, &'r Admission<'r>, &'r Scrubber);

/// A request to a pool through the cache: answered from it, or sent (with
/// validators for a stale copy, a stale copy standing in for a failure) and
/// stored on the way back. `refresh` revalidates a response served stale
/// within stale-while-revalidate; without it, the first request after the
/// window does.
#[allow(clippy::too_many_arguments)]
pub async fn dispatch_cached(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    (head, body, conn): (&RequestHead, BodyKind, &ConnectionOptions<'_>),
    (via, pool, admission, scrubber): Destination<'_>,
    (cache, url): (&Arc<crate::cache::Cache>, String),
    refresh: Option<
        &(dyn Fn(Arc<crate::cache::store::Entry>, crate::cache::policy::Directives) + Sync),
    >,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    use crate::cache::flow::{Before, after, before};
    let probe = Outbound {
        head,
        body,
        conn,
        admission,
        scrubber,
        // Answers from the cache name the proxy as forwarded ones do.
        via: match via {
            Via::Parent { via, .. } => *via,
            Via::Server { .. } => None,
        },
        set_cookie: None,
        retry_statuses: false,
        first_byte: cfg.timeouts.first_byte,
        cache: None,
        compress: match via {
            Via::Server { route, .. } => route.compress.as_deref(),
            Via::Parent { .. } => None,
        },
    };
    let mut pending = match before(cfg, client, cache, url, &probe, ctx).await? {
        Before::Served(done) => return Ok(done.client_keep_alive),
        Before::ServedStale(done, stale, req_cc) => {
            if let Some(refresh) = refresh {
                refresh(stale, req_cc);
            }
            return Ok(done.client_keep_alive);
        }
        Before::Origin(p) => p,
    };
    let stale_cover = pending.stale_may_cover() && body == BodyKind::None;
    let mut ticket = Some(std::mem::replace(
        &mut pending.ticket,
        crate::cache::flow::Ticket::placeholder(cache),
    ));
    let result = Box::pin(dispatch_covered(
        cfg,
        shared,
        client,
        head,
        body,
        conn,
        via,
        pool,
        admission,
        &mut ticket,
        (stale_cover, &pending.extra),
        ctx,
    ))
    .await;
    if let Some(t) = ticket {
        pending.ticket = t;
    }
    Ok(after(cfg, client, &probe, &pending, result, ctx)
        .await?
        .client_keep_alive)
}

/// The rules' verdict on a request to a reverse listener, for HTTP/1 and
/// HTTP/2 clients alike. Reverse listeners serve everyone unless rules are
/// written.
pub async fn admit<'c>(
    cfg: &'c Config,
    shared: &Shared,
    client: std::net::IpAddr,
    listener: &str,
    head: &RequestHead,
    host: &str,
    local_port: u16,
) -> Result<Admission<'c>, ProxyError> {
    if cfg.rules.rules().is_empty() {
        return Ok(Admission::default());
    }
    shared
        .guard
        .admit(
            cfg,
            &shared.connector.resolver,
            &Subject {
                client,
                listener,
                method: head.method(),
                scheme: "http",
                host,
                literal_ip: host.parse().ok(),
                port: local_port,
                url: &postern_policy::url::normalize_path_and_query(head.target()),
                proxy_authorization: None,
                assume_user: None,
            },
        )
        .await
}

/// Revalidates a response just served stale (RFC 5861 §3) with a server of
/// the route's pool, on a connection of its own; for GET requests from
/// HTTP/1 and HTTP/2 clients.
#[allow(clippy::too_many_arguments)]
pub fn refresh_stale(
    cfg: &Config,
    shared: &Shared,
    ends: (std::net::SocketAddr, Option<std::net::SocketAddr>),
    head: &RequestHead,
    (listener, route): (&ListenerConfig, &RouteSpec),
    pool: &Arc<Pool>,
    (stale, req_cc): (
        Arc<crate::cache::store::Entry>,
        crate::cache::policy::Directives,
    ),
    request_id: Option<&str>,
) {
    let Some(cache) = &shared.cache else {
        return;
    };
    if !head.is_method("GET") {
        return;
    }
    let peer = ends.0;
    let ip = canonical(peer.ip()).to_string();
    let input = PickInput {
        hash_key: ip.as_bytes(),
        sticky: None,
    };
    let Pick::Server(index) = pool.pick(&input, &[]) else {
        return;
    };
    // The listener's TLS says which scheme the client used.
    let tls = listener.tls.is_some();
    let upstream = reverse_head(
        head,
        BodyKind::None,
        &crate::http1::fields::connection_options(head),
        false,
        listener,
        route,
        (peer.ip(), tls),
        &host_of(head, &pool.servers[index].spec.addr),
        // The client request's: the server's log then names a request the
        // access log has.
        request_id,
    );
    let head_bytes = crate::cache::refresh::request_head(upstream, &stale);
    let http2 = pool.spec.http2;
    let (connector, pool) = (shared.connector.clone(), pool.clone());
    let timeout = cfg.timeouts.connect;
    let opener: crate::cache::refresh::Opener = Box::pin(async move {
        let _inflight = pool.start(index);
        let (upstream, _) = open(&connector, timeout, &pool, index, None, ends).await?;
        Ok(upstream)
    });
    if http2 {
        let what = (stale, head.clone(), req_cc);
        let timeouts = (cfg.timeouts.first_byte, cfg.timeouts.io);
        crate::cache::h2::refresh_over_http2(cache, what, head_bytes, opener, timeouts);
        return;
    }
    let refresh = crate::cache::refresh::Refresh {
        cache: cache.clone(),
        head_bytes,
        stale,
        request: head.clone(),
        req_cc,
        limits: crate::forward::http::response_limits(cfg),
        first_byte: cfg.timeouts.first_byte,
        io: cfg.timeouts.io,
    };
    refresh.spawn(opener);
}

/// Revalidates a forwarded response just served stale (RFC 5861 §3)
/// through a parent of `pool`, as the client's GET went.
#[allow(clippy::too_many_arguments)]
pub fn refresh_through_parent(
    cfg: &Config,
    shared: &Shared,
    target: &HttpTarget,
    req: &Outbound<'_>,
    peer: std::net::SocketAddr,
    pool: &Arc<Pool>,
    stale: Arc<crate::cache::store::Entry>,
    req_cc: crate::cache::policy::Directives,
) {
    let Some(cache) = &shared.cache else {
        return;
    };
    let input = PickInput {
        hash_key: &[],
        sticky: None,
    };
    if !req.head.is_method("GET") {
        return;
    }
    let Pick::Server(index) = pool.pick(&input, &[]) else {
        return;
    };
    let origin_form = upstream_head(cfg, req, target, false, peer.ip());
    let head = match pool.spec.protocol {
        ParentProtocol::Socks5 => origin_form,
        ParentProtocol::Http => absolute_form(origin_form, target, pool.spec.credentials.as_ref()),
    };
    let refresh = crate::cache::refresh::Refresh {
        cache: cache.clone(),
        head_bytes: crate::cache::refresh::request_head(head, &stale),
        stale,
        request: req.head.clone(),
        req_cc,
        limits: crate::forward::http::response_limits(cfg),
        first_byte: cfg.timeouts.first_byte,
        io: cfg.timeouts.io,
    };
    let (connector, pool, target) = (shared.connector.clone(), pool.clone(), target.clone());
    let timeout = cfg.timeouts.connect;
    refresh.spawn(Box::pin(async move {
        let _inflight = pool.start(index);
        let ends = (peer, None);
        let (upstream, _) = open(&connector, timeout, &pool, index, Some(&target), ends).await?;
        Ok(upstream)
    }));
}

fn origin_done(r: FromOrigin) -> Result<bool, ProxyError> {
    match r {
        FromOrigin::Done(d) => Ok(d.client_keep_alive),
        FromOrigin::NotModified(_) | FromOrigin::Withheld(_) => Err(ProxyError::new(
            ErrorKind::BadResponse,
            "response withheld without a cache",
        )),
    }
}

/// What the servers of a pool are, and so how a request is sent to them.
pub enum Via<'a> {
    /// Web servers behind a reverse listener.
    Server {
        listener: &'a ListenerConfig,
        route: &'a RouteSpec,
    },
    /// Parent proxies for forwarded plain HTTP.
    Parent {
        target: &'a HttpTarget,
        scrubber: &'a Scrubber,
        via: Option<&'a str>,
    },
}

/// Counts a request in flight through a pool (the retry budget is a share
/// of these).
pub(crate) struct ActiveGuard<'a>(&'a Pool);

impl<'a> ActiveGuard<'a> {
    pub(crate) fn new(pool: &'a Pool) -> ActiveGuard<'a> {
        pool.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(pool)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends the request to a server of `pool`, retrying on others when safe.
#[allow(clippy::too_many_arguments)]
pub async fn dispatch(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    head: &RequestHead,
    body: BodyKind,
    conn: &ConnectionOptions<'_>,
    via: &Via<'_>,
    pool: &Arc<Pool>,
    admission: &Admission<'_>,
    ticket: &mut Option<crate::cache::Ticket>,
    ctx: &mut RequestCtx,
) -> Result<FromOrigin, ProxyError> {
    dispatch_covered(
        cfg,
        shared,
        client,
        head,
        body,
        conn,
        via,
        pool,
        admission,
        ticket,
        (false, &[]),
        ctx,
    )
    .await
}

/// `dispatch`, where a stale stored response may cover a last 502/503/504
/// (`stale_cover`): it is then withheld for the cache instead of relayed;
/// `validators` are the cache's conditional fields (RFC 9111 §4.3.1).
#[allow(clippy::too_many_arguments)]
pub async fn dispatch_covered(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    head: &RequestHead,
    body: BodyKind,
    conn: &ConnectionOptions<'_>,
    via: &Via<'_>,
    pool: &Arc<Pool>,
    admission: &Admission<'_>,
    ticket: &mut Option<crate::cache::Ticket>,
    (stale_cover, validators): (bool, &[u8]),
    ctx: &mut RequestCtx,
) -> Result<FromOrigin, ProxyError> {
    let spec = &pool.spec;
    let parent = matches!(via, Via::Parent { .. });
    // In flight through the pool: the retry budget is a share of these.
    let _active = ActiveGuard::new(pool);
    let key = hash_key(spec, head, client.peer.ip());
    let sticky = spec
        .sticky_cookie
        .as_deref()
        .and_then(|name| cookie_value(head, name));
    let idempotent = is_idempotent(head);
    let replayable = idempotent && body == BodyKind::None;
    let upgrade = conn.upgrade && head.minor >= 1 && head.has("upgrade");
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;
    let mut retrying = None;
    let mut room = pool.room_wait();
    loop {
        let input = PickInput {
            hash_key: &key,
            sticky: sticky.as_deref(),
        };
        let index = match pool.pick(&input, &tried) {
            Pick::Server(i) => i,
            Pick::Busy => {
                if room.wait().await {
                    continue;
                }
                return Err(ProxyError::new(
                    ErrorKind::QueueFull,
                    format!(
                        "pool {}: every server is at max_connections and the queue is full or timed out",
                        spec.name
                    ),
                ));
            }
            Pick::NoneUsable => {
                return Err(last_error.unwrap_or_else(|| {
                    let what = match via {
                        Via::Server { route, .. } => {
                            format!("{} (pool {})", route.label, spec.name)
                        }
                        Via::Parent { .. } => format!("parent pool {}", spec.name),
                    };
                    ProxyError::new(ErrorKind::NoServer, format!("{what}: no server is up"))
                }));
            }
        };
        let mut inflight = pool.start(index);
        let server = &pool.servers[index];
        ctx.result = "TCP_MISS";
        // The budget is checked once per request: a request already retrying
        // keeps its place for its further attempts.
        let may_retry =
            tried.len() < spec.retries as usize && (retrying.is_some() || pool.may_retry());
        // Idle connections are kept per pool (`Pool::idle_keys`).
        let pool_key: std::borrow::Cow<str> = match via {
            // A PROXY header speaks for one client connection: only that
            // connection's later requests may reuse the server connection.
            Via::Server { .. } if spec.send_proxy.is_some() => {
                format!("{} for {}", pool.idle_keys[index], client.peer).into()
            }
            Via::Server { .. } => pool.idle_keys[index].as_str().into(),
            Via::Parent { target, .. } => match spec.protocol {
                // A SOCKS connection is bound to its destination.
                ParentProtocol::Socks5 => {
                    format!("{} to {}", pool.idle_keys[index], target.pool_key()).into()
                }
                ParentProtocol::Http => pool.idle_keys[index].as_str().into(),
            },
        };
        let pooled = shared.pool.checkout(&pool_key, !idempotent);
        let reused = pooled.is_some();
        let (mut upstream, addr) = match pooled {
            Some(c) => c,
            None => match open(
                &shared.connector,
                cfg.timeouts.connect,
                pool,
                index,
                match via {
                    Via::Parent { target, .. } => Some(*target),
                    Via::Server { .. } => None,
                },
                (client.peer, client.stream.local_addr().ok()),
            )
            .await
            {
                Ok(c) => c,
                Err(e) if pool.failed_attempt(index, &mut tried, &mut retrying) => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        ctx.upstream = Some(addr);
        inflight.restart_clock();
        let set_cookie = spec.sticky_cookie.as_ref().and_then(|name| {
            (!parent && sticky.as_deref() != Some(server.id.as_str()))
                .then(|| format!("{name}={}; Path=/; HttpOnly", server.id))
        });
        let (scrubber, resp_via) = match via {
            Via::Server { route, .. } => (&route.rewrite, None),
            Via::Parent { scrubber, via, .. } => (*scrubber, *via),
        };
        let mut out = Outbound {
            head,
            body,
            conn,
            admission,
            scrubber,
            via: resp_via,
            set_cookie,
            // A parent's own 502/503/504 says the parent failed: try another.
            // Only when another server could answer: with none left, the
            // server's own 502/503/504 is the answer the client gets.
            retry_statuses: (may_retry && replayable && pool.has_other_usable(index, &tried))
                || stale_cover,
            first_byte: spec.per_try_timeout.unwrap_or(cfg.timeouts.first_byte),
            cache: ticket.take(),
            compress: match via {
                Via::Server { route, .. } => route.compress.as_deref(),
                Via::Parent { .. } => None,
            },
        };
        let head_bytes = match via {
            Via::Server { listener, route } => reverse_head(
                head,
                body,
                conn,
                upgrade,
                listener,
                route,
                (
                    client.peer.ip(),
                    matches!(client.stream, ClientStream::Tls(_)),
                ),
                &host_of(head, &server.spec.addr),
                ctx.request_id.as_deref(),
            ),
            Via::Parent { target, .. } => {
                let origin_form = upstream_head(cfg, &out, target, upgrade, client.peer.ip());
                match spec.protocol {
                    ParentProtocol::Socks5 => origin_form,
                    ParentProtocol::Http => {
                        absolute_form(origin_form, target, spec.credentials.as_ref())
                    }
                }
            }
        };
        let mut head_bytes = head_bytes;
        if !validators.is_empty() {
            // Before the blank line that ends the head.
            let end = head_bytes.len() - 2;
            head_bytes.splice(end..end, validators.iter().copied());
        }
        let result = exchange(cfg, client, &mut upstream, head_bytes, &out, upgrade, ctx).await;
        // The ticket goes back for the next attempt or the caller.
        *ticket = out.cache.take();
        match result {
            Ok(end) => {
                inflight.observe_latency();
                if ctx.status >= 500 {
                    pool.report_failure(index);
                } else {
                    pool.report_success(index);
                }
                if end.upstream_reusable {
                    shared.pool.checkin(&pool_key, upstream, addr);
                }
                return Ok(FromOrigin::Done(Forwarded {
                    client_keep_alive: end.client_keep_alive,
                }));
            }
            Err(Failure::Stale(e)) if reused && replayable => {
                // The server closed an idle connection: not the server's fault.
                last_error = Some(e);
                drop(inflight);
                continue;
            }
            Err(Failure::Stale(e) | Failure::Upstream(e)) => {
                pool.report_failure(index);
                tried.push(index);
                if may_retry && replayable {
                    retrying.get_or_insert_with(|| RetryGuard::new(pool));
                    last_error = Some(e);
                    continue;
                }
                return Err(e);
            }
            Err(Failure::RetryStatus(status)) => {
                pool.report_failure(index);
                tried.push(index);
                if !may_retry {
                    return Ok(FromOrigin::Withheld(status));
                }
                retrying.get_or_insert_with(|| RetryGuard::new(pool));
                last_error = Some(ProxyError::new(
                    ErrorKind::DestinationUnavailable,
                    format!("{} answered {status}", server.spec.addr),
                ));
            }
            Err(Failure::Client(e)) => return Err(e),
            Err(Failure::Refused(e)) => {
                pool.report_success(index);
                return Err(e);
            }
            Err(Failure::NotModified(head)) => {
                pool.report_success(index);
                shared.pool.checkin(&pool_key, upstream, addr);
                return Ok(FromOrigin::NotModified(head));
            }
            Err(Failure::Aborted) => {
                ctx.aborted = true;
                return Ok(FromOrigin::Done(Forwarded {
                    client_keep_alive: false,
                }));
            }
        }
    }
}

/// A new connection to server `index`: PROXY header, SOCKS5 handshake for
/// SOCKS parents, TLS for pools that want it — in that order, as each wraps
/// the next.
pub async fn open(
    connector: &crate::egress::Connector,
    connect: std::time::Duration,
    pool: &Pool,
    index: usize,
    socks_target: Option<&HttpTarget>,
    (peer, local): (std::net::SocketAddr, Option<std::net::SocketAddr>),
) -> Result<(Upstream, std::net::SocketAddr), ProxyError> {
    let header = pool.spec.send_proxy.map(|v| proxy_header(v, peer, local));
    open_with(
        connector,
        connect,
        pool,
        index,
        socks_target,
        header.as_deref(),
    )
    .await
}

/// [`open`] with the PROXY header to send (for pools with `send_proxy`)
/// given: one naming a client, or a health check's own ([`local_proxy_header`]).
pub async fn open_with(
    connector: &crate::egress::Connector,
    connect: std::time::Duration,
    pool: &Pool,
    index: usize,
    socks_target: Option<&HttpTarget>,
    proxy_header: Option<&[u8]>,
) -> Result<(Upstream, std::net::SocketAddr), ProxyError> {
    let spec = &pool.spec;
    let server = &pool.servers[index];
    let connect_timeout = spec.per_try_timeout.map_or(connect, |t| t.min(connect));
    let (mut tcp, addr) = connector
        .connect(
            &server.spec.host,
            server.spec.port,
            AddressPermit::CONFIGURED,
            None,
            connect_timeout,
        )
        .await?;
    if let Some(header) = proxy_header {
        tokio::io::AsyncWriteExt::write_all(&mut tcp, header)
            .await
            .map_err(|e| ProxyError::new(ErrorKind::UpstreamTerminated, e.to_string()))?;
    }
    if let Some(target) = socks_target
        && spec.protocol == ParentProtocol::Socks5
    {
        crate::egress::parent::socks5_connect(
            &mut tcp,
            &target.dest,
            target.port,
            spec.credentials.as_ref(),
            connect,
        )
        .await?;
    }
    let Some(tls) = &spec.tls else {
        return Ok((Upstream::Plain(tcp), addr));
    };
    let name = tls
        .server_name
        .clone()
        .unwrap_or_else(|| server.spec.host.rule_host().into_owned());
    let name = rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| ProxyError::new(ErrorKind::DestinationUnavailable, e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match tokio::time::timeout(connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok((Upstream::Tls(Box::new(stream)), addr)),
        Ok(Err(e)) => Err(ProxyError::new(
            ErrorKind::DestinationUnavailable,
            format!("TLS with {}: {e}", server.spec.addr),
        )),
        Err(_) => Err(ProxyError::new(
            ErrorKind::ConnectionTimeout,
            format!("TLS with {} did not complete in time", server.spec.addr),
        )),
    }
}

/// Counts a request that is being retried, for the pool's retry budget.
pub(crate) struct RetryGuard(Arc<Pool>);

impl RetryGuard {
    pub(crate) fn new(pool: &Arc<Pool>) -> RetryGuard {
        pool.retrying.fetch_add(1, Ordering::Relaxed);
        RetryGuard(pool.clone())
    }
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::Relaxed);
    }
}

/// RFC 9110 §9.2.2.
pub(crate) fn is_idempotent(head: &RequestHead) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| head.is_method(m))
}

/// `host[:port]` without the port; IPv6 literals keep their brackets.
/// The short page of a route's redirect, as nginx's `return 301 URL`.
pub(crate) fn redirect_page(location: &str) -> String {
    let escaped = location
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<html><body><a href=\"{escaped}\">{escaped}</a></body></html>\n")
}

/// An HTTP/1.1 redirect to `location`, with `Connection: {connection}`.
fn redirect_response(
    status: u16,
    location: &str,
    head_only: bool,
    connection: Option<&str>,
) -> Vec<u8> {
    let page = redirect_page(location);
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nLocation: {location}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n",
        crate::error::reason_phrase(status),
        crate::observe::time::http_date(std::time::SystemTime::now()),
        page.len(),
    );
    if let Some(connection) = connection {
        out.push_str("Connection: ");
        out.push_str(connection);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(page.as_bytes());
    }
    out
}

/// Logs a request a route answered with a redirect (Squid's `TCP_REDIRECT`).
pub(crate) fn redirected(ctx: &mut RequestCtx, status: u16) {
    ctx.status = status;
    ctx.result = "TCP_REDIRECT";
}

pub(crate) fn host_without_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.find(']').map_or(h, |i| &h[..=i]);
    }
    h.rsplit_once(':').map_or(h, |(host, _)| host)
}

pub(crate) fn host_of<'a>(head: &'a RequestHead, server: &'a str) -> std::borrow::Cow<'a, str> {
    head.first("host").map_or(server.into(), crate::http1::text)
}

/// Host names are matched in lower case; most arrive that way already.
fn lowercase(host: &str) -> std::borrow::Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The value of cookie `name` in the request's Cookie fields.
/// What `balance = "hash"` hashes for this request (`hash_on`); empty for
/// other algorithms, which do not read it.
pub(crate) fn hash_key(spec: &spec::PoolSpec, head: &RequestHead, client: IpAddr) -> Vec<u8> {
    match &spec.hash_on {
        _ if spec.balance != spec::Balance::Hash => Vec::new(),
        HashOn::Client => canonical(client).to_string().into_bytes(),
        HashOn::Uri => head.target().as_bytes().to_vec(),
        HashOn::Header(name) => head.first(name).unwrap_or_default().to_vec(),
        HashOn::Cookie(name) => cookie_value(head, name).unwrap_or_default().into_bytes(),
    }
}

pub(crate) fn cookie_value(head: &RequestHead, name: &str) -> Option<String> {
    head.values("cookie").find_map(|v| {
        let v = std::str::from_utf8(v).ok()?;
        v.split(';').find_map(|pair| {
            let (k, val) = pair.trim().split_once('=')?;
            (k == name).then(|| val.trim_matches('"').to_string())
        })
    })
}

/// The request head for a server: the target as received, Host passed on,
/// hop-by-hop fields removed, framing restated, the route's header rules,
/// and X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) — the client's
/// own values kept only when it is a trusted proxy.
#[allow(clippy::too_many_arguments)]
pub fn reverse_head(
    head: &RequestHead,
    body: BodyKind,
    conn: &ConnectionOptions<'_>,
    upgrade: bool,
    listener: &ListenerConfig,
    route: &RouteSpec,
    (peer, tls): (IpAddr, bool),
    host: &str,
    request_id: Option<&str>,
) -> Vec<u8> {
    let peer = canonical(peer);
    let trusted = listener.trusted_proxies.iter().any(|c| c.contains(peer));
    let proto: &[u8] = if tls { b"https" } else { b"http" };
    let forwarded = listener.forwarded_headers;
    let mut out = Vec::with_capacity(head.raw.len() + 160);
    out.extend_from_slice(head.method_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut had_length = false;
    copy_field_lines(head, &mut out, |f, name| match f.kind {
        Known::ContentLength => {
            had_length = true;
            FieldFate::Drop
        }
        Known::Host => FieldFate::Drop,
        // Restated below from what this hop knows.
        Known::XForwardedFor | Known::Forwarded if forwarded => FieldFate::Drop,
        Known::XForwardedProto | Known::XForwardedHost if forwarded && !trusted => FieldFate::Drop,
        _ if conn.drops(f, name) => FieldFate::Drop,
        // Restated below (the client's own when it was kept), in any
        // spelling a server might read as the same field.
        _ if listener
            .request_id
            .as_deref()
            .is_some_and(|field| same_field(name, field.as_bytes())) =>
        {
            FieldFate::Drop
        }
        _ => route.rewrite.request_field(name),
    });
    for (name, value) in route.rewrite.added_fields(|n| head.has(n)) {
        // The request's id is the listener's to set.
        if request_id.is_some()
            && listener
                .request_id
                .as_deref()
                .is_some_and(|field| same_field(name.as_bytes(), field.as_bytes()))
        {
            continue;
        }
        push_field(&mut out, name.as_bytes(), value.as_bytes());
    }
    if forwarded {
        let (xff, fwd): (Vec<&[u8]>, Vec<&[u8]>) = if trusted {
            (
                head.values("x-forwarded-for").collect(),
                head.values("forwarded").collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        if let Some((xff, fwd)) = route.rewrite.forwarding_fields(peer, &xff, &fwd) {
            push_field(&mut out, b"X-Forwarded-For", xff.as_bytes());
            out.extend_from_slice(b"Forwarded: ");
            out.extend_from_slice(fwd.as_bytes());
            out.extend_from_slice(b";host=\"");
            if host.contains('"') {
                out.extend(host.bytes().filter(|b| *b != b'"'));
            } else {
                out.extend_from_slice(host.as_bytes());
            }
            out.extend_from_slice(b"\";proto=");
            out.extend_from_slice(proto);
            out.extend_from_slice(b"\r\n");
        }
        if !trusted || !head.has("x-forwarded-proto") {
            push_field(&mut out, b"X-Forwarded-Proto", proto);
        }
        if !trusted || !head.has("x-forwarded-host") {
            push_field(&mut out, b"X-Forwarded-Host", host.as_bytes());
        }
    }
    if let (Some(field), Some(id)) = (&listener.request_id, request_id) {
        push_field(&mut out, field.as_bytes(), id.as_bytes());
    }
    push_next_hop_fields(&mut out, head, upgrade, body, had_length);
    out.extend_from_slice(b"\r\n");
    out
}

/// Field names a server may take for the same one: case aside, and `_`
/// for `-` (CGI-style servers read both as `HTTP_X_REQUEST_ID`).
fn same_field(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// The id of a request on a listener with `request_id`: the one a trusted
/// balancer in front sent (so one id follows the request through both),
/// else a new one. An id is 1 to 128 letters, digits and `-._:`, which no
/// log format needs to escape.
pub(crate) fn request_id(
    listener: &ListenerConfig,
    head: &RequestHead,
    peer: IpAddr,
) -> Option<Box<str>> {
    let field = listener.request_id.as_deref()?;
    let peer = canonical(peer);
    if listener.trusted_proxies.iter().any(|c| c.contains(peer))
        && let Some(sent) = head.first(&field.to_ascii_lowercase())
        && (1..=128).contains(&sent.len())
        && sent
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(b))
    {
        return Some(String::from_utf8_lossy(sent).into());
    }
    Some(new_request_id().into())
}

/// 32 hex digits: a per-process random half and a counter, so ids never
/// repeat within a process and are not guessable across processes.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU64;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix:016x}{:016x}",
        balance::hash64(&n.to_le_bytes()) ^ n
    )
}

/// An origin-form head rewritten for an HTTP parent: absolute-form target
/// (RFC 9112 §3.2.2) and the parent's credentials.
pub(crate) fn absolute_form(
    origin_form: Vec<u8>,
    target: &HttpTarget,
    credentials: Option<&(String, String)>,
) -> Vec<u8> {
    let line_end = memchr::memmem::find(&origin_form, b"\r\n").unwrap_or(0);
    let line = &origin_form[..line_end];
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (method, path, version) = (
        parts.next().unwrap_or(b"GET"),
        parts.next().unwrap_or(b"/"),
        parts.next().unwrap_or(b"HTTP/1.1"),
    );
    let mut out = Vec::with_capacity(origin_form.len() + 96);
    out.extend_from_slice(method);
    out.extend_from_slice(b" http://");
    out.extend_from_slice(target.host_field().as_bytes());
    if path != b"*" {
        out.extend_from_slice(path);
    }
    out.push(b' ');
    out.extend_from_slice(version);
    // Everything after the request line but the blank line that ends it.
    out.extend_from_slice(&origin_form[line_end..origin_form.len() - 2]);
    if let Some((user, password)) = credentials {
        push_field(
            &mut out,
            b"Proxy-Authorization",
            crate::egress::parent::basic_credentials(user, password).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A PROXY protocol header (v1 text or v2 binary) naming the client.
pub fn proxy_header(
    version: ProxyProtocolVersion,
    client: std::net::SocketAddr,
    local: Option<std::net::SocketAddr>,
) -> Vec<u8> {
    let local = local.unwrap_or(client);
    let (src, dst) = (
        std::net::SocketAddr::new(canonical(client.ip()), client.port()),
        std::net::SocketAddr::new(canonical(local.ip()), local.port()),
    );
    match version {
        ProxyProtocolVersion::V1 => match (src, dst) {
            (std::net::SocketAddr::V4(s), std::net::SocketAddr::V4(d)) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes(),
            (s, d) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                to_v6(s.ip()),
                to_v6(d.ip()),
                s.port(),
                d.port()
            )
            .into_bytes(),
        },
        ProxyProtocolVersion::V2 => {
            let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            out.push(0x21); // version 2, PROXY command
            match (src, dst) {
                (std::net::SocketAddr::V4(s), std::net::SocketAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                (s, d) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&to_v6(s.ip()).octets());
                    out.extend_from_slice(&to_v6(d.ip()).octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
            }
            out
        }
    }
}

/// The PROXY header of a connection the proxy makes for itself, a health
/// check: v1 `UNKNOWN`, v2 `LOCAL` (both "use the connection's own
/// addresses", as the PROXY protocol specification asks for health checks).
pub fn local_proxy_header(version: ProxyProtocolVersion) -> Vec<u8> {
    match version {
        ProxyProtocolVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyProtocolVersion::V2 => {
            let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            // Version 2, LOCAL command; no family, no addresses.
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            out
        }
    }
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    /// The same on HTTP/1 (Host) and HTTP/2 (:authority).
    #[test]
    fn ports_come_off_hosts_and_ipv6_literals_keep_their_brackets() {
        assert_eq!(host_without_port("app.test:8080"), "app.test");
        assert_eq!(host_without_port("app.test"), "app.test");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
