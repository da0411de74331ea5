//! The request targets and Host values a reverse listener accepts (RFC 9112
//! §3.2, RFC 9110 §7.2). An absolute-form target is made into origin form
//! with its authority as Host (RFC 9112 §3.2.2: a server takes the host from
//! the target and ignores Host), so routes match the host and path the
//! server will act on, and a path-prefix route cannot be walked around by
//! naming another host in the target.

use crate::error::{ErrorKind, ProxyError};
use crate::http1::RequestHead;
use crate::http1::head::{Fields, HeadLimits, Known, copy_field_lines, parse_request, push_field};
use postern_policy::headers::FieldFate;

/// Checks the target and Host of a request to a reverse listener; `Ok(Some)`
/// is the head rewritten into origin form.
pub fn normalize(
    head: &RequestHead,
    limits: HeadLimits,
) -> Result<Option<RequestHead>, ProxyError> {
    let target = head.target_bytes();
    // One pass: visible ASCII only, no fragment (RFC 9112 §3.2: no form of
    // request target has one), and whether anything is percent-encoded.
    let mut encoded = false;
    for &b in target {
        if !b.is_ascii_graphic() {
            return Err(bad_request(format!(
                "byte 0x{b:02x} in the request target (only visible ASCII is allowed)"
            )));
        }
        if b == b'#' {
            return Err(bad_request("fragment in the request target"));
        }
        encoded |= b == b'%';
    }
    // As on forward listeners: no percent-encoded control characters, which
    // naive servers decode into header or log injections.
    if encoded
        && postern_policy::host::has_encoded_control(
            std::str::from_utf8(target).unwrap_or_default(),
        )
    {
        return Err(bad_request(
            "percent-encoded control characters in the request target",
        ));
    }
    match target {
        [b'/', ..] => {
            check_host_field(head)?;
            Ok(None)
        }
        // RFC 9112 §3.2.4: the asterisk form is for OPTIONS only.
        b"*" if head.is_method("OPTIONS") => {
            check_host_field(head)?;
            Ok(None)
        }
        b"*" => Err(bad_request("`*` as request target is only for OPTIONS")),
        _ => match absolute(target) {
            Some((authority, path)) => {
                check_host(authority)?;
                rewrite(head, authority, path, limits).map(Some)
            }
            None => Err(bad_request(
                "the request target is neither a path nor an absolute http URI",
            )),
        },
    }
}

fn bad_request(why: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorKind::BadRequest, why)
}

/// `http://authority[/path][?query]` (or https): the authority and the
/// origin-form rest (`/` when empty, `/` put before a bare query).
fn absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = target.iter().position(|b| *b == b':')?;
    let (scheme, rest) = target.split_at(colon);
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = rest.strip_prefix(b"://")?;
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(rest.split_at(end))
}

fn check_host_field(head: &RequestHead) -> Result<(), ProxyError> {
    match head.first("host") {
        Some(host) => check_host(host),
        None => Ok(()),
    }
}

