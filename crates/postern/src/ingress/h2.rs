//! HTTP/2 from clients (RFC 9113) on TLS listeners that negotiated `h2`.
//!
//! hyper runs the HTTP/2 connection, with abuse limits (concurrent streams,
//! streams reset before they are accepted — the "rapid reset" attack —, header
//! list size, which also bounds CONTINUATION floods). Each request is turned
//! into the HTTP/1.1 head the rest of the proxy understands, so targets,
//! rules, anonymity and header rewriting are decided by the same code as for
//! HTTP/1.1; it is then sent to the next hop with hyper's client (HTTP/1.1, or
//! HTTP/2 where a pool says `h2c`) and the response streamed back, trailers
//! included (gRPC). CONNECT streams (RFC 9113 §8.5) become tunnels.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::app::Shared;
use crate::cache::h2::Looked;
use crate::config::{Config, Mode};
use crate::context::RequestCtx;
use crate::egress::Upstream;
use crate::egress::senders::{Sender, UpBody, up_body};
use crate::error::{ErrorKind, ProxyError, page_body, proxy_status_value};
use crate::forward::http::{Outbound, upstream_head};
use crate::forward::plan::Plan;
use crate::http1::RequestHead;
use crate::http1::fields::{connection_options, request_body};
use crate::http1::head::{Fields, HeadLimits, parse_request};
use crate::ingress::h2_limits;
use crate::ingress::h2_streams::StreamStates;
use crate::reverse::compress;
use crate::reverse::pool::{Pick, PickInput};
use crate::reverse::reverse_head;

/// A response body for HTTP/2 clients; its error (a server's, or a limit
/// passed) resets the client's stream.
type Body = BoxBody<Bytes, crate::egress::senders::BoxError>;

