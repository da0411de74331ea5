//! Forwarding of plain HTTP requests through the real binary: bodies in both
//! directions, framing changes between hops, connection management and the
//! header rewriting a proxy owes the next hop (RFC 9110 §7.6, RFC 9112).

mod common;

use common::{Conn, T, curl_async, curl_fetch_async, private_config, reqwest_via, start};
use postern_testkit::{Origin, pattern_bytes, raw_exchange};
use tokio::io::AsyncWriteExt as _;

fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

// ------------------------------------------------------------ bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_get_through_curl_is_byte_exact() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/bytes/1048576")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_same_bytes("curl 1 MiB", &f.body, &pattern_bytes(1_048_576));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_get_through_reqwest_is_byte_exact() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let client = reqwest_via(&proxy.proxy_url());
    let resp = client
        .get(origin.url("/bytes/1048576"))
        .send()
        .await
        .expect("request through the proxy");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes().await.expect("body");
    assert_same_bytes("reqwest 1 MiB", &body, &pattern_bytes(1_048_576));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_is_byte_exact() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/chunked/300000")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_same_bytes("chunked 300000", &f.body, &pattern_bytes(300_000));
}

/// RFC 9110 §6.5 / §10.1.4: a client announcing `TE: trailers` receives the
/// trailer section after the last chunk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailer_reaches_curl_with_te_trailers() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let (out, stderr, code) = curl_async(&[
        "-x",
        &proxy.proxy_url(),
        "-H",
        "TE: trailers",
        "--raw",
        &origin.url("/chunked/300000"),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let tail = String::from_utf8_lossy(&out[out.len().saturating_sub(40)..]).to_ascii_lowercase();
    assert!(
        tail.ends_with("\r\n0\r\nx-trailer: done\r\n\r\n"),
        "the raw body does not end with the trailer; last bytes: {tail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailer_reaches_raw_client_with_te_trailers() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let has_trailer = |r: &common::Response| {
        r.trailers
            .iter()
            .any(|t| t.eq_ignore_ascii_case("x-trailer: done"))
    };

    // Control: the origin sends the trailer to a client asking for it.
    let mut direct = Conn::connect(origin.addr()).await;
    direct
        .send(b"GET /chunked/1000 HTTP/1.1\r\nHost: o\r\nTE: trailers\r\nConnection: TE\r\n\r\n")
        .await;
    let resp = direct.read_response(false).await;
    assert!(
        has_trailer(&resp),
        "origin without proxy: {:?}",
        resp.trailers
    );

    let mut c = Conn::connect(proxy.addr()).await;
    c.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
            origin.url("/chunked/300000"),
            origin.addr()
        )
        .as_bytes(),
    )
    .await;
    let resp = c.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert!(resp.chunked, "expected a chunked response: {}", resp.head);
    assert_same_bytes("raw chunked", &resp.body, &pattern_bytes(300_000));
    assert!(
        has_trailer(&resp),
        "trailers received: {:?}; the origin saw {:?}",
        resp.trailers,
        origin.last_request().map(|r| r.headers)
    );
}

/// Uploads `size` pattern bytes to the origin's echo through the proxy with
/// curl, adding `headers`; returns the fetch and the bytes sent.
async fn echo_upload(headers: &[&str], size: usize) -> (common::Fetch, Vec<u8>) {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let dir = common::scratch_dir();
    let file = dir.join("upload");
    let data = pattern_bytes(size);
    std::fs::write(&file, &data).unwrap();
    let body = format!("@{}", file.display());
    let proxy_url = proxy.proxy_url();
    let url = origin.url("/echo");
    let mut args = vec![
        "-x",
        &proxy_url,
        "-H",
        "Content-Type: application/octet-stream",
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.extend(["--data-binary", &body, &url]);
    let f = curl_fetch_async(&args).await;
    std::fs::remove_dir_all(&dir).ok();
    (f, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_upload_is_streamed_back_identical() {
    let (f, data) = echo_upload(&[], 5_000_000).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(
        f.header("x-received-content-length").as_deref(),
        Some("5000000")
    );
    assert_same_bytes("echoed 5 MB", &f.body, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_is_streamed_back_identical() {
    let (f, data) = echo_upload(&["Transfer-Encoding: chunked"], 1_500_000).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.header("x-method").as_deref(), Some("POST"));
    assert_same_bytes("echoed chunked upload", &f.body, &data);
}

// ------------------------------------------------------------ bodiless responses

/// RFC 9112 §6.3: a response to HEAD has no body whatever its
/// Content-Length says; the connection then carries the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_length_but_no_body() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let host = origin.addr().to_string();
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(
        format!(
            "HEAD {} HTTP/1.1\r\nHost: {host}\r\n\r\n",
            origin.url("/bytes/1000")
        )
        .as_bytes(),
    )
    .await;
    let resp = c.read_response(true).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.header("content-length").as_deref(), Some("1000"));

    // Were a body sent after the HEAD response, it would be read here in
    // place of the next status line.
    assert_connection_in_step(&mut c, &origin).await;
}

/// A further request on the same connection gets exactly its own response:
/// any stray body bytes of the previous one would be read here instead.
async fn assert_connection_in_step(c: &mut Conn, origin: &Origin) {
    c.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url("/bytes/10"),
            origin.addr()
        )
        .as_bytes(),
    )
    .await;
    let next = c.read_response(false).await;
    assert!(next.head.starts_with("HTTP/1.1 200"), "{:?}", next.head);
    assert_eq!(next.body, pattern_bytes(10));
}

