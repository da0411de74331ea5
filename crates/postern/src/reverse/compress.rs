//! Response compression on reverse routes (nginx's `gzip`, HAProxy's
//! `compression`): gzip for clients that accept it (RFC 9110 §12.5.3), on
//! responses whose type is listed and whose server did not encode them.
//!
//! The cache keeps what the server sent; compression happens on the way to
//! the client, so one stored copy serves clients with and without gzip.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::body::Frame;
use hyper::header::HeaderValue;

use crate::http1::fields::{list, trim};

/// The `[compression]` settings a route with `compress = true` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Lowercase media types; `type/*` entries match the whole type.
    pub types: Vec<String>,
    /// Responses whose Content-Length is below this are sent as they are.
    pub min_length: u64,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub level: u32,
}

/// Text formats that compress well; images, video and archives are
/// compressed already.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
];

impl Default for Compression {
    fn default() -> Compression {
        Compression {
            types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
            min_length: 256,
            // zlib-rs's level 1 is a coarser algorithm (deflate_quick): its
            // level 2 makes what zlib's level 1 does, nginx's default.
            level: 2,
        }
    }
}

/// What compression does to one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a candidate: passed on untouched.
    Leave,
    /// A candidate, but the client takes no gzip: sent as it is, with
    /// `Vary: Accept-Encoding` so that shared caches downstream keep the two
    /// forms apart (RFC 9110 §12.5.5).
    Vary,
    /// gzip-encoded on the way.
    Compress,
    /// A 304 to a client that takes gzip, for a response that would be
    /// encoded: the weak ETag and the Vary of the gzip form (RFC 9110
    /// §15.4.5), so that the client's copy keeps the tag it was sent with.
    Confirm,
}

/// The response fields compression looks at.
pub struct Facts<'a> {
    pub status: u16,
    pub content_type: Option<&'a [u8]>,
    /// A content coding other than `identity`, in any Content-Encoding line.
    pub encoded: bool,
    pub content_length: Option<u64>,
    pub content_range: bool,
    /// `Cache-Control: no-transform` (RFC 9110 §7.7: a proxy must not
    /// change the content).
    pub no_transform: bool,
    /// For a 304: the request's If-None-Match names the weak form of the
    /// response's strong ETag, the tag its gzip form went out with.
    pub weak_match: bool,
}

impl Compression {
    /// `accepts`: the client takes gzip and can receive a body of unknown
    /// length (HTTP/1.1 or later).
    pub fn verdict(&self, accepts: bool, facts: &Facts<'_>) -> Verdict {
        // A 304 carries no type as a rule: judged by the type it has, if any.
        if facts.status == 304 {
            let fits = facts.weak_match
                && !facts.no_transform
                && facts.content_type.is_none_or(|t| self.takes_type(t));
            return if fits && accepts {
                Verdict::Confirm
            } else {
                Verdict::Leave
            };
        }
        // nginx compresses 200, 403 and 404; the others below are as
        // cacheable and as likely to be text.
        let status_fits = matches!(facts.status, 200 | 201 | 203 | 403 | 404 | 410);
        let fits = status_fits
            && !facts.encoded
            && !facts.content_range
            && !facts.no_transform
            && facts.content_length.is_none_or(|n| n >= self.min_length)
            && facts.content_type.is_some_and(|t| self.takes_type(t));
        match (fits, accepts) {
            (false, _) => Verdict::Leave,
            (true, false) => Verdict::Vary,
            (true, true) => Verdict::Compress,
        }
    }

    fn takes_type(&self, content_type: &[u8]) -> bool {
        let media = content_type.split(|b| *b == b';').next().unwrap_or(b"");
        let media = trim(media);
        let main = media.split(|b| *b == b'/').next().unwrap_or(b"");
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some("*") => true,
            Some(wanted) => main.eq_ignore_ascii_case(wanted.as_bytes()),
            None => media.eq_ignore_ascii_case(t.as_bytes()),
        })
    }
}