/// Serves one HTTP/2 connection until the client or the proxy ends it.
pub async fn serve<IO>(
    shared: Arc<Shared>,
    listener: Arc<str>,
    stream: IO,
    peer: SocketAddr,
    local: SocketAddr,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cfg = shared.config();
    let shared_shutdown = shared.shutdown_signal();
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = hyper::service::service_fn(move |req| {
        let (shared, listener) = (shared.clone(), listener.clone());
        let stream = StreamHold::enter(&shared, &streams, peer);
        async move {
            let response = match stream {
                Ok(stream) => handle(shared, listener, peer, local, req, stream).await,
                Err(e) => {
                    let mut ctx = RequestCtx::new(peer, &listener);
                    ctx.version = "HTTP/2";
                    ctx.method = req.method().to_string();
                    ctx.url = "-".into();
                    ctx.record_error(&e);
                    shared.finish(&ctx);
                    let response = error_response(&shared.config(), &e);
                    if req.method() == Method::HEAD {
                        without_body(response)
                    } else {
                        response
                    }
                }
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .max_concurrent_streams(256)
        // RFC 9113 §10.5 and CVE-2023-44487: streams a client resets before
        // they are served count against it; past the limit the connection ends.
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .max_header_list_size(cfg.limits.max_header_size as u32)
        // RFC 8441: WebSocket (and other upgrades) over HTTP/2 streams.
        .enable_connect_protocol()
        .keep_alive_interval(None);
    let liveness = Arc::new(crate::ingress::h2_streams::Liveness::default());
    let io = StreamStates::new(stream).watched(liveness.clone());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // A connection without open streams for `client_idle` is closed, as an
    // idle HTTP/1 keep-alive connection is; on shutdown, GOAWAY (RFC 9113
    // §6.8) lets the streams in flight finish and takes no new ones.
    let idle_limit = cfg.timeouts.client_idle;
    let mut shutdown = shared_shutdown;
    let mut check_in = idle_limit;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = crate::app::stopped(&mut shutdown) => break,
            _ = tokio::time::sleep(check_in) => match liveness.idle_for() {
                Some(idle) if idle >= idle_limit => break,
                Some(idle) => check_in = idle_limit - idle,
                None => check_in = idle_limit,
            },
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

async fn handle(
    shared: Arc<Shared>,
    listener: Arc<str>,
    peer: SocketAddr,
    local: SocketAddr,
    req: Request<Incoming>,
    stream: StreamHold,
) -> Response<Body> {
    let cfg = shared.config();
    let mut ctx = RequestCtx::new(peer, &listener);
    ctx.version = "HTTP/2";
    ctx.method = req.method().to_string();
    ctx.url = crate::forward::target::without_password(&req.uri().to_string()).into_owned();
    let head_only = req.method() == Method::HEAD;
    if shared.log.wants_request_fields() {
        let text = |name| {
            req.headers()
                .get(name)
                .map(|v: &hyper::header::HeaderValue| {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                })
        };
        ctx.referer = text(hyper::header::REFERER);
        ctx.user_agent = text(hyper::header::USER_AGENT);
    }
    // A stream the client resets (or a connection it closes) before the
    // answer drops this future: the guard still logs the request.
    let mut unanswered = Unanswered(Some((shared.clone(), ctx)));
    let ctx = &mut unanswered.0.as_mut().expect("just set").1;
    let mut tunnel = None;
    let ends = (peer, local);
    let (parts, body) = req.into_parts();
    // A client waiting for 100 (Continue) sends no body before the answer.
    let waits = parts.headers.contains_key(hyper::header::EXPECT);
    let mut body = Some(body);
    let req = Request::from_parts(parts, ());
    let routed = route(
        &cfg,
        &shared,
        &listener,
        ends,
        (req, &mut body),
        ctx,
        &mut tunnel,
    );
    let mut response = match routed.await {
        Ok(r) => r,
        Err(e) => {
            ctx.record_error(&e);
            error_response(&cfg, &e)
        }
    };
    // RFC 9110 §9.3.2: no content in answer to HEAD (pages the proxy makes
    // itself have some; over HTTP/2 it would be a protocol error).
    if head_only {
        response = without_body(response);
    }
    if tunnel.is_none() && !waits {
        finish_reading(body).await;
    }
    ctx.status = response.status().as_u16();
    let (shared, mut ctx) = unanswered.0.take().expect("answered once");
    // The log line is written when the exchange ends, with what moved.
    if let Some(ended) = tunnel {
        tokio::spawn(async move {
            let _stream = stream;
            if let Ok(stats) = ended.await {
                let stats: crate::relay::TunnelStats = stats;
                ctx.bytes_in = stats.up;
                ctx.bytes_out = stats.down;
                if stats.idle_timeout {
                    ctx.error = Some("connection_read_timeout");
                }
            }
            shared.finish(&ctx);
        });
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = Logged {
        inner: body,
        end: Some((shared, ctx)),
        _stream: stream,
    };
    Response::from_parts(parts, body.boxed())
}

/// A stream of an HTTP/2 connection, counted while it lives. With
/// `limits.client_connections`, every stream beyond the first takes a
/// connection slot of the client's, as nginx counts each concurrent HTTP/2
/// request as a connection: one HTTP/2 connection cannot open more
/// upstream connections and tunnels than the limit allows HTTP/1 clients.
struct StreamHold {
    open: Arc<std::sync::atomic::AtomicUsize>,
    _slot: Option<crate::guard::limits::ConnectionSlot>,
}

impl StreamHold {
    fn enter(
        shared: &Shared,
        open: &Arc<std::sync::atomic::AtomicUsize>,
        peer: SocketAddr,
    ) -> Result<StreamHold, ProxyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let before = open.fetch_add(1, Relaxed);
        let mut hold = StreamHold {
            open: open.clone(),
            _slot: None,
        };
        let Some(max) = shared.config().limits.client_connections else {
            return Ok(hold);
        };
        if before == 0 {
            // The first stream rides on the connection's own slot.
            return Ok(hold);
        }
        match shared.guard.limits.connections.enter(peer.ip(), max) {
            Some(slot) => {
                hold._slot = Some(slot);
                Ok(hold)
            }
            None => Err(ProxyError::new(
                ErrorKind::ConnectionLimit,
                format!(
                    "{} already has {max} connections or HTTP/2 streams open (limits.client_connections)",
                    peer.ip()
                ),
            )),
        }
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A request still waiting for its answer, logged as cut short if its
/// stream goes away first.
struct Unanswered(Option<(Arc<Shared>, RequestCtx)>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some((shared, mut ctx)) = self.0.take() {
            ctx.aborted = true;
            shared.finish(&ctx);
        }
    }
}

/// A response body that writes the access log line when it has been sent
/// (or the client reset the stream), with the bytes sent and the duration.
struct Logged {
    inner: Body,
    end: Option<(Arc<Shared>, RequestCtx)>,
    /// The stream's place among the connection's, held until its body ends.
    _stream: StreamHold,
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = crate::egress::senders::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((_, ctx))) = (frame.data_ref(), this.end.as_mut()) {
                    ctx.bytes_out += data.len() as u64;
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => {
                if let Some((_, ctx)) = this.end.as_mut() {
                    ctx.aborted = true;
                }
            }
            std::task::Poll::Ready(None) => this.finish(false),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Logged {
    fn finish(&mut self, cut: bool) {
        if let Some((shared, mut ctx)) = self.end.take() {
            ctx.aborted |= cut;
            shared.finish(&ctx);
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or reset the stream),
        // unless the body had nothing left to send.
        let cut = !hyper::body::Body::is_end_stream(&self.inner);
        self.finish(cut);
    }
}

/// The request body, for the request sent on (each path takes it once).
fn take(body: &mut Option<Incoming>) -> Result<Incoming, ProxyError> {
    body.take()
        .ok_or_else(|| ProxyError::new(ErrorKind::BadRequest, "request body already used"))
}

/// How much of a request body is read before an answer made here.
const READ_BEFORE_ANSWER: usize = 64 * 1024;
/// How long an answer made here waits for the rest of the request.
const WAIT_BEFORE_ANSWER: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the rest of a request body that an answer made here does not use
/// (an error page, a cache hit, the info page).
///
/// RFC 9113 §8.1 lets a server answer early. Waiting briefly has two gains:
/// the answer follows the whole request, as it would from an origin server;
/// and a fault later in the request's stream (a reset, a body that does not
/// match its content-length) ends the stream before it is answered.
///
/// The wait is bounded in bytes and time; after it, hyper resets what is left.
async fn finish_reading(body: Option<Incoming>) {
    let Some(mut body) = body else { return };
    if hyper::body::Body::is_end_stream(&body) {
        return;
    }
    let mut left = READ_BEFORE_ANSWER;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n >= left {
                return;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout(WAIT_BEFORE_ANSWER, read).await;
}

fn error_response(cfg: &Config, err: &ProxyError) -> Response<Body> {
    let name = cfg.http.via.as_deref().unwrap_or("postern");
    let (content_type, body) = page_body(err, false, name, None);
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&proxy_status_value(err, name)) {
        h.insert("proxy-status", v);
    }
    for (n, v) in err.answer.iter().flat_map(|a| &a.fields) {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*n, v);
        }
    }
    r
}

/// The response without its content, its length kept in Content-Length.
fn without_body(response: Response<Body>) -> Response<Body> {
    use hyper::body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(n) = body.size_hint().exact()
        && n > 0
        && !parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
    {
        parts
            .headers
            .insert(hyper::header::CONTENT_LENGTH, n.into());
    }
    Response::from_parts(parts, full(Bytes::new()))
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The request as an HTTP/1.1 head, for the planning and header code.
/// `upgrade`: the fields that turn an extended CONNECT into the GET of an
/// HTTP/1.1 Upgrade.
fn http1_view(
    cfg: &Config,
    req: &Request<()>,
    body: &Option<Incoming>,
    (target, authority): (&str, &str),
    upgrade: Option<&str>,
) -> Result<RequestHead, ProxyError> {
    let method = if upgrade.is_some() {
        "GET"
    } else {
        req.method().as_str()
    };
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\n");
    text.push_str(upgrade.unwrap_or_default());
    for (name, value) in req.headers() {
        if name == "host" || name == "cookie" {
            continue;
        }
        let v = value
            .to_str()
            .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "header value is not text"))?;
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(v);
        text.push_str("\r\n");
    }
    // RFC 9113 §8.2.3: cookie crumbs become one field, joined with "; ".
    let mut crumbs = req.headers().get_all("cookie").iter().peekable();
    if crumbs.peek().is_some() {
        text.push_str("cookie: ");
        for (i, crumb) in crumbs.enumerate() {
            let crumb = crumb
                .to_str()
                .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "header value is not text"))?;
            if i > 0 {
                text.push_str("; ");
            }
            text.push_str(crumb);
        }
        text.push_str("\r\n");
    }
    // A body of unknown length travels chunked on HTTP/1.1.
    if !req.headers().contains_key("content-length")
        && body
            .as_ref()
            .is_some_and(|b| !hyper::body::Body::is_end_stream(b))
    {
        text.push_str("Transfer-Encoding: chunked\r\n");
    }
    text.push_str("\r\n");
    let limits = HeadLimits {
        max_line: cfg.limits.max_request_line,
        max_size: cfg.limits.max_header_size,
        max_fields: cfg.limits.max_headers,
    };
    match parse_request(text.as_bytes(), limits) {
        Ok(Some((n, parts))) => Ok(RequestHead::new(Bytes::from(text).slice(..n), parts)),
        _ => Err(ProxyError::new(
            ErrorKind::BadRequest,
            "request cannot be expressed in HTTP/1.1",
        )),
    }
}

/// `tunnel` receives how a CONNECT stream's tunnel ended, for the log.
async fn route(
    cfg: &Config,
    shared: &Shared,
    listener: &str,
    (peer, local): (SocketAddr, SocketAddr),
    (mut req, unread): (Request<()>, &mut Option<Incoming>),
    ctx: &mut RequestCtx,
    tunnel: &mut Option<tokio::sync::oneshot::Receiver<crate::relay::TunnelStats>>,
) -> Result<Response<Body>, ProxyError> {
    let listener_cfg = cfg
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .ok_or_else(|| ProxyError::new(ErrorKind::Denied, "listener gone"))?;
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let connect = req.method() == Method::CONNECT;

    if listener_cfg.mode == Mode::Reverse {
        let upgrade = match req.extensions().get::<hyper::ext::Protocol>() {
            // RFC 8441 §4: `:protocol` names what the stream becomes.
            Some(protocol) if connect => {
                let has_key = req.headers().contains_key("sec-websocket-key");
                let fields =
                    crate::reverse::extended_connect::upgrade_fields(protocol.as_str(), has_key);
                Some(fields.ok_or_else(|| {
                    ProxyError::new(ErrorKind::BadRequest, ":protocol is not a token")
                })?)
            }
            _ if connect => {
                return Err(ProxyError::new(
                    ErrorKind::MethodNotAllowed,
                    "CONNECT is not served on a reverse listener",
                ));
            }
            _ => None,
        };
        // A gateway to HTTP servers serves http and https URIs only; other
        // schemes are not translated (RFC 9113 §8.3.1).
        if let Some(scheme) = req.uri().scheme_str()
            && !scheme.eq_ignore_ascii_case("http")
            && !scheme.eq_ignore_ascii_case("https")
        {
            return Err(ProxyError::new(
                ErrorKind::BadRequest,
                format!(":scheme `{scheme}` is not served here; use http or https"),
            ));
        }
        let head = http1_view(cfg, &req, unread, (&path, &authority), upgrade.as_deref())?;
        let exchange = match upgrade {
            Some(_) => Exchange::Upgrade(&mut req, tunnel),
            None => Exchange::Request(unread),
        };
        let ends = (peer, local);
        return reverse(
            cfg,
            shared,
            listener_cfg,
            ends,
            &head,
            &authority,
            exchange,
            ctx,
        )
        .await;
    }

    if connect && req.extensions().get::<hyper::ext::Protocol>().is_some() {
        return Err(ProxyError::new(
            ErrorKind::NotImplemented,
            "extended CONNECT (RFC 8441) is served on reverse listeners only",
        ));
    }
    // Forward: CONNECT authority, or an absolute URI (`:scheme` + `:authority`).
    let target = if connect {
        authority.clone()
    } else if req.uri().scheme().is_some() && !authority.is_empty() {
        format!(
            "{}://{authority}{path}",
            req.uri().scheme_str().unwrap_or("http")
        )
    } else {
        path.clone()
    };
    let head = http1_view(cfg, &req, unread, (&target, &authority), None)?;
    let plan = Plan::new(cfg, &head, local)?;
    let host = plan.rule_host();
    let url = plan.rule_url(&head, cfg.rules.uses_url());
    let subject = plan.subject(&head, peer, listener, &host, &url);
    let admission = shared
        .guard
        .admit(cfg, &shared.connector.resolver, &subject)
        .await?;
    ctx.user = admission.user.clone();
    match plan {
        Plan::Ftp(_) => Err(ProxyError::new(
            ErrorKind::NotImplemented,
            "ftp:// over HTTP/2 is not supported; use HTTP/1.1",
        )),
        Plan::Local(_) => Ok(error_response(
            cfg,
            &ProxyError::new(
                ErrorKind::NotImplemented,
                "this is a proxy; send absolute URIs or CONNECT",
            ),
        )),
        Plan::Tunnel { dest, port } => {
            let parent =
                crate::ingress::http1::parent_pool(cfg, shared, listener, &dest, &admission)?;
            let (upstream, addr, pending) = match &parent {
                Some(pool) => {
                    crate::forward::connect::through_parent(cfg, shared, pool, &dest, port).await?
                }
                None => {
                    let (s, a) = shared
                        .connector
                        .connect(
                            &dest,
                            port,
                            cfg.address_permit(),
                            admission.pinned.as_deref(),
                            cfg.timeouts.connect,
                        )
                        .await?;
                    (s, a, Vec::new())
                }
            };
            ctx.upstream = Some(addr);
            ctx.result = "TCP_TUNNEL";
            let on_upgrade = hyper::upgrade::on(&mut req);
            let idle = cfg.timeouts.tunnel_idle;
            let buckets = admission.buckets.clone();
            let (ended, end) = tokio::sync::oneshot::channel();
            *tunnel = Some(end);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut client = TokioIo::new(upgraded);
                    // What a parent sent after its 200 belongs to the tunnel.
                    if !pending.is_empty()
                        && tokio::io::AsyncWriteExt::write_all(&mut client, &pending)
                            .await
                            .is_err()
                    {
                        return;
                    }
                    let mut upstream = Upstream::Plain(upstream);
                    let stats =
                        crate::relay::tunnel_io(client, &mut upstream, &[], idle, &buckets).await;
                    let _ = ended.send(stats);
                }
            });
            Ok(Response::new(full(Bytes::new())))
        }
        Plan::Http(target) => {
            let scrubber = cfg.scrubber(listener);
            let conn = connection_options(&head);
            let body =
                request_body(&head).map_err(|m| ProxyError::new(ErrorKind::BadRequest, m))?;
            let out = Outbound::forwarded(cfg, (&head, body, &conn), &admission, &scrubber);
            let miss = match &shared.cache {
                None => None,
                Some(cache) => {
                    let name = cfg.http.via.as_deref().unwrap_or("postern");
                    let url = format!("http://{}{}", target.host_field(), target.path);
                    let wait = cfg.timeouts.first_byte;
                    match crate::cache::h2::look(cache, (name, false), url, &head, wait, None)
                        .await?
                    {
                        Looked::Hit(response, refresh) => {
                            ctx.result = "TCP_HIT";
                            if let Some((stale, req_cc)) = refresh {
                                crate::forward::http::refresh_in_background(
                                    cfg,
                                    shared,
                                    &target,
                                    &out,
                                    peer.ip(),
                                    stale,
                                    req_cc,
                                );
                            }
                            let response = h2_limits::limit(cfg, &admission.buckets, response);
                            return Ok(client_response(response, &scrubber, out.via));
                        }
                        Looked::Miss(miss) => Some(miss),
                    }
                }
            };
            let bytes = upstream_head(cfg, &out, &target, false, peer.ip());
            let bytes = match &miss {
                Some(miss) => miss.conditional(bytes),
                None => bytes,
            };
            let fetched = fetch_forward(
                cfg,
                shared,
                listener,
                (&target, &admission),
                bytes,
                take(unread)?,
                peer,
                ctx,
            )
            .await;
            // The content rules, before anything reaches the client.
            let fetched = fetched.and_then(|r| h2_limits::check_head(cfg, r.headers()).map(|()| r));
            let response = match miss {
                Some(miss) => match fetched {
                    Ok(response) => {
                        if let Some(result) = miss.result_for(response.status()) {
                            ctx.result = result;
                        }
                        miss.finish(&head, response)
                    }
                    Err(e) if is_content_refusal(&e) => return Err(e),
                    Err(e) => {
                        let stale = miss.failed(cfg, &head, e)?;
                        ctx.result = "TCP_REFRESH_FAIL_OLD";
                        stale
                    }
                },
                None => fetched?.map(BodyExt::boxed),
            };
            let response = h2_limits::limit(cfg, &admission.buckets, response);
            Ok(client_response(response, &scrubber, out.via))
        }
    }
}