/// RFC 9110 §15.3.5 and §15.4.5: 204 and 304 never carry a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_have_no_body() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let host = origin.addr().to_string();
    let mut c = Conn::connect(proxy.addr()).await;
    for code in [204u16, 304] {
        c.send(
            format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                origin.url(&format!("/status/{code}"))
            )
            .as_bytes(),
        )
        .await;
        let resp = c.read_response(false).await;
        assert_eq!(resp.status, code, "{}", resp.head);
        assert_eq!(resp.header("transfer-encoding"), None, "{}", resp.head);
    }
    assert_connection_in_step(&mut c, &origin).await;
}

// ------------------------------------------------------------ interim responses

/// RFC 9110 §10.1.1: the client waits for `100 Continue` before sending
/// the body; the proxy must pass the interim response on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_relayed_before_the_body() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 3000\r\n\r\n",
            origin.url("/expect"),
            origin.addr()
        )
        .as_bytes(),
    )
    .await;
    let interim = c.read_head().await;
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "expected 100 Continue before sending the body, got {interim:?}"
    );
    c.send(&pattern_bytes(3000)).await;
    let resp = c.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.body, b"got 3000 bytes");
}

// ------------------------------------------------------------ persistence

/// RFC 9112 §9.3: persistent connections on both sides; three requests on
/// one client connection reuse one upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_client_and_pooled_upstream() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let mut c = Conn::connect(proxy.addr()).await;
    for n in [10usize, 2000, 30] {
        c.send(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                origin.url(&format!("/bytes/{n}")),
                origin.addr()
            )
            .as_bytes(),
        )
        .await;
        let resp = c.read_response(false).await;
        assert_eq!(resp.status, 200, "request for {n} bytes: {}", resp.head);
        assert_eq!(resp.body, pattern_bytes(n), "request for {n} bytes");
    }
    assert_eq!(origin.requests(), 3);
    assert_eq!(origin.connections(), 1, "upstream connection not reused");
}

/// An idle upstream connection is not reused after `timeouts.pool_idle`
/// (servers close idle connections too; reusing an old one invites a race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_upstream_connection_expires_after_pool_idle() {
    let origin = Origin::start().await;
    let proxy = start(&private_config("[timeouts]\npool_idle = \"600ms\"\n"));
    let get = || format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/bytes/5"));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(get().as_bytes()).await;
    assert_eq!(c.read_response(false).await.status, 200);
    c.send(get().as_bytes()).await;
    assert_eq!(c.read_response(false).await.status, 200);
    assert_eq!(origin.connections(), 1, "reused while fresh");
    // Let the pooled connection age past pool_idle (the point of this test).
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    c.send(get().as_bytes()).await;
    assert_eq!(c.read_response(false).await.status, 200);
    assert_eq!(origin.connections(), 2, "an expired connection was reused");
}

/// RFC 9112 §9.3: an HTTP/1.0 request without keep-alive ends its
/// connection after the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_gets_response_and_close() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let req = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/bytes/10"));
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.body(), pattern_bytes(10));
    assert!(reply.closed, "the proxy kept an HTTP/1.0 connection open");
}

