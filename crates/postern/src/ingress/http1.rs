//! One HTTP/1.x client connection on a forward listener: read a request head
//! (with the header and idle timeouts), check it, decide, dispatch to CONNECT,
//! forwarding or the proxy's own page, log, and repeat while keep-alive holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::ingress::stream::ClientStream;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use crate::error::{ErrorKind, PageStyle, ProxyError, error_response};
use crate::forward::http::{Outbound, forward};
use crate::forward::plan::Plan;
use crate::forward::{connect, page};
use crate::http1::fields::{ConnectionOptions, connection_options, request_body};
use crate::http1::head::{Fields, HeadLimits, parse_request};
use crate::http1::{BodyKind, HeadError, RequestHead};

use super::{Client, head_error_text};

/// An idle keep-alive connection keeps at most this much buffer.
const IDLE_BUFFER: usize = 4 * 1024;

enum HeadRead {
    Head(RequestHead),
    /// The client closed, idled out, or the proxy is shutting down.
    Closed,
    Failed(ProxyError),
}

pub async fn serve_connection(
    shared: Arc<Shared>,
    listener: Arc<str>,
    stream: ClientStream,
    peer: SocketAddr,
    initial: BytesMut,
) {
    let cfg = shared.config();
    let mut buf = initial;
    buf.reserve(IDLE_BUFFER);
    let mut client = Client::new(stream, buf, peer);
    let mut first = true;
    let mut shutdown = shared.shutdown_signal();
    // One wait on shutdown for the whole connection: set up once, it stays
    // registered between requests instead of being made for each wait.
    let mut stopping = std::pin::pin!(crate::app::stopped(&mut shutdown));
    loop {
        let head = read_head(&cfg, stopping.as_mut(), &mut client, first).await;
        first = false;
        let keep_alive = match head {
            HeadRead::Head(head) => handle(&cfg, &shared, &mut client, &listener, head).await,
            HeadRead::Closed => return,
            HeadRead::Failed(err) => {
                let mut ctx = RequestCtx::new(peer, &listener);
                ctx.method = "-".into();
                ctx.url = "-".into();
                ctx.record_error(&err);
                ctx.bytes_in = client.buf.len() as u64;
                let style = PageStyle {
                    html: true,
                    head_only: false,
                    connection: Some("close"),
                };
                let page =
                    error_response(&err, style, proxy_name(&cfg), cfg.http.error_page.as_ref());
                if client.send(&page, cfg.timeouts.io).await {
                    ctx.bytes_out = page.len() as u64;
                }
                shared.finish(&ctx);
                false
            }
        };
        if client.tunneled {
            // Both ends of the tunnel are already finished: just close.
            return;
        }
        if !keep_alive || crate::app::shutting_down() {
            linger_close(client.stream).await;
            return;
        }
        if client.buf.is_empty() && client.buf.capacity() > 4 * IDLE_BUFFER {
            client.buf = BytesMut::with_capacity(IDLE_BUFFER);
        }
    }
}

fn proxy_name(cfg: &Config) -> &str {
    cfg.http.via.as_deref().unwrap_or("postern")
}

/// Reads one request head. The first byte of a request may take up to the idle
/// timeout (keep-alive) or header timeout (new connection); once it arrives, the
/// whole head must follow within the header timeout (slowloris guard).
async fn read_head(
    cfg: &Config,
    mut stopping: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    client: &mut Client,
    first: bool,
) -> HeadRead {
    let limits = HeadLimits {
        max_line: cfg.limits.max_request_line,
        max_size: cfg.limits.max_header_size,
        max_fields: cfg.limits.max_headers,
    };
    let mut deadline = None;
    loop {
        if !client.buf.is_empty() {
            match parse_request(&client.buf, limits) {
                Ok(Some((n, parts))) => {
                    let raw = client.buf.split_to(n).freeze();
                    return HeadRead::Head(RequestHead::new(raw, parts));
                }
                Ok(None) => {}
                Err(e) => return HeadRead::Failed(head_error(&e)),
            }
            deadline.get_or_insert_with(|| Instant::now() + cfg.timeouts.client_header);
        }
        if client.buf.capacity() - client.buf.len() < 1024 {
            client.buf.reserve(IDLE_BUFFER);
        }
        let read = match deadline {
            Some(d) => timeout_at(d, client.stream.read_buf(&mut client.buf))
                .await
                .map_err(|_| ()),
            None => {
                let wait = if first {
                    cfg.timeouts.client_header
                } else {
                    cfg.timeouts.client_idle
                };
                let read = client.stream.read_buf(&mut client.buf);
                tokio::select! {
                    biased;
                    r = client.idle_timer.within(wait, read) => r.map_err(|_| ()),
                    () = stopping.as_mut() => return HeadRead::Closed,
                }
            }
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Closed,
            Ok(Ok(_)) => {}
            Err(_) if client.buf.is_empty() => return HeadRead::Closed,
            Err(_) => {
                return HeadRead::Failed(ProxyError::new(
                    ErrorKind::RequestTimeout,
                    "the request head did not arrive within the header timeout",
                ));
            }
        }
    }
}

