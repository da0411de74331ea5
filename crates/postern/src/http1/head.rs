//! Request and response heads: parsed once with `httparse`, then checked for the
//! things `httparse` tolerates (bare LF line endings) and kept as byte ranges into
//! the received bytes, so nothing is copied per header.

use std::ops::Range;

use bytes::Bytes;

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
        self.field_list()
            .iter()
            .filter(move |f| self.name(f).eq_ignore_ascii_case(name.as_bytes()))
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

    pub fn is_method(&self, m: &str) -> bool {
        self.raw[self.method.clone()] == *m.as_bytes()
    }
}

impl ResponseHead {
    pub fn reason(&self) -> &[u8] {
        &self.raw[self.reason.clone()]
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
    headers
        .iter()
        .map(|h| Field {
            name: range(h.name.as_bytes()),
            value: range(h.value),
        })
        .collect()
}

/// Runs `f` with room for `max` parsed fields: on the stack for ordinary limits,
/// on the heap beyond.
fn with_field_slots<'b, R>(max: usize, f: impl FnOnce(&mut [httparse::Header<'b>]) -> R) -> R {
    if max <= STACK_FIELDS {
        let mut stack = [httparse::EMPTY_HEADER; STACK_FIELDS];
        f(&mut stack[..max])
    } else {
        f(&mut vec![httparse::EMPTY_HEADER; max])
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)` means more bytes are
/// needed; `Ok(Some((len, parts)))` gives the head's length and layout.
pub fn parse_request(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(usize, RequestParts)>, HeadError> {
    with_field_slots(limits.max_fields, |headers| {
        let mut req = httparse::Request::new(headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                check_line_endings(&buf[..len])?;
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

/// RFC 9112 §2.3: whether the request line ends in `HTTP/DIGIT.DIGIT`. A
/// well-formed version this proxy does not speak gets 505; anything else
/// there is a malformed request line (400).
fn names_http_version(buf: &[u8]) -> bool {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let version = line.rsplit(|b| *b == b' ').next().unwrap_or_default();
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Parses a response head at the start of `buf`, like `parse_request`.
pub fn parse_response(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(usize, ResponseParts)>, HeadError> {
    with_field_slots(limits.max_fields, |headers| {
        let mut resp = httparse::Response::new(headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                check_line_endings(&buf[..len])?;
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
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    for i in memchr::memchr_iter(b'\n', head) {
        if i == 0 || head[i - 1] != b'\r' {
            return Err(HeadError::Malformed("bare LF line ending"));
        }
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
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
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
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", LIMITS).is_err());
    }
}
