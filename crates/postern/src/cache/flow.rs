//! The cache around one exchange: `before` answers from storage when it may
//! and otherwise says how to ask the origin; `after` handles what came back
//! (a 304 to refresh and serve, an error to cover with a stale response).

use std::sync::Arc;

use bytes::Bytes;

use super::policy::{Directives, Use};
use super::range::RangeAnswer;
use super::store::Entry;
use super::{Cache, CollapseGuard, Found, Storing};
use crate::config::Config;
use crate::context::RequestCtx;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::http::{Forwarded, FromOrigin, Outbound};
use crate::http1::RequestHead;
use crate::http1::head::push_field;
use crate::http1::head::{Fields, ResponseHead};
use crate::ingress::Client;
use crate::reverse::compress::{self, Verdict};
use postern_policy::headers::FieldFate;

/// What the exchange must do for the cache.
pub struct Ticket {
    pub cache: Arc<Cache>,
    pub url: String,
    pub req_cc: Directives,
    pub request_time: i64,
    /// The request carries validators the cache added: a 304 is for the cache.
    pub validating: bool,
    /// RFC 9211 `fwd` reason: `uri-miss`, `vary-miss`, `stale`, `request`, `method`.
    pub note: &'static str,
    /// The cache's name in `Cache-Status`.
    pub name: String,
    pub max_object_size: usize,
    /// A reverse listener's request: `CDN-Cache-Control` applies (RFC 9213).
    pub targeted: bool,
    /// This request fetches the URL for others waiting for it (collapsing).
    pub leader: Option<CollapseGuard>,
}

impl Ticket {
    /// Stands in while the exchange holds the real ticket.
    pub fn placeholder(cache: &Arc<Cache>) -> Ticket {
        Ticket {
            cache: cache.clone(),
            url: String::new(),
            req_cc: Directives::default(),
            request_time: 0,
            validating: false,
            note: "",
            name: String::new(),
            max_object_size: 0,
            targeted: false,
            leader: None,
        }
    }

