//! Forwarding of absolute-URI HTTP requests (RFC 9110 §7.6, RFC 9112): the
//! request head is rewritten for the next hop, the body streamed while the
//! response is awaited (so `Expect: 100-continue` and early answers work), and
//! the response streamed back with framing chosen for the client.
//!
//! Phases, in order: build the upstream head → take a pooled connection or
//! connect → send head and body ∥ read interim and final response heads →
//! stream the response body (∥ the rest of the request body) → return the
//! upstream connection to the pool when it can carry another request.

use std::pin::pin;

use crate::egress::Upstream;
use crate::egress::stream::UpRead;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::ingress::stream::ClientWrite;
use tokio::time::timeout;

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use crate::error::{ErrorKind, ProxyError};
use crate::guard::Admission;
use crate::http1::body::{self, BodyError, BodyKind, OutFraming, Sink, Source};
use crate::http1::fields::{ConnectionOptions, connection_options, response_body};
use crate::http1::head::{
    Fields, HeadLimits, Known, RequestHead, ResponseHead, copy_field_lines, parse_response,
    push_field, push_next_hop_fields,
};
use crate::ingress::Client;
use crate::relay;
use crate::reverse::compress::{self, Verdict};
use postern_policy::headers::{FieldFate, Scrubber};
use std::net::IpAddr;

use super::target::HttpTarget;

/// How a forwarded exchange ended, once the client has had a response.
pub struct Forwarded {
    pub client_keep_alive: bool,
}

/// The request as the forwarding stage needs it.
pub struct Outbound<'a> {
    pub head: &'a RequestHead,
    pub body: BodyKind,
    pub conn: &'a ConnectionOptions<'a>,
    pub admission: &'a Admission<'a>,
    pub scrubber: &'a Scrubber,
    /// The Via pseudonym added to responses (and forwarded requests).
    pub via: Option<&'a str>,
    /// A `Set-Cookie` value added to the response (sticky sessions).
    pub set_cookie: Option<String>,
    /// Hand 502/503/504 back to the caller instead of the client (a retry
    /// will follow); only for requests without a body.
    pub retry_statuses: bool,
    pub first_byte: std::time::Duration,
    /// The cache's interest in this exchange (store the response, validate).
    pub cache: Option<crate::cache::Ticket>,
    /// The route's response compression (reverse listeners).
    pub compress: Option<&'a compress::Compression>,
}

impl<'a> Outbound<'a> {
    /// A forwarded request as a forward listener sends it: its Via unless
    /// the anonymity level hides the proxy, the usual first-byte timeout, no
    /// cache interest yet.
    pub fn forwarded(
        cfg: &'a Config,
        (head, body, conn): (&'a RequestHead, BodyKind, &'a ConnectionOptions<'a>),
        admission: &'a Admission<'a>,
        scrubber: &'a Scrubber,
    ) -> Outbound<'a> {
        Outbound {
            head,
            body,
            conn,
            admission,
            scrubber,
            via: Outbound::forward_via(cfg, scrubber),
            set_cookie: None,
            retry_statuses: false,
            first_byte: cfg.timeouts.first_byte,
            cache: None,
            compress: None,
        }
    }

    /// The Via pseudonym, unless the listener's anonymity level hides the proxy.
    pub fn forward_via(cfg: &'a Config, scrubber: &Scrubber) -> Option<&'a str> {
        if scrubber.level.sends_via() {
            cfg.http.via.as_deref()
        } else {
            None
        }
    }

    fn via<'c>(&self, _cfg: &'c Config) -> Option<&'a str> {
        self.via
    }
}

/// Forwards one request. `Err` means nothing final was sent to the client yet,
/// so the caller answers with an error page.
pub async fn forward(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    target: &HttpTarget,
    req: Outbound<'_>,
    ctx: &mut RequestCtx,
) -> Result<Forwarded, ProxyError> {
    if let Some(done) = answer_max_forwards(cfg, client, &req, ctx).await? {
        return Ok(done);
    }
    if let Some(cache) = &shared.cache {
        use crate::cache::flow::{Before, after, before};
        let url = format!("http://{}{}", target.host_field(), target.path);
        let mut req = req;
        let mut pending = match before(cfg, client, cache, url, &req, ctx).await? {
            Before::Served(done) => return Ok(done),
            Before::ServedStale(done, stale, req_cc) => {
                refresh_in_background(cfg, shared, target, &req, client.peer.ip(), stale, req_cc);
                return Ok(done);
            }
            Before::Origin(p) => p,
        };
        // An origin error may be covered by a stale response (RFC 5861 §4).
        req.retry_statuses |= pending.stale_may_cover() && req.body == BodyKind::None;
        req.cache = Some(std::mem::replace(
            &mut pending.ticket,
            crate::cache::Ticket::placeholder(cache),
        ));
        let result = forward_origin(cfg, shared, client, target, &req, &pending.extra, ctx).await;
        if let Some(t) = req.cache.take() {
            pending.ticket = t;
        }
        return after(cfg, client, &req, &pending, result, ctx).await;
    }
    match forward_origin(cfg, shared, client, target, &req, &[], ctx).await? {
        FromOrigin::Done(done) => Ok(done),
        FromOrigin::NotModified(_) | FromOrigin::Withheld(_) => Err(ProxyError::new(
            ErrorKind::BadResponse,
            "response withheld without a cache",
        )),
    }
}

