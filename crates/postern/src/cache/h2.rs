//! The cache for requests from HTTP/2 clients (served by hyper): the same
//! store, keys and rules as the HTTP/1 path, with answers built as hyper
//! responses and misses stored while their body streams to the client.
//! As on that path, a stale response is validated with the origin (§4.3),
//! may stand in when the origin fails (RFC 5861 §4, §4.2.4), and concurrent
//! misses for one URL are collapsed into one fetch.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::flow::{StoredAnswer, clone_entry, request_directives, stale_cover};
use super::policy::{Directives, Use};
use super::store::Entry;
use super::{Cache, CollapseGuard, Found, Storing};
use crate::error::{ErrorKind, ProxyError};
use crate::http1::RequestHead;
use crate::http1::fields::connection_options;
use crate::http1::head::push_field;
use crate::http1::head::{Fields, HeadLimits, ResponseHead, parse_response};
use crate::reverse::compress::{Compression, Verdict};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

pub enum Looked {
    /// Answered from storage; when served stale within
    /// `stale-while-revalidate`, the entry to revalidate in the background.
    Hit(Response<BoxBody>, Option<(Arc<Entry>, Directives)>),
    Miss(Miss),
}

/// A request that goes to the origin with the cache's interest in it.
pub struct Miss {
    cache: Arc<Cache>,
    url: String,
    req_cc: Directives,
    request_time: i64,
    /// RFC 9211 `fwd` reason.
    note: &'static str,
    name: String,
    targeted: bool,
    /// The stale response this request may refresh or fall back on.
    stale: Option<Found>,
    /// Validators were added for `stale`: a 304 answers the cache.
    validating: bool,
    /// The one fetch of a collapsed URL; others wait until it is stored.
    leader: Option<CollapseGuard>,
    /// The route's compression, when the client takes gzip.
    gzip_for: Option<Arc<Compression>>,
}

/// Looks `url` up for `head`, as the HTTP/1 path does (RFC 9111 §4);
/// `targeted` for reverse listeners (RFC 9213).
/// `collapse_wait`: how long a request waits for another one fetching the
/// same URL.
pub async fn look(
    cache: &Arc<Cache>,
    (name, targeted): (&str, bool),
    url: String,
    head: &RequestHead,
    collapse_wait: std::time::Duration,
    gzip_for: Option<Arc<Compression>>,
) -> Result<Looked, ProxyError> {
    let req_cc = request_directives(head);
    let miss = |note: &'static str, req_cc: Directives| Miss {
        cache: cache.clone(),
        url: url.clone(),
        req_cc,
        request_time: super::now(),
        note,
        name: name.to_string(),
        targeted,
        stale: None,
        validating: false,
        leader: None,
        gzip_for: gzip_for.clone(),
    };
    if !head.is_method("GET") && !head.is_method("HEAD") {
        let safe = head.is_method("OPTIONS") || head.is_method("TRACE");
        return Ok(Looked::Miss(miss(
            if safe { "bypass" } else { "method" },
            req_cc,
        )));
    }
    let stats = &cache.store.stats;
    let count = |c: &std::sync::atomic::AtomicU64| {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let mut leader = None;
    for attempt in 0..2 {
        match cache.lookup_any(&url, head, &req_cc, targeted).await {
            Some(f) if f.usable != Use::Validate => {
                count(&stats.hits);
                let ttl = f.entry.lifetime as i64 - f.age as i64;
                let status = format!("{name}; hit; ttl={ttl}");
                let response =
                    stored_response(cache, head, (&f.entry, f.age), &status, gzip_for.as_deref());
                // RFC 9111 §5.2.1.7: only-if-cached sends nothing to the
                // origin on this request's account, a background
                // revalidation included.
                let refresh = (f.usable == Use::StaleWhileRevalidate && !req_cc.only_if_cached)
                    .then_some((f.entry, req_cc));
                return Ok(Looked::Hit(response, refresh));
            }
            // §5.2.1.7: the stored response is not usable without the origin
            // (a stale one the request accepts, with max-stale, is a hit
            // above): 504.
            Some(_) if req_cc.only_if_cached => {
                return Err(ProxyError::new(
                    ErrorKind::NotCached,
                    "only-if-cached, and the stored response must be validated",
                ));
            }
            Some(f) => {
                count(&stats.revalidations);
                // A client's own validators go to the origin as they are, and
                // its 304 is the client's (§4.3.2).
                let validating = !super::flow::has_own_validators(head)
                    && !super::validators(&f.entry).is_empty();
                let mut m = miss("stale", req_cc);
                m.stale = Some(f);
                m.validating = validating;
                m.leader = leader;
                return Ok(Looked::Miss(m));
            }
            None if req_cc.only_if_cached => {
                return Err(ProxyError::new(
                    ErrorKind::NotCached,
                    "only-if-cached, and nothing usable is stored",
                ));
            }
            None if attempt == 0 && head.is_method("GET") => {
                // One request fetches; the others wait for it, then look again.
                match cache.collapse(&url, collapse_wait).await {
                    Some(guard) => {
                        leader = Some(guard);
                        break;
                    }
                    None => continue,
                }
            }
            None => break,
        }
    }
    count(&stats.misses);
    let note = if req_cc.no_cache {
        "request"
    } else {
        "uri-miss"
    };
    let mut m = miss(note, req_cc);
    m.leader = leader;
    Ok(Looked::Miss(m))
}