/// RFC 9112 Appendix C.2.2: an HTTP/1.0 client asking for keep-alive is told
/// the connection persists, and it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_is_acknowledged() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let mut c = Conn::connect(proxy.addr()).await;
    let req = format!(
        "GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        origin.url("/bytes/10")
    );
    c.send(req.as_bytes()).await;
    let resp = c.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(
        resp.header("connection").map(|v| v.to_ascii_lowercase()),
        Some("keep-alive".into()),
        "{}",
        resp.head
    );
    assert_eq!(resp.body, pattern_bytes(10));
    c.send(req.as_bytes()).await;
    let again = c.read_response(false).await;
    assert_eq!(again.status, 200, "second request: {}", again.head);
    assert_eq!(again.body, pattern_bytes(10));
}

/// RFC 9112 §6.1: chunked is not defined for HTTP/1.0, so a chunked origin
/// response reaches a 1.0 client de-chunked and delimited by close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_to_http10_client_is_dechunked() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let req = format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/chunked/1000"));
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.head());
    assert_eq!(reply.header("transfer-encoding"), None, "{}", reply.head());
    assert_eq!(reply.body(), pattern_bytes(1000));
    assert!(reply.closed, "a close-delimited body needs the close");
}

// ------------------------------------------------------------ header rewriting

/// RFC 9110 §7.6.1: hop-by-hop fields, and fields named in Connection, are
/// not forwarded; RFC 9110 §7.6.3: Via is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_fields_are_removed() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
         Keep-Alive: 5\r\nProxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: gzip\r\nUpgrade: foo\r\n\
         X-End-To-End: kept\r\n\r\n",
        origin.url("/headers"),
        origin.addr()
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let seen = origin.last_request().expect("the origin got the request");
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert_eq!(seen.header(name), None, "{name} was forwarded: {seen:?}");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"), "{seen:?}");
    assert_eq!(seen.header("via"), Some("1.1 postern"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_can_be_disabled() {
    let origin = Origin::start().await;
    let proxy = start(&private_config("[http]\nvia = false\n"));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/headers")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    let seen = origin.last_request().expect("request");
    assert_eq!(seen.header("via"), None, "{seen:?}");
    assert_eq!(f.header("via"), None, "{}", f.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_fields_are_removed() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let url = origin.url(
        "/bytes/5?h=Connection:x-drop&h=X-Drop:1&h=Keep-Alive:timeout%3D5\
         &h=Proxy-Authenticate:Basic&h=X-Kept:yes",
    );
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    for name in ["x-drop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(
            f.header(name),
            None,
            "{name} reached the client:\n{}",
            f.headers
        );
    }
    if let Some(c) = f.header("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-drop"), "{}", f.headers);
    }
    assert_eq!(f.header("x-kept").as_deref(), Some("yes"), "{}", f.headers);
    assert_eq!(
        f.header("via").as_deref(),
        Some("1.1 postern"),
        "{}",
        f.headers
    );
    assert_eq!(f.body, pattern_bytes(5));
}

/// RFC 9112 §3.2.2: with an absolute-form target the Host field is
/// replaced by the target URI's authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_authority_wins_over_host() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        origin.url("/headers")
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let seen = origin.last_request().expect("request");
    let want = origin.addr().to_string();
    assert_eq!(seen.header("host"), Some(want.as_str()), "{seen:?}");
    assert_eq!(seen.headers.iter().filter(|(n, _)| n == "host").count(), 1);
    assert!(!reply.text().contains("evil.example"), "{}", reply.text());
}

// ------------------------------------------------------------ Max-Forwards

/// RFC 9110 §7.6.2: OPTIONS with `Max-Forwards: 0` is answered by the
/// proxy itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_with_max_forwards_zero_is_answered_by_proxy() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let req = format!(
        "OPTIONS {} HTTP/1.1\r\nHost: {}\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
        origin.url("/"),
        origin.addr()
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert!(reply.header("allow").is_some(), "{}", reply.head());
    assert_eq!(origin.requests(), 0, "the request went to the origin");
}

