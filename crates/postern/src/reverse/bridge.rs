//! HTTP/1.x clients to a pool whose servers speak HTTP/2 (`http2 = true`):
//! the request head built for the server is sent as an HTTP/2 request (h2c,
//! or h2 over TLS) on a connection shared with every other request to that
//! server, the client's body streamed into it; the response comes back as
//! HTTP/1.1 (chunked, with trailers, when the server did not give a length).
//!
//! Retries follow the pool's rules: a connect failure moves any request to
//! another server; an idempotent request without a body also moves after a
//! 502/503/504 or a failure before the response head. The cache is used as
//! for HTTP/2 clients (`cache::h2`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::{HeaderMap, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::compress;
use super::pool::{InFlight, PickInput, Pool};
use super::spec::RouteSpec;
use crate::cache::h2::Looked;
use crate::config::{Config, ListenerConfig};
use crate::context::RequestCtx;
use crate::egress::senders::{BoxError, UpBody, no_body, up_body};
use crate::error::{ErrorKind, ProxyError};
use crate::guard::limits::Bucket;
use crate::http1::RequestHead;
use crate::http1::body::{self, BodyKind, OutFraming, Sink, Source};
use crate::http1::fields::ConnectionOptions;
use crate::http1::head::push_field;
use crate::ingress::Client;
use crate::ingress::h2::{Dispatch, build_request, retarget};
use crate::ingress::h2_limits;
use crate::ingress::stream::ClientStream;

/// Serves one request of an HTTP/1.x client through `pool`'s HTTP/2
/// servers; returns whether the client connection may carry another.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    cfg: &Config,
    shared: &crate::app::Shared,
    client: &mut Client,
    (head, body, conn): (&RequestHead, BodyKind, &ConnectionOptions<'_>),
    (listener, route, buckets): (&ListenerConfig, &RouteSpec, &[Arc<Bucket>]),
    pool: &Arc<Pool>,
    url: String,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    let limits = (cfg, buckets);
    let io_timeout = cfg.timeouts.io;
    // The cache as HTTP/2 clients use it: the answer is a hyper response.
    let miss = match &shared.cache {
        None => None,
        Some(cache) => {
            let name = cfg.http.via.as_deref().unwrap_or("postern");
            let wait = cfg.timeouts.first_byte;
            let gzip_for = route.compress.clone().filter(|_| accepts_gzip(head));
            match crate::cache::h2::look(cache, (name, true), url, head, wait, gzip_for).await? {
                Looked::Hit(response, refresh) => {
                    ctx.result = "TCP_HIT";
                    if let Some((stale, req_cc)) = refresh {
                        let ends = (client.peer, client.stream.local_addr().ok());
                        super::refresh_stale(
                            cfg,
                            shared,
                            ends,
                            head,
                            (listener, route),
                            pool,
                            (stale, req_cc),
                            ctx.request_id.as_deref(),
                        );
                    }
                    // A body sent with a GET is not read: the connection ends.
                    let keep_alive = conn.persistent(head.minor)
                        && body == BodyKind::None
                        && !crate::app::shutting_down();
                    let (_, mut cw) = client.stream.split();
                    let answer = (head, response, keep_alive);
                    return Ok(respond(&mut cw, answer, (route, limits), ctx).await);
                }
                Looked::Miss(miss) => Some(miss),
            }
        }
    };
    let tls_client = matches!(client.stream, ClientStream::Tls(_));
    let host = super::host_of(head, "localhost").into_owned();
    let head_bytes = super::reverse_head(
        head,
        body,
        conn,
        false,
        listener,
        route,
        (client.peer.ip(), tls_client),
        &host,
        ctx.request_id.as_deref(),
    );
    let head_bytes = match &miss {
        Some(miss) => miss.conditional(head_bytes),
        None => head_bytes,
    };
    let replayable = super::is_idempotent(head) && body == BodyKind::None;
    // Both ends of the client's connection, for a PROXY header to servers.
    let ends = (client.peer, client.stream.local_addr().ok());
    let (mut cr, mut cw) = client.stream.split();

    // The client's body flows through a bounded channel into the HTTP/2
    // request while the response is awaited.
    let (request_body, feed) = if body == BodyKind::None {
        (no_body(), None)
    } else {
        let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
        (up_body(ChannelBody { rx }), Some(tx))
    };
    let feeding = async {
        let Some(tx) = feed else {
            return Ok(0u64);
        };
        let mut writer = ChannelWriter {
            tx: Some(tx.clone()),
            reserving: std::sync::Mutex::new(None),
        };
        let mut src = Source {
            io: &mut cr,
            buf: &mut client.buf,
            timeout: io_timeout,
        };
        let mut sink = Sink::new(&mut writer, Vec::new(), io_timeout);
        let relayed = body::relay(
            &mut src,
            &mut sink,
            body,
            OutFraming::Raw,
            cfg.limits.max_header_size,
        )
        .await;
        match relayed {
            Ok(stats) => Ok(stats.payload),
            Err(e) => {
                // The server must not take a cut body for a whole one.
                let _ = tx.send(Err(e.to_string().into())).await;
                Err(e)
            }
        }
    };
    let cookie = pool
        .spec
        .sticky_cookie
        .as_deref()
        .and_then(|name| super::cookie_value(head, name));
    let key = super::hash_key(&pool.spec, head, client.peer.ip());
    let how = Sending {
        head_bytes: &head_bytes,
        replayable,
        http2: true,
        hash_key: &key,
        sticky: cookie.as_deref(),
        ends,
    };
    let responding = send(cfg, shared, pool, how, request_body, ctx);
    let (fed, response) = tokio::join!(feeding, responding);
    // The content rules, before anything reaches the client.
    let response = response
        .and_then(|(r, inflight)| h2_limits::check_head(cfg, r.headers()).map(|()| (r, inflight)));
    let response = match miss {
        Some(miss) => match response {
            Ok((response, inflight)) => {
                if let Some(result) = miss.result_for(response.status()) {
                    ctx.result = result;
                }
                Held::wrap(miss.finish(head, response), inflight)
            }
            Err(e) if crate::ingress::h2::is_content_refusal(&e) => return Err(e),
            Err(e) => {
                let stale = miss.failed(cfg, head, e)?;
                ctx.result = "TCP_REFRESH_FAIL_OLD";
                stale
            }
        },
        None => {
            let (response, inflight) = response?;
            Held::wrap(response.map(BodyExt::boxed), inflight)
        }
    };
    let request_complete = match fed {
        Ok(n) => {
            ctx.bytes_in += n;
            true
        }
        Err(e) if e.is_read_side() => {
            return Err(ProxyError::new(
                ErrorKind::BadRequest,
                format!("request body: {e}"),
            ));
        }
        Err(_) => false,
    };
    let keep_alive =
        conn.persistent(head.minor) && request_complete && !crate::app::shutting_down();
    let answer = (head, response, keep_alive);
    Ok(respond(&mut cw, answer, (route, limits), ctx).await)
}