    /// Whether the origin's `response` to `head` is to be stored, and how
    /// (see [`Storing::decide`]). When it is not, the requests waiting for
    /// this one are let go at once: no copy of this response will come for
    /// them, so they go to the origin themselves rather than wait until
    /// its body has reached this request's client.
    pub fn storing(&self, head: &RequestHead, response: &ResponseHead) -> Option<Storing> {
        let too_large = response
            .first("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
            .is_some_and(|n| n > self.max_object_size as u64);
        let storing = Storing::decide(
            &self.url,
            head,
            &self.req_cc,
            response,
            (self.request_time, self.targeted),
        )
        .filter(|_| !too_large);
        if storing.is_none()
            && let Some(leader) = &self.leader
        {
            leader.release();
        }
        storing
    }
}

pub enum Before {
    Served(Forwarded),
    /// Served stale within `stale-while-revalidate`: the caller starts a
    /// background revalidation of this response (RFC 5861 §3).
    ServedStale(Forwarded, Arc<Entry>, Directives),
    Origin(Box<Pending>),
}

impl Pending {
    /// Whether a stale response may stand in for an origin error now
    /// (RFC 5861 §4): only then is a 502/503/504 held back from the client.
    pub fn stale_may_cover(&self) -> bool {
        self.stale
            .as_ref()
            .is_some_and(|found| stale_cover(&self.ticket.req_cc, found, None).is_some())
    }
}

/// A request going to the origin on the cache's behalf.
pub struct Pending {
    pub ticket: Ticket,
    /// Validator fields to add to the request.
    pub extra: Vec<u8>,
    /// A stale response that may cover an origin error (RFC 5861 §4).
    pub stale: Option<Found>,
    /// Validating: the stored response a 304 refreshes.
    pub validating: Option<Arc<Entry>>,
}

pub(crate) fn request_directives(head: &RequestHead) -> Directives {
    let mut cc = Directives::parse(head.values("cache-control"));
    // RFC 9111 §5.4: Pragma: no-cache, when there is no Cache-Control.
    if !head.has("cache-control")
        && head.values("pragma").any(|v| {
            String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("no-cache")
        })
    {
        cc.no_cache = true;
    }
    cc
}

pub(crate) fn has_own_validators(head: &RequestHead) -> bool {
    [
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
    ]
    .iter()
    .any(|n| head.has(n))
}

pub async fn before(
    cfg: &Config,
    client: &mut Client,
    cache: &Arc<Cache>,
    url: String,
    req: &Outbound<'_>,
    ctx: &mut RequestCtx,
) -> Result<Before, ProxyError> {
    let head = req.head;
    let name = cfg.http.via.clone().unwrap_or_else(|| "postern".into());
    let req_cc = request_directives(head);
    let targeted = cfg
        .listeners
        .iter()
        .any(|l| *l.name == *ctx.listener && l.mode == crate::config::Mode::Reverse);
    let ticket = |note: &'static str,
                  validating: bool,
                  req_cc: Directives,
                  leader: Option<CollapseGuard>| Ticket {
        cache: cache.clone(),
        url: url.clone(),
        req_cc,
        request_time: super::now(),
        validating,
        note,
        name: name.clone(),
        max_object_size: cache.tap_limit(),
        targeted,
        leader,
    };
    let cacheable_method = head.is_method("GET") || head.is_method("HEAD");
    if !cacheable_method {
        // Only unsafe methods invalidate (§4.4); OPTIONS and TRACE pass by.
        let safe = head.is_method("OPTIONS") || head.is_method("TRACE");
        return Ok(Before::Origin(Box::new(Pending {
            ticket: ticket(if safe { "bypass" } else { "method" }, false, req_cc, None),
            extra: Vec::new(),
            stale: None,
            validating: None,
        })));
    }
    let mut leader = None;
    for attempt in 0..2 {
        if let Some(found) = cache.lookup_any(&url, head, &req_cc, targeted).await {
            match found.usable {
                Use::Fresh | Use::StaleAccepted | Use::StaleWhileRevalidate => {
                    cache
                        .store
                        .stats
                        .hits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ttl = found.entry.lifetime as i64 - found.age as i64;
                    let status = format!("{name}; hit; ttl={ttl}");
                    let done = serve_entry(
                        cfg,
                        cache,
                        client,
                        req,
                        &found.entry,
                        found.age,
                        &status,
                        ctx,
                    )
                    .await;
                    // RFC 9111 §5.2.1.7: only-if-cached sends nothing to
                    // the origin on this request's account, a background
                    // revalidation included.
                    if found.usable == Use::StaleWhileRevalidate && !req_cc.only_if_cached {
                        return Ok(Before::ServedStale(done, found.entry, req_cc));
                    }
                    return Ok(Before::Served(done));
                }
                // §5.2.1.7: the stored response is not usable without the
                // origin (a stale one the request accepts, with max-stale,
                // is StaleAccepted above): 504.
                Use::Validate if req_cc.only_if_cached => {
                    return Err(ProxyError::new(
                        ErrorKind::NotCached,
                        "only-if-cached, and the stored response must be validated",
                    ));
                }
                Use::Validate => {
                    cache
                        .store
                        .stats
                        .revalidations
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let own = has_own_validators(head);
                    let extra = if own {
                        Vec::new()
                    } else {
                        super::validators(&found.entry)
                    };
                    let validating = !extra.is_empty();
                    return Ok(Before::Origin(Box::new(Pending {
                        ticket: ticket("stale", validating, req_cc, leader),
                        extra,
                        validating: validating.then(|| found.entry.clone()),
                        stale: Some(found),
                    })));
                }
            }
        }
        if req_cc.only_if_cached {
            return Err(ProxyError::new(
                ErrorKind::NotCached,
                "only-if-cached, and nothing usable is stored",
            ));
        }
        if attempt == 0 && head.is_method("GET") {
            // Collapse concurrent misses: one goes upstream, the others wait
            // for it and look again.
            match cache.collapse(&url, cfg.timeouts.first_byte).await {
                Some(guard) => {
                    leader = Some(guard);
                    break;
                }
                None => continue,
            }
        }
        break;
    }
    cache
        .store
        .stats
        .misses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let note = if req_cc.no_cache {
        "request"
    } else {
        "uri-miss"
    };
    Ok(Before::Origin(Box::new(Pending {
        ticket: ticket(note, false, req_cc, leader),
        extra: Vec::new(),
        stale: None,
        validating: None,
    })))
}

/// Answers `PURGE` of `url` (from clients in `[cache] purge_from`);
/// `keep`: whether the connection may carry another request after it.
pub async fn answer_purge(
    cfg: &Config,
    cache: &Cache,
    client: &mut Client,
    url: &str,
    keep: bool,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    let allowed = cfg.cache.as_ref().map_or(&[][..], |c| &c.purge_from[..]);
    let bytes = super::purge(cache, allowed, client.peer.ip(), url)?;
    ctx.status = if bytes.starts_with(b"HTTP/1.1 200") {
        200
    } else {
        404
    };
    if !client.send(&bytes, cfg.timeouts.io).await {
        return Ok(false);
    }
    ctx.bytes_out += bytes.len() as u64;
    Ok(keep)
}

/// Finishes a request that went to the origin.
pub async fn after(
    cfg: &Config,
    client: &mut Client,
    req: &Outbound<'_>,
    pending: &Pending,
    result: Result<FromOrigin, ProxyError>,
    ctx: &mut RequestCtx,
) -> Result<Forwarded, ProxyError> {
    let ticket = &pending.ticket;
    let cache = &ticket.cache;
    let name = &ticket.name;
    let unreachable_max = cfg.cache.as_ref().map(|c| c.stale_if_unreachable.as_secs());
    match result {
        Ok(FromOrigin::Done(done)) => Ok(done),
        Ok(FromOrigin::NotModified(head)) => {
            let old = pending
                .validating
                .as_ref()
                .ok_or_else(|| ProxyError::new(ErrorKind::BadResponse, "unexpected 304"))?;
            if !super::selects(&head, old) {
                let status = format!("{name}; fwd=stale; fwd-status=304");
                let age = super::age_of(old);
                let served = serve_entry(cfg, cache, client, req, old, age, &status, ctx).await;
                ctx.result = "TCP_REFRESH_UNMODIFIED";
                super::not_selected(cache, old);
                return Ok(served);
            }
            let fresh = super::refreshed(old, &head, ticket.request_time);
            let fresh = Arc::new(fresh);
            cache.keep(clone_entry(&fresh));
            let age = super::age_of(&fresh);
            let ttl = fresh.lifetime as i64 - age as i64;
            let status = format!("{name}; fwd=stale; fwd-status=304; ttl={ttl}");
            let served = serve_entry(cfg, cache, client, req, &fresh, age, &status, ctx).await;
            // Squid's name for a stored response the origin confirmed.
            ctx.result = "TCP_REFRESH_UNMODIFIED";
            Ok(served)
        }
        Ok(FromOrigin::Withheld(code)) => match pending
            .stale
            .as_ref()
            .and_then(|f| stale_cover(&ticket.req_cc, f, None).map(|a| (f, a)))
        {
            Some((found, age)) => {
                let status = format!("{name}; hit; fwd=stale; fwd-status={code}");
                let served =
                    serve_entry(cfg, cache, client, req, &found.entry, age, &status, ctx).await;
                // Squid's name for a stale response standing in for a failure.
                ctx.result = "TCP_REFRESH_FAIL_OLD";
                Ok(served)
            }
            None => Err(ProxyError::new(
                ErrorKind::DestinationUnavailable,
                format!("the origin answered {code}"),
            )),
        },
        // The origin could not be reached or failed mid-answer: a stale
        // response may stand in (stale-if-error, or §4.2.4 when disconnected).
        Err(e) => match pending
            .stale
            .as_ref()
            .and_then(|f| stale_cover(&ticket.req_cc, f, unreachable_max).map(|a| (f, a)))
        {
            Some((found, age)) if e.kind.is_upstream() => {
                let status = format!("{name}; hit; fwd=stale; detail={}", e.kind.proxy_status());
                let served =
                    serve_entry(cfg, cache, client, req, &found.entry, age, &status, ctx).await;
                ctx.result = "TCP_REFRESH_FAIL_OLD";
                Ok(served)
            }
            _ => Err(e),
        },
    }
}

/// The age at which the stale `found` may stand in for the origin's
/// failure: within stale-if-error (RFC 5861 §4), or, given
/// `unreachable_max` (the origin could not be reached), as a disconnected
/// cache may (RFC 9111 §4.2.4) up to that many seconds.
pub(crate) fn stale_cover(
    req_cc: &Directives,
    found: &Found,
    unreachable_max: Option<u64>,
) -> Option<u64> {
    let e = &found.entry;
    let age = super::policy::current_age(
        e.age_value,
        e.date,
        e.request_time,
        e.response_time,
        super::now(),
    );
    let covers = super::policy::stale_if_error(req_cc, &e.cc, age, e.lifetime)
        || unreachable_max.is_some_and(|max| {
            super::policy::stale_when_disconnected(req_cc, &e.cc, age, e.lifetime, max)
        });
    covers.then_some(age)
}

pub(crate) fn clone_entry(e: &Entry) -> Entry {
    Entry {
        url: e.url.clone(),
        status: e.status,
        headers: e.headers.clone(),
        body: e.body.clone(),
        request_time: e.request_time,
        response_time: e.response_time,
        vary: e.vary.clone(),
        cc: e.cc.clone(),
        date: e.date,
        age_value: e.age_value,
        lifetime: e.lifetime,
        targeted: e.targeted,
        gzipped: e.gzipped.clone(),
    }
}

/// Answers from the cache when a usable stored response exists (fresh, or
/// stale as allowed), for paths that cannot ask the origin conditionally
/// (ftp://): `None` means go to the origin.
pub async fn answer_if_stored(
    cfg: &Config,
    client: &mut Client,
    cache: &Arc<Cache>,
    url: &str,
    req: &Outbound<'_>,
    ctx: &mut RequestCtx,
) -> Option<Forwarded> {
    let req_cc = request_directives(req.head);
    let found = cache.lookup_any(url, req.head, &req_cc, false).await?;
    if found.usable == Use::Validate {
        return None;
    }
    cache
        .store
        .stats
        .hits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = cfg.http.via.as_deref().unwrap_or("postern");
    let ttl = found.entry.lifetime as i64 - found.age as i64;
    let status = format!("{name}; hit; ttl={ttl}");
    Some(
        serve_entry(
            cfg,
            cache,
            client,
            req,
            &found.entry,
            found.age,
            &status,
            ctx,
        )
        .await,
    )
}

/// What a stored response answers to one request: the client's conditional
/// (304, RFC 9110 §13) and byte ranges (206, 416, §14) honoured.
pub struct StoredAnswer<'e> {
    pub status: u16,
    /// What follows the head (empty for 304 and 416; the caller leaves it out for HEAD).
    pub body: Bytes,
    entry: &'e Entry,
    content_range: Option<String>,
    /// Several ranges: the `multipart/byteranges` boundary.
    boundary: Option<String>,
}