fn head_error(e: &HeadError) -> ProxyError {
    let kind = match e {
        HeadError::Malformed(_) => ErrorKind::BadRequest,
        HeadError::LineTooLong => ErrorKind::UriTooLong,
        HeadError::TooLarge | HeadError::TooManyHeaders => ErrorKind::HeaderTooLarge,
        HeadError::Version => ErrorKind::VersionNotSupported,
    };
    ProxyError::new(kind, head_error_text(e))
}

/// Handles one request; returns whether the connection may carry another.
async fn handle(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    listener: &Arc<str>,
    head: RequestHead,
) -> bool {
    let mut ctx = RequestCtx::new(client.peer, listener);
    // Only the access log reads these; skip the copies when it is off.
    ctx.logging = shared.log.enabled();
    if ctx.logging {
        ctx.method = head.method().to_string();
        ctx.url = crate::forward::target::without_password(head.target()).into_owned();
    }
    ctx.version = if head.minor == 0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    ctx.bytes_in = head.raw.len() as u64;
    if shared.log.wants_request_fields() {
        ctx.referer = head
            .first("referer")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        ctx.user_agent = head
            .first("user-agent")
            .map(|v| String::from_utf8_lossy(v).into_owned());
    }
    let mut body = None;
    let result = route(cfg, shared, client, &head, &mut body, &mut ctx).await;
    let keep_alive = match result {
        Ok(keep) => keep,
        Err(err) => {
            ctx.record_error(&err);
            // Without a body, the next request starts right after this head.
            // A refused CONNECT closes: what follows may be tunnel bytes sent
            // optimistically, never to be read as a request.
            let keep = body == Some(BodyKind::None)
                && !head.is_method("CONNECT")
                && connection_options(&head).persistent(head.minor)
                && !matches!(err.kind, ErrorKind::BadRequest | ErrorKind::NotImplemented);
            let style = PageStyle {
                html: wants_html(&head),
                head_only: head.is_method("HEAD"),
                connection: match (keep, head.minor) {
                    (false, _) => Some("close"),
                    (true, 0) => Some("keep-alive"),
                    (true, _) => None,
                },
            };
            let page = error_response(&err, style, proxy_name(cfg), cfg.http.error_page.as_ref());
            if client.send(&page, cfg.timeouts.io).await {
                ctx.bytes_out += page.len() as u64;
                keep
            } else {
                false
            }
        }
    };
    shared.finish(&ctx);
    keep_alive
}

