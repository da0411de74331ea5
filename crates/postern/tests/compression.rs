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
    // A range for a client without gzip is cut from the stored bytes.
    let range = curl_fetch_async(&["-H", "Range: bytes=0-99", &url(&proxy, "web", path)]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
    assert_eq!(range.body, &page[..100]);
    // A gzip client gets the whole encoded response instead: a range of the
    // stored bytes would not join its partial copy of the encoded ones
    // (If-Range by date cannot tell them apart).
    let whole = get_gzip(
        &url(&proxy, "web", path),
        &[
            "-H",
            "Range: bytes=100-",
            "-H",
            "If-Range: Tue, 01 Dec 2026 00:00:00 GMT",
        ],
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.headers);
    assert_eq!(whole.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(gunzip(&whole.body), page);
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
            assert_eq!(r.header("etag").as_deref().map(|e| &e[..2]), Some("W/"));
            // An answer from the store (a hit, or confirmed by a 304: the
            // text has an ETag) is encoded whole, once, and sent with its
            // length; one streamed from the server has none.
            let stored = round == 1;
            let length = stored.then(|| r.body.len().to_string());
            assert_eq!(r.header("content-length"), length, "{path} {round}");
            let n = if path.contains("20000") { 20_000 } else { 5000 };
            assert_eq!(gunzip(&r.body), text_bytes(n), "{path} {round}");
        }
    }
    // Revalidating the stored gzip form: 304 with its weak tag and Vary.
    let cached = "/text/5000?h=Cache-Control:max-age%3D60";
    let r = get_gzip(
        &url(&proxy, "web", cached),
        &[
            "--http2-prior-knowledge",
            "-H",
            "If-None-Match: W/\"text-5000\"",
        ],
    )
    .await;
    assert_eq!(r.status, 304, "{}", r.headers);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"text-5000\""));
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(r.header("content-encoding"), None);
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
                        .header("cache-control", "max-age=60")
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
         [[route]]\nlistener = \"web\"\npool = \"h2\"\ncompress = true\n\n\
         [cache]\nmemory = \"8MB\"\n"
    );
    let proxy = start(&config);
    let r = get_gzip(&url(&proxy, "web", "/text/9000"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.headers);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(gunzip(&r.body), text_bytes(9000));
    // A hit: the stored copy, encoded once and sent with its length.
    let r = get_gzip(&url(&proxy, "web", "/text/9000"), &[]).await;
    assert!(
        r.header("cache-status").unwrap().contains("hit"),
        "{}",
        r.headers
    );
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    assert_eq!(gunzip(&r.body), text_bytes(9000));
    let r = curl_fetch_async(&[&url(&proxy, "web", "/text/9000")]).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length").as_deref(), Some("9000"));
    assert_eq!(r.body, text_bytes(9000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodies_and_trailers_keep_their_framing() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(&origin, "[compression]\nmin_length = 0\n"));
    // An empty body is still a whole gzip stream, and the connection goes on.
    let mut c = Conn::connect(proxy.addr_of("web")).await;
    for _ in 0..2 {
        c.send(b"GET /text/0 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
            .await;
        let r = c.read_response(false).await;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(gunzip(&r.body), b"");
    }
    // Trailers follow the encoded body.
    c.send(
        b"GET /text/20000?chunked&trailer HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\
          TE: trailers\r\n\r\n",
    )
    .await;
    let r = c.read_response(false).await;
    assert_eq!(
        r.header("content-encoding").as_deref(),
        Some("gzip"),
        "{}",
        r.head
    );
    assert_eq!(gunzip(&r.body), text_bytes(20_000));
    assert_eq!(r.trailers, vec!["x-trailer: done".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_counts_the_response_not_its_encoding() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(
        &origin,
        "[content]\nmax_response_size = \"50KiB\"\n",
    ));
    // 400 kB of text compress far below the limit; they are cut all the same.
    for more in [&[][..], &["--http2-prior-knowledge"][..]] {
        let r = get_gzip(&url(&proxy, "web", "/text/400000?chunked"), more).await;
        assert_ne!(r.exit, 0, "{more:?}: {} bytes arrived whole", r.body.len());
        let r = get_gzip(&url(&proxy, "web", "/text/40000?chunked"), more).await;
        assert_eq!(r.exit, 0, "{more:?}: {}", r.stderr);
        assert_eq!(gunzip(&r.body), text_bytes(40_000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_encodings_and_header_rules_are_respected() {
    let origin = Origin::start().await;
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = true\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\ncompress = true\n\
         response_remove = [\"ETag\"]\nresponse_set = {{ Vary = \"Origin\" }}\n\n\
         [cache]\nmemory = \"8MB\"\n",
        origin.addr()
    );
    let proxy = start(&config);
    for more in [&[][..], &["--http2-prior-knowledge"][..]] {
        // Encoded by the server in a second Content-Encoding line.
        let r = get_gzip(
            &url(
                &proxy,
                "web",
                "/text/5000?h=Content-Encoding:identity&h=Content-Encoding:br",
            ),
            more,
        )
        .await;
        assert!(
            !r.headers.to_ascii_lowercase().contains("gzip"),
            "{}",
            r.headers
        );
        assert_eq!(r.body, text_bytes(5000));
        // The route's rules stand, and compression's Vary joins theirs:
        // from the server, then from the store (the same rules on hits).
        let path = "/text/5000?h=Vary:Accept-Encoding&h=Cache-Control:max-age%3D60";
        for round in 0..2 {
            let r = get_gzip(&url(&proxy, "web", path), more).await;
            let hit = r.header("cache-status").is_some_and(|s| s.contains("hit"));
            assert_eq!(hit, round == 1, "{}", r.headers);
            assert_eq!(
                r.header("content-encoding").as_deref(),
                Some("gzip"),
                "{}",
                r.headers
            );
            assert_eq!(r.header("etag"), None, "{}", r.headers);
            let varies: Vec<String> = r
                .headers
                .lines()
                .filter(|l| l.to_ascii_lowercase().starts_with("vary:"))
                .map(|l| l[5..].trim().to_ascii_lowercase())
                .collect();
            assert!(varies.iter().any(|v| v == "origin"), "{varies:?}");
            assert!(varies.iter().any(|v| v == "accept-encoding"), "{varies:?}");
            assert_eq!(gunzip(&r.body), text_bytes(5000));
        }
        // The next protocol's requests start with an empty store.
        let purged = curl_fetch_async(&["-X", "PURGE", &url(&proxy, "web", path)]).await;
        assert_eq!(purged.status, 200, "{}", purged.headers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_from_the_server_keeps_the_gzip_forms_tag() {
    let origin = Origin::start().await;
    let proxy = start(&compress_config(&origin, ""));
    for more in [&[][..], &["--http2-prior-knowledge"][..]] {
        let mut args = vec!["-H", "If-None-Match: W/\"text-5000\""];
        args.extend_from_slice(more);
        let r = get_gzip(&url(&proxy, "web", "/text/5000"), &args).await;
        assert_eq!(r.status, 304, "{}", r.headers);
        assert_eq!(r.header("etag").as_deref(), Some("W/\"text-5000\""));
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(r.header("content-encoding"), None);
        // A client holding the identity form (the strong tag) keeps it.
        let mut args = vec!["-H", "If-None-Match: \"text-5000\""];
        args.extend_from_slice(more);
        let r = get_gzip(&url(&proxy, "web", "/text/5000"), &args).await;
        assert_eq!(r.status, 304, "{}", r.headers);
        assert_eq!(r.header("etag").as_deref(), Some("\"text-5000\""));
        assert_eq!(r.header("vary"), None);
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_of_an_http2_pool_meet_the_content_rules() {
    let server = h2_text_server().await;
    let config = |content: &str, compress: bool| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
             [[pool]]\nname = \"h2\"\nservers = [\"{server}\"]\nhttp2 = true\n\n\
             [[route]]\nlistener = \"web\"\npool = \"h2\"\ncompress = {compress}\n\n\
             [content]\n{content}\n"
        )
    };
    for compress in [false, true] {
        let denied = start(&config("deny_types = [\"text/plain\"]", compress));
        let r = get_gzip(&url(&denied, "web", "/text/9000"), &[]).await;
        assert_eq!(r.status, 403, "{}", r.headers);
        let proxy_status = r.header("proxy-status").unwrap_or_default();
        assert!(proxy_status.contains("error="), "{}", r.headers);

        let limited = start(&config("max_response_size = \"4KiB\"", compress));
        let r = get_gzip(&url(&limited, "web", "/text/9000"), &[]).await;
        assert_eq!(r.status, 502, "{}", r.headers);
        assert!(
            r.header("proxy-status")
                .is_some_and(|s| s.contains("http_response_body_size")),
            "{}",
            r.headers
        );
        let r = get_gzip(&url(&limited, "web", "/text/3000"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.headers);
    }
}