/// Whether `Accept-Encoding` admits gzip (RFC 9110 §12.5.3): named (or
/// `x-gzip`) with a non-zero weight, or covered by `*` without being
/// refused by name.
pub fn accepts_gzip<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut named = None;
    let mut any = None;
    for item in values.flat_map(list) {
        let mut parts = item.split(|b| *b == b';');
        let coding = trim(parts.next().unwrap_or(b""));
        let weight_positive = parts.all(|p| {
            let p = trim(p);
            match p.split_first() {
                Some((b'q' | b'Q', rest)) if rest.first() == Some(&b'=') => {
                    rest[1..].iter().any(|b| (b'1'..=b'9').contains(b))
                }
                _ => true,
            }
        });
        if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            named = Some(named.unwrap_or(false) || weight_positive);
        } else if coding == b"*" {
            any = Some(weight_positive);
        }
    }
    named.or(any).unwrap_or(false)
}

/// Whether Content-Encoding values name a coding other than `identity`.
fn is_encoded<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.any(|v| list(v).any(|c| !c.eq_ignore_ascii_case(b"identity")))
}

/// Fields that describe the bytes as the server sent them, wrong once they
/// are encoded: digests (RFC 9530) and lengths and ranges.
pub const CHANGED_BY_ENCODING: &[&str] = &[
    "content-length",
    "accept-ranges",
    "content-md5",
    "content-digest",
    "repr-digest",
    "digest",
];

/// Whether a Vary field already names Accept-Encoding (or everything).
fn varies_on_encoding<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.any(|v| list(v).any(|n| n == b"*" || n.eq_ignore_ascii_case(b"accept-encoding")))
}

/// Whether the Vary a client gets, after the header rules, names
/// Accept-Encoding already: the server's (`values`) unless the rules drop
/// it, or one the rules set.
pub fn vary_covered<'a>(
    rules: &postern_policy::headers::Scrubber,
    values: impl Iterator<Item = &'a [u8]>,
) -> bool {
    let kept = !(rules.rewrites_responses() && rules.drops_response_field(b"vary"))
        && varies_on_encoding(values);
    kept || rules.response_added().any(|(name, value)| {
        name.eq_ignore_ascii_case("vary") && varies_on_encoding(std::iter::once(value.as_bytes()))
    })
}

/// A strong entity tag made weak: the compressed bytes are not the ones it
/// names (RFC 9110 §8.8.3), as nginx does.
pub fn weakened(etag: &[u8]) -> Option<Vec<u8>> {
    if etag.starts_with(b"W/") {
        return None;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag);
    Some(weak)
}

/// Whether If-None-Match (`values`) names `W/` and the strong `etag`: the
/// client holds the gzip form, which went out with the weak tag.
pub fn names_weak_form<'a>(values: impl Iterator<Item = &'a [u8]>, etag: Option<&[u8]>) -> bool {
    let Some(etag) = etag.filter(|e| !e.starts_with(b"W/")) else {
        return false;
    };
    values
        .flat_map(list)
        .any(|t| t.strip_prefix(b"W/").is_some_and(|t| t == etag))
}

/// A field's values as the client gets them: the response's own unless
/// the header rules drop the field, then any the rules set.
fn ruled<'a>(
    rules: Option<&'a postern_policy::headers::Scrubber>,
    name: &str,
    own: impl Iterator<Item = &'a [u8]>,
) -> Vec<&'a [u8]> {
    let Some(rules) = rules else {
        return own.collect();
    };
    let mut out: Vec<&[u8]> =
        if rules.rewrites_responses() && rules.drops_response_field(name.as_bytes()) {
            Vec::new()
        } else {
            own.collect()
        };
    out.extend(
        rules
            .response_added()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes()),
    );
    out
}