async fn route(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    head: &RequestHead,
    body_out: &mut Option<BodyKind>,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0.
    let hosts = head.values("host").count();
    if hosts > 1 {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "more than one Host field",
        ));
    }
    if hosts == 0 && head.minor >= 1 {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "Host field missing in an HTTP/1.1 request",
        ));
    }
    let body = request_body(head).map_err(|m| {
        let kind = if m == "unsupported transfer coding" {
            ErrorKind::NotImplemented
        } else {
            ErrorKind::BadRequest
        };
        ProxyError::new(kind, m)
    })?;
    *body_out = Some(body);

    let conn = connection_options(head);
    let reverse = cfg
        .listeners
        .iter()
        .any(|l| *l.name == *ctx.listener && l.mode == crate::config::Mode::Reverse);
    if reverse {
        if head.is_method("CONNECT") {
            return Err(ProxyError::new(
                ErrorKind::MethodNotAllowed,
                "CONNECT is not served on a reverse listener",
            ));
        }
        return Box::pin(crate::reverse::serve(
            cfg, shared, client, head, body, &conn, ctx,
        ))
        .await;
    }
    if head.is_method("CONNECT") && body != BodyKind::None {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "CONNECT with a request body",
        ));
    }
    let local = if matches!(head.target_bytes(), [b'/', ..] | b"*") {
        client.stream.local_addr().unwrap_or(client.peer)
    } else {
        client.peer
    };
    let plan = Plan::new(cfg, head, local)?;
    let host = plan.rule_host();
    let url = plan.rule_url(head, cfg.rules.uses_url());
    if ctx.logging && matches!(plan, Plan::Tunnel { .. }) {
        ctx.url = url.to_string();
    }
    let subject = plan.subject(head, client.peer, &ctx.listener, &host, &url);
    let admission = shared
        .guard
        .admit(cfg, &shared.connector.resolver, &subject)
        .await?;
    ctx.user = admission.user.clone();
    match plan {
        // Requests to the proxy itself pass the rules like any other, with
        // the listener's own address as destination.
        Plan::Local(local) => local_request(cfg, client, head, body, &conn, local, ctx).await,
        Plan::Tunnel { dest, port } => {
            let parent = parent_pool(cfg, shared, &ctx.listener, &dest, &admission)?;
            // Boxed: the tunnel's state is large, and a connection waiting for
            // its next request should not carry it (nor copy it on every move).
            let target = connect::TunnelTarget {
                dest: &dest,
                port,
                parent: parent.as_ref(),
            };
            Box::pin(connect::tunnel(
                cfg, shared, client, target, &admission, ctx,
            ))
            .await?;
            Ok(false)
        }
        Plan::Ftp(ftp) => {
            Box::pin(crate::forward::ftp::serve(
                cfg, shared, client, head, body, &ftp, &admission, ctx,
            ))
            .await
        }
        Plan::Http(http_target) if head.is_method("PURGE") => {
            let Some(cache) = &shared.cache else {
                return Err(ProxyError::new(
                    ErrorKind::MethodNotAllowed,
                    "no cache to purge",
                ));
            };
            let url = format!("http://{}{}", http_target.host_field(), http_target.path);
            let keep = body == BodyKind::None && conn.persistent(head.minor);
            crate::cache::flow::answer_purge(cfg, cache, client, &url, keep, ctx).await
        }
        Plan::Http(http_target) => {
            let scrubber = cfg.scrubber(&ctx.listener);
            if let Some(pool) =
                parent_pool(cfg, shared, &ctx.listener, &http_target.dest, &admission)?
            {
                let via = crate::reverse::Via::Parent {
                    target: &http_target,
                    scrubber: &scrubber,
                    via: Outbound::forward_via(cfg, &scrubber),
                };
                if let Some(cache) = &shared.cache {
                    // Cached like direct traffic, under the same keys, and
                    // revalidated through the parents too.
                    let url = format!("http://{}{}", http_target.host_field(), http_target.path);
                    // The refresh is a GET of its own, without a body.
                    let get = (head, BodyKind::None, &conn);
                    let as_sent = Outbound::forwarded(cfg, get, &admission, &scrubber);
                    let peer = client.peer;
                    let refresh = |stale, req_cc| {
                        crate::reverse::refresh_through_parent(
                            cfg,
                            shared,
                            &http_target,
                            &as_sent,
                            peer,
                            &pool,
                            stale,
                            req_cc,
                        );
                    };
                    let to = (&via, &pool, &admission, &*scrubber);
                    return Box::pin(crate::reverse::dispatch_cached(
                        cfg,
                        shared,
                        client,
                        (head, body, &conn),
                        to,
                        (cache, url),
                        Some(&refresh),
                        ctx,
                    ))
                    .await;
                }
                let mut no_cache = None;
                let done = Box::pin(crate::reverse::dispatch(
                    cfg,
                    shared,
                    client,
                    head,
                    body,
                    &conn,
                    &via,
                    &pool,
                    &admission,
                    &mut no_cache,
                    ctx,
                ))
                .await?;
                return match done {
                    crate::forward::http::FromOrigin::Done(d) => Ok(d.client_keep_alive),
                    _ => Err(ProxyError::new(
                        ErrorKind::BadResponse,
                        "response withheld without a cache",
                    )),
                };
            }
            let done = Box::pin(forward(
                cfg,
                shared,
                client,
                &http_target,
                Outbound::forwarded(cfg, (head, body, &conn), &admission, &scrubber),
                ctx,
            ))
            .await?;
            Ok(done.client_keep_alive)
        }
    }
}