/// A stored response as an HTTP/2 answer.
/// `gzip_for`: the route's compression when the client takes gzip; a
/// response it will encode is answered whole, never as a range.
fn stored_response(
    cache: &Cache,
    head: &RequestHead,
    (entry, age): (&Arc<Entry>, u64),
    cache_status: &str,
    gzip_for: Option<&Compression>,
) -> Response<BoxBody> {
    let encoded = gzip_for.is_some_and(|c| {
        c.verdict(true, &crate::reverse::compress::stored_facts(entry, None)) == Verdict::Compress
    });
    let answer = StoredAnswer::with_ranges(head, entry, !encoded);
    let whole = answer.status == entry.status;
    let confirms = answer.status == 304;
    let mut response = Response::new(if head.is_method("HEAD") {
        empty()
    } else {
        cache.store.stats.bytes_served.fetch_add(
            answer.body.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Full::new(answer.body.clone())
            .map_err(|never| match never {})
            .boxed()
    });
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let h = response.headers_mut();
    for (name, value) in answer.stored_fields() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    for (name, value) in answer.own_fields() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    h.insert("age", age.into());
    if let Ok(v) = HeaderValue::from_str(cache_status) {
        h.insert("cache-status", v);
    }
    if answer.status != 304 && answer.status != 204 {
        h.insert("content-length", answer.body.len().into());
    }
    if whole || confirms {
        response
            .extensions_mut()
            .insert(crate::reverse::compress::Stored {
                entry: entry.clone(),
                whole,
            });
    }
    response
}

fn empty() -> BoxBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

impl Miss {
    /// The request head for the origin: with the stale response's
    /// validators when this request validates it (§4.3.1).
    pub fn conditional(&self, mut head_bytes: Vec<u8>) -> Vec<u8> {
        if let (true, Some(stale)) = (self.validating, &self.stale) {
            // Before the blank line that ends the head.
            let end = head_bytes.len() - 2;
            head_bytes.splice(end..end, super::validators(&stale.entry));
        }
        head_bytes
    }

    /// The origin could not answer: a stale response may stand in
    /// (stale-if-error, or §4.2.4 within `[cache] stale_if_unreachable`
    /// when the origin could not be reached).
    /// The access log's result for `status` answering this miss: Squid's
    /// `TCP_REFRESH_UNMODIFIED` when it is a 304 to the cache's own
    /// validators (the stored response is served), else `None`.
    pub fn result_for(&self, status: hyper::StatusCode) -> Option<&'static str> {
        (self.validating && status == hyper::StatusCode::NOT_MODIFIED)
            .then_some("TCP_REFRESH_UNMODIFIED")
    }

    pub fn failed(
        self,
        cfg: &crate::config::Config,
        head: &RequestHead,
        err: ProxyError,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let unreachable_max = cfg.cache.as_ref().map(|c| c.stale_if_unreachable.as_secs());
        let standing_in = self.stale.as_ref().and_then(|f| {
            let max = unreachable_max.filter(|_| err.kind.is_upstream());
            Some((f, stale_cover(&self.req_cc, f, max)?))
        });
        match standing_in {
            Some((found, age)) if err.kind.is_upstream() => {
                let status = format!(
                    "{}; hit; fwd=stale; detail={}",
                    self.name,
                    err.kind.proxy_status()
                );
                Ok(stored_response(
                    &self.cache,
                    head,
                    (&found.entry, age),
                    &status,
                    self.gzip_for.as_deref(),
                ))
            }
            _ => Err(err),
        }
    }

    /// What the origin answered, as the client gets it: with `Cache-Status`,
    /// and stored as it streams when it may be (§3); a successful unsafe
    /// request invalidates (§4.4); a 304 to the cache's validators refreshes
    /// the stored response (§4.3.4), and a 5xx may be covered by it.
    pub fn finish(self, head: &RequestHead, response: Response<Incoming>) -> Response<BoxBody> {
        let status = response.status().as_u16();
        // A 304 to the cache's own validators is the cache's, never the
        // client's (which asked without conditions).
        if status == 304
            && self.validating
            && let Some(stale) = &self.stale
        {
            let Some(view) = response_head(status, response.headers()) else {
                // The stored copy is confirmed, by fields that cannot be
                // merged into it: served as it is, and not refreshed.
                let cache_status = format!("{}; hit; fwd=stale; fwd-status=304", self.name);
                return stored_response(
                    &self.cache,
                    head,
                    (&stale.entry, stale.age),
                    &cache_status,
                    self.gzip_for.as_deref(),
                );
            };
            if !super::selects(&view, &stale.entry) {
                let cache_status = format!("{}; fwd=stale; fwd-status=304", self.name);
                let age = super::age_of(&stale.entry);
                let answer = stored_response(
                    &self.cache,
                    head,
                    (&stale.entry, age),
                    &cache_status,
                    self.gzip_for.as_deref(),
                );
                super::not_selected(&self.cache, &stale.entry);
                return answer;
            }
            let fresh = super::refreshed(&stale.entry, &view, self.request_time);
            let age = super::age_of(&fresh);
            let ttl = fresh.lifetime as i64 - age as i64;
            let cache_status = format!("{}; fwd=stale; fwd-status=304; ttl={ttl}", self.name);
            let fresh = Arc::new(fresh);
            let answer = stored_response(
                &self.cache,
                head,
                (&fresh, age),
                &cache_status,
                self.gzip_for.as_deref(),
            );
            self.cache.keep(clone_entry(&fresh));
            return answer;
        }
        if matches!(status, 500 | 502..=504)
            && let Some(found) = &self.stale
            && let Some(age) = stale_cover(&self.req_cc, found, None)
        {
            let cache_status = format!("{}; hit; fwd=stale; fwd-status={status}", self.name);
            return stored_response(
                &self.cache,
                head,
                (&found.entry, age),
                &cache_status,
                self.gzip_for.as_deref(),
            );
        }
        let (mut parts, body) = response.into_parts();
        let mut cache_status = format!("{}; fwd={}", self.name, self.note);
        let view = response_head(parts.status.as_u16(), &parts.headers);
        let mut body: BoxBody = body.boxed();
        if let Some(view) = view {
            if self.note == "method" && (200..400).contains(&status) {
                self.cache.invalidate(&self.url, &view);
            } else if head.is_method("GET")
                && let Some(storing) = Storing::decide(
                    &self.url,
                    head,
                    &self.req_cc,
                    &view,
                    (self.request_time, self.targeted),
                )
                && let Some(expect) = verifiable_length(&view, parts.version)
            {
                cache_status.push_str("; stored");
                body = Tee {
                    inner: body,
                    keep: Some(Keep {
                        cache: self.cache.clone(),
                        storing,
                        head: view,
                        data: Vec::new(),
                        limit: self.cache.tap_limit(),
                        expect,
                        _leader: self.leader,
                    }),
                }
                .boxed();
            }
        }
        if let Ok(v) = HeaderValue::from_str(&cache_status) {
            parts.headers.insert("cache-status", v);
        }
        Response::from_parts(parts, body)
    }
}