/// Revalidates a response just served stale (RFC 5861 §3) on a connection
/// of its own, as the client's GET would have gone.
pub fn refresh_in_background(
    cfg: &Config,
    shared: &Shared,
    target: &HttpTarget,
    req: &Outbound<'_>,
    client_ip: IpAddr,
    stale: std::sync::Arc<crate::cache::store::Entry>,
    req_cc: crate::cache::policy::Directives,
) {
    let Some(cache) = &shared.cache else {
        return;
    };
    if !req.head.is_method("GET") {
        return;
    }
    let upstream = upstream_head(cfg, req, target, false, client_ip);
    let refresh = crate::cache::refresh::Refresh {
        cache: cache.clone(),
        head_bytes: crate::cache::refresh::request_head(upstream, &stale),
        stale,
        request: req.head.clone(),
        req_cc,
        limits: response_limits(cfg),
        first_byte: cfg.timeouts.first_byte,
        io: cfg.timeouts.io,
    };
    let connector = shared.connector.clone();
    let (dest, port) = (target.dest.clone(), target.port);
    let (private, ips) = (
        cfg.egress.allow_private_destinations,
        cfg.egress.allow_ips.clone(),
    );
    let pinned = req.admission.pinned.clone();
    let timeout = cfg.timeouts.connect;
    refresh.spawn(Box::pin(async move {
        let permit = crate::egress::AddressPermit {
            private,
            ips: &ips,
            any: false,
        };
        let (stream, _) = connector
            .connect(&dest, port, permit, pinned.as_deref(), timeout)
            .await?;
        Ok(Upstream::Plain(stream))
    }));
}

/// Bounds on a response head from upstream.
pub fn response_limits(cfg: &Config) -> HeadLimits {
    HeadLimits {
        max_line: cfg.limits.max_header_size,
        max_size: cfg.limits.max_header_size,
        max_fields: cfg.limits.max_headers.max(200),
    }
}

/// How an exchange with the origin ended, when the caller asked to see
/// some responses before the client does.
pub enum FromOrigin {
    Done(Forwarded),
    /// A 304 to validators the cache added: nothing was sent to the client.
    NotModified(ResponseHead),
    /// A 502/503/504 withheld (`retry_statuses`): nothing was sent.
    Withheld(u16),
}

/// Sends the request to the origin (pooled connection or a new one), with
/// `extra` fields (validators) added to its head.
pub async fn forward_origin(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    target: &HttpTarget,
    req: &Outbound<'_>,
    extra: &[u8],
    ctx: &mut RequestCtx,
) -> Result<FromOrigin, ProxyError> {
    let upgrade = req.conn.upgrade && req.head.minor >= 1 && req.head.has("upgrade");
    let key = target.pool_key();
    let mut retried = false;
    loop {
        // A retry skips the pool: its connections may all be stale (a server
        // restart). Requests that cannot be retried probe the socket first.
        let pinned = req.admission.pinned.as_deref();
        let pooled = if retried {
            None
        } else {
            shared
                .pool
                .checkout(key, !is_idempotent(req.head))
                // Rules that looked at addresses approved only these.
                .filter(|(_, a)| pinned.is_none_or(|p| p.contains(&a.ip())))
        };
        let (mut upstream, addr, reused) = match pooled {
            Some((s, a)) => (s, a, true),
            None => {
                let (s, a) = shared
                    .connector
                    .connect(
                        &target.dest,
                        target.port,
                        cfg.address_permit(),
                        pinned,
                        cfg.timeouts.connect,
                    )
                    .await?;
                (Upstream::Plain(s), a, false)
            }
        };
        ctx.upstream = Some(addr);
        let mut head_bytes = upstream_head(cfg, req, target, upgrade, client.peer.ip());
        if !extra.is_empty() {
            // Before the blank line that ends the head.
            let end = head_bytes.len() - 2;
            head_bytes.splice(end..end, extra.iter().copied());
        }
        match exchange(cfg, client, &mut upstream, head_bytes, req, upgrade, ctx).await {
            Ok(end) => {
                if end.upstream_reusable {
                    shared.pool.checkin(key, upstream, addr);
                }
                return Ok(FromOrigin::Done(Forwarded {
                    client_keep_alive: end.client_keep_alive,
                }));
            }
            Err(Failure::NotModified(head)) => {
                shared.pool.checkin(key, upstream, addr);
                return Ok(FromOrigin::NotModified(head));
            }
            // A pooled connection the server closed meanwhile: try once more on a
            // fresh one. Only idempotent requests (RFC 9110 §9.2.2) without a body,
            // since the server may have acted on the request before closing.
            Err(Failure::Stale(_))
                if reused && !retried && req.body == BodyKind::None && is_idempotent(req.head) =>
            {
                retried = true;
            }
            Err(
                Failure::Stale(e) | Failure::Upstream(e) | Failure::Client(e) | Failure::Refused(e),
            ) => return Err(e),
            Err(Failure::RetryStatus(status)) => return Ok(FromOrigin::Withheld(status)),
            Err(Failure::Aborted) => {
                ctx.aborted = true;
                return Ok(FromOrigin::Done(Forwarded {
                    client_keep_alive: false,
                }));
            }
        }
    }
}