/// The facts of a response whose field lines `values` gives, by name.
fn facts_from<'a>(
    status: u16,
    values: impl Fn(&'static str) -> Vec<&'a [u8]>,
    length: Option<u64>,
) -> Facts<'a> {
    let has = |name: &'static str, directive: &[u8]| {
        values(name)
            .into_iter()
            .any(|v| list(v).any(|d| d.eq_ignore_ascii_case(directive)))
    };
    Facts {
        status,
        content_type: values("content-type").first().copied(),
        encoded: is_encoded(values("content-encoding").into_iter()),
        content_length: length.or_else(|| {
            let v = *values("content-length").first()?;
            std::str::from_utf8(v).ok()?.trim().parse().ok()
        }),
        content_range: !values("content-range").is_empty(),
        no_transform: has("cache-control", b"no-transform"),
        weak_match: false,
    }
}

/// The facts of an HTTP/1 response head after the header `rules`.
pub fn facts<'a>(
    head: &'a crate::http1::head::ResponseHead,
    rules: &'a postern_policy::headers::Scrubber,
) -> Facts<'a> {
    use crate::http1::head::Fields;
    facts_from(head.status, |n| ruled(Some(rules), n, head.values(n)), None)
}

/// The facts of a stored response (its length is the body's), after the
/// header `rules` when given.
pub fn stored_facts<'a>(
    entry: &'a crate::cache::store::Entry,
    rules: Option<&'a postern_policy::headers::Scrubber>,
) -> Facts<'a> {
    let own = |name: &'static str| {
        entry
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
            .collect::<Vec<&[u8]>>()
    };
    facts_from(
        entry.status,
        |n| ruled(rules, n, own(n).into_iter()),
        Some(entry.body.len() as u64),
    )
}

/// The verdict for a response held as a hyper response (its header rules
/// applied already), to a request whose If-None-Match is `if_none_match`.
fn verdict_for_headers<'a>(
    settings: &Compression,
    accepts: bool,
    (status, headers): (u16, &HeaderMap),
    if_none_match: impl Iterator<Item = &'a [u8]>,
) -> Verdict {
    let values = |name: &'static str| {
        headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect::<Vec<_>>()
    };
    let mut facts = facts_from(status, values, None);
    let etag = headers.get("etag").map(HeaderValue::as_bytes);
    facts.weak_match = names_weak_form(if_none_match, etag);
    settings.verdict(accepts, &facts)
}

/// The fields of a response `verdict` changes: Vary for both kinds of
/// client; for a compressed one, Content-Encoding, a weak ETag, and no
/// length or ranges (the caller states a length it knows).
fn edit_headers(headers: &mut HeaderMap, verdict: Verdict) {
    if verdict == Verdict::Leave {
        return;
    }
    if !varies_on_encoding(headers.get_all("vary").iter().map(HeaderValue::as_bytes)) {
        headers.append("vary", HeaderValue::from_static("Accept-Encoding"));
    }
    if matches!(verdict, Verdict::Compress | Verdict::Confirm)
        && let Some(weak) = headers
            .get("etag")
            .and_then(|v| weakened(v.as_bytes()))
            .and_then(|w| HeaderValue::from_bytes(&w).ok())
    {
        headers.insert("etag", weak);
    }
    if verdict == Verdict::Compress {
        for name in CHANGED_BY_ENCODING {
            headers.remove(*name);
        }
        headers.insert("content-encoding", HeaderValue::from_static("gzip"));
    }
}

/// Marks a response made from a stored entry, whole or as 304, so that a
/// compressing route judges it by the entry and sends the entry's gzip form,
/// made once per entry.
#[derive(Clone)]
pub struct Stored {
    pub entry: std::sync::Arc<crate::cache::store::Entry>,
    /// The whole body (else a 304).
    pub whole: bool,
}

/// Bodies up to this size are compressed where they are needed; larger ones
/// on the blocking pool, so that no worker stalls on them.
const INLINE_LIMIT: usize = 64 * 1024;

