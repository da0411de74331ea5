//! Safe defaults: no requests to non-public destinations unless allowed,
//! access rules, and error pages that inform without leaking credentials.

mod common;

use common::{T, config, curl_fetch_async, one_response, private_config, start, wait_log_line};
use postern_testkit::{Origin, pattern_bytes, raw_exchange};

/// No `allow_private_destinations`: the egress default.
fn default_config() -> String {
    config("", "", "")
}

/// Loopback in every spelling is refused with 403 and
/// `destination_ip_prohibited` (RFC 9209 §2.3.4), checked on the resolved
/// address, and the origin never sees a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_destinations_are_refused_by_default() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let proxy = start(&default_config());
    for url in [
        format!("http://127.0.0.1:{port}/bytes/10"),
        format!("http://localhost:{port}/bytes/10"),
        format!("http://[::1]:{port}/bytes/10"),
        format!("http://[::ffff:127.0.0.1]:{port}/bytes/10"),
    ] {
        let f = curl_fetch_async(&["-g", "-x", &proxy.proxy_url(), &url]).await;
        assert_eq!((f.exit, f.status), (0, 403), "{url}: {}", f.stderr);
        let ps = f.header("proxy-status").unwrap_or_default();
        assert!(
            ps.contains("error=destination_ip_prohibited"),
            "{url}: {}",
            f.headers
        );
    }
    assert_eq!(origin.requests(), 0);
    assert_eq!(origin.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_loopback_is_refused_by_default() {
    let proxy = start(&default_config());
    let (resp, _) = one_response(
        proxy.addr(),
        b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.head);
    let ps = resp.header("proxy-status").unwrap_or_default();
    assert!(
        ps.contains("error=destination_ip_prohibited"),
        "{}",
        resp.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_work_when_allowed() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(""));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/bytes/65536")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(65536));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rule_refuses_the_client() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(
        "[[rule]]\naction = \"deny\"\nsrc = [\"127.0.0.0/8\"]\n",
    ));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/bytes/10")]).await;
    assert_eq!((f.exit, f.status), (0, 403), "{}", f.stderr);
    let ps = f.header("proxy-status").unwrap_or_default();
    assert!(ps.contains("error=http_request_denied"), "{}", f.headers);
    assert_eq!(origin.requests(), 0);
    let line = wait_log_line(&proxy, &["/bytes/10"]);
    assert!(line.contains("TCP_DENIED/403"), "{line}");
}

/// Error pages follow the client's Accept: plain text when HTML is not
/// acceptable, HTML otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_page_format_follows_accept() {
    let origin = Origin::start().await;
    let proxy = start(&default_config());
    let url = origin.url("/");
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-H", "Accept: text/plain", &url]).await;
    assert_eq!(f.status, 403, "{}", f.stderr);
    let ct = f.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "{}", f.headers);

    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-H", "Accept:", &url]).await;
    assert_eq!(f.status, 403, "{}", f.stderr);
    let ct = f.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{}", f.headers);
}

/// Credentials sent to the proxy never come back in its error pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_never_echo_proxy_credentials() {
    let origin = Origin::start().await;
    let proxy = start(&default_config());
    const CRED: &str = "Zm9vOmJhcg==";
    let host = origin.addr();
    let cases = [
        // Destination refused.
        format!(
            "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {CRED}\r\n\r\n"
        ),
        // Malformed request (two Host fields).
        format!(
            "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nHost: x\r\nProxy-Authorization: Basic {CRED}\r\n\r\n"
        ),
        // Unsupported scheme.
        format!(
            "GET ftp://{host}/file HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {CRED}\r\n\r\n"
        ),
    ];
    for (i, req) in cases.iter().enumerate() {
        for accept in ["text/html", "text/plain"] {
            let req = req.replace(
                "\r\n\r\n",
                &format!("\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"),
            );
            let reply = raw_exchange(proxy.addr(), req.as_bytes(), T).await;
            let status = reply.status().unwrap_or(0);
            assert!(status >= 400, "case {i} ({accept}): {}", reply.text());
            let head = reply.head();
            let body = String::from_utf8_lossy(reply.body()).into_owned();
            assert!(
                !body.contains("Zm9vOmJhcg"),
                "case {i} ({accept}) body echoes the credential: {body}"
            );
            let head_lines: Vec<&str> = head.split("\r\n").collect();
            assert!(
                !head_lines[1..].iter().any(|l| l.contains("Zm9vOmJhcg")),
                "case {i} ({accept}) header echoes the credential: {head}"
            );
        }
    }
}