impl<'e> StoredAnswer<'e> {
    /// `ranges`: honour Range. A response that goes out gzip-encoded is sent
    /// whole instead: a range of the stored bytes would not join a partial
    /// copy of the encoded ones, whatever If-Range says.
    pub fn with_ranges(head: &RequestHead, entry: &'e Entry, ranges: bool) -> StoredAnswer<'e> {
        let mut answer = StoredAnswer {
            status: entry.status,
            body: entry.body.clone(),
            entry,
            content_range: None,
            boundary: None,
        };
        if super::not_modified_for(head, entry) {
            answer.status = 304;
            answer.body = Bytes::new();
            return answer;
        }
        if !ranges {
            return answer;
        }
        let len = entry.body.len() as u64;
        match super::range::answer(head, entry, len) {
            RangeAnswer::Whole => {}
            RangeAnswer::Partial(ranges) if ranges.len() == 1 => {
                let (a, b) = ranges[0];
                answer.status = 206;
                answer.content_range = Some(format!("bytes {a}-{b}/{len}"));
                answer.body = entry.body.slice(a as usize..=b as usize);
            }
            RangeAnswer::Partial(ranges) => {
                answer.status = 206;
                let (parts, boundary) =
                    super::range::multipart(&entry.body, &ranges, entry.header("content-type"));
                answer.body = parts;
                answer.boundary = Some(boundary);
            }
            RangeAnswer::Unsatisfiable => {
                answer.status = 416;
                answer.content_range = Some(format!("bytes */{len}"));
                answer.body = Bytes::new();
            }
        }
        answer
    }

    /// The stored fields that go with this answer: all but Age (restated by
    /// the caller, §5.1) and what the answer's own fields replace.
    pub fn stored_fields(&self) -> impl Iterator<Item = (&'e str, &'e [u8])> + '_ {
        self.entry.headers.iter().filter_map(move |(name, value)| {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            let dropped = is("age")
                || (self.status == 304 && (is("content-type") || is("content-encoding")))
                || (self.boundary.is_some() && is("content-type"));
            (!dropped).then_some((name.as_str(), value.as_ref()))
        })
    }

