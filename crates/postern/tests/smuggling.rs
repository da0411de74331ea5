//! Strict parsing against request smuggling and response splitting
//! (RFC 9112 §2.2, §5, §6.3, §7.1, §11.2): every ambiguous or malformed
//! message is refused, the connection is closed, and nothing of it reaches
//! the next hop.

mod common;

use common::{T, private_config, start};
use postern_testkit::{Origin, RawOrigin, raw_exchange};

/// Small limits so the size cases stay small.
const LIMITS: &str =
    "[limits]\nmax_request_line = \"1KiB\"\nmax_header_size = \"4KiB\"\nmax_headers = 20\n";

/// Sends `request` (with `{o}` replaced by the origin's address) and checks
/// that the proxy answers one of `statuses`, closes, and forwards nothing.
async fn refused(case: &str, request: &str, statuses: &[u16]) {
    let origin = Origin::start().await;
    let proxy = start(&private_config(LIMITS));
    let request = request.replace("{o}", &origin.addr().to_string());
    let reply = raw_exchange(proxy.addr(), request.as_bytes(), T).await;
    let status = reply.status();
    assert!(
        status.is_some_and(|s| statuses.contains(&s)),
        "{case}: expected status {statuses:?}, got {status:?}:\n{}",
        reply.text()
    );
    assert!(reply.closed, "{case}: the connection was left open");
    assert_eq!(
        origin.requests(),
        0,
        "{case}: the origin received a request"
    );
}

macro_rules! refused {
    ($name:ident, $request:expr) => {
        refused!($name, $request, [400]);
    };
    ($name:ident, $request:expr, $statuses:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            refused(stringify!($name), &$request, &$statuses).await;
        }
    };
}

// ---------------------------------------------------------------- framing

// RFC 9112 §6.3 ¶3: Content-Length together with Transfer-Encoding.
refused!(
    content_length_with_transfer_encoding,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: 5\r\n\
     Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {o}\r\n\r\n"
);

// RFC 9110 §8.6: Content-Length = 1*DIGIT; a list of values is invalid.
refused!(
    content_length_list,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: 1, 2\r\n\r\nab"
);

refused!(
    content_length_duplicated,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"
);

refused!(
    content_length_conflicting,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nabcde"
);

refused!(
    content_length_with_sign,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: +5\r\n\r\nabcde"
);

refused!(
    content_length_hex,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: 0x5\r\n\r\nabcde"
);

refused!(
    content_length_empty,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nContent-Length: \r\n\r\nabcde"
);

// RFC 9112 §6.1: chunked must be the final transfer coding.
refused!(
    transfer_encoding_chunked_not_last,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
);

// RFC 9112 §6.1: an unsupported coding is 501; without chunked last the
// length is unknown, so the connection must close either way.
refused!(
    transfer_encoding_without_chunked,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: gzip\r\n\r\nabcde",
    [400, 501]
);

// RFC 9112 §7.1: chunk-size = 1*HEXDIG.
refused!(
    chunk_size_not_hex,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
);

refused!(
    chunk_size_with_trailing_junk,
    "POST http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n"
);

// ---------------------------------------------------------------- syntax

// RFC 9112 §2.2: bare LF line endings are refused here (a recipient MAY
// accept them, but disagreement between hops is the smuggling vector).
refused!(
    bare_lf_line_endings,
    "GET http://{o}/ HTTP/1.1\nHost: {o}\nX-A: 1\n\n"
);

// RFC 9112 §2.2: a bare CR outside the line terminator is invalid.
refused!(
    bare_cr_in_head,
    "GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nX-A: 1\rX-B: 2\r\n\r\n"
);

// RFC 9110 §5.5: NUL is never allowed in a field value.
refused!(
    nul_in_field_value,
    "GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nX-A: a\0b\r\n\r\n"
);

// RFC 9112 §5.1: no whitespace between field name and colon.
refused!(
    whitespace_before_colon,
    "GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nContent-Length : 0\r\n\r\n"
);

// RFC 9112 §5.2: obs-fold in a request is rejected.
refused!(
    obsolete_line_folding,
    "GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nX-A: 1\r\n folded\r\n\r\n"
);

// RFC 9112 §3.2.3: the authority-form needs a port.
refused!(
    connect_without_port,
    "CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
);

// RFC 9112 §3.2.4: asterisk-form only for OPTIONS.
refused!(asterisk_form_get, "GET * HTTP/1.1\r\nHost: {o}\r\n\r\n");

// RFC 9112 §3.2: exactly one Host.
refused!(
    two_host_fields,
    "GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nHost: other.example\r\n\r\n"
);

refused!(missing_host, "GET http://{o}/ HTTP/1.1\r\nX-A: 1\r\n\r\n");

// ---------------------------------------------------------------- limits

// RFC 9112 §3: a request line over the limit is 414 (RFC 9110 §15.5.15).
refused!(
    request_line_too_long,
    format!(
        "GET http://{{o}}/{} HTTP/1.1\r\nHost: {{o}}\r\n\r\n",
        "a".repeat(2000)
    ),
    [414]
);

// RFC 6585 §5: header section too large is 431.
refused!(
    header_section_too_large,
    format!(
        "GET http://{{o}}/ HTTP/1.1\r\nHost: {{o}}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    ),
    [431]
);

refused!(
    too_many_header_fields,
    format!(
        "GET http://{{o}}/ HTTP/1.1\r\nHost: {{o}}\r\n{}\r\n",
        (0..30)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    ),
    [431]
);

// RFC 9110 §15.6.6: unsupported major version.
refused!(
    http2_request_line,
    "GET http://{o}/ HTTP/2.0\r\nHost: {o}\r\n\r\n",
    [505]
);

// ---------------------------------------------------------------- responses

/// Marker in every malformed response body; it must never reach the client.
const MARKER: &str = "SMUGGLED";

/// The origin answers with `response`; the client must get 502 with
/// `http_protocol_error` (RFC 9209 §2.3.14) and nothing of the response.
async fn bad_response(case: &str, response: &str) {
    let origin = RawOrigin::start(response.as_bytes().to_vec()).await;
    let proxy = start(&private_config(""));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        origin.url("/"),
        origin.addr()
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(502), "{case}:\n{}", reply.text());
    let ps = reply.header("proxy-status").unwrap_or_default();
    assert!(
        ps.contains("error=http_protocol_error"),
        "{case}: Proxy-Status {ps:?}"
    );
    assert!(
        !reply.text().contains(MARKER),
        "{case}: part of the bad response reached the client:\n{}",
        reply.text()
    );
    assert_eq!(origin.connections(), 1, "{case}: origin not reached");
}

macro_rules! bad_response {
    ($name:ident, $response:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            bad_response(stringify!($name), $response).await;
        }
    };
}

bad_response!(
    response_content_length_with_transfer_encoding,
    "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"
);

bad_response!(
    response_conflicting_content_lengths,
    "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Length: 9\r\n\r\nSMUGGLED!"
);

bad_response!(
    response_content_length_not_a_number,
    "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nSMUGGLED"
);

bad_response!(
    response_bare_lf_head,
    "HTTP/1.1 200 OK\nContent-Length: 8\n\nSMUGGLED"
);

bad_response!(
    response_bad_chunk_size,
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nSMUGGLED\r\n0\r\n\r\n"
);

bad_response!(
    response_whitespace_before_colon,
    "HTTP/1.1 200 OK\r\nContent-Length : 8\r\n\r\nSMUGGLED"
);
