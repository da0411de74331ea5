//! Failures the proxy answers itself, each with the status and RFC 9209
//! `Proxy-Status` error type that names the cause, and the client-side
//! guards (header timeout, connection limit).

mod common;

use std::time::{Duration, Instant};

use common::{Conn, T, config, curl_fetch_async, private_config, start};
use postern_testkit::{Origin, RawOrigin, pattern_bytes, raw_exchange};

fn proxy_status(f: &common::Fetch) -> String {
    f.header("proxy-status").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_502() {
    // A port nothing listens on: bind one, learn it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = start(&private_config(""));
    let url = format!("http://127.0.0.1:{port}/");
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
    assert_eq!((f.exit, f.status), (0, 502), "{}", f.stderr);
    assert!(
        proxy_status(&f).contains("error=connection_refused"),
        "{}",
        f.headers
    );
}

/// An upstream that accepts and closes without a byte of response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_without_response_is_502() {
    let origin = RawOrigin::start(Vec::new()).await;
    let proxy = start(&private_config(""));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/")]).await;
    assert_eq!((f.exit, f.status), (0, 502), "{}", f.stderr);
    assert!(
        proxy_status(&f).contains("error=connection_terminated"),
        "{}",
        f.headers
    );
    assert!(origin.connections() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_first_byte_is_504() {
    let origin = Origin::start().await;
    let proxy = start(&private_config("[timeouts]\nfirst_byte = \"300ms\"\n"));
    let started = Instant::now();
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/delay/5000")]).await;
    let took = started.elapsed();
    assert_eq!((f.exit, f.status), (0, 504), "{}", f.stderr);
    assert!(
        proxy_status(&f).contains("error=connection_read_timeout"),
        "{}",
        f.headers
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// RFC 6761 §6.4: `.invalid` names never resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_name_is_a_dns_error() {
    let proxy = start(&private_config("[timeouts]\nconnect = \"2s\"\n"));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "http://does-not-exist.invalid/"]).await;
    assert_eq!(f.exit, 0, "{}", f.stderr);
    assert!(f.status == 502 || f.status == 504, "status {}", f.status);
    let ps = proxy_status(&f);
    assert!(
        ps.contains("error=dns_error") || ps.contains("error=dns_timeout"),
        "{}",
        f.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_scheme_is_501() {
    let proxy = start(&private_config(""));
    let reply = raw_exchange(
        proxy.addr(),
        b"GET gopher://x/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        T,
    )
    .await;
    assert_eq!(reply.status(), Some(501), "{}", reply.text());
}

/// A client that starts a head and never finishes it gets 408 and is
/// disconnected (RFC 9110 §15.5.9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_head_times_out_with_408() {
    let proxy = start(&private_config("[timeouts]\nclient_header = \"500ms\"\n"));
    let started = Instant::now();
    let reply = raw_exchange(
        proxy.addr(),
        b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Slow: ",
        T,
    )
    .await;
    assert_eq!(reply.status(), Some(408), "{}", reply.text());
    assert!(reply.closed, "connection left open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// `max_connections` bounds the connections served at once; the next
/// client waits until a slot frees up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_further_clients() {
    let origin = Origin::start().await;
    let proxy = start(&config(
        "max_connections = 1",
        "allow_private_destinations = true",
        "",
    ));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/bytes/10"),
        origin.addr()
    );

    // A holds the only slot: one answered request proves it was accepted,
    // then it stays idle on a keep-alive connection.
    let mut a = Conn::connect(proxy.addr()).await;
    a.send(request.as_bytes()).await;
    assert_eq!(a.read_response(false).await.status, 200);

    let mut b = Conn::connect(proxy.addr()).await;
    b.send(request.as_bytes()).await;
    // Proving a negative needs a bounded wait.
    assert!(
        b.silent_for(Duration::from_millis(300)).await,
        "B was served while A held the only slot"
    );

    drop(a);
    let resp = b.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.body, pattern_bytes(10));
}

/// RFC 9110 §9.3.2: the proxy's own error response to HEAD has no body, so a
/// kept-alive connection stays in step: the next response is read correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_response_to_head_has_no_body() {
    let origin = Origin::start().await;
    // Default egress: the loopback origin is refused with 403.
    let proxy = start(&config("", "", ""));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(format!("HEAD {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/")).as_bytes())
        .await;
    let first = c.read_response(true).await;
    assert_eq!(first.status, 403, "{}", first.head);
    assert!(first.header("content-length").is_some(), "{}", first.head);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let second = c.read_response(false).await;
    assert_eq!(second.status, 200, "out of step: {}", second.head);
    assert!(String::from_utf8_lossy(&second.body).contains("Postern"));
}

