//! Request and response heads: parsed once with `httparse`, then checked for the
//! things `httparse` tolerates (bare LF line endings) and kept as byte ranges into
//! the received bytes, so nothing is copied per header.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::Bytes;
use postern_policy::headers::FieldFate;

/// Why a head could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed syntax (400 for requests, 502 for responses).
    Malformed(&'static str),
    /// The request line alone is longer than allowed (414).
    LineTooLong,
    /// The head is larger than allowed (431 for requests).
    TooLarge,
    /// More header fields than allowed (431).
    TooManyHeaders,
    /// Not HTTP/1.0 or HTTP/1.1 (505).
    Version,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
    /// Which field the proxy itself interprets this is, if any.
    pub kind: Known,
}

/// The header fields the proxy interprets on every message, recognised once
/// when the head is parsed so later lookups compare a tag, not a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    ProxyConnection,
    KeepAlive,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthorization,
    ProxyAuthenticate,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
}

impl Known {
    pub fn of(name: &[u8]) -> Known {
        let is = |lower: &[u8]| same_ignoring_case(name, lower);
        // Length and first letter rule out most names before any comparison.
        match (name.len(), name.first().map(u8::to_ascii_lowercase)) {
            (2, Some(b't')) if is(b"te") => Known::Te,
            (4, Some(b'h')) if is(b"host") => Known::Host,
            (7, Some(b't')) if is(b"trailer") => Known::Trailer,
            (7, Some(b'u')) if is(b"upgrade") => Known::Upgrade,
            (9, Some(b'f')) if is(b"forwarded") => Known::Forwarded,
            (10, Some(b'c')) if is(b"connection") => Known::Connection,
            (10, Some(b'k')) if is(b"keep-alive") => Known::KeepAlive,
            (14, Some(b'c')) if is(b"content-length") => Known::ContentLength,
            (15, Some(b'x')) if is(b"x-forwarded-for") => Known::XForwardedFor,
            (16, Some(b'p')) if is(b"proxy-connection") => Known::ProxyConnection,
            (16, Some(b'x')) if is(b"x-forwarded-host") => Known::XForwardedHost,
            (17, Some(b't')) if is(b"transfer-encoding") => Known::TransferEncoding,
            (17, Some(b'x')) if is(b"x-forwarded-proto") => Known::XForwardedProto,
            (18, Some(b'p')) if is(b"proxy-authenticate") => Known::ProxyAuthenticate,
            (19, Some(b'p')) if is(b"proxy-authorization") => Known::ProxyAuthorization,
            _ => Known::Other,
        }
    }

    /// RFC 9110 §7.6.1: fields that only concern one connection.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Te
                | Known::Trailer
                | Known::TransferEncoding
                | Known::Upgrade
                | Known::ProxyAuthorization
                | Known::ProxyAuthenticate
        )
    }
}

/// `name` equals `lower` (lowercase) but for the case of its letters. Every
/// byte is looked at, without an early exit, so the loop runs branch-free.
fn same_ignoring_case(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .fold(0u8, |diff, (a, b)| diff | (a.to_ascii_lowercase() ^ b))
            == 0
}

/// A parsed request head. `raw` holds the bytes; everything else indexes into it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub raw: Bytes,
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub raw: Bytes,
    pub status: u16,
    pub reason: Range<usize>,
    pub minor: u8,
    pub fields: Vec<Field>,
}

/// Access to header fields shared by requests and responses.
pub trait Fields {
    fn raw(&self) -> &[u8];
    fn field_list(&self) -> &[Field];

    fn name(&self, f: &Field) -> &[u8] {
        &self.raw()[f.name.clone()]
    }

    fn value(&self, f: &Field) -> &[u8] {
        &self.raw()[f.value.clone()]
    }

    /// Every value of the fields called `name` (case-insensitive).
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let kind = Known::of(name.as_bytes());
        self.field_list()
            .iter()
            .filter(move |f| match kind {
                Known::Other => self.name(f).eq_ignore_ascii_case(name.as_bytes()),
                known => f.kind == known,
            })
            .map(move |f| self.value(f))
    }

    fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    fn has(&self, name: &str) -> bool {
        self.first(name).is_some()
    }
}