/// A forwarded request's exchange with the next hop (a parent, or the
/// origin over a kept or new connection): the response head.
#[allow(clippy::too_many_arguments)]
async fn fetch_forward(
    cfg: &Config,
    shared: &Shared,
    listener: &str,
    (target, admission): (
        &crate::forward::target::HttpTarget,
        &crate::guard::Admission<'_>,
    ),
    bytes: Vec<u8>,
    body: Incoming,
    peer: SocketAddr,
    ctx: &mut RequestCtx,
) -> Result<Response<Incoming>, ProxyError> {
    let pinned = admission.pinned.as_deref();
    if let Some(pool) =
        crate::ingress::http1::parent_pool(cfg, shared, listener, &target.dest, admission)?
    {
        let body = up_body(body);
        return through_parent(cfg, shared, &pool, target, bytes, body, peer, ctx).await;
    }
    let dispatch = Dispatch {
        shared,
        key: Some(format!("fwd/{}", target.pool_key())),
        http2: false,
        first_byte: cfg.timeouts.first_byte,
    };
    let mut body = Some(up_body(body));
    let mut unsent = None;
    // Rules that looked at addresses approved only these.
    let allowed = |a: SocketAddr| pinned.is_none_or(|p| p.contains(&a.ip()));
    if let Some((sender, addr, tls)) = dispatch.kept(cfg, allowed) {
        ctx.upstream = Some(addr);
        let request = build_request(&bytes, body.take().expect("body"), false, tls)?;
        match dispatch.exchange(sender, (addr, tls), request).await {
            Ok(response) => return Ok(response),
            Err((Some(request), _)) => unsent = Some(request),
            Err((None, e)) => return Err(e),
        }
    }
    let (stream, addr) = shared
        .connector
        .connect(
            &target.dest,
            target.port,
            cfg.address_permit(),
            pinned,
            cfg.timeouts.connect,
        )
        .await?;
    ctx.upstream = Some(addr);
    let sender = dispatch.fresh(Upstream::Plain(stream), addr).await?;
    let request = match unsent {
        Some(r) => r,
        None => build_request(&bytes, body.take().expect("body"), false, false)?,
    };
    dispatch
        .exchange(sender, (addr, false), request)
        .await
        .map_err(|(_, e)| e)
}