/// The parent pool of a forward listener, if it has one. The parent resolves
/// names; an address literal is still checked here against the SSRF guard.
pub(crate) fn parent_pool(
    cfg: &Config,
    shared: &Shared,
    listener: &str,
    dest: &crate::egress::Destination,
    admission: &crate::guard::Admission<'_>,
) -> Result<Option<std::sync::Arc<crate::reverse::pool::Pool>>, ProxyError> {
    let Some(name) = cfg
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .and_then(|l| l.parent.as_deref())
    else {
        return Ok(None);
    };
    // A parent resolves names itself, so what this proxy checks on
    // addresses must hold for every address a name may stand for.
    match dest {
        crate::egress::Destination::Ip(ip) => {
            cfg.address_permit().filter(&ip.to_string(), &[*ip])?;
        }
        // RFC 6761 §6.3: these names are the parent's own loopback.
        crate::egress::Destination::Name(n)
            if !cfg.egress.allow_private_destinations
                && crate::egress::resolve::is_localhost(n) =>
        {
            return Err(ProxyError::new(
                ErrorKind::DestinationProhibited,
                format!("{n} is a loopback name (egress.allow_private_destinations)"),
            ));
        }
        crate::egress::Destination::Name(n) if admission.refused_some => {
            return Err(ProxyError::new(
                ErrorKind::Denied,
                format!(
                    "the rules refuse some addresses of {n}, and a parent proxy would choose among all of them"
                ),
            ));
        }
        crate::egress::Destination::Name(_) => {}
    }
    Ok(shared.pools.load().get(name).cloned())
}

/// Origin-form requests to the proxy port itself, and `OPTIONS *`.
async fn local_request(
    cfg: &Config,
    client: &mut Client,
    head: &RequestHead,
    body: BodyKind,
    conn: &ConnectionOptions<'_>,
    local: SocketAddr,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    let keep = body == BodyKind::None && conn.persistent(head.minor);
    if head.target() == "*" {
        // RFC 9112 §3.2.4: asterisk-form is only for a server-wide OPTIONS.
        if !head.is_method("OPTIONS") {
            return Err(ProxyError::new(
                ErrorKind::BadRequest,
                "asterisk-form request target is only allowed with OPTIONS",
            ));
        }
        let bytes = format!(
            "HTTP/1.1 200 OK\r\nAllow: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH\r\nContent-Length: 0\r\n{}\r\n",
            if keep { "" } else { "Connection: close\r\n" }
        );
        ctx.status = 200;
        if !client.send(bytes.as_bytes(), cfg.timeouts.io).await {
            return Ok(false);
        }
        ctx.bytes_out += bytes.len() as u64;
        return Ok(keep);
    }
    let bytes = page::respond(cfg, head, local, ctx, keep)?;
    if !client.send(&bytes, cfg.timeouts.io).await {
        return Ok(false);
    }
    ctx.bytes_out += bytes.len() as u64;
    Ok(keep)
}

/// Plain text is sent to clients whose Accept excludes HTML.
fn wants_html(head: &RequestHead) -> bool {
    let Some(accept) = head.first("accept") else {
        return true;
    };
    let accept = String::from_utf8_lossy(accept).to_ascii_lowercase();
    accept.contains("text/html") || accept.contains("*/*") || accept.contains("text/*")
}

/// Closes after a final response: half-close, then read and discard what the
/// client still sends for a moment, so unread input does not turn the close into
/// a reset that destroys the response in flight (like nginx's lingering close).
async fn linger_close(mut stream: ClientStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut total = 0usize;
    while total < 256 * 1024 {
        match timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}