impl Fields for RequestHead {
    fn raw(&self) -> &[u8] {
        &self.raw
    }
    fn field_list(&self) -> &[Field] {
        &self.fields
    }
}

impl Fields for ResponseHead {
    fn raw(&self) -> &[u8] {
        &self.raw
    }
    fn field_list(&self) -> &[Field] {
        &self.fields
    }
}

impl RequestHead {
    pub fn method(&self) -> &str {
        // httparse only accepts token characters here, which are ASCII.
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("")
    }

    /// The target as received, for copying on without a UTF-8 check.
    pub fn target_bytes(&self) -> &[u8] {
        &self.raw[self.target.clone()]
    }

    pub fn method_bytes(&self) -> &[u8] {
        &self.raw[self.method.clone()]
    }

    pub fn is_method(&self, m: &str) -> bool {
        self.method_bytes() == m.as_bytes()
    }
}

impl ResponseHead {
    pub fn reason(&self) -> &[u8] {
        &self.raw[self.reason.clone()]
    }
}

/// Writes the field lines of `head` as `fate` decides. Kept lines are copied
/// byte for byte (their syntax was checked when the head was parsed), and
/// adjacent kept lines in one copy; replaced lines are restated.
pub fn copy_field_lines<'v>(
    head: &impl Fields,
    out: &mut Vec<u8>,
    mut fate: impl FnMut(&Field, &[u8]) -> FieldFate<'v>,
) {
    let raw = head.raw();
    // A parsed head is its start line, its field lines and an empty line.
    let end_of_fields = raw.len().saturating_sub(2);
    let mut run: Option<usize> = None;
    for f in head.field_list() {
        let name = &raw[f.name.clone()];
        match fate(f, name) {
            FieldFate::Keep => {
                run.get_or_insert(f.name.start);
            }
            other => {
                if let Some(start) = run.take() {
                    out.extend_from_slice(&raw[start..f.name.start]);
                }
                if let FieldFate::Replace(value) = other {
                    push_field(out, name, value.as_bytes());
                }
            }
        }
    }
    if let Some(start) = run {
        out.extend_from_slice(&raw[start..end_of_fields]);
    }
}

/// One field line: `name: value`.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The hop-by-hop fields a proxy states for the next hop itself, after the
/// copied end-to-end ones: Connection with TE when the client asked for
/// trailers (RFC 9110 §10.1.4: the proxy relays them, and TE must be named
/// in Connection), the client's Upgrade when upgrading, and the framing of
/// the body as this hop sends it (RFC 9112 §6). `had_length`: the client sent
/// a Content-Length, restated as 0 for a body it did not frame.
pub fn push_next_hop_fields(
    out: &mut Vec<u8>,
    head: &RequestHead,
    upgrade: bool,
    body: crate::http1::body::BodyKind,
    had_length: bool,
) {
    use crate::http1::body::BodyKind;
    use crate::http1::fields::list;
    let wants_trailers = head.minor >= 1
        && head
            .values("te")
            .any(|v| list(v).any(|t| t.eq_ignore_ascii_case(b"trailers")));
    match (upgrade, wants_trailers) {
        (true, true) => out.extend_from_slice(b"Connection: upgrade, TE\r\nTE: trailers\r\n"),
        (true, false) => out.extend_from_slice(b"Connection: upgrade\r\n"),
        (false, true) => out.extend_from_slice(b"Connection: TE\r\nTE: trailers\r\n"),
        (false, false) => {}
    }
    if upgrade {
        for v in head.values("upgrade") {
            push_field(out, b"Upgrade", v);
        }
    }
    match body {
        BodyKind::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            crate::http1::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::None if had_length => out.extend_from_slice(b"Content-Length: 0\r\n"),
        _ => {}
    }
}

/// Limits applied while a head is read.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_line: usize,
    pub max_size: usize,
    pub max_fields: usize,
}

const STACK_FIELDS: usize = 128;

/// Where the parts of a head lie within the received bytes.
#[derive(Debug)]
pub struct RequestParts {
    method: Range<usize>,
    target: Range<usize>,
    minor: u8,
    fields: Vec<Field>,
}