#[allow(clippy::too_many_arguments)]
async fn reverse(
    cfg: &Config,
    shared: &Shared,
    listener: &crate::config::ListenerConfig,
    (peer, local): (SocketAddr, SocketAddr),
    head: &RequestHead,
    authority: &str,
    exchange: Exchange<'_>,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    // The same target and Host checks as HTTP/1 (the view is origin form).
    let limits = crate::http1::head::HeadLimits {
        max_line: cfg.limits.max_request_line,
        max_size: cfg.limits.max_header_size,
        max_fields: cfg.limits.max_headers,
    };
    if crate::reverse::target::normalize(head, limits)?.is_some() {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            ":path must be a path or `*`",
        ));
    }
    let host = crate::reverse::host_without_port(authority).to_ascii_lowercase();
    let path = postern_policy::url::normalize_path_and_query(head.target());
    let route = cfg
        .routes
        .iter()
        .find(|r| {
            r.listener == listener.name
                && r.matches(&host, &path, |n| {
                    head.first(n)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
        })
        .ok_or_else(|| {
            ProxyError::new(
                ErrorKind::NoRoute,
                format!("no route matches host `{host}`"),
            )
        })?;
    let admission = crate::reverse::admit(
        cfg,
        shared,
        peer.ip(),
        &listener.name,
        head,
        &host,
        local.port(),
    )
    .await?;
    ctx.user = admission.user.clone();
    ctx.request_id = crate::reverse::request_id(listener, head, peer.ip());
    if let Some(redirect) = &route.redirect {
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let location = redirect.location(scheme, &host, head.target())?;
        crate::reverse::redirected(ctx, redirect.status);
        // (Its bytes are counted as they are sent, as for every answer.)
        let page = crate::reverse::redirect_page(&location);
        let mut response = Response::new(full(page));
        *response.status_mut() =
            hyper::StatusCode::from_u16(redirect.status).unwrap_or(hyper::StatusCode::FOUND);
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html"),
        );
        if let Ok(value) = hyper::header::HeaderValue::from_str(&location) {
            headers.insert(hyper::header::LOCATION, value);
        }
        return Ok(response);
    }
    let pool = shared
        .pools
        .load()
        .get(&route.pool)
        .cloned()
        .ok_or_else(|| ProxyError::new(ErrorKind::NoServer, "pool not running"))?;
    let unread = match exchange {
        Exchange::Request(unread) => unread,
        Exchange::Upgrade(req, tunnel) => {
            let to = ((listener, &**route), &pool);
            let key = crate::reverse::hash_key(&pool.spec, head, peer.ip());
            let request = (head, authority, &key[..]);
            let limits = admission.buckets.clone();
            let ends = (peer, local);
            return upgraded(cfg, shared, to, ends, request, (req, tunnel, limits), ctx).await;
        }
    };
    let miss = match &shared.cache {
        None => None,
        Some(cache) => {
            let name = cfg.http.via.as_deref().unwrap_or("postern");
            let scheme = if listener.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let url = format!("{scheme}://{authority}{}", head.target());
            let wait = cfg.timeouts.first_byte;
            let gzip_for = route
                .compress
                .clone()
                .filter(|_| compress::accepts_gzip(head.values("accept-encoding")));
            match crate::cache::h2::look(cache, (name, true), url, head, wait, gzip_for).await? {
                Looked::Hit(response, refresh) => {
                    ctx.result = "TCP_HIT";
                    if let Some((stale, req_cc)) = refresh {
                        crate::reverse::refresh_stale(
                            cfg,
                            shared,
                            (peer, Some(local)),
                            head,
                            (listener, route),
                            &pool,
                            (stale, req_cc),
                            ctx.request_id.as_deref(),
                        );
                    }
                    return Ok(deliver(cfg, route, head, &admission.buckets, response).await);
                }
                Looked::Miss(miss) => Some(miss),
            }
        }
    };
    let conn = connection_options(head);
    let body = request_body(head).map_err(|m| ProxyError::new(ErrorKind::BadRequest, m))?;
    let bytes = reverse_head(
        head,
        body,
        &conn,
        false,
        listener,
        route,
        // h2c is cleartext: the scheme is the listener's.
        (peer.ip(), listener.tls.is_some()),
        authority,
        ctx.request_id.as_deref(),
    );
    let bytes = match &miss {
        Some(miss) => miss.conditional(bytes),
        None => bytes,
    };
    let key = crate::reverse::hash_key(&pool.spec, head, peer.ip());
    let body = take(unread)?;
    let replayable = crate::reverse::is_idempotent(head) && hyper::body::Body::is_end_stream(&body);
    let cookie = pool
        .spec
        .sticky_cookie
        .as_deref()
        .and_then(|name| crate::reverse::cookie_value(head, name));
    let how = crate::reverse::bridge::Sending {
        head_bytes: &bytes,
        replayable,
        http2: pool.spec.http2,
        hash_key: &key,
        sticky: cookie.as_deref(),
        ends: (peer, Some(local)),
    };
    let body = up_body(body);
    let fetched = crate::reverse::bridge::send(cfg, shared, &pool, how, body, ctx).await;
    // The content rules, before anything reaches the client.
    let fetched = fetched
        .and_then(|(r, inflight)| h2_limits::check_head(cfg, r.headers()).map(|()| (r, inflight)));
    let response = match miss {
        Some(miss) => match fetched {
            Ok((response, inflight)) => {
                if let Some(result) = miss.result_for(response.status()) {
                    ctx.result = result;
                }
                crate::reverse::bridge::Held::wrap(miss.finish(head, response), inflight)
            }
            Err(e) if is_content_refusal(&e) => return Err(e),
            Err(e) => {
                let stale = miss.failed(cfg, head, e)?;
                ctx.result = "TCP_REFRESH_FAIL_OLD";
                stale
            }
        },
        None => {
            let (response, inflight) = fetched?;
            crate::reverse::bridge::Held::wrap(response.map(BodyExt::boxed), inflight)
        }
    };
    Ok(deliver(cfg, route, head, &admission.buckets, response).await)
}

