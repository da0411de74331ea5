//! Response compression on reverse routes (`compress = true`), through the
//! real binary with curl and a raw client: which responses are encoded, the
//! fields that change with them, streaming, the cache, and HTTP/2 clients.

mod common;

use std::io::Read;

use common::{Conn, curl_fetch_async, start};
use postern_testkit::{Origin, TestProxy, check_config, text_bytes};

/// A reverse listener `web` (h2c too) whose route to `origin` compresses,
/// a second listener `plain` whose route does not; `extra` more TOML.
fn compress_config(origin: &Origin, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [log]\naccess = \"{{dir}}/access.log\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\ncompress = true\n\n\
         [[route]]\nlistener = \"plain\"\npool = \"app\"\n\n{extra}\n",
        origin.addr()
    )
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| {
            panic!(
                "not a gzip stream ({e}): {:?}",
                &bytes[..bytes.len().min(40)]
            )
        });
    out
}

fn url(proxy: &TestProxy, listener: &str, path: &str) -> String {
    format!("http://{}{path}", proxy.addr_of(listener))
}

/// GET with `Accept-Encoding: gzip` (curl does not decode it).
async fn get_gzip(url: &str, more: &[&str]) -> common::Fetch {
    let mut args = vec!["-H", "Accept-Encoding: gzip"];
    args.extend_from_slice(more);
    args.push(url);
    curl_fetch_async(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_gzipped_for_clients_that_accept_it() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(&origin, ""));
    let page = text_bytes(5000);

    let r = get_gzip(&url(&proxy, "web", "/text/5000"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.headers);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(r.header("etag").as_deref(), Some("W/\"text-5000\""));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("accept-ranges"), None);
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(r.body.len() < page.len() / 4, "{} bytes", r.body.len());
    assert_eq!(gunzip(&r.body), page);
    // The server was asked as the client asked: the encoding is the proxy's.
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("accept-encoding"), Some("gzip"));

    // curl --compressed decodes it back, byte-exact.
    let r = curl_fetch_async(&["--compressed", &url(&proxy, "web", "/text/5000")]).await;
    assert_eq!(r.body, page);

    // A streamed body without a length is compressed as it comes.
    let r = get_gzip(&url(&proxy, "web", "/text/100000?chunked"), &[]).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(gunzip(&r.body), text_bytes(100_000));

    // The access log counts what was sent: the compressed bytes.
    let line = common::wait_log_line(&proxy, &["/text/100000"]);
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sent: u64 = fields[4].parse().unwrap();
    assert!(sent < 20_000, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_responses_pass_unchanged() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(&origin, ""));
    let page = text_bytes(5000);

    // Not accepted: the body as it is, with Vary for caches downstream.
    for accept in ["identity", "gzip;q=0", "br, deflate", "*;q=0"] {
        let r = curl_fetch_async(&[
            "-H",
            &format!("Accept-Encoding: {accept}"),
            &url(&proxy, "web", "/text/5000"),
        ])
        .await;
        assert_eq!(r.header("content-encoding"), None, "{accept}");
        assert_eq!(r.header("content-length").as_deref(), Some("5000"));
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(r.header("etag").as_deref(), Some("\"text-5000\""));
        assert_eq!(r.body, page);
    }
    // Not a candidate: no Vary either.
    for path in [
        // Below min_length (256 by default).
        "/text/100",
        // Not a listed type.
        "/text/5000?type=image/png",
        // Encoded by the server already.
        "/text/5000?h=Content-Encoding:br",
        // RFC 9110 §7.7: no-transform.
        "/text/5000?h=Cache-Control:no-transform",
        // A status compression leaves alone.
        "/text/5000?h=X-Ignored:1&status=500",
        "/bytes/5000",
    ] {
        let r = get_gzip(&url(&proxy, "web", path), &[]).await;
        assert_eq!(
            r.header("content-encoding")
                .as_deref()
                .filter(|e| *e != "br"),
            None,
            "{path}"
        );
        assert_eq!(r.header("vary"), None, "{path}");
    }
    // A route without `compress`.
    let r = get_gzip(&url(&proxy, "plain", "/text/5000"), &[]).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.body, page);

    // HTTP/1.0 clients cannot take a body of unknown length: identity.
    let mut c = Conn::connect(proxy.addr_of("web")).await;
    c.send(b"GET /text/5000 HTTP/1.0\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
        .await;
    let r = c.read_response(false).await;
    assert_eq!(r.header("content-encoding"), None, "{}", r.head);
    assert_eq!(r.body, page);

    // HEAD: the fields a GET would get, and no body; the connection goes on.
    let mut c = Conn::connect(proxy.addr_of("web")).await;
    c.send(b"HEAD /text/5000 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
        .await;
    let r = c.read_response(true).await;
    assert_eq!(
        r.header("content-encoding").as_deref(),
        Some("gzip"),
        "{}",
        r.head
    );
    assert_eq!(r.header("content-length"), None);
    c.send(b"GET /text/300 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: x-gzip\r\n\r\n")
        .await;
    let r = c.read_response(false).await;
    assert_eq!(
        r.header("content-encoding").as_deref(),
        Some("gzip"),
        "{}",
        r.head
    );
    assert!(r.chunked);
    assert_eq!(gunzip(&r.body), text_bytes(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_one_copy_for_both_kinds_of_client() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(&origin, "[cache]\nmemory = \"8MB\"\n"));
    let page = text_bytes(5000);
    let path = "/text/5000?h=Cache-Control:max-age%3D60";

    let first = get_gzip(&url(&proxy, "web", path), &[]).await;
    assert_eq!(gunzip(&first.body), page);
    assert_eq!(origin.requests(), 1);
    // A hit for a client without gzip: the stored bytes, whole.
    let plain = curl_fetch_async(&[&url(&proxy, "web", path)]).await;
    assert!(
        plain.header("cache-status").unwrap().contains("hit"),
        "{}",
        plain.headers
    );
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("content-length").as_deref(), Some("5000"));
    assert_eq!(plain.header("vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(plain.body, page);
    // A hit for a gzip client: encoded, with a length.
    let hit = get_gzip(&url(&proxy, "web", path), &[]).await;
    assert!(hit.header("cache-status").unwrap().contains("hit"));
    assert_eq!(hit.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(hit.header("etag").as_deref(), Some("W/\"text-5000\""));
    assert_eq!(
        hit.header("content-length"),
        Some(hit.body.len().to_string())
    );
    assert_eq!(gunzip(&hit.body), page);
    // Revalidating the gzip copy by its weak tag: 304 with that tag.
    let not_modified = get_gzip(
        &url(&proxy, "web", path),
        &["-H", "If-None-Match: W/\"text-5000\""],
    )
    .await;
    assert_eq!(not_modified.status, 304, "{}", not_modified.headers);
    assert_eq!(
        not_modified.header("etag").as_deref(),
        Some("W/\"text-5000\"")
    );
    assert_eq!(
        not_modified.header("vary").as_deref(),
        Some("Accept-Encoding")
    );
    // A range is served from the stored bytes, not encoded.
    let range = get_gzip(&url(&proxy, "web", path), &["-H", "Range: bytes=0-99"]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
    assert_eq!(range.body, &page[..100]);
    assert_eq!(
        origin.requests(),
        1,
        "every answer after the first was a hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_gzip_too() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(&origin, "[cache]\nmemory = \"8MB\"\n"));
    let h2 = ["--http2-prior-knowledge"];
    for path in [
        "/text/20000?chunked",
        "/text/5000?h=Cache-Control:max-age%3D60",
    ] {
        for round in 0..2 {
            let r = get_gzip(&url(&proxy, "web", path), &h2).await;
            assert_eq!(r.status, 200, "{}", r.headers);
            assert!(r.headers.starts_with("HTTP/2"), "{}", r.headers);
            assert_eq!(
                r.header("content-encoding").as_deref(),
                Some("gzip"),
                "{path} {round}"
            );
            assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
            assert_eq!(r.header("content-length"), None);
            let n = if path.contains("20000") { 20_000 } else { 5000 };
            assert_eq!(gunzip(&r.body), text_bytes(n), "{path} {round}");
        }
    }
    let r = curl_fetch_async(&["--http2-prior-knowledge", &url(&proxy, "web", "/text/5000")]).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, text_bytes(5000));
    // HEAD over HTTP/2: the fields, no body (a body would be a protocol error).
    let r = get_gzip(
        &url(&proxy, "web", "/text/5000"),
        &["--http2-prior-knowledge", "-I"],
    )
    .await;
    assert_eq!(r.exit, 0, "{}", r.stderr);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
}

/// An HTTP/2 server (h2c) answering `/text/N` as the test origin does.
async fn h2_text_server() -> std::net::SocketAddr {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let n: usize = req
                        .uri()
                        .path()
                        .trim_start_matches("/text/")
                        .parse()
                        .unwrap_or(0);
                    let response = hyper::Response::builder()
                        .header("content-type", "text/plain")
                        .header("content-length", n)
                        .body(Full::new(bytes::Bytes::from(text_bytes(n))))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_of_an_http2_pool_get_gzip() {
    let server = h2_text_server().await;
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [[pool]]\nname = \"h2\"\nservers = [\"{server}\"]\nhttp2 = true\n\n\
         [[route]]\nlistener = \"web\"\npool = \"h2\"\ncompress = true\n"
    );
    let proxy = start(&config);
    let r = get_gzip(&url(&proxy, "web", "/text/9000"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.headers);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(gunzip(&r.body), text_bytes(9000));
    let r = curl_fetch_async(&[&url(&proxy, "web", "/text/9000")]).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length").as_deref(), Some("9000"));
    assert_eq!(r.body, text_bytes(9000));
}

#[test]
fn bad_compression_settings_name_their_line() {
    let bin = env!("CARGO_BIN_EXE_postern");
    let cases = [
        ("[compression]\nlevel = 12\n", "gzip level from 1"),
        ("[compression]\ntypes = [\"html\"]\n", "is not a media type"),
        ("[compression]\nmin_length = \"big\"\n", "`min_length`"),
        (
            "[compression]\nlevels = 3\n",
            "unknown key `levels` (did you mean `level`?)",
        ),
    ];
    let base = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
                [[pool]]\nname = \"app\"\nservers = [\"127.0.0.1:9\"]\n\n\
                [[route]]\nlistener = \"web\"\npool = \"app\"\ncompress = true\n\n";
    for (extra, wanted) in cases {
        let (code, _, err) = check_config(bin, &format!("{base}{extra}"));
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(wanted), "{extra}: {err}");
        assert!(err.contains("postern.toml:16:"), "{extra}: {err}");
    }
    let redirect = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
                    [[route]]\nlistener = \"web\"\nredirect = \"https://$host$request_uri\"\n\
                    compress = true\n";
    let (code, _, err) = check_config(bin, redirect);
    assert_ne!(code, 0);
    assert!(
        err.contains("`compress` does not apply to a route that redirects"),
        "{err}"
    );
}