#[derive(Debug)]
pub struct ResponseParts {
    status: u16,
    reason: Range<usize>,
    minor: u8,
    fields: Vec<Field>,
}

impl RequestHead {
    /// `raw` must be the bytes `parse_request` measured, starting at the same offset.
    pub fn new(raw: Bytes, parts: RequestParts) -> RequestHead {
        RequestHead {
            raw,
            method: parts.method,
            target: parts.target,
            minor: parts.minor,
            fields: parts.fields,
        }
    }
}

impl ResponseHead {
    pub fn new(raw: Bytes, parts: ResponseParts) -> ResponseHead {
        ResponseHead {
            raw,
            status: parts.status,
            reason: parts.reason,
            minor: parts.minor,
            fields: parts.fields,
        }
    }
}

fn offsets(base: &[u8]) -> impl Fn(&[u8]) -> Range<usize> + '_ {
    let start = base.as_ptr() as usize;
    move |s: &[u8]| {
        let from = s.as_ptr() as usize - start;
        from..from + s.len()
    }
}

fn fields_of(headers: &[httparse::Header], range: &impl Fn(&[u8]) -> Range<usize>) -> Vec<Field> {
    let mut fields = Vec::with_capacity(headers.len());
    for h in headers {
        fields.push(Field {
            name: range(h.name.as_bytes()),
            value: range(h.value),
            kind: Known::of(h.name.as_bytes()),
        });
    }
    fields
}

/// Runs `f` with room for `max` parsed fields: on the stack for ordinary limits,
/// on the heap beyond. The slots are left uninitialised (httparse writes each
/// one before it is read): initialising 128 of them cost more than parsing.
fn with_field_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_FIELDS {
        let mut stack = [const { MaybeUninit::uninit() }; STACK_FIELDS];
        f(&mut stack[..max])
    } else {
        let mut heap: Vec<MaybeUninit<httparse::Header<'b>>> = Vec::with_capacity(max);
        heap.resize_with(max, MaybeUninit::uninit);
        f(&mut heap)
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)` means more bytes are
/// needed; `Ok(Some((len, parts)))` gives the head's length and layout.
pub fn parse_request(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(usize, RequestParts)>, HeadError> {
    with_field_slots(limits.max_fields, |headers| {
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(buf, headers) {
            Ok(httparse::Status::Complete(len)) => {
                check_line_endings(&buf[..len], req.headers)?;
                if request_line_len(buf) > limits.max_line {
                    return Err(HeadError::LineTooLong);
                }
                if len > limits.max_size {
                    return Err(HeadError::TooLarge);
                }
                let range = offsets(buf);
                let parts = RequestParts {
                    method: range(req.method.unwrap_or("").as_bytes()),
                    target: range(req.path.unwrap_or("").as_bytes()),
                    minor: req.version.unwrap_or(1),
                    fields: fields_of(req.headers, &range),
                };
                Ok(Some((len, parts)))
            }
            Ok(httparse::Status::Partial) => {
                if request_line_len(buf) > limits.max_line {
                    return Err(HeadError::LineTooLong);
                }
                if buf.len() > limits.max_size {
                    return Err(HeadError::TooLarge);
                }
                Ok(None)
            }
            Err(httparse::Error::Version) if !names_http_version(buf) => Err(HeadError::Malformed(
                "the request line does not end in an HTTP version",
            )),
            Err(e) => Err(map_httparse(e)),
        }
    })
}

/// RFC 9112 §2.3, §3: whether the request line is `method SP target SP
/// HTTP/DIGIT.DIGIT`. A well-formed version this proxy does not speak gets
/// 505; anything else there (a space inside the target, say) is a malformed
/// request line (400).
fn names_http_version(buf: &[u8]) -> bool {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let mut parts = line.split(|b| *b == b' ');
    let version = parts.nth(2).unwrap_or_default();
    parts.next().is_none()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Parses a response head at the start of `buf`, like `parse_request`.
pub fn parse_response(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(usize, ResponseParts)>, HeadError> {
    with_field_slots(limits.max_fields, |headers| {
        let mut resp = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, headers)
        {
            Ok(httparse::Status::Complete(len)) => {
                check_line_endings(&buf[..len], resp.headers)?;
                if len > limits.max_size {
                    return Err(HeadError::TooLarge);
                }
                let status = resp.code.unwrap_or(0);
                if !(100..=999).contains(&status) {
                    return Err(HeadError::Malformed("invalid status code"));
                }
                let range = offsets(buf);
                let parts = ResponseParts {
                    status,
                    reason: range(resp.reason.unwrap_or("").as_bytes()),
                    minor: resp.version.unwrap_or(1),
                    fields: fields_of(resp.headers, &range),
                };
                Ok(Some((len, parts)))
            }
            Ok(httparse::Status::Partial) if buf.len() > limits.max_size => {
                Err(HeadError::TooLarge)
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(map_httparse(e)),
        }
    })
}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => HeadError::Version,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid token in the request line"),
    }
}