/// The client takes gzip, and a body of unknown length (HTTP/1.1).
fn accepts_gzip(head: &RequestHead) -> bool {
    head.minor >= 1
        && compress::accepts_gzip(crate::http1::head::Fields::values(head, "accept-encoding"))
}

/// Writes the answer to `head` for the HTTP/1.x client and logs it; whether
/// the connection may carry another request (`keep_alive` and a whole body).
/// The body is held to `[content] max_response_size` (counted before any
/// encoding) and paced by the client's bandwidth limits, as for HTTP/2
/// clients.
async fn respond<W, B>(
    out: &mut W,
    (head, response, keep_alive): (&RequestHead, Response<B>, bool),
    (route, (cfg, buckets)): (&RouteSpec, (&Config, &[Arc<Bucket>])),
    ctx: &mut RequestCtx,
) -> bool
where
    W: AsyncWrite + Unpin,
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<crate::egress::senders::BoxError>,
{
    let io_timeout = cfg.timeouts.io;
    ctx.status = response.status().as_u16();
    let how = (head.minor, head.is_method("HEAD"), keep_alive);
    let (written, ended) = match route.compress.as_deref() {
        None => {
            let response = h2_limits::limit(cfg, buckets, response);
            write_response(out, response, how, Some(&route.rewrite), io_timeout).await
        }
        Some(settings) => {
            // The route's rules first, so that compression's Vary and ETag
            // stand.
            let max = cfg.content.max_response_size;
            let mut response = h2_limits::limit_to(max, &[], response);
            crate::ingress::h2::apply_response_rules(response.headers_mut(), &route.rewrite);
            let response = compress::deliver(settings, (accepts_gzip(head), head), response).await;
            let response = h2_limits::limit_to(None, buckets, response);
            write_response(out, response, how, None, io_timeout).await
        }
    };
    ctx.bytes_out += written;
    ended && keep_alive
}

/// How a request goes to a pool through hyper's client.
pub(crate) struct Sending<'a> {
    /// The request head, built as HTTP/1.1 bytes for the server.
    pub head_bytes: &'a [u8],
    /// An idempotent request without a body may be sent twice.
    pub replayable: bool,
    /// Speak HTTP/2 to the servers (else HTTP/1.1).
    pub http2: bool,
    /// The key of `balance = "hash"`.
    pub hash_key: &'a [u8],
    /// The request's sticky-session cookie, for pools with `sticky_cookie`.
    pub sticky: Option<&'a str>,
    /// The client's and the listener's addresses (for PROXY headers).
    pub ends: (std::net::SocketAddr, Option<std::net::SocketAddr>),
}