/// RFC 9110 §7.2: `uri-host [ ":" port ]`: a name of unreserved,
/// percent-encoded and sub-delimiter characters, or an IP literal in
/// brackets. Anything else (spaces, quotes, slashes, userinfo, non-ASCII)
/// is refused with 400 (RFC 9112 §3.2), as nginx does.
fn check_host(host: &[u8]) -> Result<(), ProxyError> {
    let (name, port) = match host {
        [b'[', ..] => match host.iter().position(|b| *b == b']') {
            Some(close) => {
                let literal = &host[1..close];
                if literal.is_empty()
                    || !literal
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
                {
                    return Err(bad_request("invalid IP literal in the host"));
                }
                (&host[..=close], &host[close + 1..])
            }
            None => return Err(bad_request("unterminated IP literal in the host")),
        },
        _ => match host.iter().position(|b| *b == b':') {
            Some(colon) => (&host[..colon], &host[colon..]),
            None => (host, &b""[..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let name_ok = name.starts_with(b"[") || name.iter().all(|b| REG_NAME[usize::from(*b)]);
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(bad_request("invalid host"))
    }
}

/// RFC 3986 §3.2.2 reg-name: unreserved, `%` of pct-encoded, sub-delims.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'%')
            || matches!(
                c,
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// The head again, in origin form, with the target's authority as Host.
fn rewrite(
    head: &RequestHead,
    authority: &[u8],
    path: &[u8],
    limits: HeadLimits,
) -> Result<RequestHead, ProxyError> {
    let mut text = Vec::with_capacity(head.raw.len() + 16);
    text.extend_from_slice(head.method_bytes());
    text.push(b' ');
    if path.is_empty() || path[0] == b'?' {
        text.push(b'/');
    }
    text.extend_from_slice(path);
    text.extend_from_slice(if head.minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    push_field(&mut text, b"Host", authority);
    copy_field_lines(head, &mut text, |f, _| {
        if f.kind == Known::Host {
            FieldFate::Drop
        } else {
            FieldFate::Keep
        }
    });
    text.extend_from_slice(b"\r\n");
    // The rewritten head may be a little longer than the one received.
    let limits = HeadLimits {
        max_size: limits.max_size + authority.len() + 16,
        max_line: limits.max_line + 1,
        ..limits
    };
    match parse_request(&text, limits) {
        Ok(Some((len, parts))) => Ok(RequestHead::new(
            bytes::Bytes::from(text).slice(..len),
            parts,
        )),
        _ => Err(bad_request(
            "the request could not be restated in origin form",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 8192,
        max_size: 65536,
        max_fields: 100,
    };

    fn head(text: &str) -> RequestHead {
        let (n, parts) = parse_request(text.as_bytes(), LIMITS).unwrap().unwrap();
        RequestHead::new(bytes::Bytes::copy_from_slice(&text.as_bytes()[..n]), parts)
    }

    fn outcome(text: &str) -> Result<Option<String>, String> {
        normalize(&head(text), LIMITS)
            .map(|h| h.map(|h| String::from_utf8_lossy(&h.raw).into_owned()))
            .map_err(|e| e.detail)
    }

    #[test]
    fn origin_form_and_options_star_pass_as_they_are() {
        for ok in [
            "GET /a/b?c=d HTTP/1.1\r\nHost: www.example:8080\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a%20b HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n",
        ] {
            assert_eq!(outcome(ok), Ok(None), "{ok:?}");
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        assert_eq!(
            outcome(
                "GET http://internal.example/admin/x HTTP/1.1\r\nHost: public.example\r\nX-A: 1\r\n\r\n"
            ),
            Ok(Some(
                "GET /admin/x HTTP/1.1\r\nHost: internal.example\r\nX-A: 1\r\n\r\n".into()
            ))
        );
        assert_eq!(
            outcome("GET HTTPS://a.example:8443?q HTTP/1.0\r\n\r\n"),
            Ok(Some(
                "GET /?q HTTP/1.0\r\nHost: a.example:8443\r\n\r\n".into()
            ))
        );
    }

    #[test]
    fn bad_targets_and_hosts_are_refused() {
        for bad in [
            "GET fz HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS 4371 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /x#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://u:p@a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/x#f HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /x%0d%0aSet-Cookie:a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\"c;(d)\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
        ] {
            assert!(outcome(bad).is_err(), "{bad:?} -> {:?}", outcome(bad));
        }
        let non_ascii = b"GET / HTTP/1.1\r\nHost: \x80\xff\r\n\r\n";
        let (n, parts) = parse_request(non_ascii, LIMITS).unwrap().unwrap();
        let head = RequestHead::new(bytes::Bytes::copy_from_slice(&non_ascii[..n]), parts);
        assert!(normalize(&head, LIMITS).is_err());
    }
}