/// A reverse route's response as the HTTP/2 client gets it: held to the
/// size limit, with the route's header rules, encoded when the route
/// compresses (after the rules, so that its Vary and ETag stand), and paced.
async fn deliver<B>(
    cfg: &Config,
    route: &crate::reverse::spec::RouteSpec,
    head: &RequestHead,
    buckets: &[Arc<crate::guard::limits::Bucket>],
    response: Response<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<crate::egress::senders::BoxError>,
{
    let Some(settings) = route.compress.as_deref() else {
        let response = h2_limits::limit(cfg, buckets, response);
        return client_response(response, &route.rewrite, None);
    };
    let response = h2_limits::limit_to(cfg.content.max_response_size, &[], response);
    let response = client_response(response, &route.rewrite, None);
    let accepts = compress::accepts_gzip(head.values("accept-encoding"));
    let response = compress::deliver(settings, (accepts, head), response).await;
    h2_limits::limit_to(None, buckets, response)
}

/// A response refused by the content rules: answered as it is, never
/// covered with a stale copy.
pub(crate) fn is_content_refusal(e: &ProxyError) -> bool {
    matches!(
        e.kind,
        ErrorKind::ContentDenied | ErrorKind::ResponseTooLarge
    )
}

/// What a reverse listener's stream asks of the route's pool.
enum Exchange<'r> {
    /// A request, with its body still to read: answered by a server or the
    /// cache.
    Request(&'r mut Option<Incoming>),
    /// An extended CONNECT (RFC 8441): a tunnel to a server once it has
    /// switched protocols; `tunnel` receives how it ended, for the log.
    Upgrade(&'r mut Request<()>, &'r mut Option<TunnelEnd>),
}

type TunnelEnd = tokio::sync::oneshot::Receiver<crate::relay::TunnelStats>;

/// An extended CONNECT sent to a server of `pool` as an HTTP/1.1 Upgrade;
/// after its 101 the stream is a tunnel to it.
#[allow(clippy::too_many_arguments)]
async fn upgraded(
    cfg: &Config,
    shared: &Shared,
    (route, pool): (
        (
            &crate::config::ListenerConfig,
            &crate::reverse::spec::RouteSpec,
        ),
        &Arc<crate::reverse::pool::Pool>,
    ),
    ends: (SocketAddr, SocketAddr),
    request: (&RequestHead, &str, &[u8]),
    (req, tunnel, limits): (
        &mut Request<()>,
        &mut Option<TunnelEnd>,
        Vec<Arc<crate::guard::limits::Bucket>>,
    ),
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    use crate::reverse::extended_connect;
    let answer = extended_connect::upgrade(cfg, shared, route, pool, ends, request, ctx).await?;
    let mut response = Response::new(full(Bytes::new()));
    for (name, value) in &answer.fields {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    let Some(switched) = answer.switched else {
        // RFC 8441 §5: a 2xx tells the client its tunnel is open, and HTTP/2
        // has no 101 (RFC 9113 §8.1.1).
        if answer.status == 101 || (200..300).contains(&answer.status) {
            return Err(ProxyError::new(
                ErrorKind::BadResponse,
                format!(
                    "the server answered {} without switching to the protocol asked",
                    answer.status
                ),
            ));
        }
        *response.status_mut() =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok(response);
    };
    ctx.result = "TCP_TUNNEL";
    let on_upgrade = hyper::upgrade::on(req);
    let idle = cfg.timeouts.tunnel_idle;
    let (ended, end) = tokio::sync::oneshot::channel();
    *tunnel = Some(end);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let client = TokioIo::new(upgraded);
            let stats = extended_connect::relay(client, switched, idle, &limits).await;
            let _ = ended.send(stats);
        }
    });
    Ok(response)
}