fn is_idempotent(head: &RequestHead) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| head.is_method(m))
}

pub(crate) enum Failure {
    /// The upstream failed before sending any byte of a response.
    Stale(ProxyError),
    /// The upstream failed; nothing final was sent to the client.
    Upstream(ProxyError),
    /// The client's request body was malformed; nothing final was sent.
    Client(ProxyError),
    /// The response broke a content rule (a refused type, too large): the
    /// server answered properly, so it is neither blamed nor retried.
    Refused(ProxyError),
    /// Part of the response already went out; the connection must be dropped.
    Aborted,
    /// A 502/503/504 the caller asked to retry elsewhere; nothing was sent.
    RetryStatus(u16),
    /// A 304 answering validators the cache added; nothing was sent.
    NotModified(ResponseHead),
}

pub(crate) struct ExchangeEnd {
    pub client_keep_alive: bool,
    pub upstream_reusable: bool,
}

/// RFC 9110 §7.6.2: OPTIONS and TRACE with `Max-Forwards: 0` are answered here.
async fn answer_max_forwards(
    cfg: &Config,
    client: &mut Client,
    req: &Outbound<'_>,
    ctx: &mut RequestCtx,
) -> Result<Option<Forwarded>, ProxyError> {
    let is_trace = req.head.is_method("TRACE");
    if !(is_trace || req.head.is_method("OPTIONS")) {
        return Ok(None);
    }
    if max_forwards(req.head) != Some(0) {
        return Ok(None);
    }
    let keep = req.body == BodyKind::None && req.conn.persistent(req.head.minor);
    let close: &[u8] = if keep { b"" } else { b"Connection: close\r\n" };
    let mut out = Vec::with_capacity(512);
    if is_trace {
        // The echo leaves out credentials (RFC 9110 §9.3.8).
        let mut echo = Vec::new();
        let line_end = memchr::memchr(b'\n', &req.head.raw).map_or(0, |i| i + 1);
        echo.extend_from_slice(&req.head.raw[..line_end]);
        for f in &req.head.fields {
            let name = req.head.name(f);
            if ["authorization", "proxy-authorization", "cookie"]
                .iter()
                .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
            {
                continue;
            }
            push_field(&mut echo, name, req.head.value(f));
        }
        echo.extend_from_slice(b"\r\n");
        out.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: {}\r\n",
                echo.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(close);
        push_via(req.via(cfg), &mut out, req.head.minor);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&echo);
    } else {
        out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nAllow: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH\r\nContent-Length: 0\r\n",
        );
        out.extend_from_slice(close);
        push_via(req.via(cfg), &mut out, req.head.minor);
        out.extend_from_slice(b"\r\n");
    }
    ctx.status = 200;
    ctx.result = "TCP_MISS";
    write_client(cfg, client, &out, ctx).await;
    Ok(Some(Forwarded {
        client_keep_alive: keep,
    }))
}

async fn write_client(cfg: &Config, client: &mut Client, bytes: &[u8], ctx: &mut RequestCtx) {
    if client.send(bytes, cfg.timeouts.io).await {
        ctx.bytes_out += bytes.len() as u64;
    } else {
        ctx.aborted = true;
    }
}