/// RFC 9110 §9.3.8 and §7.6.2: TRACE with `Max-Forwards: 0` is reflected by
/// the proxy as `message/http`, leaving out credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_with_max_forwards_zero_echoes_without_credentials() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let target = origin.url("/traced");
    let req = format!(
        "TRACE {target} HTTP/1.1\r\nHost: {}\r\nMax-Forwards: 0\r\n\
         Authorization: Basic c2VjcmV0OnB3\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         X-Visible: yes\r\nConnection: close\r\n\r\n",
        origin.addr()
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("message/http"),
        "{}",
        reply.head()
    );
    let body = String::from_utf8_lossy(reply.body()).into_owned();
    assert!(
        body.starts_with(&format!("TRACE {target} HTTP/1.1\r\n")),
        "{body:?}"
    );
    assert!(body.contains("X-Visible: yes"), "{body:?}");
    let all = reply.text();
    assert!(!all.contains("c2VjcmV0OnB3"), "Authorization echoed: {all}");
    assert!(
        !all.contains("Zm9vOmJhcg=="),
        "Proxy-Authorization echoed: {all}"
    );
    assert_eq!(origin.requests(), 0);
}

/// RFC 9110 §7.6.2: a forwarded OPTIONS carries Max-Forwards decremented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_is_decremented() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let req = format!(
        "OPTIONS {} HTTP/1.1\r\nHost: {}\r\nMax-Forwards: 5\r\nConnection: close\r\n\r\n",
        origin.url("/headers"),
        origin.addr()
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let seen = origin.last_request().expect("forwarded");
    assert_eq!(seen.method, "OPTIONS");
    assert_eq!(seen.header("max-forwards"), Some("4"), "{seen:?}");
}

// ------------------------------------------------------------ Upgrade

/// RFC 9110 §7.8: after a 101 the connection becomes a tunnel to the
/// origin's new protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_switches_to_a_tunnel() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: testproto\r\n\r\n",
            origin.url("/upgrade"),
            origin.addr()
        )
        .as_bytes(),
    )
    .await;
    let head = c.read_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    assert_eq!(
        common::header_in(&head, "upgrade").as_deref(),
        Some("testproto")
    );
    for msg in [&b"hello through the tunnel"[..], &pattern_bytes(50_000)] {
        c.send(msg).await;
        assert_eq!(c.read_exact(msg.len()).await, msg);
    }
    c.stream.shutdown().await.ok();
    assert!(
        c.closes_within(T).await,
        "tunnel did not end after the half-close"
    );
}

/// Without a 101 there is no tunnel: the connection goes on speaking HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tunnel_without_switching_protocols() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let mut c = Conn::connect(proxy.addr()).await;
    // Connection names upgrade but no Upgrade field is sent: the origin
    // answers 426.
    c.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\r\n",
            origin.url("/upgrade"),
            origin.addr()
        )
        .as_bytes(),
    )
    .await;
    let resp = c.read_response(false).await;
    assert_eq!(resp.status, 426, "{}", resp.head);
    // Bytes that would be echoed by a tunnel are parsed as the next request.
    c.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.url("/bytes/7"),
            origin.addr()
        )
        .as_bytes(),
    )
    .await;
    let next = c.read_response(false).await;
    assert!(next.head.starts_with("HTTP/1.1 200"), "{:?}", next.head);
    assert_eq!(next.body, pattern_bytes(7));
}

// ------------------------------------------------------------ the proxy's own page

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_port_serves_its_own_page() {
    let proxy = start(&private_config(""));
    let url = format!("http://{}/", proxy.addr());
    let f = curl_fetch_async(&[&url]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert!(
        f.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{}",
        f.headers
    );
    assert!(String::from_utf8_lossy(&f.body).contains("Postern"));

    let f = curl_fetch_async(&["-X", "POST", "-d", "x=1", &url]).await;
    assert_eq!((f.exit, f.status), (0, 405), "{}", f.stderr);

    // Any other path: an error page with Proxy-Status, as every error.
    let f = curl_fetch_async(&[&format!("http://{}/x", proxy.addr())]).await;
    assert_eq!((f.exit, f.status), (0, 404), "{}", f.stderr);
    assert!(
        f.header("proxy-status")
            .is_some_and(|v| v.contains("error=destination_not_found")),
        "{}",
        f.headers
    );
}

// ------------------------------------------------------------ upstream failure mid-body

/// An origin that dies mid-body must never look like a complete response
/// to the client (RFC 9112 §8: the message is incomplete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_reset_mid_body_is_not_a_clean_success() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/reset/100000")]).await;
    assert_ne!(
        f.exit,
        0,
        "curl reported success for a truncated body ({} bytes)",
        f.body.len()
    );
    assert!(f.body.len() < 200_000);
    let line = common::wait_log_line(&proxy, &["/reset/100000"]);
    assert!(line.contains("TCP_MISS_ABORTED"), "{line}");
}