/// RFC 9112 §2.2: a bare LF as line terminator is tolerated by httparse but is a
/// classic smuggling vector when the next hop disagrees, so it is refused.
/// httparse has already split the head into lines (obs-fold is refused), so
/// only the ends of those lines are looked at: the start line's, each field
/// line's (after the value and any trailing blanks) and the final empty line.
fn check_line_endings(head: &[u8], fields: &[httparse::Header<'_>]) -> Result<(), HeadError> {
    const BARE_LF: HeadError = HeadError::Malformed("bare LF line ending");
    let crlf_at = |i: usize| head.get(i..i + 2) == Some(b"\r\n");
    let start_end = memchr::memchr(b'\n', head).ok_or(BARE_LF)?;
    if start_end == 0 || head[start_end - 1] != b'\r' {
        return Err(BARE_LF);
    }
    let base = head.as_ptr() as usize;
    for f in fields {
        let mut end = f.value.as_ptr() as usize - base + f.value.len();
        while matches!(head.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        if !crlf_at(end) {
            return Err(BARE_LF);
        }
    }
    if head.len() < 2 || !crlf_at(head.len() - 2) {
        return Err(BARE_LF);
    }
    if memchr::memchr(0, head).is_some() {
        return Err(HeadError::Malformed("NUL byte in the message head"));
    }
    Ok(())
}

fn request_line_len(buf: &[u8]) -> usize {
    memchr::memchr(b'\n', buf).unwrap_or(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 100,
        max_size: 400,
        max_fields: 10,
    };

    fn req(s: &str) -> Result<Option<usize>, HeadError> {
        parse_request(s.as_bytes(), LIMITS).map(|r| r.map(|(n, _)| n))
    }

    #[test]
    fn parses_and_indexes_a_request() {
        let text = "GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\n\r\nBODY";
        let (n, parts) = parse_request(text.as_bytes(), LIMITS).unwrap().unwrap();
        assert_eq!(&text[n..], "BODY");
        let head = RequestHead::new(Bytes::copy_from_slice(&text.as_bytes()[..n]), parts);
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "http://a.example/x");
        assert_eq!(head.minor, 1);
        assert_eq!(head.first("x-a"), Some(&b"1"[..]));
        assert_eq!(head.values("host").count(), 1);
    }

    #[test]
    fn known_fields_are_recognised_in_any_case_and_only_them() {
        let known = [
            ("te", Known::Te),
            ("host", Known::Host),
            ("trailer", Known::Trailer),
            ("upgrade", Known::Upgrade),
            ("forwarded", Known::Forwarded),
            ("connection", Known::Connection),
            ("keep-alive", Known::KeepAlive),
            ("content-length", Known::ContentLength),
            ("x-forwarded-for", Known::XForwardedFor),
            ("proxy-connection", Known::ProxyConnection),
            ("x-forwarded-host", Known::XForwardedHost),
            ("transfer-encoding", Known::TransferEncoding),
            ("x-forwarded-proto", Known::XForwardedProto),
            ("proxy-authenticate", Known::ProxyAuthenticate),
            ("proxy-authorization", Known::ProxyAuthorization),
        ];
        for (name, kind) in known {
            assert_eq!(Known::of(name.as_bytes()), kind, "{name}");
            assert_eq!(Known::of(name.to_uppercase().as_bytes()), kind, "{name}");
            // One byte off, at the start, the middle or the end: not the field.
            for at in [0, name.len() / 2, name.len() - 1] {
                let mut near = name.as_bytes().to_vec();
                near[at] = if near[at] == b'z' { b'y' } else { b'z' };
                assert_eq!(Known::of(&near), Known::Other, "{near:?}");
            }
        }
        for other in [
            "",
            "t",
            "date",
            "etag",
            "server",
            "content-type",
            "x-backend",
        ] {
            assert_eq!(Known::of(other.as_bytes()), Known::Other, "{other}");
        }
        // Only letters fold: `-` and CR differ by the same bit as a case.
        assert_eq!(Known::of(b"keep\ralive"), Known::Other);
        assert_eq!(Known::of(b"KEEP-ALIVE"), Known::KeepAlive);
    }

    #[test]
    fn partial_and_limits() {
        assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(req(&long), Err(HeadError::LineTooLong));
        assert_eq!(
            req(&format!("GET /{}", "a".repeat(200))),
            Err(HeadError::LineTooLong)
        );
        let big = format!(
            "GET / HTTP/1.1\r\nA: {}\r\nB: {}\r\n",
            "x".repeat(90),
            "y".repeat(350)
        );
        assert_eq!(req(&big), Err(HeadError::TooLarge));
        let many: String = (0..11).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn refuses_ambiguous_syntax() {
        for bad in [
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Blank:  \t\n\r\n",
            "GET / HTTP/1.1\r\nHost: a \n\r\n",
            "GET / HTTP/1.1\n\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            // A space inside the target: not a version this proxy lacks.
            "GET http://a/x y HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                matches!(req(bad), Err(HeadError::Malformed(_))),
                "{bad:?} -> {:?}",
                req(bad)
            );
        }
        assert_eq!(req("GET / HTTP/2.0\r\n\r\n"), Err(HeadError::Version));
        assert!(matches!(
            req("INVALID CONNECTION PREFACE\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            req("GET / HTTP/1.1x\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn parses_responses() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        let (n, parts) = parse_response(text, LIMITS).unwrap().unwrap();
        let head = ResponseHead::new(Bytes::copy_from_slice(&text[..n]), parts);
        assert_eq!(head.status, 200);
        assert_eq!(head.reason(), b"OK");
        assert!(parse_response(b"HTTP/1.1 200 OK\nA: b\n\n", LIMITS).is_err());
        for bare in [
            &b"HTTP/1.1 200 OK\nA: b\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nA: b\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n\n",
            b"HTTP/1.1 200 OK\r\nA:\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b  \n\r\n",
            b"HTTP/1.1 204 No Content\n\n",
        ] {
            assert_eq!(
                parse_response(bare, LIMITS).map(|r| r.is_some()),
                Err(HeadError::Malformed("bare LF line ending")),
                "{:?}",
                String::from_utf8_lossy(bare)
            );
        }
        for fine in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nA:\r\nB: c \t\r\n\r\n",
        ] {
            assert!(matches!(parse_response(fine, LIMITS), Ok(Some(_))));
        }
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", LIMITS).is_err());
    }

    #[test]
    fn field_lines_are_copied_as_received_or_restated() {
        let text = "GET / HTTP/1.1\r\nA:1\r\nB: 2 \r\nC: 3\r\nD: 4\r\nE:\r\n\r\n";
        let (n, parts) = parse_request(text.as_bytes(), LIMITS).unwrap().unwrap();
        let head = RequestHead::new(Bytes::copy_from_slice(&text.as_bytes()[..n]), parts);
        let mut out = Vec::new();
        copy_field_lines(&head, &mut out, |_, name| match name {
            b"C" => FieldFate::Drop,
            b"D" => FieldFate::Replace("four"),
            _ => FieldFate::Keep,
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A:1\r\nB: 2 \r\nD: four\r\nE:\r\n"
        );
        let mut none = Vec::new();
        copy_field_lines(&head, &mut none, |_, _| FieldFate::Drop);
        assert!(none.is_empty());
    }
}