/// Picks a server of `pool`, sends the request (on a kept connection
/// first), and moves it to another server when the rules allow: a connect
/// failure moves any request; a 502/503/504 or a failure before the
/// response head moves a replayable one, to a server not tried yet, within
/// the pool's retries and retry budget. A request a kept connection could
/// not take goes out on a new one to the same server. For HTTP/2 clients
/// and for HTTP/1.x clients of `http2` pools.
pub(crate) async fn send(
    cfg: &Config,
    shared: &crate::app::Shared,
    pool: &Arc<Pool>,
    how: Sending<'_>,
    body: UpBody,
    ctx: &mut RequestCtx,
) -> Result<(Response<Incoming>, InFlight), ProxyError> {
    let Sending {
        head_bytes,
        replayable,
        http2,
        hash_key,
        sticky,
        ends,
    } = how;
    let _active = super::ActiveGuard::new(pool);
    let mut tried = Vec::new();
    let mut retrying = None;
    let mut body = Some(body);
    let mut unsent = None;
    loop {
        let input = PickInput { hash_key, sticky };
        let index = pool.pick_or_queue(&input, &tried).await?;
        let inflight = pool.start(index);
        ctx.result = "TCP_MISS";
        let dispatch = Dispatch {
            shared,
            // A PROXY header speaks for one client: such connections are not shared.
            key: pool
                .spec
                .send_proxy
                .is_none()
                .then(|| pool.idle_keys[index].clone()),
            http2,
            first_byte: pool.spec.per_try_timeout.unwrap_or(cfg.timeouts.first_byte),
        };
        let take_body = |body: &mut Option<UpBody>| body.take().unwrap_or_else(no_body);
        let mut outcome = None;
        if unsent.is_none()
            && let Some((sender, addr, tls)) = dispatch.kept(cfg, |_| true)
        {
            ctx.upstream = Some(addr);
            let request = build_request(head_bytes, take_body(&mut body), http2, tls)?;
            match dispatch.exchange(sender, (addr, tls), request).await {
                Err((Some(request), _)) => unsent = Some(request),
                done => outcome = Some(done.map_err(|(_, e)| e)),
            }
        }
        let response = match outcome {
            Some(r) => r,
            None => {
                let connected = super::open(
                    &shared.connector,
                    cfg.timeouts.connect,
                    pool,
                    index,
                    None,
                    ends,
                )
                .await;
                let (stream, addr) = match connected {
                    Ok(c) => c,
                    Err(_) if pool.failed_attempt(index, &mut tried, &mut retrying) => continue,
                    Err(e) => return Err(e),
                };
                ctx.upstream = Some(addr);
                let tls = stream.is_tls();
                match dispatch.fresh(stream, addr).await {
                    Ok(sender) => {
                        let request = match unsent.take() {
                            Some(r) => retarget(r, tls),
                            None => build_request(head_bytes, take_body(&mut body), http2, tls)?,
                        };
                        dispatch
                            .exchange(sender, (addr, tls), request)
                            .await
                            .map_err(|(_, e)| e)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match &response {
            Ok(r) if r.status().is_server_error() => pool.report_failure(index),
            Ok(_) => pool.report_success(index),
            Err(_) => pool.report_failure(index),
        }
        let retry_worthy = match &response {
            Ok(r) => matches!(r.status().as_u16(), 502..=504),
            Err(_) => true,
        };
        if replayable
            && retry_worthy
            && tried.len() < pool.spec.retries as usize
            && pool.has_other_usable(index, &tried)
            && (retrying.is_some() || pool.may_retry())
        {
            tried.push(index);
            retrying.get_or_insert_with(|| super::RetryGuard::new(pool));
            unsent = None;
            continue;
        }
        // A client not yet pinned to this server is from now on (as on the
        // HTTP/1.1 path).
        let id = &pool.servers[index].id;
        // The request stays in flight on its server (max_connections, least
        // connections) until its body has been passed on: see `Held`.
        return response.map(|mut r| {
            if let Some(name) = &pool.spec.sticky_cookie
                && sticky != Some(id.as_str())
                && let Ok(v) = format!("{name}={id}; Path=/; HttpOnly").parse()
            {
                r.headers_mut().append(hyper::header::SET_COOKIE, v);
            }
            (r, inflight)
        });
    }
}

/// Writes the server's response as HTTP/1.x: its length when the server
/// gave one, else chunked (HTTP/1.1, trailers included) or until close
/// (HTTP/1.0). Returns the bytes written and whether the body ended whole.
async fn write_response<W, B>(
    out: &mut W,
    response: Response<B>,
    (minor, is_head, keep_alive): (u8, bool, bool),
    scrubber: Option<&postern_policy::headers::Scrubber>,
    io_timeout: std::time::Duration,
) -> (u64, bool)
where
    W: AsyncWrite + Unpin,
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let (parts, mut incoming) = response.into_parts();
    let status = parts.status.as_u16();
    let bodiless = is_head || status == 204 || status == 304;
    let length = parts.headers.get("content-length").is_some();
    let chunked = !bodiless && !length && minor >= 1;
    let close = !keep_alive || (!bodiless && !length && minor == 0);
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(if minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    crate::http1::push_decimal(&mut head, u64::from(status));
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    push_fields(&mut head, &parts.headers, |name| {
        // RFC 9113 §8.2.2: nothing connection-specific crosses; framing is
        // restated below.
        !matches!(
            name,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
                | "trailer"
        ) && !scrubber.is_some_and(|s| s.drops_response_field(name.as_bytes()))
    });
    for (name, value) in scrubber.iter().flat_map(|s| s.response_added()) {
        push_field(&mut head, name.as_bytes(), value.as_bytes());
    }
    if chunked {
        head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if close {
        head.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        head.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"\r\n");
    // The head goes out with the first piece of the body.
    let mut pending = head;
    let mut written = 0u64;
    let mut whole = true;
    let mut ended = false;
    if !bodiless {
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_frame(cx));
            let frame = match tokio::time::timeout(io_timeout, frame).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                // A body cut short is never completed for the client.
                Ok(Some(Err(_))) | Err(_) => {
                    whole = false;
                    break;
                }
            };
            if frame.is_data() {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    pending.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    pending.extend_from_slice(&data);
                    pending.extend_from_slice(b"\r\n");
                } else {
                    pending.extend_from_slice(&data);
                }
            } else if let Ok(trailers) = frame.into_trailers()
                && chunked
            {
                pending.extend_from_slice(b"0\r\n");
                push_fields(&mut pending, &trailers, |_| true);
                pending.extend_from_slice(b"\r\n");
                ended = true;
            }
            if !put(out, &mut pending, &mut written, io_timeout).await {
                return (written, false);
            }
        }
    }
    if whole && chunked && !ended {
        pending.extend_from_slice(b"0\r\n\r\n");
    }
    let flushed = put(out, &mut pending, &mut written, io_timeout).await;
    (written, whole && flushed && !close)
}

/// Writes what is pending; false when the client does not take it.
async fn put<W: AsyncWrite + Unpin>(
    out: &mut W,
    pending: &mut Vec<u8>,
    written: &mut u64,
    io_timeout: std::time::Duration,
) -> bool {
    if pending.is_empty() {
        return true;
    }
    let ok = matches!(
        crate::deadline::within(io_timeout, out.write_all(pending)).await,
        Ok(Ok(()))
    );
    *written += pending.len() as u64;
    pending.clear();
    ok
}

fn push_fields(out: &mut Vec<u8>, headers: &HeaderMap, keep: impl Fn(&str) -> bool) {
    for (name, value) in headers {
        if !keep(name.as_str()) {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// The client's body as the HTTP/2 request's body.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

type Reserving = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    mpsc::OwnedPermit<Result<Bytes, BoxError>>,
                    mpsc::error::SendError<()>,
                >,
            > + Send,
    >,
>;

/// Bytes written here go into the channel, waiting for room (back-pressure
/// from the server's flow control reaches the client).
struct ChannelWriter {
    tx: Option<mpsc::Sender<Result<Bytes, BoxError>>>,
    /// In a mutex only to be `Sync` (it is reached through `&mut self`).
    reserving: std::sync::Mutex<Option<Reserving>>,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let Some(tx) = self.tx.clone() else {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        };
        let slot = self.reserving.get_mut().unwrap_or_else(|e| e.into_inner());
        let reserving = slot.get_or_insert_with(|| Box::pin(tx.reserve_owned()));
        let ready = reserving.as_mut().poll(cx);
        if ready.is_ready() {
            *slot = None;
        }
        match ready {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(permit)) => {
                permit.send(Ok(Bytes::copy_from_slice(buf)));
                Poll::Ready(Ok(buf.len()))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

/// A response body that keeps its request in flight on its server until
/// the body ends or is dropped, as the HTTP/1 path does for its whole
/// exchange: `max_connections` and least-connections count streaming
/// responses, not only those waiting for their head.
pub(crate) struct Held {
    body: HeldBody,
    _inflight: InFlight,
}

impl Held {
    pub(crate) fn wrap(response: Response<HeldBody>, inflight: InFlight) -> Response<HeldBody> {
        response.map(|body| {
            Held {
                body,
                _inflight: inflight,
            }
            .boxed()
        })
    }
}

/// The responses `Held` wraps (a server's, or the cache's).
type HeldBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

impl Body for Held {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