/// Whether the end of the body can be told from a cut: `Some(Some(n))` for
/// Content-Length `n`, `Some(None)` for chunked or HTTP/2 framing, `None`
/// for a body delimited by the connection closing (never stored).
fn verifiable_length(head: &ResponseHead, version: hyper::Version) -> Option<Option<u64>> {
    if let Some(n) = head
        .first("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
    {
        return Some(Some(n));
    }
    let chunked = head.values("transfer-encoding").any(|v| {
        String::from_utf8_lossy(v)
            .to_ascii_lowercase()
            .contains("chunked")
    });
    (chunked || version == hyper::Version::HTTP_2).then_some(None)
}

/// The response's head in the form the cache's rules read.
fn response_head(status: u16, headers: &hyper::HeaderMap) -> Option<ResponseHead> {
    let mut text = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in headers {
        push_field(&mut text, name.as_str().as_bytes(), value.as_bytes());
    }
    text.extend_from_slice(b"\r\n");
    let limits = HeadLimits {
        max_line: text.len(),
        max_size: text.len(),
        max_fields: headers.len() + 1,
    };
    let (n, parts) = parse_response(&text, limits).ok()??;
    Some(ResponseHead::new(Bytes::from(text).slice(..n), parts))
}

/// A response body passed to the client while a copy is kept for the cache;
/// the copy is stored only when the body ended whole.
struct Tee {
    inner: BoxBody,
    keep: Option<Keep>,
}

struct Keep {
    cache: Arc<Cache>,
    storing: Storing,
    head: ResponseHead,
    data: Vec<u8>,
    limit: usize,
    expect: Option<u64>,
    /// Waiting requests look again once this copy is stored or dropped.
    _leader: Option<CollapseGuard>,
}

impl Keep {
    fn store(self) {
        if self.expect.is_some_and(|n| n != self.data.len() as u64) {
            return;
        }
        let conn = connection_options(&self.head);
        let entry = self.storing.entry(&self.head, &conn, self.data);
        self.cache.keep(entry);
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Some(keep) = &mut this.keep
                {
                    if keep.data.len() + data.len() > keep.limit {
                        this.keep = None;
                    } else {
                        keep.data.extend_from_slice(data);
                    }
                }
                // hyper may stop polling once the body says it has ended.
                if this.inner.is_end_stream()
                    && let Some(keep) = this.keep.take()
                {
                    keep.store();
                }
            }
            Poll::Ready(Some(Err(_))) => this.keep = None,
            Poll::Ready(None) => {
                if let Some(keep) = this.keep.take() {
                    keep.store();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Revalidates `stale` in the background (RFC 5861 §3) over an HTTP/2
/// connection that `open` makes, for pools whose servers speak only HTTP/2.
/// The answer goes through [`Miss::finish`] as a validating request's would:
/// a 304 refreshes the stored copy, a new storable response replaces it.
pub fn refresh_over_http2(
    cache: &Arc<Cache>,
    (stale, request, req_cc): (Arc<Entry>, RequestHead, Directives),
    head_bytes: Vec<u8>,
    open: super::refresh::Opener,
    (first_byte, io): (std::time::Duration, std::time::Duration),
) {
    let Some(claim) = cache.claim_refresh(&stale.url) else {
        return;
    };
    let miss = Miss {
        cache: cache.clone(),
        url: stale.url.clone(),
        req_cc,
        request_time: super::now(),
        note: "stale",
        name: String::new(),
        targeted: stale.targeted,
        stale: Some(Found {
            entry: stale,
            age: 0,
            usable: Use::Validate,
        }),
        validating: true,
        leader: None,
        // A background refresh answers no client.
        gzip_for: None,
    };
    tokio::spawn(async move {
        let _claim = claim;
        let url = miss.url.clone();
        let refreshed = async {
            let upstream = open.await.map_err(|e| e.detail.clone())?;
            let tls = matches!(upstream, crate::egress::Upstream::Tls(_));
            let socket = hyper_util::rt::TokioIo::new(upstream);
            let executor = hyper_util::rt::TokioExecutor::new();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(executor, socket)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let body = crate::egress::senders::no_body();
            let req = crate::ingress::h2::build_request(&head_bytes, body, true, tls)
                .map_err(|e| e.detail.clone())?;
            let response = tokio::time::timeout(first_byte, sender.send_request(req))
                .await
                .map_err(|_| "no answer in time".to_string())?
                .map_err(|e| e.to_string())?;
            // The copy is stored as the body passes through; past what may
            // be stored, or when the server stalls, the refresh gives up.
            let limit = miss.cache.tap_limit();
            let mut body = miss.finish(&request, response).into_body();
            let mut read = 0usize;
            while let Some(frame) = tokio::time::timeout(io, body.frame())
                .await
                .map_err(|_| "the body stalled".to_string())?
            {
                let frame = frame.map_err(|e| e.to_string())?;
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > limit {
                    return Err("larger than the cache keeps".to_string());
                }
            }
            Ok::<(), String>(())
        };
        if let Err(e) = refreshed.await {
            // The stale copy stays; the next request after the window
            // revalidates in the foreground.
            eprintln!("postern: cache: background revalidation of {url}: {e}");
        }
    });
}