// ------------------------------------------------------------ stale pooled connections

/// An origin that answers the first request on each connection and closes the
/// connection, without answering, when a second request arrives on it (a server
/// closing an idle keep-alive connection just as the proxy reuses it).
async fn origin_closing_on_reuse() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut answered = false;
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if answered {
                            return; // second request: close without a response
                        }
                        answered = true;
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// RFC 9110 §9.2.2: an idempotent request that meets a pooled connection the
/// server closed is retried once on a fresh connection; the client sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_request_is_retried_when_a_pooled_connection_was_closed() {
    let (origin, accepted) = origin_closing_on_reuse().await;
    let proxy = start(&private_config(""));
    for i in 0..4 {
        let mut conn = Conn::connect(proxy.addr()).await;
        conn.send(
            format!("GET http://{origin}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let resp = conn.read_response(false).await;
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.body, b"ok", "request {i}");
    }
    // Requests 2..4 each found a stale pooled connection and needed a new one.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
}

/// A POST is not retried: the server may have acted on it before closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_request_is_not_retried() {
    let (origin, _) = origin_closing_on_reuse().await;
    let proxy = start(&private_config(""));
    let first = raw_exchange(
        proxy.addr(),
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        T,
    )
    .await;
    assert_eq!(first.status(), Some(200));
    let post = raw_exchange(
        proxy.addr(),
        format!("POST http://{origin}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        T,
    )
    .await;
    assert_eq!(post.status(), Some(502), "{}", post.text());
    assert!(
        post.header("proxy-status")
            .unwrap_or_default()
            .contains("error=connection_terminated")
    );
}

// ------------------------------------------------------------ framing is the proxy's own

/// A server listing `Content-Length` in Connection must not make the proxy
/// drop the response's length: framing fields are never hop-by-hop here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_survives_being_listed_in_connection() {
    let origin = postern_testkit::RawOrigin::start(
        &b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"[..],
    )
    .await;
    let proxy = start(&private_config(""));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/")).as_bytes())
        .await;
    let resp = c.read_response(false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length").as_deref(),
        Some("5"),
        "{}",
        resp.head
    );
    assert_eq!(resp.body, b"hello");
}

/// The first-byte timeout starts once the request is sent: an upload that
/// takes longer than it is not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_is_not_cut_by_the_first_byte_timeout() {
    let origin = Origin::start().await;
    let proxy = start(&private_config("[timeouts]\nfirst_byte = \"300ms\"\n"));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n",
            // Answers only once the whole body has arrived.
            origin.url("/expect")
        )
        .as_bytes(),
    )
    .await;
    // Four pieces 150 ms apart: 600 ms of upload, twice the first-byte timeout.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        c.send(b"0123456789").await;
    }
    let resp = c.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.body, b"got 40 bytes");
}

/// RFC 9112 §3.2.4: OPTIONS for a URI without a path asks about the server as
/// a whole and goes out as `OPTIONS *`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_without_path_becomes_asterisk_form() {
    let origin =
        postern_testkit::RawOrigin::start(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..])
            .await;
    let proxy = start(&private_config(""));
    let request = format!(
        "OPTIONS http://{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        origin.addr()
    );
    let reply = raw_exchange(proxy.addr(), request.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let seen = String::from_utf8_lossy(&origin.requests()[0]).to_string();
    assert!(seen.starts_with("OPTIONS * HTTP/1.1\r\n"), "{seen}");
}

/// `Max-Forwards: 00` is the number zero (RFC 9110 §7.6.2: 1*DIGIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_zero_with_leading_zero_is_answered_here() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let request = format!(
        "OPTIONS {} HTTP/1.1\r\nHost: x\r\nMax-Forwards: 00\r\nConnection: close\r\n\r\n",
        origin.url("/")
    );
    let reply = raw_exchange(proxy.addr(), request.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert!(reply.header("allow").is_some(), "{}", reply.text());
    assert_eq!(origin.requests(), 0);
}
