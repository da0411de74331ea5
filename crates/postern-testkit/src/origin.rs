//! HTTP/1.1 origin servers built on hyper, plain ([`Origin`]) and TLS
//! ([`TlsOrigin`](crate::TlsOrigin)), sharing one set of test routes.
//!
//! Routes (path based; every route honours repeated `h=Name:Value` query
//! parameters, which add response headers):
//!
//! | path            | behaviour |
//! |-----------------|-----------|
//! | `/bytes/N`      | `N` bytes of [`pattern_bytes`], `Content-Length`, `application/octet-stream`; `status=NNN` overrides the status |
//! | `/text/N`       | `N` bytes of [`text_bytes`] as `text/html` (`type=` another), `ETag: "text-N"` (304 for it, weak or strong), `Accept-Ranges`; `chunked` streams it without a length (`trailer`: with `x-trailer: done`); `status=NNN` |
//! | `/chunked/N`    | the same bytes, chunked (16 KiB chunks), then trailer `x-trailer: done` (hyper only emits the trailer when the request carries `TE: trailers`) |
//! | `/status/CODE`  | that status with body `status CODE` (empty for 1xx/204/304) |
//! | `/headers`      | `text/plain`: first line is the method, then one `name: value` line per request header |
//! | `/echo`         | streams the request body back; `x-method`, `x-received-content-length` |
//! | `/delay/MS`     | waits `MS` ms, then `delayed` |
//! | `/reset/N`      | announces `Content-Length: 2N`, sends `N` bytes, then aborts the connection |
//! | `/upgrade`      | `Upgrade: testproto` + `Connection: upgrade` → 101 then byte echo; otherwise 426 |
//! | `/expect`       | reads the whole body (100-continue is automatic), replies `got N bytes` |
//! | `/etag/TAG`     | `ETag: "TAG"`, body `tag TAG`; 304 when `If-None-Match` names it |
//! | anything else   | 404 `not found` |

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = UnsyncBoxBody<Bytes, BoxError>;

const CHUNK: usize = 16 * 1024;

/// Deterministic test payload of `n` bytes; compare responses against it
/// byte for byte.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i.wrapping_mul(31)
                .wrapping_add(i / 251)
                .wrapping_add(i / 65_521)) as u8
        })
        .collect()
}

/// A request as seen by an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// e.g. `GET`.
    pub method: String,
    /// The request target as received (normally path and query).
    pub uri: String,
    /// e.g. `HTTP/1.1`.
    pub version: String,
    /// Lowercase header names with their values, in received order
    /// (repeated names are grouped at the position of their first occurrence).
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters shared between a server handle and its tasks.
#[derive(Default)]
pub(crate) struct Stats {
    requests: AtomicUsize,
    connections: AtomicUsize,
    last: Mutex<Option<SeenRequest>>,
    peers: Mutex<Vec<SocketAddr>>,
}

impl Stats {
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub(crate) fn last_request(&self) -> Option<SeenRequest> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Plain HTTP/1.1 origin on `127.0.0.1`. Dropping it stops the listener and
/// all of its connections.
pub struct Origin {
    addr: SocketAddr,
    stats: Arc<Stats>,
    _shutdown: watch::Sender<()>,
}

impl Origin {
    /// Binds `127.0.0.1:0` and starts serving in the background.
    pub async fn start() -> Origin {
        let (addr, stats, shutdown) = spawn_server(None).await;
        Origin {
            addr,
            stats,
            _shutdown: shutdown,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Number of requests received so far.
    pub fn requests(&self) -> usize {
        self.stats.requests()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections()
    }

    /// The most recent request received.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.stats.last_request()
    }

    /// Source addresses of the connections accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.stats
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Binds a listener and spawns the accept loop. The server stops when the
/// returned sender is dropped.
pub(crate) async fn spawn_server(
    tls: Option<TlsAcceptor>,
) -> (SocketAddr, Arc<Stats>, watch::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin listener on 127.0.0.1:0");
    let addr = listener.local_addr().expect("origin local_addr");
    let stats = Arc::new(Stats::default());
    let (tx, rx) = watch::channel(());
    tokio::spawn(accept_loop(listener, stats.clone(), rx, tls));
    (addr, stats, tx)
}

async fn accept_loop(
    listener: TcpListener,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<()>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    stats.peers.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                    stream
                }
                Err(_) => {
                    tokio::task::yield_now().await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        let mut conn_shutdown = shutdown.clone();
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, stats, conn_shutdown));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let accepted = tokio::select! {
                        r = acceptor.accept(stream) => r,
                        _ = conn_shutdown.changed() => return,
                    };
                    if let Ok(tls_stream) = accepted {
                        serve_connection(tls_stream, stats, conn_shutdown).await;
                    }
                });
            }
        }
    }
}