/// The keep-alive limit counts from the end of the last response: a client
/// that comes back within it is served, and one that stays away past it is
/// disconnected then, not at a deadline left over from an earlier wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_limit_counts_from_the_last_response() {
    let origin = Origin::start().await;
    let proxy = start(&config(
        "",
        "allow_private_destinations = true",
        "[timeouts]\nclient_idle = \"600ms\"\n",
    ));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/bytes/10"),
        origin.addr()
    );
    let mut conn = Conn::connect(proxy.addr()).await;
    for _ in 0..3 {
        conn.send(request.as_bytes()).await;
        assert_eq!(conn.read_response(false).await.status, 200);
        // Two thirds of the limit: each wait alone is within it, all three
        // together are not.
        assert!(conn.silent_for(Duration::from_millis(400)).await);
    }
    conn.send(request.as_bytes()).await;
    assert_eq!(conn.read_response(false).await.status, 200);
    let idle = Instant::now();
    assert!(
        conn.closes_within(Duration::from_secs(5)).await,
        "idle connection kept open"
    );
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}, before the limit"
    );
}

/// The first-byte limit applies to each request of a kept-alive connection,
/// not only to the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_limit_applies_to_later_requests_too() {
    let origin = Origin::start().await;
    let proxy = start(&private_config("[timeouts]\nfirst_byte = \"300ms\"\n"));
    let get = |path: &str| {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url(path),
            origin.addr()
        )
    };
    let mut conn = Conn::connect(proxy.addr()).await;
    for _ in 0..2 {
        conn.send(get("/bytes/10").as_bytes()).await;
        assert_eq!(conn.read_response(false).await.status, 200);
    }
    let started = Instant::now();
    conn.send(get("/delay/5000").as_bytes()).await;
    let resp = conn.read_response(false).await;
    assert_eq!(resp.status, 504, "{}", resp.head);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// Targets with multi-byte characters where a scheme would be are refused
/// with 400 and logged like any other request (they once panicked the task
/// that served the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_targets_get_400_and_a_log_line() {
    let proxy = start(&config("", "", ""));
    for target in [
        &b"abcde\xc3\xa9/x"[..],
        b"http:\xc3\xa9//x",
        b"ftp:/\xc3\xa9x",
    ] {
        let mut c = Conn::connect(proxy.addr()).await;
        c.send(&[&b"GET "[..], target, b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat())
            .await;
        let r = c.read_response(false).await;
        assert_eq!(r.status, 400, "{}", r.head);
        assert!(r.header("proxy-status").is_some(), "{}", r.head);
    }
    common::wait_log_line(&proxy, &["/400 "]);
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
}

/// `[http] error_page` replaces the built-in HTML page with the operator's,
/// its placeholders filled (and escaped); CSS braces stay as written, and
/// clients that do not take HTML still get plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_error_page_is_used_for_html_clients() {
    let dir = common::scratch_dir();
    let page = dir.join("error.html");
    std::fs::write(
        &page,
        "<html><style>p { color: red }</style><h1>{status} {reason}</h1><p>{title}</p><p>{detail}</p><code>{error}</code><i>{proxy}</i>{unknown}</html>",
    )
    .unwrap();
    let proxy = start(&config(
        "",
        "",
        &format!(
            "[http]\nvia = \"edge<1>\"\nerror_page = \"{}\"\n",
            page.display()
        ),
    ));
    let url = "http://127.0.0.1/x";
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-H", "Accept: text/html", url]).await;
    assert_eq!(f.status, 403, "{}", f.headers);
    let body = String::from_utf8_lossy(&f.body);
    assert!(body.starts_with("<html><style>p { color: red }</style><h1>403 Forbidden</h1><p>Destination address not allowed</p><p>"), "{body}");
    assert!(
        body.ends_with(
            "<code>destination_ip_prohibited</code><i>edge&lt;1&gt;</i>{unknown}</html>"
        ),
        "{body}"
    );
    assert_eq!(
        f.header("content-length").unwrap(),
        f.body.len().to_string()
    );
    assert!(proxy_status(&f).contains("error=destination_ip_prohibited"));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-H", "Accept: text/plain", url]).await;
    assert_eq!(f.status, 403);
    assert!(String::from_utf8_lossy(&f.body).starts_with("403 Forbidden\n"));
    let _ = std::fs::remove_dir_all(dir);
}