/// A stored entry's body gzip-encoded, made on first use and kept with it.
/// (Two first uses at once may both make it; one is kept.)
pub async fn stored_gzip(entry: &crate::cache::store::Entry, level: u32) -> Bytes {
    if let Some(done) = entry.gzipped.get() {
        return done.clone();
    }
    let made: Bytes = if entry.body.len() <= INLINE_LIMIT {
        Gzip::whole(level, &entry.body).into()
    } else {
        let body = entry.body.clone();
        match tokio::task::spawn_blocking(move || Gzip::whole(level, &body)).await {
            Ok(gz) => gz.into(),
            // The blocking pool is shutting down: make it here.
            Err(_) => Gzip::whole(level, &entry.body).into(),
        }
    };
    entry.gzipped.get_or_init(|| made).clone()
}

/// A hyper response's body, boxed.
pub type BoxedBody = http_body_util::combinators::BoxBody<Bytes, crate::egress::senders::BoxError>;

/// A route's compression on a hyper response (HTTP/2 clients, and HTTP/1
/// clients of HTTP/2 pools), after the route's header rules. A stored
/// response ([`Stored`]) is judged by its entry: sent whole as the entry's
/// gzip form, made once per entry; as 304, with the fields of that form.
pub async fn deliver(
    settings: &Compression,
    (accepts, request): (bool, &crate::http1::RequestHead),
    response: hyper::Response<BoxedBody>,
) -> hyper::Response<BoxedBody> {
    use crate::http1::head::Fields;
    use http_body_util::BodyExt;
    let if_none_match = request.values("if-none-match");
    let status = response.status().as_u16();
    let Some(stored) = response.extensions().get::<Stored>().cloned() else {
        // From a server: encoded as it streams.
        let headers = response.headers();
        let verdict = verdict_for_headers(settings, accepts, (status, headers), if_none_match);
        if verdict == Verdict::Leave {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        edit_headers(&mut parts.headers, verdict);
        if verdict != Verdict::Compress {
            return hyper::Response::from_parts(parts, body);
        }
        let body = GzipBody {
            inner: body,
            encoder: Gzip::new(settings.level),
            trailers: None,
            done: false,
        };
        return hyper::Response::from_parts(parts, body.boxed());
    };
    // A whole answer is judged by its fields (the rules applied); a 304 by
    // the entry's type and the client's tag.
    let verdict = if stored.whole {
        verdict_for_headers(
            settings,
            accepts,
            (status, response.headers()),
            if_none_match,
        )
    } else {
        let mut facts = stored_facts(&stored.entry, None);
        facts.status = 304;
        facts.weak_match = names_weak_form(if_none_match, stored.entry.header("etag"));
        settings.verdict(accepts, &facts)
    };
    let (mut parts, body) = response.into_parts();
    edit_headers(&mut parts.headers, verdict);
    if verdict != Verdict::Compress {
        return hyper::Response::from_parts(parts, body);
    }
    let gz = stored_gzip(&stored.entry, settings.level).await;
    parts.headers.insert("content-length", gz.len().into());
    let body = http_body_util::Full::new(gz)
        .map_err(|never| match never {})
        .boxed();
    hyper::Response::from_parts(parts, body)
}

/// A gzip stream (RFC 1952) fed piece by piece; what it has made is taken
/// out after each step. Raw deflate from zlib-rs; the framing and its
/// CRC-32 are done here (crc32fast uses the CPU's carry-less multiply).
pub struct Gzip {
    deflate: flate2::Compress,
    crc: crc32fast::Hasher,
    /// What has been made and not yet taken.
    out: Vec<u8>,
    /// Input went in since the last flush.
    unflushed: bool,
}

/// Magic, deflate, no flags, no time, no extra flags, unknown system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Gzip {
    pub fn new(level: u32) -> Gzip {
        Gzip {
            deflate: flate2::Compress::new(flate2::Compression::new(level), false),
            crc: crc32fast::Hasher::new(),
            out: GZIP_HEADER.to_vec(),
            unflushed: false,
        }
    }

    /// Compresses `data`; returns what is ready (often nothing yet).
    pub fn push(&mut self, mut data: &[u8]) -> Vec<u8> {
        self.crc.update(data);
        self.unflushed |= !data.is_empty();
        while !data.is_empty() {
            self.out.reserve(data.len() / 2 + 64);
            let before = self.deflate.total_in();
            let res = self
                .deflate
                .compress_vec(data, &mut self.out, flate2::FlushCompress::None);
            let used = (self.deflate.total_in() - before) as usize;
            if res.is_err() || (used == 0 && self.out.len() < self.out.capacity()) {
                // Deflate takes all input given room; this is never reached.
                debug_assert!(false, "deflate stopped taking input: {res:?}");
                break;
            }
            data = &data[used..];
        }
        std::mem::take(&mut self.out)
    }

    /// Everything compressed so far, ending on a byte boundary (a sync
    /// flush), so a client of a slow stream gets what the server sent
    /// instead of waiting for more.
    pub fn flush(&mut self) -> Vec<u8> {
        if self.unflushed {
            self.drain(flate2::FlushCompress::Sync);
            self.unflushed = false;
        }
        std::mem::take(&mut self.out)
    }

    /// The rest of the stream, with gzip's trailer: CRC-32 and length.
    pub fn finish(&mut self) -> Vec<u8> {
        self.drain(flate2::FlushCompress::Finish);
        self.unflushed = false;
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        // ISIZE: the input's length modulo 2^32.
        self.out
            .extend_from_slice(&(self.deflate.total_in() as u32).to_le_bytes());
        std::mem::take(&mut self.out)
    }

    /// Runs `flush` until deflate has nothing more to give (it stops when
    /// it ends a call with room to spare).
    fn drain(&mut self, flush: flate2::FlushCompress) {
        loop {
            self.out.reserve(256);
            let res = self.deflate.compress_vec(&[], &mut self.out, flush);
            match res {
                Ok(flate2::Status::StreamEnd) | Err(_) => return,
                Ok(_) if self.out.len() < self.out.capacity() => return,
                Ok(_) => {}
            }
        }
    }

    /// A whole body at once.
    pub fn whole(level: u32, body: &[u8]) -> Vec<u8> {
        let mut gz = Gzip::new(level);
        let mut out = gz.push(body);
        out.extend_from_slice(&gz.finish());
        out
    }
}