/// A forwarded request through a parent of `pool`: absolute-form to an HTTP
/// parent, origin-form through a SOCKS5 parent's tunnel. Another parent is
/// tried only when connecting fails (the body is a stream).
#[allow(clippy::too_many_arguments)]
async fn through_parent(
    cfg: &Config,
    shared: &Shared,
    pool: &Arc<crate::reverse::pool::Pool>,
    target: &crate::forward::target::HttpTarget,
    origin_form: Vec<u8>,
    body: UpBody,
    peer: SocketAddr,
    ctx: &mut RequestCtx,
) -> Result<Response<Incoming>, ProxyError> {
    use crate::reverse::spec::ParentProtocol;
    let spec = &pool.spec;
    let socks = spec.protocol == ParentProtocol::Socks5;
    let bytes = if socks {
        origin_form
    } else {
        crate::reverse::absolute_form(origin_form, target, spec.credentials.as_ref())
    };
    // In flight through the pool: the retry budget is a share of these.
    let _active = crate::reverse::ActiveGuard::new(pool);
    let mut tried = Vec::new();
    let mut retrying = None;
    let mut room = pool.room_wait();
    loop {
        let input = PickInput {
            hash_key: target.pool_key().as_bytes(),
            sticky: None,
        };
        let index = match pool.pick(&input, &tried) {
            Pick::Server(i) => i,
            Pick::Busy if room.wait().await => continue,
            Pick::Busy => {
                return Err(ProxyError::new(
                    ErrorKind::QueueFull,
                    format!("parent pool {}: every parent is busy", spec.name),
                ));
            }
            Pick::NoneUsable => {
                return Err(ProxyError::new(
                    ErrorKind::NoServer,
                    format!("parent pool {}: no parent is up", spec.name),
                ));
            }
        };
        let _inflight = pool.start(index);
        let server = &pool.servers[index].spec.addr;
        let dispatch = Dispatch {
            shared,
            // A SOCKS connection is bound to its destination.
            key: Some(if socks {
                format!(
                    "socks/{:p}/{server}/{}",
                    Arc::as_ptr(spec),
                    target.pool_key()
                )
            } else {
                format!("parent/{:p}/{server}", Arc::as_ptr(spec))
            }),
            http2: false,
            first_byte: spec.per_try_timeout.unwrap_or(cfg.timeouts.first_byte),
        };
        if let Some((sender, addr, tls)) = dispatch.kept(cfg, |_| true) {
            ctx.upstream = Some(addr);
            let request = build_request(&bytes, body, false, tls)?;
            return match dispatch.exchange(sender, (addr, tls), request).await {
                Ok(r) => Ok(r),
                Err((Some(request), _)) => {
                    // The kept connection closed while idle: a new one.
                    let (stream, addr) = crate::reverse::open(
                        &shared.connector,
                        cfg.timeouts.connect,
                        pool,
                        index,
                        socks.then_some(target),
                        (peer, None),
                    )
                    .await?;
                    ctx.upstream = Some(addr);
                    let sender = dispatch.fresh(stream, addr).await?;
                    dispatch
                        .exchange(sender, (addr, false), request)
                        .await
                        .map_err(|(_, e)| e)
                }
                Err((None, e)) => Err(e),
            };
        }
        let connected = crate::reverse::open(
            &shared.connector,
            cfg.timeouts.connect,
            pool,
            index,
            socks.then_some(target),
            (peer, None),
        )
        .await;
        let (stream, addr) = match connected {
            Ok(c) => c,
            Err(_) if pool.failed_attempt(index, &mut tried, &mut retrying) => continue,
            Err(e) => return Err(e),
        };
        pool.report_success(index);
        ctx.upstream = Some(addr);
        let tls = stream.is_tls();
        let sender = dispatch.fresh(stream, addr).await?;
        let request = build_request(&bytes, body, false, tls)?;
        return dispatch
            .exchange(sender, (addr, tls), request)
            .await
            .map_err(|(_, e)| e);
    }
}

