//! Meaning of the header fields that govern a hop: framing (RFC 9112 §6),
//! connection management (RFC 9112 §9, RFC 9110 §7.6.1) and what a proxy must
//! not forward.

use super::body::BodyKind;
use super::head::{Field, Fields, Known, RequestHead, ResponseHead};

/// Fields that only concern one connection and are never forwarded as received
/// (RFC 9110 §7.6.1). Framing fields are rewritten by the proxy itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// What the `Connection` (and legacy `Proxy-Connection`) fields say.
#[derive(Debug, Default)]
pub struct ConnectionOptions<'a> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Other field names listed in `Connection`, to be removed when forwarding.
    pub listed: Vec<&'a [u8]>,
}

pub fn connection_options<'a>(head: &'a impl Fields) -> ConnectionOptions<'a> {
    let mut opts = ConnectionOptions::default();
    for f in head.field_list() {
        if !matches!(f.kind, Known::Connection | Known::ProxyConnection) {
            continue;
        }
        for token in list(head.value(f)) {
            if token.eq_ignore_ascii_case(b"close") {
                opts.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                opts.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                opts.upgrade = true;
            } else {
                opts.listed.push(token);
            }
        }
    }
    opts
}

impl ConnectionOptions<'_> {
    /// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
    pub fn persistent(&self, minor: u8) -> bool {
        !self.close && (minor >= 1 || self.keep_alive)
    }

    /// Whether a parsed field must be dropped when the message is forwarded.
    pub fn drops(&self, field: &Field, name: &[u8]) -> bool {
        field.kind.is_hop_by_hop() || self.listed.iter().any(|l| name.eq_ignore_ascii_case(l))
    }

    /// Whether a field must be dropped when the message is forwarded.
    pub fn is_hop_by_hop(&self, name: &[u8]) -> bool {
        HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            || self.listed.iter().any(|l| name.eq_ignore_ascii_case(l))
    }
}

/// Elements of a comma-separated field value, trimmed, empty ones skipped.
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// How the body of a message is delimited, refusing every ambiguous case.
fn framing(head: &impl Fields) -> Result<Option<BodyKind>, &'static str> {
    let mut te_seen = false;
    let mut chunked_last = false;
    for value in head.values("transfer-encoding") {
        te_seen = true;
        for coding in value.split(|b| *b == b',').map(trim) {
            if coding.is_empty() {
                return Err("empty transfer coding");
            }
            if chunked_last {
                // RFC 9112 §6.1: chunked must be the final coding, applied once.
                return Err("transfer coding after chunked");
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked_last = true;
            } else {
                return Err("unsupported transfer coding");
            }
        }
    }
    let mut lengths = head.values("content-length");
    let length = lengths.next();
    if te_seen {
        if length.is_some() {
            // RFC 9112 §6.3 ¶3: a sender with both may be attempting smuggling.
            return Err("both Transfer-Encoding and Content-Length");
        }
        if !chunked_last {
            return Err("Transfer-Encoding without final chunked");
        }
        return Ok(Some(BodyKind::Chunked));
    }
    let Some(length) = length else {
        return Ok(None);
    };
    if lengths.next().is_some() {
        return Err("more than one Content-Length");
    }
    parse_length(length).map(|n| Some(BodyKind::Length(n)))
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; signs, spaces inside, hex, lists and
/// empty values are all refused.
fn parse_length(value: &[u8]) -> Result<u64, &'static str> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err("malformed Content-Length");
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// RFC 9112 §6.3 for requests: chunked, a length, or no body.
pub fn request_body(head: &RequestHead) -> Result<BodyKind, &'static str> {
    let kind = framing(head)?;
    if head.minor == 0 && kind == Some(BodyKind::Chunked) {
        // RFC 9112 §6.1: chunked is not defined for HTTP/1.0.
        return Err("Transfer-Encoding in an HTTP/1.0 request");
    }
    Ok(match kind {
        None | Some(BodyKind::Length(0)) => BodyKind::None,
        Some(k) => k,
    })
}

/// RFC 9112 §6.3 for responses, given what was asked.
pub fn response_body(
    head: &ResponseHead,
    request_was_head: bool,
) -> Result<BodyKind, &'static str> {
    let kind = framing(head)?;
    if request_was_head || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(BodyKind::None);
    }
    Ok(match kind {
        None => BodyKind::UntilClose,
        Some(BodyKind::Length(0)) => BodyKind::None,
        Some(k) => k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::{HeadLimits, parse_request, parse_response};
    use bytes::Bytes;

    const L: HeadLimits = HeadLimits {
        max_line: 1000,
        max_size: 4000,
        max_fields: 50,
    };

    fn req(text: &str) -> RequestHead {
        let (n, parts) = parse_request(text.as_bytes(), L).unwrap().unwrap();
        RequestHead::new(Bytes::copy_from_slice(&text.as_bytes()[..n]), parts)
    }

    fn body_of(headers: &str) -> Result<BodyKind, &'static str> {
        request_body(&req(&format!(
            "POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n"
        )))
    }

    #[test]
    fn request_framing() {
        assert_eq!(body_of(""), Ok(BodyKind::None));
        assert_eq!(body_of("Content-Length: 0\r\n"), Ok(BodyKind::None));
        assert_eq!(body_of("Content-Length: 12\r\n"), Ok(BodyKind::Length(12)));
        assert_eq!(
            body_of("Transfer-Encoding: chunked\r\n"),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(
            body_of("Transfer-Encoding: Chunked\r\n"),
            Ok(BodyKind::Chunked)
        );
        for bad in [
            "Content-Length: 1, 2\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: ,chunked\r\n",
            "Content-Length: 99999999999999999999\r\n",
        ] {
            assert!(body_of(bad).is_err(), "{bad:?} accepted");
        }
        let r = req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(request_body(&r).is_err());
    }

    #[test]
    fn response_framing() {
        let resp = |t: &str| {
            let (n, parts) = parse_response(t.as_bytes(), L).unwrap().unwrap();
            ResponseHead::new(Bytes::copy_from_slice(&t.as_bytes()[..n]), parts)
        };
        let r = resp("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(response_body(&r, false), Ok(BodyKind::UntilClose));
        assert_eq!(response_body(&r, true), Ok(BodyKind::None));
        let r = resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(response_body(&r, false), Ok(BodyKind::None));
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(response_body(&r, false).is_err());
    }

    #[test]
    fn connection_tokens() {
        let r = req("GET / HTTP/1.1\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n");
        let c = connection_options(&r);
        assert!(c.close && !c.persistent(1));
        assert!(c.is_hop_by_hop(b"x-foo") && c.is_hop_by_hop(b"Keep-Alive"));
        assert!(!c.is_hop_by_hop(b"accept"));
        let r = req("GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n");
        assert!(connection_options(&r).persistent(0));
        let r = req("GET / HTTP/1.0\r\n\r\n");
        assert!(!connection_options(&r).persistent(0));
    }
}