/// A response body gzip-encoded as it streams; trailers follow the
/// compressed data.
struct GzipBody<B> {
    inner: B,
    encoder: Gzip,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> hyper::body::Body for GzipBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let gz = &mut this.encoder;
        if this.done {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        loop {
            let out = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => gz.push(&data),
                    Err(frame) => {
                        // Digests of the bytes as the server sent them.
                        this.trailers = frame.into_trailers().ok().map(|mut t| {
                            for name in CHANGED_BY_ENCODING {
                                t.remove(*name);
                            }
                            t
                        });
                        this.done = true;
                        gz.finish()
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    gz.finish()
                }
                Poll::Pending => {
                    let out = gz.flush();
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    out
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(v: &str) -> bool {
        accepts_gzip(std::iter::once(v.as_bytes()))
    }

    #[test]
    fn accept_encoding_weights_are_read() {
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("x-gzip"));
        assert!(accepts("*"));
        assert!(accepts("deflate, *;q=0.1"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip; q=0.000"));
        assert!(!accepts("*, gzip;q=0"));
        assert!(!accepts("identity"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts("*;q=0"));
        assert!(!accepts(""));
        assert!(accepts("gzip;q=1.0"));
        assert!(accepts("gzip;q=0.001"));
    }

    fn facts(content_type: &str) -> Facts<'_> {
        Facts {
            status: 200,
            content_type: Some(content_type.as_bytes()),
            encoded: false,
            content_length: Some(5000),
            content_range: false,
            no_transform: false,
            weak_match: false,
        }
    }

    #[test]
    fn only_listed_unencoded_whole_responses_are_compressed() {
        let c = Compression {
            types: vec!["text/html".into(), "application/*".into()],
            ..Compression::default()
        };
        assert_eq!(
            c.verdict(true, &facts("text/html; charset=utf-8")),
            Verdict::Compress
        );
        assert_eq!(
            c.verdict(true, &facts("Application/JSON")),
            Verdict::Compress
        );
        assert_eq!(c.verdict(false, &facts("text/html")), Verdict::Vary);
        assert_eq!(c.verdict(true, &facts("image/png")), Verdict::Leave);
        let short = Facts {
            content_length: Some(100),
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &short), Verdict::Leave);
        let unknown_length = Facts {
            content_length: None,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &unknown_length), Verdict::Compress);
        let encoded = Facts {
            encoded: true,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &encoded), Verdict::Leave);
        assert!(!is_encoded([&b"identity"[..]].into_iter()));
        assert!(is_encoded([&b"identity"[..], b"br"].into_iter()));
        // A 304 for a gzip client: the gzip form's fields, unless its type
        // says it is no candidate.
        let confirms = Facts {
            status: 304,
            content_type: None,
            weak_match: true,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &confirms), Verdict::Confirm);
        assert_eq!(c.verdict(false, &confirms), Verdict::Leave);
        // A client holding the identity form (its strong tag) keeps it.
        let strong = Facts {
            weak_match: false,
            ..confirms
        };
        assert_eq!(c.verdict(true, &strong), Verdict::Leave);
        assert!(names_weak_form(
            [&b"\"a\", W/\"b\""[..]].into_iter(),
            Some(b"\"b\"")
        ));
        assert!(!names_weak_form(
            [&b"\"b\""[..]].into_iter(),
            Some(b"\"b\"")
        ));
        assert!(!names_weak_form(
            [&b"W/\"b\""[..]].into_iter(),
            Some(b"W/\"b\"")
        ));
        let image = Facts {
            status: 304,
            weak_match: true,
            ..facts("image/png")
        };
        assert_eq!(c.verdict(true, &image), Verdict::Leave);
        let any = Compression {
            types: vec!["*/*".into()],
            ..Compression::default()
        };
        assert_eq!(any.verdict(true, &facts("image/png")), Verdict::Compress);
        let partial = Facts {
            status: 206,
            content_range: true,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &partial), Verdict::Leave);
        let kept = Facts {
            no_transform: true,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &kept), Verdict::Leave);
        let moved = Facts {
            status: 302,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &moved), Verdict::Leave);
        let untyped = Facts {
            content_type: None,
            ..facts("text/html")
        };
        assert_eq!(c.verdict(true, &untyped), Verdict::Leave);
    }

    #[test]
    fn flushed_pieces_and_the_end_make_one_gzip_stream() {
        let mut gz = Gzip::new(5);
        let mut out = gz.push(b"hello ");
        out.extend(gz.flush());
        assert!(!out.is_empty(), "a flush gives out what went in");
        out.extend(gz.push(b"world"));
        out.extend(gz.finish());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&out[..]), &mut text)
            .unwrap();
        assert_eq!(text, "hello world");
        // Large input in pieces, flushed between some: one stream.
        let input: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut gz = Gzip::new(1);
        let mut out = Vec::new();
        for (i, piece) in input.chunks(70_000).enumerate() {
            out.extend(gz.push(piece));
            if i % 2 == 0 {
                out.extend(gz.flush());
            }
        }
        out.extend(gz.finish());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut back).unwrap();
        assert_eq!(back, input);
        let mut empty = Vec::new();
        let whole = Gzip::whole(9, b"");
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&whole[..]), &mut empty)
            .unwrap();
        assert!(empty.is_empty());
        assert_eq!(weakened(b"\"abc\"").as_deref(), Some(&b"W/\"abc\""[..]));
        assert_eq!(weakened(b"W/\"abc\""), None);
        assert!(varies_on_encoding(
            [&b"Origin, accept-encoding"[..]].into_iter()
        ));
        assert!(!varies_on_encoding([&b"Origin"[..]].into_iter()));
    }
}
