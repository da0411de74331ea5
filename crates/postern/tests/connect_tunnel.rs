//! CONNECT tunnels (RFC 9110 §9.3.6) through the real binary: HTTPS end to
//! end with curl, the port allow-list, refused destinations and half-close.

mod common;

use common::{Conn, T, config, curl_fetch_async, one_response, start, wait_log_line};
use postern_testkit::{TestCa, TlsOrigin, pattern_bytes, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn tunnel_config(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    config(
        "",
        &format!(
            "allow_private_destinations = true\nconnect_ports = [{}]",
            list.join(", ")
        ),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_connect_is_byte_exact_and_logged() {
    let ca = TestCa::new();
    let origin = TlsOrigin::start(&ca).await;
    let port = origin.addr().port();
    let proxy = start(&tunnel_config(&[443, port]));
    let ca_pem = ca.write_ca_pem(proxy.dir());
    let f = curl_fetch_async(&[
        "-p",
        "-x",
        &proxy.proxy_url(),
        "--cacert",
        &ca_pem.to_string_lossy(),
        &origin.url("/bytes/100000"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(100_000));
    assert_eq!(origin.requests(), 1);
    let line = wait_log_line(&proxy, &["CONNECT"]);
    assert!(line.contains("TCP_TUNNEL/200"), "{line}");
    assert!(
        line.contains(&format!("CONNECT localhost:{port}")),
        "{line}"
    );
}

/// Safe default: CONNECT only reaches the configured ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_port_not_allowed_is_forbidden() {
    let proxy = start(&tunnel_config(&[443]));
    let (resp, _) = one_response(
        proxy.addr(),
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.head);
    let ps = resp.header("proxy-status").unwrap_or_default();
    assert!(ps.contains("error=http_request_denied"), "{}", resp.head);
}

/// RFC 9110 §9.3.6: the CONNECT target is authority-form, and the port is
/// required there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_port_is_bad_request() {
    let proxy = start(&tunnel_config(&[443]));
    let reply = raw_exchange(
        proxy.addr(),
        b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        T,
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{}", reply.text());
    assert!(reply.closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_closed_port_is_bad_gateway() {
    // A port nothing listens on: bind one, learn it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = start(&tunnel_config(&[443, port]));
    let req = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let (resp, _) = one_response(proxy.addr(), req.as_bytes()).await;
    assert_eq!(resp.status, 502, "{}", resp.head);
    let ps = resp.header("proxy-status").unwrap_or_default();
    assert!(ps.contains("error=connection_refused"), "{}", resp.head);
}

/// A half-close from the client is passed on, and the server's answer still
/// comes back through the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_passes_half_close_and_returns_the_answer() {
    // Echo server: read to EOF, then answer with everything and close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        got.len()
    });
    let proxy = start(&tunnel_config(&[443, port]));
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await;
    let head = c.read_head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    let payload = pattern_bytes(200_000);
    c.send(&payload).await;
    c.stream.shutdown().await.expect("half-close");
    let back = c.read_to_end().await;
    assert_eq!(back.len(), payload.len(), "echo length after half-close");
    assert!(back == payload, "echo differs");
    let seen = tokio::time::timeout(T, server)
        .await
        .expect("echo server finished")
        .unwrap();
    assert_eq!(seen, payload.len());
}

/// Bulk transfers switch the tunnel to kernel-side copying (splice on Linux)
/// after the first 64 KiB: both directions must stay byte-exact across the
/// switch, which TLS would also detect as a MAC failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_tunnel_both_directions_is_byte_exact() {
    let ca = TestCa::new();
    let origin = TlsOrigin::start(&ca).await;
    let port = origin.addr().port();
    let proxy = start(&tunnel_config(&[443, port]));
    let ca_pem = ca.write_ca_pem(proxy.dir());
    let f = curl_fetch_async(&[
        "-p",
        "-x",
        &proxy.proxy_url(),
        "--cacert",
        &ca_pem.to_string_lossy(),
        &origin.url("/bytes/8388608"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert!(f.body == pattern_bytes(8 << 20), "8 MiB download differs");

    let upload = proxy.dir().join("upload.bin");
    std::fs::write(&upload, pattern_bytes(3 << 20)).unwrap();
    let f = curl_fetch_async(&[
        "-p",
        "-x",
        &proxy.proxy_url(),
        "--cacert",
        &ca_pem.to_string_lossy(),
        "--data-binary",
        &format!("@{}", upload.display()),
        &origin.url("/echo"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert!(f.body == pattern_bytes(3 << 20), "3 MiB echo differs");
}

/// A tunnel with no traffic either way for `timeouts.tunnel_idle` is closed
/// (both ends), and the access log records why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed() {
    // A server that accepts and then says nothing, holding the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        // Returns once the proxy closes its side.
        let _ = s.read_to_end(&mut sink).await;
    });
    let cfg = tunnel_config(&[443, port]).replace(
        "[log]",
        "[timeouts]\ntunnel_idle = \"300ms\"\n[log]\nformat = \"json\"\n",
    );
    let proxy = start(&cfg);
    let mut c = Conn::connect(proxy.addr()).await;
    c.send(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    let head = c.read_head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    assert!(
        c.closes_within(std::time::Duration::from_secs(5)).await,
        "idle tunnel still open"
    );
    tokio::time::timeout(T, server)
        .await
        .expect("server side closed too")
        .unwrap();
    let line = wait_log_line(&proxy, &["CONNECT"]);
    assert!(
        line.contains("\"error\":\"connection_read_timeout\""),
        "{line}"
    );
}

/// Bytes a client sends right after CONNECT (optimistically, before the 200)
/// must never be read as a new request when the CONNECT is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_closes_the_connection() {
    let origin = postern_testkit::Origin::start().await;
    let proxy = start(&tunnel_config(&[443]));
    let request = format!(
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\nGET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url("/bytes/3")
    );
    let reply = raw_exchange(proxy.addr(), request.as_bytes(), T).await;
    assert_eq!(reply.status(), Some(403), "{}", reply.text());
    assert!(reply.closed, "connection kept open after a refused CONNECT");
    assert_eq!(
        reply.text().matches("HTTP/1.1 ").count(),
        1,
        "{}",
        reply.text()
    );
    assert_eq!(origin.requests(), 0);
}