/// Connections to one server for requests from HTTP/2 clients: a kept
/// connection of `key` when one is ready, else a new one, kept afterwards.
/// `key` is `None` for connections that must not be shared (opened with a
/// client's PROXY header).
pub(crate) struct Dispatch<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) key: Option<String>,
    pub(crate) http2: bool,
    /// How long a server has to answer once the whole request is out
    /// (`timeouts.first_byte`, or a pool's `per_try_timeout`).
    pub(crate) first_byte: std::time::Duration,
}

impl Dispatch<'_> {
    /// A kept connection ready for a request, to an address `accept` allows
    /// (the SSRF pins of forward rules): its sender, address and TLS-ness.
    pub(crate) fn kept(
        &self,
        cfg: &Config,
        accept: impl Fn(SocketAddr) -> bool,
    ) -> Option<(Sender, SocketAddr, bool)> {
        let key = self.key.as_deref()?;
        self.shared
            .senders
            .checkout(key, cfg.timeouts.pool_idle, accept)
    }

    /// Starts HTTP/1.1 or HTTP/2 on a new connection; an HTTP/2 one is shared
    /// from now on.
    pub(crate) async fn fresh(
        &self,
        stream: crate::egress::Upstream,
        addr: SocketAddr,
    ) -> Result<Sender, ProxyError> {
        let tls = stream.is_tls();
        let sender = handshake(stream, self.http2).await?;
        if let (Some(key), Sender::Http2(s)) = (&self.key, &sender) {
            self.shared
                .senders
                .checkin(key, Sender::Http2(s.clone()), addr, tls);
        }
        Ok(sender)
    }

    /// Sends `req` and waits for the response head; an HTTP/1.1 connection
    /// is kept for the next request. On failure the request comes back when
    /// it was never sent, so it can go out on another connection.
    pub(crate) async fn exchange(
        &self,
        mut sender: Sender,
        (addr, tls): (SocketAddr, bool),
        req: Request<UpBody>,
    ) -> Result<Response<Incoming>, (Option<Request<UpBody>>, ProxyError)> {
        let response = dispatch(self.first_byte, &mut sender, req).await?;
        if let (Some(key), Sender::Http1(_)) = (&self.key, &sender) {
            self.shared.senders.checkin(key, sender, addr, tls);
        }
        Ok(response)
    }
}

