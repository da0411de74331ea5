//! HTTP/2 from clients on TLS listeners: curl `--http2` against a reverse
//! listener, trailers end to end, and an HTTP/2 forward proxy with plain
//! requests and CONNECT streams (driven by hyper's HTTP/2 client).

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{curl_fetch_async, scratch_dir, start};
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use postern_testkit::{Origin, TestCa, TestProxy, pattern_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn write_cert(ca: &TestCa, dir: &Path, names: &[&str]) -> (String, String) {
    let (cert, key) = ca.issue_pem(names);
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (
        c.to_string_lossy().into_owned(),
        k.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_through_a_reverse_listener() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let proxy = tls_reverse(
        &ca,
        &dir,
        origin.addr(),
        "[log]\naccess = \"{dir}/access.log\"\n\n",
    );
    let base = format!("https://localhost:{}", proxy.addr().port());
    let ca_pem = ca.write_ca_pem(&dir);
    let ca_pem = ca_pem.to_string_lossy();
    let f = curl_fetch_async(&[
        "--http2",
        "--cacert",
        &ca_pem,
        "-w",
        " %{http_version}",
        &format!("{base}/bytes/100000"),
    ])
    .await;
    assert_eq!(f.exit, 0, "{}", f.stderr);
    assert!(f.headers.starts_with("HTTP/2 200"), "{}", f.headers);
    assert_eq!(f.body, pattern_bytes(100_000));
    // Logged once the body was sent, with its size.
    common::wait_log_line(&proxy, &["TCP_MISS/200 100000 GET", "/bytes/100000"]);
    // A streamed upload goes to the HTTP/1.1 server chunked and comes back.
    let upload = dir.join("upload");
    std::fs::write(&upload, pattern_bytes(70_000)).unwrap();
    let f = curl_fetch_async(&[
        "--http2",
        "--cacert",
        &ca_pem,
        "-H",
        "Transfer-Encoding:",
        "--data-binary",
        &format!("@{}", upload.display()),
        &format!("{base}/echo"),
    ])
    .await;
    assert_eq!(f.exit, 0, "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(70_000));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_share_kept_connections_to_servers() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let proxy = tls_reverse(&ca, &dir, origin.addr(), "");
    let get = |path: &str| {
        Request::builder()
            .uri(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let mut sender = h2_client(&ca, proxy.addr()).await;
    for _ in 0..20 {
        let r = sender.send_request(get("/bytes/5000")).await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, pattern_bytes(5000));
    }
    assert_eq!(origin.connections(), 1, "one kept connection served all 20");
    // Concurrent streams need more connections, but they are kept too.
    for _round in 0..3 {
        let mut streams = Vec::new();
        for _ in 0..8 {
            let mut s = sender.clone();
            let req = get("/bytes/2000");
            streams.push(tokio::spawn(async move {
                let r = s.send_request(req).await.unwrap();
                r.into_body().collect().await.unwrap().to_bytes().len()
            }));
        }
        for t in streams {
            assert_eq!(t.await.unwrap(), 2000);
        }
    }
    assert!(origin.connections() <= 9, "{}", origin.connections());
    // A server that closes after each response: every request still succeeds.
    for _ in 0..5 {
        let r = sender
            .send_request(get("/bytes/10?h=connection:close"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_of_a_reverse_listener_hold_for_http2_clients() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let rules = "[[rule]]\naction = \"deny\"\nurl_regex = [\"^/status/2\"]\n\n[[rule]]\naction = \"allow\"\n";
    let proxy = tls_reverse(&ca, &dir, origin.addr(), rules);
    let ca_pem = ca.write_ca_pem(&dir);
    let base = format!("https://localhost:{}", proxy.addr().port());
    for (path, want) in [("/status/200", 403), ("/status/404", 404)] {
        let f = curl_fetch_async(&[
            "--http2",
            "--cacert",
            &ca_pem.to_string_lossy(),
            &format!("{base}{path}"),
        ])
        .await;
        assert!(f.headers.starts_with("HTTP/2"), "{}", f.headers);
        assert_eq!(f.status, want, "{path}");
    }
    assert_eq!(origin.requests(), 1, "the denied request never left");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_use_the_cache() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let proxy = tls_reverse(&ca, &dir, origin.addr(), "[cache]\nmemory = \"16MiB\"\n\n");
    let ca_pem = ca.write_ca_pem(&dir);
    let ca_pem = ca_pem.to_string_lossy().into_owned();
    let base = format!("https://localhost:{}", proxy.addr().port());
    let fetch = |version: &'static str, path: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![version.into(), "--cacert".into(), ca_pem.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{base}{path}"));
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            curl_fetch_async(&refs).await
        }
    };
    let path = "/chunked/40000?h=cache-control:max-age=60";
    let miss = fetch("--http2", path, &[]).await;
    assert_eq!(miss.body, pattern_bytes(40_000));
    let cs = miss.header("cache-status").unwrap();
    assert!(cs.contains("fwd=uri-miss") && cs.contains("stored"), "{cs}");
    let hit = fetch("--http2", path, &[]).await;
    assert!(hit.headers.starts_with("HTTP/2 200"), "{}", hit.headers);
    assert_eq!(hit.body, pattern_bytes(40_000));
    assert!(hit.header("cache-status").unwrap().contains("hit"));
    assert!(hit.header("age").is_some());
    // One store for both protocols; ranges come from it too.
    let h1 = fetch("--http1.1", path, &["-r", "0-9"]).await;
    assert_eq!(h1.status, 206);
    assert_eq!(h1.body, &pattern_bytes(40_000)[..10]);
    let h2_range = fetch("--http2", path, &["-r", "100-109"]).await;
    assert_eq!(h2_range.status, 206);
    assert_eq!(h2_range.body, &pattern_bytes(40_000)[100..110]);
    assert_eq!(origin.requests(), 1);
    // RFC 9111 §4.4: a successful unsafe request invalidates.
    let post = fetch("--http2", path, &["-d", "x"]).await;
    assert_eq!(post.status, 200);
    let after = fetch("--http2", path, &[]).await;
    assert!(
        after
            .header("cache-status")
            .unwrap()
            .contains("fwd=uri-miss")
    );
    assert_eq!(origin.requests(), 3);
    // RFC 9111 §4.3: a stale response is validated with its ETag, and the
    // origin's 304 refreshes it (§4.3.4); the client gets the stored body.
    let stale = "/etag/v1?h=cache-control:max-age=0";
    let first = fetch("--http2", stale, &[]).await;
    assert_eq!(first.body, b"tag v1");
    let again = fetch("--http2", stale, &[]).await;
    assert_eq!(again.status, 200, "{}", again.headers);
    assert_eq!(again.body, b"tag v1");
    let cs = again.header("cache-status").unwrap();
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    let seen = origin.last_request().unwrap();
    assert!(
        seen.headers
            .iter()
            .any(|(n, v)| n == "if-none-match" && v == "\"v1\""),
        "{:?}",
        seen.headers
    );
    assert_eq!(origin.requests(), 5);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_misses_for_one_url_are_collapsed() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let proxy = tls_reverse(&ca, &dir, origin.addr(), "[cache]\nmemory = \"16MiB\"\n\n");
    let sender = h2_client(&ca, proxy.addr()).await;
    // Eight streams at once for a slow answer: one goes to the origin, the
    // others wait for its copy.
    let asks = (0..8).map(|_| {
        let mut sender = sender.clone();
        async move {
            let req = Request::get("https://localhost/delay/300?h=cache-control:max-age=60")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            let cs = resp.headers()["cache-status"].to_str().unwrap().to_string();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, cs, body)
        }
    });
    let answers = futures_join_all(asks).await;
    for (status, cs, body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(&body[..], b"delayed", "{cs}");
    }
    let hits = answers
        .iter()
        .filter(|(_, cs, _)| cs.contains("hit"))
        .count();
    assert_eq!(hits, 7, "{answers:?}");
    assert_eq!(origin.requests(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the futures concurrently, in order of their results.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_reaches_an_http1_server() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let proxy = tls_reverse(&ca, &dir, origin.addr(), "");
    let mut h2 = h2_client(&ca, proxy.addr()).await;
    // A first request: the proxy's SETTINGS (with ENABLE_CONNECT_PROTOCOL)
    // have arrived before the extended CONNECTs.
    let first = Request::get("https://localhost/bytes/1")
        .body(Empty::new())
        .unwrap();
    assert_eq!(h2.send_request(first).await.unwrap().status(), 200);
    let extended = |path: &str, protocol: &'static str| {
        Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://localhost{path}"))
            .extension(hyper::ext::Protocol::from_static(protocol))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // RFC 8441: the stream becomes the server's upgraded connection, and
    // what the switch agreed on (a subprotocol, say) reaches the client.
    let resp = h2
        .send_request(extended(
            "/upgrade?h=sec-websocket-protocol:chat",
            "testproto",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    assert!(resp.headers().get("upgrade").is_none());
    let mut tunnel = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    tunnel.write_all(b"ping over h2").await.unwrap();
    let mut echo = [0u8; 12];
    tunnel.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping over h2");
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.method, "GET");
    assert!(
        seen.headers
            .contains(&("upgrade".into(), "testproto".into()))
    );
    // A WebSocket request gets the key HTTP/1.1 servers require; a refusal
    // keeps its status.
    let resp = h2
        .send_request(extended("/status/426", "websocket"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 426);
    let seen = origin.last_request().unwrap();
    let key = seen.headers.iter().find(|(n, _)| n == "sec-websocket-key");
    assert_eq!(key.map(|(_, v)| v.len()), Some(24), "{:?}", seen.headers);
    // A server that answers 200 without switching is not taken for a tunnel.
    let resp = h2
        .send_request(extended("/bytes/5", "websocket"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    // `:protocol` must be a token: it becomes a field of the HTTP/1.1 head.
    let resp = h2.send_request(extended("/upgrade", "test proto")).await;
    assert!(resp.is_err() || resp.unwrap().status() == 400);
    drop(tunnel);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_keep_their_sticky_server() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (d, e) = (Origin::start().await, Origin::start().await);
    let proxy = tls_reverse_pool(
        &ca,
        &dir,
        &[d.addr(), e.addr()],
        "sticky_cookie = \"SRV\"\n",
    );
    let mut h2 = h2_client(&ca, proxy.addr()).await;
    let get = |cookie: Option<&str>| {
        let mut req = Request::get("https://localhost/status/200");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    let first = h2.send_request(get(None)).await.unwrap();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("SRV=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let pinned = if d.requests() == 1 { &d } else { &e };
    for _ in 0..9 {
        let r = h2.send_request(get(Some(&pair))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("set-cookie").is_none());
    }
    assert_eq!(pinned.requests(), 10, "the cookie pins the client");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_hashed_on_the_configured_key() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (d, e) = (Origin::start().await, Origin::start().await);
    let proxy = tls_reverse_pool(
        &ca,
        &dir,
        &[d.addr(), e.addr()],
        "balance = \"hash\"\nhash_on = \"header:x-user\"\n",
    );
    let mut h2 = h2_client(&ca, proxy.addr()).await;
    // All from one address: only the header can spread them.
    for user in 0..20 {
        let before = (d.requests(), e.requests());
        for _ in 0..3 {
            let req = Request::get("https://localhost/status/200")
                .header("x-user", format!("user-{user}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
        }
        let after = (d.requests() - before.0, e.requests() - before.1);
        assert!(
            after == (3, 0) || after == (0, 3),
            "user-{user} split: {after:?}"
        );
    }
    assert!(
        d.requests() > 0 && e.requests() > 0,
        "20 users on one server"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A TLS reverse listener `web` (a certificate for localhost from `ca`)
/// sending everything to `origin`; `extra` adds tables.
fn tls_reverse(ca: &TestCa, dir: &Path, origin: std::net::SocketAddr, extra: &str) -> TestProxy {
    tls_reverse_pool(ca, dir, &[origin], extra)
}

/// The same over several servers. `extra` comes right after the pool's
/// `servers`: keys of the pool, then any tables.
fn tls_reverse_pool(
    ca: &TestCa,
    dir: &Path,
    servers: &[std::net::SocketAddr],
    extra: &str,
) -> TestProxy {
    let (cert, key) = write_cert(ca, dir, &["localhost"]);
    let servers: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    let servers = servers.join(", ");
    start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\
         tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [{servers}]\n{extra}\n"
    ))
}

/// An HTTP/2 connection to `addr` over TLS trusting `ca`.
async fn h2_client(
    ca: &TestCa,
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let mut config = (*ca.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_forward_proxy_with_trailers_and_connect() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (cert, key) = write_cert(&ca, &dir, &["localhost"]);
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let proxy = start(&format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n\
         [egress]\nallow_private_destinations = true\nconnect_ports = [{port}]\n\n\
         [log]\naccess = \"{{dir}}/access.log\"\n"
    ));
    let mut h2 = h2_client(&ca, proxy.addr()).await;

    // A plain request: :scheme http, :authority the origin.
    let req = Request::builder()
        .uri(origin.url("/chunked/50000"))
        .header("te", "trailers")
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("via").is_some());
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), Bytes::from(pattern_bytes(50_000)));
    assert_eq!(
        trailers
            .and_then(|t| t.get("x-trailer").cloned())
            .as_ref()
            .map(|v| v.as_bytes()),
        Some(&b"done"[..]),
        "trailers must arrive over HTTP/2"
    );

    // CONNECT (RFC 9113 §8.5): a tunnel inside one stream.
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("127.0.0.1:{port}"))
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut tunnel = TokioIo::new(upgraded);
    tunnel
        .write_all(b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tunnel.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(got.ends_with(&pattern_bytes(1000)));

    // Refusals keep Proxy-Status on HTTP/2 too.
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("127.0.0.1:22")
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["proxy-status"]
            .to_str()
            .unwrap()
            .contains("http_request_denied")
    );
    // Extended CONNECT (RFC 8441) is for reverse listeners: a forward proxy
    // must not pass WebSocket frames to an origin that never upgraded.
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(origin.url("/upgrade"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 501);
    // User information is refused, and its password never logged.
    let req = Request::builder()
        .uri(format!("http://bob:S3CRETPW@127.0.0.1:{port}/userinfo"))
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let line = common::wait_log_line(&proxy, &["/userinfo"]);
    assert!(!line.contains("S3CRETPW"), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_forward_traffic_goes_through_the_parent() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (cert, key) = write_cert(&ca, &dir, &["localhost"]);
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let parent = start(&common::config(
        "",
        &format!("allow_private_destinations = true\nconnect_ports = [{port}]"),
        "",
    ));
    let proxy = start(&format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\nparent = \"up\"\n\
         tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n\
         [egress]\nallow_private_destinations = true\nconnect_ports = [{port}]\n\n\
         [[pool]]\nname = \"up\"\nservers = [\"{}\"]\n",
        parent.addr()
    ));
    let mut h2 = h2_client(&ca, proxy.addr()).await;
    for _ in 0..2 {
        let req = Request::builder()
            .uri(origin.url("/bytes/5000"))
            .body(Empty::new())
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, Bytes::from(pattern_bytes(5000)));
    }
    // The parent fetched it (absolute-form request), over one kept connection.
    common::wait_log_line(&parent, &["TCP_MISS/200", "/bytes/5000"]);
    assert_eq!(origin.connections(), 1);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("127.0.0.1:{port}"))
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut tunnel = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    tunnel
        .write_all(b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tunnel.read_to_end(&mut got).await.unwrap();
    assert!(got.ends_with(&pattern_bytes(1000)));
    drop(tunnel);
    // The parent logs the tunnel when it ends.
    common::wait_log_line(&parent, &["TCP_TUNNEL/200"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A body of one data frame and then trailers, as gRPC responses end.
struct DataThenTrailers(Option<Bytes>, Option<hyper::HeaderMap>);

impl hyper::body::Body for DataThenTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use hyper::body::Frame;
        if let Some(data) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(data))));
        }
        std::task::Poll::Ready(self.1.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// An HTTP/2-only server (h2c) answering like a gRPC service: body, then
/// trailers with `grpc-status`. `x-served` numbers its answers (the counter
/// is returned too). A query with `cache` makes the answer cacheable for a
/// minute; with `swr`, stale at once but usable for a minute while it is
/// revalidated, with an ETag that a conditional request gets 304 for.
async fn grpc_like_server() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        async move {
                            let version = req.version();
                            let query = req.uri().query().unwrap_or_default().to_string();
                            let validated = req
                                .headers()
                                .get("if-none-match")
                                .is_some_and(|v| v == "\"g1\"");
                            let got = req.into_body().collect().await.unwrap().to_bytes();
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let body = DataThenTrailers(
                                Some(Bytes::from(format!("{version:?} echo:{}", got.len()))),
                                Some(trailers),
                            );
                            let mut response = hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("x-served", n);
                            if query.contains("cache") {
                                response = response.header("cache-control", "max-age=60");
                            }
                            if query.contains("swr") {
                                response = response
                                    .header("cache-control", "max-age=0, stale-while-revalidate=60")
                                    .header("etag", "\"g1\"");
                                if validated {
                                    let empty = DataThenTrailers(None, None);
                                    return Ok(response.status(304).body(empty).unwrap());
                                }
                            }
                            Ok::<_, std::convert::Infallible>(response.body(body).unwrap())
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_of_an_http2_pool_use_the_cache() {
    let (server, served) = grpc_like_server().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [cache]\nmemory = \"8MiB\"\n\n\
         [[pool]]\nname = \"grpc\"\nservers = [\"{server}\"]\nhttp2 = true\n\n\
         [[route]]\nlistener = \"web\"\npool = \"grpc\"\n"
    ));
    let request = b"GET /items?cache HTTP/1.1\r\nHost: x\r\n\r\n";
    let (miss, mut conn) = common::one_response(proxy.addr(), request).await;
    assert_eq!(miss.status, 200, "{}", miss.head);
    assert!(
        miss.header("cache-status").unwrap().contains("stored"),
        "{}",
        miss.head
    );
    assert_eq!(miss.body, b"HTTP/2.0 echo:0");
    // The same connection: answered from the cache, with a length.
    conn.send(request).await;
    let hit = conn.read_response(false).await;
    assert_eq!(hit.status, 200, "{}", hit.head);
    assert!(
        hit.header("cache-status").unwrap().contains("hit"),
        "{}",
        hit.head
    );
    assert_eq!(hit.header("x-served"), miss.header("x-served"));
    assert_eq!(hit.body, b"HTTP/2.0 echo:0");
    // HTTP/2 clients share the stored copy.
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, h2_conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(h2_conn);
    let req = Request::get("http://x/items?cache")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert!(
        resp.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    assert_eq!(
        resp.headers()["x-served"].to_str().unwrap(),
        miss.header("x-served").unwrap()
    );
    // Stale-while-revalidate: answered stale at once, then revalidated in
    // the background over HTTP/2, the only protocol these servers speak.
    let swr = b"GET /items?swr HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.send(swr).await;
    let first = conn.read_response(false).await;
    assert!(first.header("cache-status").unwrap().contains("stored"));
    let before = served.load(std::sync::atomic::Ordering::SeqCst);
    conn.send(swr).await;
    let stale = conn.read_response(false).await;
    assert!(
        stale.header("cache-status").unwrap().contains("hit"),
        "{}",
        stale.head
    );
    assert_eq!(stale.body, b"HTTP/2.0 echo:0");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served.load(std::sync::atomic::Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no background revalidation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Cleartext HTTP/2 to a reverse listener: the server is told `http`, and
/// cookie crumbs reach it as one field (RFC 9113 §8.2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_say_http_and_join_their_cookies() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let url = format!("http://{}/status/200", proxy.addr());
    let f = common::curl_fetch_async(&[
        "--http2-prior-knowledge",
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2",
        &url,
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert!(
        seen.header("forwarded")
            .is_some_and(|v| v.ends_with("proto=http")),
        "{:?}",
        seen.header("forwarded")
    );
    let cookies: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, vec!["a=1; b=2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_over_h2c_both_ways() {
    let (server, _) = grpc_like_server().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"grpc\"\nservers = [\"{server}\"]\nhttp2 = true\n\n\
         [[route]]\nlistener = \"web\"\npool = \"grpc\"\n"
    ));
    // Prior knowledge: HTTP/2 without TLS from the first byte.
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/helloworld.Greeter/SayHello",
            proxy.addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"\0\0\0\0\x05hello",
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(b"HTTP/2.0 echo:10")
    );
    // The same listener still speaks HTTP/1.1 to everyone else, and their
    // requests reach the HTTP/2-only server as HTTP/2: the answer comes back
    // chunked, with the server's trailers.
    let (resp, mut conn) =
        common::one_response(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert!(resp.chunked, "{}", resp.head);
    assert_eq!(resp.body, b"HTTP/2.0 echo:0");
    assert_eq!(resp.trailers, vec!["grpc-status: 0".to_string()]);
    // On the same connection: an upload with a length, then a chunked one.
    conn.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let resp = conn.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.body, b"HTTP/2.0 echo:5");
    conn.send(
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await;
    let resp = conn.read_response(false).await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.body, b"HTTP/2.0 echo:7");
    // An HTTP/1.0 client gets the body delimited by the close.
    let (resp, _) = common::one_response(proxy.addr(), b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert!(!resp.chunked && resp.head.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(resp.body, b"HTTP/2.0 echo:0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_idempotent_requests_are_retried_on_another_server() {
    let bad = postern_testkit::RawOrigin::start(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
    )
    .await;
    let good = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\", \"{}\"]\nretries = 2\nretry_budget = 1.0\n\
         [pool.outlier]\nconsecutive_failures = 0\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        bad.addr(),
        good.addr()
    ));
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Round robin sends every other GET to the failing server first.
    for _ in 0..10 {
        let req = Request::builder()
            .uri(format!("http://{}/status/200", proxy.addr()))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert!(good.requests() >= 10, "{}", good.requests());
    // A POST with a body is not sent twice: its 503 reaches the client.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}/echo", proxy.addr()))
            .body(http_body_util::Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        statuses.push(resp.status().as_u16());
        resp.into_body().collect().await.unwrap();
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

/// A request body fed from a channel, for requests that stay open.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// A body that ends at once.
    fn empty() -> ChannelBody {
        ChannelBody(tokio::sync::mpsc::channel(1).1)
    }
}

/// An HTTP/2 connection by prior knowledge (h2c) to `addr`.
async fn h2c_sender(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<ChannelBody> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// An HTTP/2 client's request counts toward its server's max_connections
/// until its response has been passed on, not only until the response head
/// arrives: a second request waits in the queue meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_hold_their_server_while_the_response_streams() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\nmax_connections = 1\nqueue_timeout = \"300ms\"\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let sender = h2c_sender(proxy.addr()).await;
    // An echo whose request, and so whose response, stays open.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let echo = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/echo", proxy.addr()))
        .body(ChannelBody(rx))
        .unwrap();
    tx.send(Bytes::from_static(b"first part")).await.unwrap();
    let mut streaming = sender.clone().send_request(echo).await.unwrap();
    assert_eq!(streaming.status(), 200);
    let part = streaming.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(part.into_data().unwrap(), Bytes::from_static(b"first part"));
    // The server is busy with the echo: the next request queues and times out.
    let plain = |sender: &hyper::client::conn::http2::SendRequest<ChannelBody>| {
        let req = Request::builder()
            .uri(format!("http://{}/bytes/10", proxy.addr()))
            .body(ChannelBody::empty())
            .unwrap();
        sender.clone().send_request(req)
    };
    let queued = plain(&sender).await.unwrap();
    assert_eq!(queued.status(), 503, "{:?}", queued.headers());
    // Once the echo has ended, the server takes requests again.
    drop(tx);
    let rest = streaming.into_body().collect().await.unwrap().to_bytes();
    assert!(rest.is_empty(), "{rest:?}");
    let after = plain(&sender).await.unwrap();
    assert_eq!(after.status(), 200);
}

/// For HTTP/2 clients, as for HTTP/1 ones: a pool's `per_try_timeout` is
/// the time a server has to answer, and that time starts once the request
/// body is out, so a slow upload is not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_answer_timeouts_start_after_the_upload() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [timeouts]\nfirst_byte = \"5s\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\nper_try_timeout = \"1s\"\nretries = 0\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let sender = h2c_sender(proxy.addr()).await;
    // A server slower than per_try_timeout: 504 after it, not after first_byte.
    let slow = Request::builder()
        .uri(format!("http://{}/delay/3000", proxy.addr()))
        .body(ChannelBody::empty())
        .unwrap();
    let started = std::time::Instant::now();
    let resp = sender.clone().send_request(slow).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
    // An upload that takes longer than per_try_timeout, answered once whole.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let upload = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/expect", proxy.addr()))
        .body(ChannelBody(rx))
        .unwrap();
    let feeding = tokio::spawn(async move {
        for _ in 0..3 {
            tx.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        }
    });
    let resp = sender.clone().send_request(upload).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"got 3000 bytes");
    feeding.await.unwrap();
}

/// A stream the client resets while its request waits for the server is
/// still logged, as cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_is_still_logged() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n\n\
         [log]\naccess = \"{{dir}}/access.log\"\n",
        origin.addr()
    ));
    let sender = h2c_sender(proxy.addr()).await;
    let slow = Request::builder()
        .uri(format!("http://{}/delay/30000", proxy.addr()))
        .body(ChannelBody::empty())
        .unwrap();
    let waiting = tokio::spawn(sender.clone().send_request(slow));
    // Once the server has the request, the client gives up on it.
    let deadline = std::time::Instant::now() + common::T;
    while origin.requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    waiting.abort();
    common::wait_log_line(&proxy, &["/delay/30000"]);
}

/// `limits.client_connections` counts concurrent HTTP/2 streams beyond the
/// first as connections (as nginx does): one HTTP/2 connection cannot open
/// more upstream connections than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_count_toward_the_connection_limit() {
    let origin = Origin::start().await;
    let proxy = start(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\n\
         [egress]\nallow_private_destinations = true\n\n\
         [limits]\nclient_connections = 2\n\n\
         [log]\naccess = \"{dir}/access.log\"\n",
    );
    let sender = h2c_sender(proxy.addr()).await;
    let mut all = Vec::new();
    for _ in 0..4 {
        let req = Request::builder()
            .uri(origin.url("/delay/1500"))
            .body(ChannelBody::empty())
            .unwrap();
        all.push(tokio::spawn(sender.clone().send_request(req)));
    }
    let mut statuses = Vec::new();
    for a in all {
        statuses.push(a.await.unwrap().unwrap().status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    // The slots come back with the streams.
    let again = Request::builder()
        .uri(origin.url("/status/204"))
        .body(ChannelBody::empty())
        .unwrap();
    assert_eq!(
        sender.clone().send_request(again).await.unwrap().status(),
        204
    );
}

/// A stored response the server confirms with 304 is logged as Squid logs
/// it (TCP_REFRESH_UNMODIFIED) for HTTP/2 clients too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_revalidations_are_logged_as_refreshes() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n\n\
         [cache]\nmemory = \"8MiB\"\n\n\
         [log]\naccess = \"{{dir}}/access.log\"\n",
        origin.addr()
    ));
    let sender = h2c_sender(proxy.addr()).await;
    let url = format!("http://{}/etag/v1?h=cache-control:max-age=0", proxy.addr());
    for _ in 0..2 {
        let req = Request::builder()
            .uri(&url)
            .body(ChannelBody::empty())
            .unwrap();
        let resp = sender.clone().send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"tag v1");
    }
    assert_eq!(origin.requests(), 2);
    common::wait_log_line(&proxy, &["TCP_REFRESH_UNMODIFIED/200", "/etag/v1"]);
}