/// The first Max-Forwards value, if it is a valid number (`1*DIGIT`).
fn max_forwards(head: &RequestHead) -> Option<u64> {
    let value = head.first("max-forwards")?;
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn push_via(via: Option<&str>, out: &mut Vec<u8>, minor: u8) {
    if let Some(name) = via {
        out.extend_from_slice(if minor == 0 {
            b"Via: 1.0 "
        } else {
            b"Via: 1.1 "
        });
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The request head for the next hop: origin-form target, Host from the URI
/// (RFC 9112 §3.2.2: the URI's authority wins), hop-by-hop fields removed,
/// framing restated, Max-Forwards decremented, fields hidden or rewritten for
/// the listener's anonymity level and header rules, Via appended.
pub fn upstream_head(
    cfg: &Config,
    req: &Outbound<'_>,
    target: &HttpTarget,
    upgrade: bool,
    client: IpAddr,
) -> Vec<u8> {
    let head = req.head;
    let mut out = Vec::with_capacity(head.raw.len() + 64);
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    // RFC 9112 §3.2.4: OPTIONS for an authority with no path becomes `OPTIONS *`.
    if target.no_path && head.is_method("OPTIONS") {
        out.push(b'*');
    } else {
        out.extend_from_slice(target.path.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(target.host_field().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut had_length = false;
    let hop_limited = head.is_method("OPTIONS") || head.is_method("TRACE");
    // RFC 9110 §7.6.2: for OPTIONS and TRACE, one decremented Max-Forwards.
    let decremented = hop_limited
        .then(|| max_forwards(head).map(|n| n.saturating_sub(1).to_string()))
        .flatten();
    let mut max_forwards_sent = false;
    copy_field_lines(head, &mut out, |f, name| {
        // Content-Length is restated below from the framing, whatever
        // Connection lists.
        if f.kind == Known::ContentLength {
            had_length = true;
            return FieldFate::Drop;
        }
        if f.kind == Known::Host || req.conn.drops(f, name) {
            return FieldFate::Drop;
        }
        if hop_limited && name.eq_ignore_ascii_case(b"max-forwards") {
            return match &decremented {
                Some(n) if !std::mem::replace(&mut max_forwards_sent, true) => {
                    FieldFate::Replace(n)
                }
                _ => FieldFate::Drop,
            };
        }
        req.scrubber.request_field(name)
    });
    for (name, value) in req.scrubber.added_fields(|n| head.has(n)) {
        push_field(&mut out, name.as_bytes(), value.as_bytes());
    }
    let xff_sent: Vec<&[u8]> = head.values("x-forwarded-for").collect();
    let fwd_sent: Vec<&[u8]> = head.values("forwarded").collect();
    if let Some((xff, fwd)) = req.scrubber.forwarding_fields(client, &xff_sent, &fwd_sent) {
        push_field(&mut out, b"X-Forwarded-For", xff.as_bytes());
        push_field(&mut out, b"Forwarded", fwd.as_bytes());
    }
    push_next_hop_fields(&mut out, head, upgrade, req.body, had_length);
    push_via(req.via(cfg), &mut out, head.minor);
    out.extend_from_slice(b"\r\n");
    out
}

/// One request/response exchange over one upstream connection.
pub(crate) async fn exchange(
    cfg: &Config,
    client: &mut Client,
    upstream: &mut Upstream,
    head_bytes: Vec<u8>,
    req: &Outbound<'_>,
    upgrade: bool,
    ctx: &mut RequestCtx,
) -> Result<ExchangeEnd, Failure> {
    let io_timeout = cfg.timeouts.io;
    let max_trailer = cfg.limits.max_header_size;
    let fields = ResponseFields {
        via: req.via(cfg),
        scrubber: req.scrubber,
        set_cookie: req.set_cookie.as_deref(),
        cache_status: None,
        encoding: Verdict::Leave,
    };
    let (mut cr, mut cw) = client.stream.split();
    let cbuf = &mut client.buf;
    let (mut ur, mut uw) = upstream.split();
    let mut ubuf = crate::http1::buffers::ReadBuffer::take();

    let request_out = match req.body {
        BodyKind::Chunked => OutFraming::Chunked,
        _ => OutFraming::Raw,
    };
    let req_kind = req.body;
    let mut sent: Option<Result<body::BodyStats, BodyError>> = None;
    // Without a body the head goes out at once; otherwise the body streams
    // concurrently with the wait for the response (Expect: 100-continue, early
    // answers). Boxed so it can be dropped explicitly, giving the halves back.
    let mut send = if req_kind == BodyKind::None {
        let res = Sink::new(&mut uw, head_bytes, io_timeout).flush().await;
        sent = Some(res.map(|_| body::BodyStats::default()));
        None
    } else {
        Some(Box::pin(async {
            let mut src = Source {
                io: &mut cr,
                buf: cbuf,
                timeout: io_timeout,
            };
            let mut sink = Sink::new(&mut uw, head_bytes, io_timeout);
            body::relay(&mut src, &mut sink, req_kind, request_out, max_trailer).await
        }))
    };

    // Phase 1: the final response head, forwarding interim (1xx) responses.
    let mut interim_out = 0u64;
    let head = {
        let mut read_head = pin!(read_final_head(
            &mut ur,
            &mut ubuf,
            &mut cw,
            cfg,
            fields,
            req.head.minor,
            &mut interim_out
        ));
        loop {
            let Some(sending) = send.as_mut().filter(|_| sent.is_none()) else {
                // The request is out: the server now has `first_byte` to answer.
                break match client
                    .answer_timer
                    .within(req.first_byte, &mut read_head)
                    .await
                {
                    Ok(head) => head,
                    Err(_) => Err(HeadFailure::Partial(ProxyError::new(
                        ErrorKind::UpstreamTimeout,
                        "no response within the first-byte timeout",
                    ))),
                };
            };
            tokio::select! {
                res = sending => {
                    if let Err(e) = &res
                        && e.is_read_side()
                    {
                        return Err(client_body_failure(e, ctx));
                    }
                    sent = Some(res);
                }
                head = &mut read_head => break head,
            }
        }
    };
    ctx.bytes_out += interim_out;
    let head = match head {
        Ok(h) => h,
        Err(HeadFailure::Nothing(e)) => return Err(Failure::Stale(e)),
        Err(HeadFailure::Partial(e)) => return Err(Failure::Upstream(e)),
    };
    ctx.status = head.status;
    if req.retry_statuses && matches!(head.status, 502..=504) && matches!(sent, Some(Ok(_))) {
        return Err(Failure::RetryStatus(head.status));
    }
    if head.status == 304 && req.cache.as_ref().is_some_and(|t| t.validating) {
        return Err(Failure::NotModified(head));
    }

    let is_head = req.head.is_method("HEAD");
    if head.status == 101 {
        if !upgrade {
            return Err(Failure::Upstream(ProxyError::new(
                ErrorKind::BadResponse,
                "101 Switching Protocols without an upgrade request",
            )));
        }
        let request_sent = match (sent.take(), send.as_mut()) {
            (Some(res), _) => res.is_ok(),
            (None, Some(sending)) => sending.await.is_ok(),
            (None, None) => false,
        };
        drop(send);
        if !request_sent {
            return Err(Failure::Aborted);
        }
        let out = response_head_bytes(
            fields,
            &head,
            &connection_options(&head),
            req.head.minor,
            Framing::Upgrade,
            0,
        );
        if !matches!(timeout(io_timeout, cw.write_all(&out)).await, Ok(Ok(()))) {
            return Err(Failure::Aborted);
        }
        ctx.bytes_out += out.len() as u64;
        client.tunneled = true;
        let early = client.buf.split();
        let stats = relay::tunnel_client(
            &mut client.stream,
            &early,
            upstream,
            &ubuf,
            cfg.timeouts.tunnel_idle,
            &req.admission.buckets,
        )
        .await;
        ctx.bytes_in += stats.up;
        ctx.bytes_out += stats.down;
        return Ok(ExchangeEnd {
            client_keep_alive: false,
            upstream_reusable: false,
        });
    }

    let resp_kind = response_body(&head, is_head)
        .map_err(|m| Failure::Upstream(ProxyError::new(ErrorKind::BadResponse, m)))?;
    if resp_kind == BodyKind::Chunked {
        // Refuse a broken first chunk line before anything is forwarded.
        if let Some(i) = memchr::memchr(b'\n', &ubuf) {
            let line = &ubuf[..i];
            if i == 0 || line[i - 1] != b'\r' {
                return Err(Failure::Upstream(ProxyError::new(
                    ErrorKind::BadResponse,
                    "bare LF in chunked framing",
                )));
            }
            if let Err(BodyError::Malformed(m)) = body::parse_chunk_size(&line[..i - 1]) {
                return Err(Failure::Upstream(ProxyError::new(
                    ErrorKind::BadResponse,
                    m,
                )));
            }
        }
    }
    let resp_conn = connection_options(&head);
    let request_done = matches!(sent, Some(Ok(_)));
    let encoding = match req.compress {
        None => Verdict::Leave,
        Some(settings) => {
            // A body of unknown length needs chunked framing: HTTP/1.1.
            let accepts =
                req.head.minor >= 1 && compress::accepts_gzip(req.head.values("accept-encoding"));
            let mut facts = compress::facts(&head, req.scrubber);
            facts.weak_match =
                compress::names_weak_form(req.head.values("if-none-match"), head.first("etag"));
            settings.verdict(accepts, &facts)
        }
    };
    let client_framing = match resp_kind {
        _ if encoding == Verdict::Compress => Framing::Chunked,
        BodyKind::Chunked | BodyKind::UntilClose if req.head.minor >= 1 => Framing::Chunked,
        BodyKind::Chunked | BodyKind::UntilClose => Framing::Close,
        _ => Framing::AsIs,
    };
    let client_keep_alive = req.conn.persistent(req.head.minor)
        && client_framing != Framing::Close
        && request_done
        && !crate::app::shutting_down();
    let framing = if client_keep_alive {
        client_framing
    } else {
        client_framing.closing()
    };
    if ctx.logging {
        ctx.content_type = head
            .first("content-type")
            .map(|v| String::from_utf8_lossy(v).into_owned());
    }
    check_content(cfg, &head, resp_kind).map_err(Failure::Refused)?;
    let storing = req.cache.as_ref().and_then(|t| t.storing(req.head, &head));
    let cache_status = req.cache.as_ref().map(|t| {
        format!(
            "{}; fwd={}{}",
            t.name,
            t.note,
            if storing.is_some() { "; stored" } else { "" }
        )
    });
    let fields = ResponseFields {
        cache_status: cache_status.as_deref(),
        encoding,
        ..fields
    };
    // The body bytes already read join the head in one write: room for them
    // now saves growing the buffer (and copying the head) once they come.
    let body_room = match resp_kind {
        BodyKind::None => 0,
        _ => ubuf.len().min(16 * 1024) + CHUNK_FRAMING,
    };
    let out_head = response_head_bytes(
        fields,
        &head,
        &resp_conn,
        req.head.minor,
        framing,
        body_room,
    );
    let budget = cfg
        .content
        .max_response_size
        .map(|max| max + out_head.len() as u64 + chunk_overhead(max, framing));
    // A gzip-encoded body is framed by the sink, chunk by chunk.
    let gzip = match encoding {
        // An empty body too: a chunked one ends with its last chunk. The
        // size limit is on the response, not on its encoding.
        Verdict::Compress if !is_head => req.compress.map(|settings| {
            let gz = compress::Gzip::new(settings.level);
            body::Encoding::new(gz, cfg.content.max_response_size)
        }),
        _ => None,
    };
    let out = if gzip.is_none() && (framing == Framing::Chunked || framing == Framing::ChunkedClose)
    {
        OutFraming::Chunked
    } else {
        OutFraming::Raw
    };

    // Phase 2: the response body, while any remaining request body still flows.
    let tapped;
    let relayed = {
        let mut src = Source {
            io: &mut ur,
            buf: &mut ubuf,
            timeout: io_timeout,
        };
        let mut sink = Sink::new(&mut cw, out_head, io_timeout);
        sink.throttle = &req.admission.buckets;
        if gzip.is_some() {
            sink.gzip = gzip;
        } else {
            sink.budget = budget;
        }
        if storing.is_some() {
            sink.tap = Some(crate::http1::body::Tap {
                limit: req.cache.as_ref().map_or(0, |t| t.max_object_size),
                ..Default::default()
            });
        }
        let res = {
            let mut stream = pin!(body::relay(
                &mut src,
                &mut sink,
                resp_kind,
                out,
                max_trailer
            ));
            loop {
                let Some(sending) = send.as_mut().filter(|_| sent.is_none()) else {
                    break stream.await;
                };
                tokio::select! {
                    res = sending => sent = Some(res),
                    res = &mut stream => break res,
                }
            }
        };
        ctx.bytes_out += sink.written;
        tapped = sink.tap.take();
        res
    };
    drop(send);
    if let Some(Ok(stats)) = &sent {
        ctx.bytes_in += stats.payload;
    }
    match relayed {
        Ok(_) => {}
        // A response cut short is never stored.
        Err(_) => return Err(Failure::Aborted),
    }
    // RFC 9111 §4.4: an unsafe request that succeeded invalidates.
    if let Some(ticket) = &req.cache
        && ticket.note == "method"
        && (200..400).contains(&head.status)
    {
        ticket.cache.invalidate(&ticket.url, &head);
    }
    if let (Some(storing), Some(tap), Some(ticket)) = (storing, tapped, &req.cache)
        && !tap.overflowed
    {
        ticket
            .cache
            .keep(storing.entry(&head, &resp_conn, tap.bytes));
    }
    let request_complete = matches!(sent, Some(Ok(_)));
    Ok(ExchangeEnd {
        client_keep_alive: client_keep_alive && request_complete,
        upstream_reusable: request_complete
            && resp_kind != BodyKind::UntilClose
            && resp_conn.persistent(head.minor)
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
            && !(head.minor == 0 && head.has("transfer-encoding"))
            && ubuf.is_empty(),
    })
}

/// The content rules on a response head, before anything reaches the client:
/// refused media types, and a Content-Length above the size limit.
fn check_content(cfg: &Config, head: &ResponseHead, kind: BodyKind) -> Result<(), ProxyError> {
    let rules = &cfg.content;
    if !rules.deny_types.is_empty()
        && let Some(ct) = head.first("content-type")
    {
        let ct = String::from_utf8_lossy(ct);
        if let Some(denied) = rules.denies_type(&ct) {
            return Err(ProxyError::new(
                ErrorKind::ContentDenied,
                format!("responses of type {denied} are refused (content.deny_types)"),
            ));
        }
    }
    if let (Some(max), BodyKind::Length(n)) = (rules.max_response_size, kind)
        && n > max
    {
        return Err(ProxyError::new(
            ErrorKind::ResponseTooLarge,
            format!("the response has {n} bytes; content.max_response_size allows {max}"),
        ));
    }
    Ok(())
}

/// A chunk's size line and CRLF, and the last chunk: what chunked framing
/// adds around the body bytes already read.
const CHUNK_FRAMING: usize = 32;

/// Room for chunk framing on top of the payload budget (a size line and CRLF
/// per chunk of at least 1 KiB, and the last chunk).
fn chunk_overhead(max: u64, framing: Framing) -> u64 {
    match framing {
        Framing::Chunked | Framing::ChunkedClose => (max / 1024 + 2) * 12 + 5,
        _ => 0,
    }
}

fn client_body_failure(e: &BodyError, ctx: &mut RequestCtx) -> Failure {
    match e {
        BodyError::Malformed(m) => Failure::Client(ProxyError::new(
            ErrorKind::BadRequest,
            format!("request body: {m}"),
        )),
        _ => {
            ctx.aborted = true;
            Failure::Aborted
        }
    }
}

enum HeadFailure {
    /// Not a single byte of response arrived.
    Nothing(ProxyError),
    Partial(ProxyError),
}

/// Reads response heads until a final one (or 101), passing 1xx on to HTTP/1.1
/// clients (RFC 9110 §15.2; HTTP/1.0 clients cannot take them).
async fn read_final_head(
    ur: &mut UpRead<'_>,
    ubuf: &mut BytesMut,
    cw: &mut ClientWrite<'_>,
    cfg: &Config,
    fields: ResponseFields<'_>,
    client_minor: u8,
    interim_out: &mut u64,
) -> Result<ResponseHead, HeadFailure> {
    use tokio::io::AsyncReadExt;
    let limits = response_limits(cfg);
    let mut any = false;
    loop {
        if !ubuf.is_empty() {
            match parse_response(ubuf, limits) {
                Ok(Some((n, parts))) => {
                    let head = ResponseHead::new(ubuf.split_to(n).freeze(), parts);
                    if head.status >= 200 || head.status == 101 {
                        return Ok(head);
                    }
                    if client_minor >= 1 {
                        let out = response_head_bytes(
                            fields,
                            &head,
                            &connection_options(&head),
                            client_minor,
                            Framing::Interim,
                            0,
                        );
                        if !matches!(
                            timeout(cfg.timeouts.io, cw.write_all(&out)).await,
                            Ok(Ok(()))
                        ) {
                            return Err(HeadFailure::Partial(ProxyError::new(
                                ErrorKind::UpstreamTerminated,
                                "client went away",
                            )));
                        }
                        *interim_out += out.len() as u64;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(crate::http1::HeadError::TooLarge)
                | Err(crate::http1::HeadError::TooManyHeaders) => {
                    return Err(HeadFailure::Partial(ProxyError::new(
                        ErrorKind::ResponseHeaderTooLarge,
                        "response header section too large",
                    )));
                }
                Err(e) => {
                    return Err(HeadFailure::Partial(ProxyError::new(
                        ErrorKind::BadResponse,
                        format!(
                            "invalid response head: {}",
                            crate::ingress::head_error_text(&e)
                        ),
                    )));
                }
            }
        }
        ubuf.reserve(8 * 1024);
        // The first-byte deadline is applied by the caller, from the moment
        // the request has been sent.
        match ur.read_buf(ubuf).await {
            Ok(0) | Err(_) if !any => {
                return Err(HeadFailure::Nothing(ProxyError::new(
                    ErrorKind::UpstreamTerminated,
                    "the server closed the connection without a response",
                )));
            }
            Ok(0) | Err(_) => {
                return Err(HeadFailure::Partial(ProxyError::new(
                    ErrorKind::UpstreamTerminated,
                    "the server closed the connection in the middle of the response head",
                )));
            }
            Ok(_) => any = true,
        }
    }
}

/// The field lines `keep` keeps, as response compression's `encoding`
/// changes them: the encoded bytes have no length, ranges, digests or strong
/// tag of their own (RFC 9110 §8.4, §8.8.3).
fn copy_encoded_field_lines(
    head: &ResponseHead,
    out: &mut Vec<u8>,
    encoding: Verdict,
    keep: impl Fn(&crate::http1::head::Field, &[u8]) -> bool,
) {
    let weak_etag = match encoding {
        Verdict::Compress | Verdict::Confirm => head.first("etag").and_then(compress::weakened),
        _ => None,
    };
    let weak_etag = weak_etag.as_deref().map(crate::http1::text);
    copy_field_lines(head, out, |f, name| {
        if !keep(f, name) {
            return FieldFate::Drop;
        }
        if f.kind != Known::Other {
            return FieldFate::Keep;
        }
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if encoding == Verdict::Compress
            && (is(b"content-encoding")
                || compress::CHANGED_BY_ENCODING
                    .iter()
                    .any(|c| is(c.as_bytes())))
        {
            return FieldFate::Drop;
        }
        match weak_etag.as_deref() {
            Some(weak) if is(b"etag") => FieldFate::Replace(weak),
            _ => FieldFate::Keep,
        }
    });
}

/// How the response body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Keep the server's Content-Length (or no body).
    AsIs,
    AsIsClose,
    Chunked,
    ChunkedClose,
    /// Delimited by closing the connection (HTTP/1.0 clients).
    Close,
    Interim,
    Upgrade,
}

impl Framing {
    fn closing(self) -> Framing {
        match self {
            Framing::AsIs => Framing::AsIsClose,
            Framing::Chunked => Framing::ChunkedClose,
            other => other,
        }
    }
}

/// What the response head toward the client gets and loses besides framing.
#[derive(Clone, Copy)]
struct ResponseFields<'a> {
    via: Option<&'a str>,
    scrubber: &'a Scrubber,
    set_cookie: Option<&'a str>,
    cache_status: Option<&'a str>,
    /// Response compression's changes (RFC 9110 §8.4).
    encoding: Verdict,
}

fn response_head_bytes(
    fields: ResponseFields<'_>,
    head: &ResponseHead,
    conn: &ConnectionOptions,
    client_minor: u8,
    framing: Framing,
    body_room: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.raw.len() + 64 + body_room);
    out.extend_from_slice(if client_minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    crate::http1::push_decimal(&mut out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");
    let rewrites = fields.scrubber.rewrites_responses();
    // Framing is decided here, never by what Connection lists: the length
    // (validated when the head was read) stays exactly when the body is
    // passed on as received.
    let keep = |f: &crate::http1::head::Field, name: &[u8]| {
        if f.kind == Known::ContentLength {
            matches!(framing, Framing::AsIs | Framing::AsIsClose)
        } else {
            !(conn.drops(f, name) || (rewrites && fields.scrubber.drops_response_field(name)))
        }
    };
    if fields.encoding == Verdict::Leave {
        copy_field_lines(head, &mut out, |f, name| {
            if keep(f, name) {
                FieldFate::Keep
            } else {
                FieldFate::Drop
            }
        });
    } else {
        copy_encoded_field_lines(head, &mut out, fields.encoding, keep);
    }
    if let Some(status) = fields.cache_status {
        out.extend_from_slice(b"Cache-Status: ");
        out.extend_from_slice(status.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(cookie) = fields.set_cookie {
        out.extend_from_slice(b"Set-Cookie: ");
        out.extend_from_slice(cookie.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let weak = matches!(fields.encoding, Verdict::Compress | Verdict::Confirm);
    for (name, value) in fields.scrubber.response_added() {
        // A tag the rules set names the server's bytes too.
        match compress::weakened(value.as_bytes()) {
            Some(w) if weak && name.eq_ignore_ascii_case("etag") => {
                push_field(&mut out, name.as_bytes(), &w)
            }
            _ => push_field(&mut out, name.as_bytes(), value.as_bytes()),
        }
    }
    push_via(fields.via, &mut out, head.minor);
    if fields.encoding != Verdict::Leave
        && !compress::vary_covered(fields.scrubber, head.values("vary"))
    {
        out.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    if fields.encoding == Verdict::Compress {
        out.extend_from_slice(b"Content-Encoding: gzip\r\n");
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::ChunkedClose => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\nConnection: close\r\n")
        }
        Framing::AsIsClose | Framing::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Framing::AsIs if client_minor == 0 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Framing::Upgrade => {
            out.extend_from_slice(b"Connection: upgrade\r\n");
            for v in head.values("upgrade") {
                out.extend_from_slice(b"Upgrade: ");
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
            }
        }
        Framing::AsIs | Framing::Interim => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}