async fn serve_connection<I>(io: I, stats: Arc<Stats>, mut shutdown: watch::Receiver<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let flush = Arc::new(FlushSignal::default());
    let io = TokioIo::new(Tracked {
        inner: io,
        flush: flush.clone(),
    });
    let upgrade_shutdown = shutdown.clone();
    let svc = service_fn(move |req| {
        let ctx = Ctx {
            stats: stats.clone(),
            flush: flush.clone(),
            shutdown: upgrade_shutdown.clone(),
        };
        async move { Ok::<_, Infallible>(handle(req, ctx).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = shutdown.changed() => {}
    }
}

struct Ctx {
    stats: Arc<Stats>,
    flush: Arc<FlushSignal>,
    shutdown: watch::Receiver<()>,
}

async fn handle(mut req: Request<Incoming>, ctx: Ctx) -> Response<RespBody> {
    let seen = SeenRequest {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    *ctx.stats.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
    ctx.stats.requests.fetch_add(1, Ordering::SeqCst);

    let params = query_params(req.uri().query().unwrap_or(""));
    let path = req.uri().path().to_owned();

    let mut resp = if let Some(n) = path.strip_prefix("/bytes/") {
        match n.parse::<usize>() {
            Ok(n) => {
                let status = params
                    .iter()
                    .filter(|(k, _)| k == "status")
                    .find_map(|(_, v)| v.parse::<u16>().ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::OK);
                let mut r = Response::new(full(pattern_bytes(n)));
                *r.status_mut() = status;
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            Err(_) => not_found(),
        }
    } else if let Some(tag) = path.strip_prefix("/etag/") {
        // A validator route: 304 when If-None-Match names the tag.
        let etag = format!("\"{tag}\"");
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut r = if matches {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            text_response(StatusCode::OK, format!("tag {tag}"))
        };
        r.headers_mut().insert(
            header::ETAG,
            HeaderValue::from_str(&etag).expect("quoted tag"),
        );
        r
    } else if let Some(n) = path.strip_prefix("/text/") {
        match n.parse::<usize>() {
            Ok(n) => page_response(n, &params, req.headers()),
            Err(_) => not_found(),
        }
    } else if let Some(n) = path.strip_prefix("/chunked/") {
        match n.parse::<usize>() {
            Ok(n) => chunked_response(n),
            Err(_) => not_found(),
        }
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => {
                let bodyless = status.is_informational()
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED;
                let body = if bodyless {
                    full(Bytes::new())
                } else {
                    full(format!("status {}", status.as_u16()))
                };
                let mut r = Response::new(body);
                *r.status_mut() = status;
                r
            }
            None => not_found(),
        }
    } else if path == "/headers" {
        let mut text = format!("{}\n", req.method());
        for (n, v) in req.headers() {
            text.push_str(n.as_str());
            text.push_str(": ");
            text.push_str(&String::from_utf8_lossy(v.as_bytes()));
            text.push('\n');
        }
        text_response(StatusCode::OK, text)
    } else if path == "/echo" {
        let method = req.method().to_string();
        let received_len = req.headers().get(header::CONTENT_LENGTH).cloned();
        let body = req
            .into_body()
            .map_err(|e| Box::new(e) as BoxError)
            .boxed_unsync();
        let mut r = Response::new(body);
        if let Ok(v) = HeaderValue::from_str(&method) {
            r.headers_mut().insert("x-method", v);
        }
        if let Some(v) = received_len {
            r.headers_mut().insert("x-received-content-length", v);
        }
        r
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        match ms.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text_response(StatusCode::OK, "delayed")
            }
            Err(_) => not_found(),
        }
    } else if let Some(n) = path.strip_prefix("/reset/") {
        match n.parse::<usize>() {
            Ok(n) => {
                let body = ResetBody {
                    data: (n > 0).then(|| Bytes::from(pattern_bytes(n))),
                    flush: ctx.flush.clone(),
                    after: None,
                };
                let mut r = Response::new(body.boxed_unsync());
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(2 * n));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            Err(_) => not_found(),
        }
    } else if path == "/upgrade" {
        let wants_testproto = header_has_token(req.headers(), header::UPGRADE, "testproto");
        let connection_upgrade = header_has_token(req.headers(), header::CONNECTION, "upgrade");
        if wants_testproto && connection_upgrade {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(echo_upgraded(on, ctx.shutdown.clone()));
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("testproto"));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            r
        } else {
            text_response(StatusCode::UPGRADE_REQUIRED, "upgrade required")
        }
    } else if path == "/expect" {
        match req.into_body().collect().await {
            Ok(body) => {
                let n = body.to_bytes().len();
                text_response(StatusCode::OK, format!("got {n} bytes"))
            }
            Err(_) => text_response(StatusCode::BAD_REQUEST, "body error"),
        }
    } else {
        not_found()
    };

    for (k, v) in &params {
        if k != "h" {
            continue;
        }
        let Some((name, value)) = v.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn text_response(status: StatusCode, text: impl Into<String>) -> Response<RespBody> {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_found() -> Response<RespBody> {
    text_response(StatusCode::NOT_FOUND, "not found")
}

/// `/text/N`: [`text_bytes`] as `text/html` (`type=` another type), with a
/// strong ETag and `Accept-Ranges`; `chunked` sends it in 4 KiB frames
/// without a length (`trailer`: then `x-trailer: done`); `status=NNN`
/// overrides the status; 304 when If-None-Match names the tag, weak or not.
fn page_response(n: usize, params: &[(String, String)], request: &HeaderMap) -> Response<RespBody> {
    let data = Bytes::from(text_bytes(n));
    let has = |name: &str| params.iter().any(|(k, _)| k == name);
    let tag = format!("\"text-{n}\"");
    let confirmed = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag)
        });
    let mut r = if confirmed {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if has("chunked") {
        let mut frames: VecDeque<_> = data
            .chunks(4096)
            .map(|c| Frame::data(data.slice_ref(c)))
            .collect();
        if has("trailer") {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-trailer", HeaderValue::from_static("done"));
            frames.push_back(Frame::trailers(trailers));
        }
        let mut r = Response::new(FrameQueue { frames }.boxed_unsync());
        if has("trailer") {
            r.headers_mut()
                .insert(header::TRAILER, HeaderValue::from_static("x-trailer"));
        }
        r
    } else {
        let mut r = Response::new(full(data));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        r
    };
    let media = params
        .iter()
        .find(|(k, _)| k == "type")
        .map_or("text/html; charset=utf-8", |(_, v)| v.as_str());
    if let Ok(v) = HeaderValue::from_str(media)
        && !confirmed
    {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(status) = params
        .iter()
        .filter(|(k, _)| k == "status")
        .find_map(|(_, v)| StatusCode::from_bytes(v.as_bytes()).ok())
        .filter(|_| !confirmed)
    {
        *r.status_mut() = status;
    }
    r
}

/// Readable text of `n` bytes, numbered lines that compress well.
pub fn text_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut line = 0;
    while out.len() < n {
        out.extend_from_slice(
            format!("<p>line {line}: the quick brown fox jumps over the lazy dog</p>\n").as_bytes(),
        );
        line += 1;
    }
    out.truncate(n);
    out
}

fn chunked_response(n: usize) -> Response<RespBody> {
    let data = Bytes::from(pattern_bytes(n));
    let mut frames = VecDeque::new();
    let mut off = 0;
    while off < n {
        let end = (off + CHUNK).min(n);
        frames.push_back(Frame::data(data.slice(off..end)));
        off = end;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("done"));
    frames.push_back(Frame::trailers(trailers));
    let mut r = Response::new(FrameQueue { frames }.boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert(header::TRAILER, HeaderValue::from_static("x-trailer"));
    r
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

async fn echo_upgraded(on: OnUpgrade, mut shutdown: watch::Receiver<()>) {
    let echo = async move {
        let Ok(upgraded) = on.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if io.write_all(&buf[..n]).await.is_err() || io.flush().await.is_err() {
                return;
            }
        }
        let _ = io.shutdown().await;
    };
    tokio::select! {
        _ = echo => {}
        _ = shutdown.changed() => {}
    }
}

/// Splits a query string into percent-decoded `(key, value)` pairs.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A body that yields a fixed list of frames (data and trailers).
struct FrameQueue {
    frames: VecDeque<Frame<Bytes>>,
}

impl Body for FrameQueue {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.get_mut().frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Counts completed flushes of a connection's transport, so a body can wait
/// until everything it produced has reached the socket.
#[derive(Default)]
struct FlushSignal {
    state: Mutex<(u64, Option<Waker>)>,
}

impl FlushSignal {
    fn count(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn flushed(&self) {
        let waker = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.0 += 1;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// True once a flush completed after flush number `after`; otherwise
    /// registers `waker` for the next flush.
    fn passed(&self, after: u64, waker: &Waker) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 > after {
            true
        } else {
            s.1 = Some(waker.clone());
            false
        }
    }
}

/// Yields its data, then fails once that data has been flushed to the
/// socket, which makes hyper abort the connection mid-body.
struct ResetBody {
    data: Option<Bytes>,
    flush: Arc<FlushSignal>,
    after: Option<u64>,
}

impl Body for ResetBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let flush = &this.flush;
        let after = *this.after.get_or_insert_with(|| flush.count());
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if this.flush.passed(after, cx.waker()) {
            Poll::Ready(Some(Err("test origin aborts the connection".into())))
        } else {
            Poll::Pending
        }
    }
}

/// Transport wrapper reporting completed flushes to a [`FlushSignal`].
struct Tracked<T> {
    inner: T,
    flush: Arc<FlushSignal>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            this.flush.flushed();
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_exchange;
    use tokio::net::TcpStream;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn pattern_is_deterministic() {
        assert_eq!(pattern_bytes(1000), pattern_bytes(1000));
        assert_eq!(&pattern_bytes(1000)[..10], &pattern_bytes(10)[..]);
        assert_ne!(pattern_bytes(512)[..256], pattern_bytes(512)[256..]);
    }

    #[test]
    fn decodes_query() {
        assert_eq!(
            query_params("h=X-A:b%20c&status=201&h=x-b:1+2&flag"),
            vec![
                ("h".to_owned(), "X-A:b c".to_owned()),
                ("status".to_owned(), "201".to_owned()),
                ("h".to_owned(), "x-b:1 2".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[tokio::test]
    async fn serves_bytes() {
        let origin = Origin::start().await;
        let req = "GET /bytes/10?h=X-Test:yes HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let reply = raw_exchange(origin.addr(), req.as_bytes(), T).await;
        assert!(reply.closed);
        assert_eq!(reply.status(), Some(200));
        assert_eq!(reply.header("content-length").as_deref(), Some("10"));
        assert_eq!(reply.header("x-test").as_deref(), Some("yes"));
        assert_eq!(reply.body(), &pattern_bytes(10)[..]);
        assert_eq!(origin.requests(), 1);
        assert_eq!(origin.connections(), 1);
        let seen = origin.last_request().unwrap();
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.uri, "/bytes/10?h=X-Test:yes");
        assert_eq!(seen.version, "HTTP/1.1");
        assert_eq!(seen.header("host"), Some("a"));
    }

    #[tokio::test]
    async fn status_override_and_status_route() {
        let origin = Origin::start().await;
        let r = raw_exchange(
            origin.addr(),
            b"GET /bytes/3?status=203 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(r.status(), Some(203));
        let r = raw_exchange(
            origin.addr(),
            b"GET /status/418 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(r.status(), Some(418));
        assert_eq!(r.body(), b"status 418");
        let r = raw_exchange(
            origin.addr(),
            b"HEAD /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(r.status(), Some(200));
        assert!(r.body().is_empty());
        let r = raw_exchange(
            origin.addr(),
            b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(r.status(), Some(404));
    }

    #[tokio::test]
    async fn chunked_with_trailer() {
        let origin = Origin::start().await;
        let req =
            "GET /chunked/40000 HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n";
        let reply = raw_exchange(origin.addr(), req.as_bytes(), T).await;
        assert_eq!(reply.status(), Some(200));
        assert_eq!(
            reply.header("transfer-encoding").as_deref(),
            Some("chunked")
        );
        let (sizes, data, trailer) = dechunk(reply.body());
        assert_eq!(sizes, vec![16384, 16384, 7232]);
        assert_eq!(data, pattern_bytes(40000));
        assert_eq!(trailer, "x-trailer: done\r\n\r\n");
    }

    /// Decodes a chunked body into (chunk sizes, data, raw trailer section).
    fn dechunk(mut body: &[u8]) -> (Vec<usize>, Vec<u8>, String) {
        let mut sizes = Vec::new();
        let mut data = Vec::new();
        loop {
            let eol = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("size line");
            let size = usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap(), 16)
                .expect("hex size");
            body = &body[eol + 2..];
            if size == 0 {
                return (sizes, data, String::from_utf8_lossy(body).into_owned());
            }
            sizes.push(size);
            data.extend_from_slice(&body[..size]);
            assert_eq!(&body[size..size + 2], b"\r\n");
            body = &body[size + 2..];
        }
    }

    #[tokio::test]
    async fn headers_and_echo() {
        let origin = Origin::start().await;
        let r = raw_exchange(
            origin.addr(),
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nConnection: close\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(
            r.text().split("\r\n\r\n").nth(1).unwrap(),
            "GET\nhost: a\nx-one: 1\nconnection: close\n"
        );

        let r = raw_exchange(
            origin.addr(),
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            T,
        )
        .await;
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.header("x-method").as_deref(), Some("POST"));
        assert_eq!(r.header("x-received-content-length").as_deref(), Some("5"));
        assert_eq!(r.body(), b"hello");

        let r = raw_exchange(
            origin.addr(),
            b"PUT /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(r.header("x-received-content-length"), None);
        let text = String::from_utf8_lossy(r.body()).replace("\r\n", "|");
        assert!(text.starts_with("3|abc|2|de|0|"), "{text}");
    }

    #[tokio::test]
    async fn keep_alive_reuses_connection() {
        let origin = Origin::start().await;
        let req = b"GET /bytes/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /delay/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let r = raw_exchange(origin.addr(), req, T).await;
        assert!(r.closed);
        assert!(r.text().ends_with("delayed"), "{}", r.text());
        assert_eq!(origin.requests(), 2);
        assert_eq!(origin.connections(), 1);
    }

    #[tokio::test]
    async fn reset_aborts_mid_body() {
        let origin = Origin::start().await;
        let r = raw_exchange(
            origin.addr(),
            b"GET /reset/1000 HTTP/1.1\r\nHost: a\r\n\r\n",
            T,
        )
        .await;
        assert!(r.closed);
        assert_eq!(r.header("content-length").as_deref(), Some("2000"));
        assert_eq!(r.body(), &pattern_bytes(1000)[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_reset_and_echo() {
        let origin = Origin::start().await;
        let n = 4 * 1024 * 1024;
        let req = format!("GET /reset/{n} HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = raw_exchange(origin.addr(), req.as_bytes(), T).await;
        assert!(r.closed);
        assert_eq!(r.body().len(), n);
        assert!(r.body() == &pattern_bytes(n)[..]);

        let n = 1024 * 1024;
        let mut req = format!(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&pattern_bytes(n));
        let r = raw_exchange(origin.addr(), &req, T).await;
        assert!(r.closed);
        assert_eq!(r.header("content-length"), Some(n.to_string()));
        assert!(r.body() == &pattern_bytes(n)[..]);
    }

    #[tokio::test]
    async fn expect_continue() {
        let origin = Origin::start().await;
        let mut s = TcpStream::connect(origin.addr()).await.unwrap();
        s.write_all(b"POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n"));
        s.write_all(b"abcd").await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.ends_with(b"got 4 bytes"),
            "{}",
            String::from_utf8_lossy(&rest)
        );
    }

    #[tokio::test]
    async fn upgrade_echoes() {
        let origin = Origin::start().await;
        let r = raw_exchange(
            origin.addr(),
            b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        )
        .await;
        assert_eq!(r.status(), Some(426));

        let mut s = TcpStream::connect(origin.addr()).await.unwrap();
        s.write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: a\r\nUpgrade: testproto\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "));
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn drop_stops_server() {
        let origin = Origin::start().await;
        let addr = origin.addr();
        drop(origin);
        // The listener is closed by the accept task; poll until refused.
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "still listening");
            tokio::task::yield_now().await;
        }
    }
}