/// The request for hyper's client from a head built as HTTP/1.1 bytes: for
/// HTTP/2 the Host field becomes `:authority` and connection-specific
/// fields are left out (RFC 9113 §8.2.2).
pub(crate) fn build_request(
    head_bytes: &[u8],
    body: UpBody,
    http2: bool,
    tls: bool,
) -> Result<Request<UpBody>, ProxyError> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut fields);
    if !matches!(parsed.parse(head_bytes), Ok(httparse::Status::Complete(_))) {
        return Err(ProxyError::new(
            ErrorKind::BadRequest,
            "request head too large for HTTP/2 forwarding",
        ));
    }
    let path = parsed.path.unwrap_or("/");
    let uri = if http2 {
        let host = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .unwrap_or_else(|| "localhost".into());
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{host}{path}")
    } else {
        path.to_string()
    };
    let mut builder = Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(uri);
    if http2 {
        builder = builder.version(hyper::Version::HTTP_2);
    }
    let mut headers = HeaderMap::new();
    for h in parsed.headers.iter() {
        // hyper frames the body itself.
        if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        if http2
            && [
                "host",
                "connection",
                "keep-alive",
                "upgrade",
                "proxy-connection",
            ]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        if http2 && h.name.eq_ignore_ascii_case("te") && !h.value.eq_ignore_ascii_case(b"trailers")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(n, v);
        }
    }
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    builder
        .body(body)
        .map_err(|e| ProxyError::new(ErrorKind::BadRequest, e.to_string()))
}

/// A request built for one connection, moved to another: only the scheme
/// of an HTTP/2 request's URI can differ (TLS or not).
pub(crate) fn retarget(mut req: Request<UpBody>, tls: bool) -> Request<UpBody> {
    if req.version() == hyper::Version::HTTP_2
        && let Some(pq) = req.uri().path_and_query().cloned()
        && let Some(authority) = req.uri().authority().cloned()
        && let Ok(uri) = hyper::Uri::builder()
            .scheme(if tls { "https" } else { "http" })
            .authority(authority)
            .path_and_query(pq)
            .build()
    {
        *req.uri_mut() = uri;
    }
    req
}

pub(crate) async fn handshake(
    stream: crate::egress::Upstream,
    http2: bool,
) -> Result<Sender, ProxyError> {
    let failed = |e: hyper::Error| ProxyError::new(ErrorKind::UpstreamTerminated, e.to_string());
    if http2 {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(failed)?;
        tokio::spawn(connection);
        Ok(Sender::Http2(sender))
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(failed)?;
        tokio::spawn(connection);
        Ok(Sender::Http1(sender))
    }
}

/// Sends `req` and waits for the response head (first-byte timeout). On
/// failure, the request comes back when it was never sent.
async fn dispatch(
    first_byte: std::time::Duration,
    sender: &mut Sender,
    req: Request<UpBody>,
) -> Result<Response<Incoming>, (Option<Request<UpBody>>, ProxyError)> {
    // The server's time to answer starts once the request body is out, as
    // on the HTTP/1 path: an upload takes as long as it takes.
    let (body_out, body_sent) = tokio::sync::oneshot::channel();
    let req = req.map(|body| {
        crate::egress::senders::up_body(SignalsEnd {
            body,
            end: Some(body_out),
        })
    });
    let sending = async {
        match sender {
            Sender::Http1(s) => {
                if s.ready().await.is_err() {
                    return Err(None);
                }
                s.try_send_request(req).await.map_err(Some)
            }
            Sender::Http2(s) => {
                if s.ready().await.is_err() {
                    return Err(None);
                }
                s.try_send_request(req).await.map_err(Some)
            }
        }
    };
    tokio::pin!(sending);
    let sent = tokio::select! {
        // An answer before the body is all out (an early error, say).
        answered = &mut sending => Ok(answered),
        _ = body_sent => tokio::time::timeout(first_byte, &mut sending).await,
    };
    let terminated = |e: String| ProxyError::new(ErrorKind::UpstreamTerminated, e);
    match sent {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Some(mut e))) => {
            let message = e.error().to_string();
            Err((e.take_message(), terminated(message)))
        }
        Ok(Err(None)) => Err((None, terminated("the connection closed".into()))),
        Err(_) => Err((
            None,
            ProxyError::new(
                ErrorKind::UpstreamTimeout,
                "no response within the first-byte timeout",
            ),
        )),
    }
}

/// A request body that says when it has ended (or was dropped unfinished),
/// so the first-byte clock can start.
struct SignalsEnd {
    body: UpBody,
    end: Option<tokio::sync::oneshot::Sender<()>>,
}

impl hyper::body::Body for SignalsEnd {
    type Data = Bytes;
    type Error = crate::egress::senders::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        let ended = matches!(polled, std::task::Poll::Ready(None | Some(Err(_))))
            || self.body.is_end_stream();
        if ended && let Some(end) = self.end.take() {
            let _ = end.send(());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A listener's or route's response rules on a response's fields.
pub(crate) fn apply_response_rules(
    headers: &mut HeaderMap,
    scrubber: &postern_policy::headers::Scrubber,
) {
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|n| scrubber.drops_response_field(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for n in dropped {
        headers.remove(n);
    }
    for (n, v) in scrubber.response_added() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(n, v);
        }
    }
}

/// The response for the HTTP/2 client: connection-specific fields removed
/// (RFC 9113 §8.2.2), the route's or listener's response rules, Via.
fn client_response<B>(
    response: Response<B>,
    scrubber: &postern_policy::headers::Scrubber,
    via: Option<&str>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<crate::egress::senders::BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let named: Vec<String> = parts
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(named)
    {
        parts.headers.remove(name.as_str());
    }
    apply_response_rules(&mut parts.headers, scrubber);
    if let Some(name) = via
        && let Ok(v) = HeaderValue::from_str(&format!("2 {name}"))
    {
        parts.headers.append("via", v);
    }
    parts.version = hyper::Version::HTTP_2;
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}