    /// Content-Range, or the multipart Content-Type.
    pub fn own_fields(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        let range = self
            .content_range
            .as_ref()
            .map(|r| ("Content-Range", r.clone()));
        let multipart = self.boundary.as_ref().map(|b| {
            (
                "Content-Type",
                format!("multipart/byteranges; boundary={b}"),
            )
        });
        range.into_iter().chain(multipart)
    }
}

/// What the route's compression does to a stored response served whole or
/// as 304: gzip (the encoded body made once per entry), a weak ETag and
/// `Vary: Accept-Encoding`. Ranges are served from the stored bytes.
struct StoredEncoding {
    verdict: Verdict,
    /// The body goes out gzip-encoded.
    whole: bool,
    level: u32,
    weak_etag: Option<String>,
    add_vary: bool,
}

impl StoredEncoding {
    /// The route's verdict on `entry` for this client, and the answer it
    /// gets (whole when encoded).
    fn answer<'e>(req: &Outbound<'_>, entry: &'e Entry) -> (StoredEncoding, StoredAnswer<'e>) {
        let head = req.head;
        let judged = req.compress.map_or(Verdict::Leave, |settings| {
            let accepts = head.minor >= 1 && compress::accepts_gzip(head.values("accept-encoding"));
            settings.verdict(accepts, &compress::stored_facts(entry, Some(req.scrubber)))
        });
        let answer = StoredAnswer::with_ranges(head, entry, judged != Verdict::Compress);
        let holds_gzip_form =
            || compress::names_weak_form(head.values("if-none-match"), entry.header("etag"));
        let verdict = match (judged, answer.status) {
            // A 304 confirms the form the client holds.
            (Verdict::Compress, 304) if holds_gzip_form() => Verdict::Confirm,
            (_, 304) => Verdict::Leave,
            (v, s) if s == entry.status => v,
            // A range (of a response the client takes without gzip).
            _ => Verdict::Leave,
        };
        let weak = matches!(verdict, Verdict::Compress | Verdict::Confirm);
        let encoding = StoredEncoding {
            verdict,
            whole: verdict == Verdict::Compress,
            level: req.compress.map_or(1, |c| c.level),
            weak_etag: weak
                .then(|| entry.header("etag").and_then(compress::weakened))
                .flatten()
                .map(|w| String::from_utf8_lossy(&w).into_owned()),
            add_vary: verdict != Verdict::Leave
                && !compress::vary_covered(
                    req.scrubber,
                    entry
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
                        .map(|(_, v)| v.as_ref()),
                ),
        };
        (encoding, answer)
    }

    async fn body(&self, entry: &Entry, answer: &StoredAnswer<'_>) -> Bytes {
        if !self.whole {
            return answer.body.clone();
        }
        compress::stored_gzip(entry, self.level).await
    }

    fn field<'s>(&'s self, name: &str) -> FieldFate<'s> {
        if !matches!(self.verdict, Verdict::Compress | Verdict::Confirm) {
            return FieldFate::Keep;
        }
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if self.whole
            && (is("content-encoding") || compress::CHANGED_BY_ENCODING.iter().any(|c| is(c)))
        {
            return FieldFate::Drop;
        }
        match &self.weak_etag {
            Some(weak) if is("etag") => FieldFate::Replace(weak),
            _ => FieldFate::Keep,
        }
    }

    fn push_fields(&self, out: &mut Vec<u8>) {
        if self.add_vary {
            out.extend_from_slice(b"Vary: Accept-Encoding\r\n");
        }
        if self.whole {
            out.extend_from_slice(b"Content-Encoding: gzip\r\n");
        }
    }
}

/// Writes a stored response to the client: Age (§5.1), Cache-Status, and
/// the [`StoredAnswer`] for this request.
#[allow(clippy::too_many_arguments)]
async fn serve_entry(
    cfg: &Config,
    cache: &Cache,
    client: &mut Client,
    req: &Outbound<'_>,
    entry: &Entry,
    age: u64,
    cache_status: &str,
    ctx: &mut RequestCtx,
) -> Forwarded {
    let head = req.head;
    let keep = req.body == crate::http1::body::BodyKind::None
        && req.conn.persistent(head.minor)
        && !crate::app::shutting_down();
    let (encoding, answer) = StoredEncoding::answer(req, entry);
    let (status, body) = (answer.status, encoding.body(entry, &answer).await);
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(if head.minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    crate::http1::push_decimal(&mut out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(crate::error::reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    // The listener's or route's response rules, as on answers from servers.
    let rewrites = req.scrubber.rewrites_responses();
    for (name, value) in answer.stored_fields() {
        if rewrites && req.scrubber.drops_response_field(name.as_bytes()) {
            continue;
        }
        match encoding.field(name) {
            FieldFate::Keep => push_field(&mut out, name.as_bytes(), value),
            FieldFate::Replace(v) => push_field(&mut out, name.as_bytes(), v.as_bytes()),
            FieldFate::Drop => {}
        }
    }
    if rewrites {
        for (name, value) in req.scrubber.response_added() {
            // A tag the rules set names the stored bytes too.
            let weak = matches!(encoding.verdict, Verdict::Compress | Verdict::Confirm);
            match compress::weakened(value.as_bytes()) {
                Some(w) if weak && name.eq_ignore_ascii_case("etag") => {
                    push_field(&mut out, name.as_bytes(), &w)
                }
                _ => push_field(&mut out, name.as_bytes(), value.as_bytes()),
            }
        }
    }
    encoding.push_fields(&mut out);
    out.extend_from_slice(b"Age: ");
    crate::http1::push_decimal(&mut out, age);
    out.extend_from_slice(b"\r\nCache-Status: ");
    out.extend_from_slice(cache_status.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in answer.own_fields() {
        push_field(&mut out, name.as_bytes(), value.as_bytes());
    }
    if let Some(via) = req.via {
        out.extend_from_slice(format!("Via: 1.1 {via}\r\n").as_bytes());
    }
    if status != 304 && status != 204 {
        out.extend_from_slice(b"Content-Length: ");
        crate::http1::push_decimal(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head.is_method("HEAD") && status != 304 {
        out.extend_from_slice(&body);
    }
    ctx.status = status;
    ctx.result = if status == 304 {
        "TCP_IMS_HIT"
    } else {
        "TCP_HIT"
    };
    let sent = client.send(&out, cfg.timeouts.io).await;
    if sent {
        ctx.bytes_out += out.len() as u64;
        cache
            .store
            .stats
            .bytes_served
            .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    } else {
        ctx.aborted = true;
    }
    Forwarded {
        client_keep_alive: keep && sent,
    }
}
