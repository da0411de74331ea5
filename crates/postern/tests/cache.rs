//! The RFC 9111 shared cache through a forward listener, section by section:
//! storing and hits (§3, §4), Age (§5.1), Vary (§4.1), validation and 304
//! merging (§4.3), invalidation (§4.4), request directives (§5.2.1),
//! Authorization (§3.5), HEAD and Range from a stored GET, collapsing, and
//! stale-if-error (RFC 5861).

mod common;

use std::time::Duration;

use common::{Fetch, curl_fetch_async, private_config, start};
use postern_testkit::{Origin, TestProxy, pattern_bytes};

fn cache_proxy() -> TestProxy {
    start(&private_config(
        "[cache]\nmemory = \"64MiB\"\nmax_object_size = \"1MiB\"\n",
    ))
}

async fn get(proxy: &TestProxy, url: &str, extra: &[&str]) -> Fetch {
    let mut args = vec!["-x", proxy.proxy_url_str()];
    args.extend_from_slice(extra);
    args.push(url);
    curl_fetch_async(&args).await
}

trait ProxyUrl {
    fn proxy_url_str(&self) -> &'static str;
}

impl ProxyUrl for TestProxy {
    fn proxy_url_str(&self) -> &'static str {
        Box::leak(self.proxy_url().into_boxed_str())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_are_served_from_the_cache_with_age() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/bytes/20000?h=cache-control:max-age=60");
    let miss = get(&proxy, &url, &[]).await;
    assert_eq!(miss.status, 200);
    let cs = miss.header("cache-status").unwrap();
    assert!(cs.contains("fwd=uri-miss") && cs.contains("stored"), "{cs}");
    let hit = get(&proxy, &url, &[]).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.body, pattern_bytes(20_000));
    let cs = hit.header("cache-status").unwrap();
    assert!(cs.contains("hit") && cs.contains("ttl="), "{cs}");
    assert!(hit.header("age").is_some());
    assert_eq!(origin.requests(), 1);
    common::wait_log_line(&proxy, &["TCP_HIT/200"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_stored_is_not() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    for (i, url) in [
        origin.url("/bytes/10?h=cache-control:no-store"),
        origin.url("/bytes/11?h=cache-control:private,max-age=60"),
        origin.url("/bytes/12?h=vary:*&h=cache-control:max-age=60"),
        origin.url("/status/302"),
        // Errors a request provokes, even when marked fresh (cache-poisoned
        // denial of service: one bad request must not deny the URL).
        origin.url("/status/400?h=cache-control:max-age=60"),
        origin.url("/status/431?h=cache-control:max-age=60"),
    ]
    .iter()
    .enumerate()
    {
        get(&proxy, url, &[]).await;
        get(&proxy, url, &[]).await;
        assert_eq!(
            origin.requests(),
            2 * (i + 1),
            "{url} was served from the cache"
        );
    }
    // §3.5: Authorization without explicit permission.
    let url = origin.url("/bytes/13?h=cache-control:max-age=60");
    get(&proxy, &url, &["-H", "Authorization: Basic eDp5"]).await;
    get(&proxy, &url, &["-H", "Authorization: Basic eDp5"]).await;
    assert_eq!(origin.requests(), 14);
    // Request no-store: neither served from nor stored.
    let url = origin.url("/bytes/14?h=cache-control:max-age=60");
    get(&proxy, &url, &["-H", "Cache-Control: no-store"]).await;
    get(&proxy, &url, &[]).await;
    assert_eq!(origin.requests(), 16);
    // Any other final status the origin marks fresh is stored (RFC 9111 §3).
    let url = origin.url("/status/503?h=cache-control:max-age=60");
    assert_eq!(get(&proxy, &url, &[]).await.status, 503);
    let again = get(&proxy, &url, &[]).await;
    assert_eq!(again.status, 503);
    assert!(again.header("cache-status").unwrap().contains("hit"));
    assert_eq!(origin.requests(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/headers?h=cache-control:max-age=60&h=vary:accept-language");
    let en = get(&proxy, &url, &["-H", "Accept-Language: en"]).await;
    let fr = get(&proxy, &url, &["-H", "Accept-Language: fr"]).await;
    assert!(String::from_utf8_lossy(&en.body).contains("accept-language: en"));
    assert!(String::from_utf8_lossy(&fr.body).contains("accept-language: fr"));
    let en2 = get(&proxy, &url, &["-H", "Accept-Language:   en"]).await;
    assert_eq!(en2.body, en.body);
    assert!(en2.header("cache-status").unwrap().contains("hit"));
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_responses_are_validated_and_304_refreshes_them() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/etag/v1?h=cache-control:max-age=0&h=x-version:1");
    let first = get(&proxy, &url, &[]).await;
    assert_eq!(first.body, b"tag v1");
    let second = get(&proxy, &url, &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, b"tag v1");
    let cs = second.header("cache-status").unwrap();
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    // §4.3.4: fields from the 304 replace the stored ones.
    assert_eq!(second.header("x-version").as_deref(), Some("1"));
    // Logged under Squid's name for a stored response the origin confirmed.
    common::wait_log_line(&proxy, &["TCP_REFRESH_UNMODIFIED/200"]);
    assert_eq!(origin.requests(), 2);
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("if-none-match"), Some("\"v1\""));
    // The client's own conditional is answered from the cache.
    let cond = get(&proxy, &url, &["-H", "If-None-Match: \"v1\""]).await;
    assert_eq!(cond.status, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_at_once_and_revalidates_in_the_background() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/etag/v1?h=cache-control:max-age=0,%20stale-while-revalidate=60&h=x-v:1");
    swr_round(&origin, |extra| get(&proxy, &url, extra)).await;
    // The same through a reverse listener, whose servers come from a pool.
    let origin = Origin::start().await;
    let reverse = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n[[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let url = format!(
        "http://{}/etag/v1?h=cache-control:max-age=0,%20stale-while-revalidate=60",
        reverse.addr()
    );
    swr_round(&origin, |extra| {
        let mut args = extra.to_vec();
        args.push(&url);
        async move { curl_fetch_async(&args).await }
    })
    .await;
    // And through a parent proxy: the refresh goes through the parent too.
    let origin = Origin::start().await;
    let parent = start(&private_config(""));
    let child = start(&common::config(
        "parent = \"up\"",
        "allow_private_destinations = true",
        &format!(
            "[cache]\nmemory = \"16MiB\"\n\n[[pool]]\nname = \"up\"\nservers = [\"{}\"]\n",
            parent.addr()
        ),
    ));
    let url = origin.url("/etag/v1?h=cache-control:max-age=0,%20stale-while-revalidate=60");
    swr_round(&origin, |extra| get(&child, &url, extra)).await;
    common::wait_log_line(&parent, &["TCP_MISS/304", "/etag/v1"]);
}

async fn swr_round<'a, F, Fut>(origin: &Origin, get: F)
where
    F: Fn(&'a [&'a str]) -> Fut,
    Fut: std::future::Future<Output = Fetch>,
{
    assert_eq!(get(&[]).await.body, b"tag v1");
    assert_eq!(origin.requests(), 1);
    // RFC 5861 §3: the stale response is served without waiting for the
    // origin (a hit, not a foreground validation)…
    let stale = get(&["-H", "Range: bytes=0-2"]).await;
    assert_eq!(stale.status, 206);
    assert_eq!(stale.body, b"tag");
    let cs = stale.header("cache-status").unwrap();
    assert!(cs.contains("hit") && !cs.contains("fwd="), "{cs}");
    // …and the cache revalidates it by itself, with its own validators and
    // without the client's Range.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while origin.requests() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background revalidation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("if-none-match"), Some("\"v1\""));
    assert_eq!(seen.header("range"), None);
    let again = get(&[]).await;
    assert_eq!(again.body, b"tag v1");
    assert!(again.header("cache-status").unwrap().contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_directives_are_honoured() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/bytes/100?h=cache-control:max-age=60");
    get(&proxy, &url, &[]).await;
    let nc = get(&proxy, &url, &["-H", "Cache-Control: no-cache"]).await;
    assert!(
        nc.header("cache-status").unwrap().contains("fwd="),
        "no-cache went upstream"
    );
    let ma = get(&proxy, &url, &["-H", "Cache-Control: max-age=0"]).await;
    assert!(ma.header("cache-status").unwrap().contains("fwd="));
    assert_eq!(origin.requests(), 3);
    let oic = get(
        &proxy,
        &origin.url("/bytes/1?x=never"),
        &["-H", "Cache-Control: only-if-cached"],
    )
    .await;
    assert_eq!(oic.status, 504);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_ranges_come_from_a_stored_get() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/bytes/1000?h=cache-control:max-age=60");
    get(&proxy, &url, &[]).await;
    let head = get(&proxy, &url, &["-I"]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("1000"));
    let range = get(&proxy, &url, &["-r", "10-19"]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &pattern_bytes(1000)[10..20]);
    assert_eq!(
        range.header("content-range").as_deref(),
        Some("bytes 10-19/1000")
    );
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_and_if_range_from_a_stored_get() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/bytes/1000?h=cache-control:max-age=60&h=etag:%22v1%22");
    get(&proxy, &url, &[]).await;
    let body = pattern_bytes(1000);
    // RFC 9110 §14.6: multipart/byteranges, ranges in order, overlaps coalesced.
    let multi = get(&proxy, &url, &["-r", "500-509,0-4,2-6"]).await;
    assert_eq!(multi.status, 206);
    let ct = multi.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    let mut expected = Vec::new();
    for (a, b) in [(0usize, 6usize), (500, 509)] {
        expected.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Range: bytes {a}-{b}/1000\r\n\r\n"
            )
            .as_bytes(),
        );
        expected.extend_from_slice(&body[a..=b]);
    }
    expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(multi.body, expected);
    assert_eq!(
        multi.header("content-length"),
        Some(expected.len().to_string())
    );
    let past_end = get(&proxy, &url, &["-r", "2000-3000"]).await;
    assert_eq!(past_end.status, 416);
    assert_eq!(
        past_end.header("content-range").as_deref(),
        Some("bytes */1000")
    );
    // §13.1.5: If-Range with the current strong ETag keeps the range; an
    // old one gets the whole response.
    let same = get(&proxy, &url, &["-r", "0-9", "-H", "If-Range: \"v1\""]).await;
    assert_eq!(same.status, 206);
    assert_eq!(same.body, &body[..10]);
    let changed = get(&proxy, &url, &["-r", "0-9", "-H", "If-Range: \"v0\""]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, body);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/echo?h=cache-control:max-age=60");
    get(&proxy, &url, &[]).await;
    get(&proxy, &url, &[]).await;
    assert_eq!(origin.requests(), 1);
    let post = get(&proxy, &url, &["-d", "x"]).await;
    assert_eq!(post.status, 200);
    get(&proxy, &url, &[]).await;
    assert_eq!(
        origin.requests(),
        3,
        "the POST invalidated the stored response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_collapse_into_one_request() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/delay/400?h=cache-control:max-age=60");
    let mut all = Vec::new();
    for _ in 0..8 {
        let (proxy_url, url) = (proxy.proxy_url(), url.clone());
        all.push(tokio::spawn(async move {
            curl_fetch_async(&["-x", &proxy_url, &url]).await.status
        }));
    }
    for a in all {
        assert_eq!(a.await.unwrap(), 200);
    }
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_client_holds_the_others_back_five_seconds_at_most() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(
        "[cache]\nmemory = \"128MiB\"\nmax_object_size = \"64MiB\"\n",
    ));
    let size = 32 << 20;
    let url = origin.url(&format!("/bytes/{size}?h=cache-control:max-age=60"));
    // The first request's client takes the head, then stops reading: its
    // copy cannot be stored before the body has reached it.
    let mut slow = common::Conn::connect(proxy.addr()).await;
    let request = format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr());
    slow.send(request.as_bytes()).await;
    assert!(slow.read_head().await.starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let f = get(&proxy, &url, &[]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body.len(), size);
    // Waited for the first one (5 s, not the 60 s first-byte timeout), then
    // went to the origin.
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(origin.requests(), 2);
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_short_is_not_stored() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/reset/5000?h=cache-control:max-age=60");
    let first = get(&proxy, &url, &[]).await;
    assert_ne!(first.exit, 0);
    let _ = get(&proxy, &url, &[]).await;
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_an_origin_that_went_away() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/bytes/300?h=cache-control:max-age=1,stale-if-error=60");
    get(&proxy, &url, &[]).await;
    drop(origin);
    // Wait until the stored response is stale (max-age=1).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let f = get(&proxy, &url, &[]).await;
    assert_eq!(f.status, 200, "{}", f.headers);
    assert_eq!(f.body, pattern_bytes(300));
    assert!(f.header("cache-status").unwrap().contains("fwd=stale"));
    common::wait_log_line(&proxy, &["TCP_REFRESH_FAIL_OLD/200"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_cache_serves_stale_unless_forbidden() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let ok = origin.url("/bytes/300?h=cache-control:max-age=1");
    let strict = origin.url("/bytes/301?h=cache-control:max-age=1,must-revalidate");
    let never_fresh = origin.url("/bytes/302?h=cache-control:max-age=0");
    for url in [&ok, &strict, &never_fresh] {
        get(&proxy, url, &[]).await;
    }
    drop(origin);
    // Wait until the stored responses are stale (max-age=1).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // RFC 9111 §4.2.4: the origin cannot be reached; stale may stand in…
    let f = get(&proxy, &ok, &[]).await;
    assert_eq!(f.status, 200, "{}", f.headers);
    assert_eq!(f.body, pattern_bytes(300));
    assert!(f.header("cache-status").unwrap().contains("fwd=stale"));
    // …unless the response forbids it or was never fresh, or the client
    // wants it validated.
    assert_eq!(get(&proxy, &strict, &[]).await.status, 502);
    assert_eq!(get(&proxy, &never_fresh, &[]).await.status, 502);
    let insist = get(&proxy, &ok, &["-H", "Cache-Control: no-cache"]).await;
    assert_eq!(insist.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_listeners_revalidate_with_the_stored_validators() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n[[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let url = format!("http://{}/etag/v1?h=cache-control:max-age=0", proxy.addr());
    assert_eq!(curl_fetch_async(&[&url]).await.body, b"tag v1");
    let second = curl_fetch_async(&[&url]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, b"tag v1");
    let cs = second.header("cache-status").unwrap();
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("if-none-match"), Some("\"v1\""));
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_error_reaches_the_client_when_nothing_may_cover_it() {
    let origin = Origin::start().await;
    // One server and the default retries: no other server could answer.
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n[[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let url = format!("http://{}/status/503?h=x-from:origin", proxy.addr());
    let f = curl_fetch_async(&[&url]).await;
    assert_eq!(f.status, 503);
    assert_eq!(f.header("x-from").as_deref(), Some("origin"));
    assert_eq!(f.body, b"status 503");
    // A stale stored response without stale-if-error does not hide the
    // origin's answer either (RFC 5861 §4 is what allows serving stale).
    let flaky = flaky_origin().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{flaky}\"]\n\n[[route]]\nlistener = \"web\"\npool = \"app\"\n"
    ));
    let url = format!("http://{}/page", proxy.addr());
    assert_eq!(curl_fetch_async(&[&url]).await.status, 200);
    let f = curl_fetch_async(&[&url]).await;
    assert_eq!(f.status, 503);
    assert_eq!(f.body, b"busy");
    assert!(f.header("proxy-status").is_none(), "the origin's own 503");
}

/// An origin whose first answer is a stale-at-once 200 and every later one
/// a 503.
async fn flaky_origin() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            served += 1;
            let reply: &[u8] = if served == 1 {
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\nETag: \"a\"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
            };
            let _ = s.write_all(reply).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_steers_reverse_listeners_only() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [egress]\nallow_private_destinations = true\nhttp_ports = [{}]\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n[[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr().port(),
        origin.addr()
    ));
    let web = proxy.addr_of("web");
    let forward = format!("http://{}", proxy.addr_of("proxy"));
    let twice = |url: String, via_forward: bool| {
        let forward = forward.clone();
        async move {
            let mut hits = 0;
            for _ in 0..2 {
                let f = if via_forward {
                    curl_fetch_async(&["-x", &forward, &url]).await
                } else {
                    curl_fetch_async(&[&url]).await
                };
                assert_eq!(f.status, 200, "{url}");
                hits += usize::from(f.header("cache-status").unwrap().contains("hit"));
            }
            hits
        }
    };
    // RFC 9213: a CDN obeys CDN-Cache-Control instead of Cache-Control…
    let cdn_only = "/bytes/10?h=cache-control:no-store&h=cdn-cache-control:max-age=60";
    assert_eq!(twice(format!("http://{web}{cdn_only}"), false).await, 1);
    let cdn_forbids = "/bytes/11?h=cache-control:max-age=60&h=cdn-cache-control:no-store";
    assert_eq!(twice(format!("http://{web}{cdn_forbids}"), false).await, 0);
    // …an invalid one is ignored…
    let invalid = "/bytes/12?h=cache-control:max-age=60&h=cdn-cache-control:Max-Age%20=%200";
    assert_eq!(twice(format!("http://{web}{invalid}"), false).await, 1);
    // …and a forward proxy is not a CDN.
    let host = origin.addr();
    assert_eq!(twice(format!("http://{host}{cdn_only}&f=1"), true).await, 0);
    assert_eq!(
        twice(format!("http://{host}{cdn_forbids}&f=1"), true).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_listeners_cache_and_purge() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n[[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let url = format!(
        "http://{}/bytes/5000?h=cache-control:s-maxage=60",
        proxy.addr()
    );
    for _ in 0..3 {
        let f = curl_fetch_async(&[&url]).await;
        assert_eq!(f.body, pattern_bytes(5000));
    }
    assert_eq!(origin.requests(), 1);
    let purge = curl_fetch_async(&["-X", "PURGE", &url]).await;
    assert_eq!(
        purge.status,
        200,
        "{}",
        String::from_utf8_lossy(&purge.body)
    );
    let f = curl_fetch_async(&[&url]).await;
    assert!(f.header("cache-status").unwrap().contains("fwd=uri-miss"));
    assert_eq!(origin.requests(), 2);
    // By prefix.
    let prefix = format!("http://{}/bytes*", proxy.addr());
    let purge = curl_fetch_async(&["-X", "PURGE", &prefix]).await;
    assert_eq!(purge.status, 200);
    let again = curl_fetch_async(&["-X", "PURGE", &prefix]).await;
    assert_eq!(again.status, 404);
}

/// The disk tier across a restart, and across SIGKILL while it is being
/// written under load: every response served afterwards is byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_tier_survives_restarts_and_sigkill() {
    let origin = Origin::start().await;
    let dir = common::scratch_dir();
    let toml = private_config(&format!(
        "[cache]\nmemory = \"1MiB\"\ndisk = {{ path = \"{}\", size = \"64MiB\" }}\n",
        dir.join("objects").display()
    ));
    let url = |n: usize| origin.url(&format!("/bytes/{n}?h=cache-control:max-age=600"));
    let first = start(&toml);
    for n in 1000..1040 {
        assert_eq!(get(&first, &url(n), &[]).await.status, 200);
    }
    // Load on many more URLs, killed in the middle of it.
    let proxy_url = first.proxy_url();
    let load = {
        let urls: Vec<String> = (2000..2400).map(url).collect();
        tokio::spawn(async move {
            let client = common::reqwest_via(&proxy_url);
            for u in urls {
                if let Ok(r) = client.get(&u).send().await {
                    let _ = r.bytes().await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.signal(9);
    first.wait_exit(common::T);
    let _ = load.await;
    drop(first);

    let second = start(&toml);
    let mut hits = 0;
    for n in (1000..1040).chain(2000..2400) {
        let f = get(&second, &url(n), &[]).await;
        assert_eq!(f.status, 200, "{n}");
        assert_eq!(f.body, pattern_bytes(n), "response {n} is not byte-exact");
        if f.header("cache-status").is_some_and(|c| c.contains("hit")) {
            hits += 1;
        }
    }
    assert!(hits >= 40, "only {hits} responses came back from disk");
    let _ = std::fs::remove_dir_all(dir);
}

/// A proxy whose memory tier keeps responses of at most 4 KiB and whose
/// disk tier in `dir` keeps larger ones.
fn disk_config(dir: &std::path::Path) -> String {
    private_config(&format!(
        "[cache]\nmemory = \"16MiB\"\nmax_object_size = \"4KiB\"\n\
         disk = {{ path = \"{}\", size = \"64MiB\", max_object_size = \"1MiB\" }}\n",
        dir.join("objects").display()
    ))
}

/// Stops `proxy` with SIGTERM: it exits once its background disk writes
/// are done.
fn stop(proxy: TestProxy) {
    proxy.signal(15);
    assert!(
        proxy.wait_exit(common::T).is_some(),
        "the proxy did not stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_kept_only_on_disk_are_served_from_disk() {
    let origin = Origin::start().await;
    let dir = common::scratch_dir();
    let url = origin.url("/bytes/20000?h=cache-control:max-age=600");
    // Larger than the memory tier keeps: stored on disk only.
    let first = start(&disk_config(&dir));
    let miss = get(&first, &url, &[]).await;
    assert!(miss.header("cache-status").unwrap().contains("stored"));
    stop(first);
    let proxy = start(&disk_config(&dir));
    for _ in 0..2 {
        let hit = get(&proxy, &url, &[]).await;
        assert_eq!(hit.status, 200);
        assert_eq!(hit.body, pattern_bytes(20_000));
        let cs = hit.header("cache-status").unwrap();
        assert!(cs.contains("hit"), "{cs}");
    }
    assert_eq!(origin.requests(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A small origin written for one test: each connection carries one
/// request (its body, if any, is read), answered with what `reply` makes of
/// the request head, then closed.
struct Scripted {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Scripted {
    async fn start(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Scripted {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reply = std::sync::Arc::new(reply);
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (count, reply) = (count.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = common::header_in(&head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let answer = reply(&head);
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(&answer).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Scripted { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// RFC 9111 §4.4 and PURGE against the disk tier: a response still being
/// written to disk when its URL is invalidated must not come back when the
/// write is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_is_not_undone_by_a_disk_write_in_progress() {
    // Large enough that writing it to disk takes a while; a POST is
    // answered at once.
    let size = 32 << 20;
    let origin = Scripted::start(move |head| {
        if head.starts_with("POST") {
            return b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec();
        }
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {size}\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes();
        r.extend_from_slice(&pattern_bytes(size));
        r
    })
    .await;
    let dir = common::scratch_dir();
    let toml = private_config(&format!(
        "[cache]\nmemory = \"128MiB\"\nmax_object_size = \"64MiB\"\n\
         disk = {{ path = \"{}\", size = \"256MiB\", max_object_size = \"64MiB\" }}\n",
        dir.join("objects").display()
    ));
    let (posted, purged) = (origin.url("/posted"), origin.url("/purged"));
    let proxy = start(&toml);
    // Each stored, then removed at once, while its disk write runs.
    assert_eq!(get(&proxy, &posted, &[]).await.status, 200);
    assert_eq!(get(&proxy, &posted, &["-d", "x"]).await.status, 204);
    assert_eq!(get(&proxy, &purged, &[]).await.status, 200);
    let purge = get(&proxy, &purged, &["-X", "PURGE"]).await;
    assert_eq!(
        purge.status,
        200,
        "{}",
        String::from_utf8_lossy(&purge.body)
    );
    assert_eq!(origin.requests(), 3);
    // Once the writes are done (the proxy waits for them to stop), the
    // disk tier holds neither.
    stop(proxy);
    let proxy = start(&toml);
    let mut back = Vec::new();
    for url in [&posted, &purged] {
        let f = get(&proxy, url, &[]).await;
        assert_eq!(f.status, 200);
        let cs = f.header("cache-status").unwrap();
        if !cs.contains("fwd=uri-miss") {
            back.push(format!("{url}: {cs}"));
        }
    }
    assert!(back.is_empty(), "removed responses came back: {back:?}");
    assert_eq!(origin.requests(), 5);
    let _ = std::fs::remove_dir_all(dir);
}

/// A TLS reverse listener (offering HTTP/2) with a cache, in front of
/// `origin`; and curl's arguments to trust its certificate.
fn tls_reverse_cache(
    dir: &std::path::Path,
    origin: std::net::SocketAddr,
) -> (TestProxy, Vec<String>) {
    let ca = postern_testkit::TestCa::new();
    let (cert, key) = ca.issue_pem(&["localhost"]);
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [cache]\nmemory = \"16MiB\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{origin}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        c.display(),
        k.display()
    ));
    let ca_pem = ca.write_ca_pem(dir).to_string_lossy().into_owned();
    (proxy, vec!["--http2".into(), "--cacert".into(), ca_pem])
}

/// RFC 9111 §5.2.1.7: a request with only-if-cached is answered from
/// storage or with 504, and never sent to the origin, also when the stored
/// response is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_never_reaches_the_origin() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    // Stored, and stale at once.
    let url = origin.url("/bytes/100?h=cache-control:max-age=0&h=etag:%22a%22");
    assert_eq!(get(&proxy, &url, &[]).await.status, 200);
    let oic = get(&proxy, &url, &["-H", "Cache-Control: only-if-cached"]).await;
    assert_eq!(oic.status, 504);
    assert_eq!(origin.requests(), 1);
    // A stale response the request accepts is served.
    let stale_ok = ["-H", "Cache-Control: only-if-cached, max-stale"];
    let f = get(&proxy, &url, &stale_ok).await;
    assert_eq!((f.status, f.body), (200, pattern_bytes(100)));
    assert_eq!(origin.requests(), 1);

    // The same for HTTP/2 clients.
    let dir = common::scratch_dir();
    let (h2, args) = tls_reverse_cache(&dir, origin.addr());
    let h2_url = format!(
        "https://localhost:{}/bytes/101?h=cache-control:max-age=0&h=etag:%22a%22",
        h2.addr().port()
    );
    let fetch = |extra: &[&str]| {
        let mut all = args.clone();
        all.extend(extra.iter().map(|s| s.to_string()));
        all.push(h2_url.clone());
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            curl_fetch_async(&refs).await
        }
    };
    let first = fetch(&[]).await;
    assert!(first.headers.starts_with("HTTP/2 200"), "{}", first.headers);
    assert_eq!(origin.requests(), 2);
    let oic = fetch(&["-H", "Cache-Control: only-if-cached"]).await;
    assert_eq!(oic.status, 504);
    let f = fetch(&stale_ok).await;
    assert_eq!((f.status, f.body), (200, pattern_bytes(101)));
    assert_eq!(origin.requests(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// Served stale within stale-while-revalidate, an only-if-cached request
/// does not start the background revalidation either (§5.2.1.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_starts_no_background_revalidation() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/etag/v1?h=cache-control:max-age=0,%20stale-while-revalidate=60");
    assert_eq!(get(&proxy, &url, &[]).await.status, 200);
    let only = [
        "-H",
        "X-Client: only",
        "-H",
        "Cache-Control: only-if-cached",
    ];
    let f = get(&proxy, &url, &only).await;
    assert_eq!((f.status, f.body.as_slice()), (200, &b"tag v1"[..]));
    // A plain request served stale starts the revalidation.
    let f = get(&proxy, &url, &["-H", "X-Client: plain"]).await;
    assert_eq!(f.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while origin.requests() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background revalidation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The one revalidation is the plain request's.
    let seen = origin.last_request().unwrap();
    assert_eq!(seen.header("x-client"), Some("plain"));
    assert_eq!(origin.requests(), 2);
}

/// A Cache-Control line with a byte that is not UTF-8 (obs-text, RFC 9110
/// §5.5) still forbids storing: no-store and private hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_and_private_hold_beside_bytes_that_are_not_utf8() {
    let origin = Scripted::start(|head| {
        let cc: &[u8] = if head.contains("/private") {
            b"private, max-age=60, x=\"caf\xe9\""
        } else {
            b"no-store, max-age=60, x=\"\xff\""
        };
        // Heuristically fresh for a day, were the line ignored.
        let mut r = b"HTTP/1.1 200 OK\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
                      Cache-Control: "
            .to_vec();
        r.extend_from_slice(cc);
        r.extend_from_slice(b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        r
    })
    .await;
    let proxy = cache_proxy();
    for (i, path) in ["/no-store", "/private"].iter().enumerate() {
        let url = origin.url(path);
        for _ in 0..2 {
            let f = get(&proxy, &url, &[]).await;
            assert_eq!((f.status, f.body.as_slice()), (200, &b"ok"[..]));
        }
        assert_eq!(
            origin.requests(),
            2 * (i + 1),
            "{path} was served from the cache"
        );
    }
}

/// A 416 to one request's Range and a 412 to one request's precondition
/// are answers to that request, not to the URL: they are never stored and
/// served to the next request, however fresh the origin marks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_a_requests_range_or_preconditions_are_not_stored() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    for (i, (path, provoke)) in [
        (
            "/status/416?h=cache-control:max-age=60",
            ["-r", "5000-6000"],
        ),
        (
            "/status/412?h=cache-control:max-age=60",
            ["-H", "If-Match: \"x\""],
        ),
        ("/status/428?h=cache-control:max-age=60", ["-H", "X-No: 1"]),
    ]
    .iter()
    .enumerate()
    {
        let url = origin.url(path);
        let first = get(&proxy, &url, provoke).await;
        let cs = first.header("cache-status").unwrap();
        assert!(!cs.contains("stored"), "{path}: {cs}");
        get(&proxy, &url, &[]).await;
        assert_eq!(
            origin.requests(),
            2 * (i + 1),
            "{path} was served from the cache"
        );
    }
}

/// RFC 9110 §13.2.1: a client's conditional request is answered 304 only
/// when the stored response is a 2xx; a stored 404 with matching
/// validators is still a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_no_304_from_a_stored_error() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url(
        "/status/404?h=cache-control:max-age=60&h=etag:%22x%22\
         &h=last-modified:Mon,%2001%20Jan%202024%2000:00:00%20GMT",
    );
    assert_eq!(get(&proxy, &url, &[]).await.status, 404);
    for condition in [
        "If-None-Match: \"x\"",
        "If-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT",
    ] {
        let f = get(&proxy, &url, &["-H", condition]).await;
        assert_eq!(f.status, 404, "{condition}");
        assert_eq!(f.body, b"status 404");
        assert!(f.header("cache-status").unwrap().contains("hit"));
    }
    // A stored 200 still answers them with 304.
    let ok = origin.url("/bytes/10?h=cache-control:max-age=60&h=etag:%22y%22");
    get(&proxy, &ok, &[]).await;
    let f = get(&proxy, &ok, &["-H", "If-None-Match: \"y\""]).await;
    assert_eq!(f.status, 304);
    assert_eq!(origin.requests(), 2);
}

/// An origin whose stored response ("one", ETag "v1") is stale at once,
/// and which then answers the cache's validation with a 304 carrying
/// another strong ETag ("v2"), and an unconditional request with "two".
async fn origin_with_a_changed_tag() -> Scripted {
    let first = std::sync::atomic::AtomicBool::new(true);
    Scripted::start(move |head| {
        let reply = |status: &str, tag: &str, cc: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\nETag: \"{tag}\"\r\nCache-Control: {cc}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return reply("200 OK", "v1", "max-age=0", "one");
        }
        if common::header_in(head, "if-none-match").is_some() {
            // RFC 9110 §15.4.5: no content, so no Content-Length of it.
            return b"HTTP/1.1 304 Not Modified\r\nETag: \"v2\"\r\nCache-Control: max-age=600\r\n\
                     Connection: close\r\n\r\n"
                .to_vec();
        }
        reply("200 OK", "v2", "max-age=600", "two")
    })
    .await
}

/// RFC 9111 §4.3.4: a 304 whose strong validator no stored response has
/// updates none. The stored response is served as it was (with its own
/// ETag), not refreshed, and the next request fetches the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_with_another_strong_etag_updates_nothing() {
    let origin = origin_with_a_changed_tag().await;
    let proxy = cache_proxy();
    let url = origin.url("/tagged");
    assert_eq!(get(&proxy, &url, &[]).await.body, b"one");
    let validated = get(&proxy, &url, &[]).await;
    assert_eq!(validated.status, 200);
    assert_eq!(validated.body, b"one");
    assert_eq!(validated.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(origin.requests(), 2);
    let next = get(&proxy, &url, &[]).await;
    assert_eq!(next.body, b"two", "{}", next.headers);
    assert_eq!(next.header("etag").as_deref(), Some("\"v2\""));
    assert_eq!(origin.requests(), 3);

    // The same for HTTP/2 clients.
    let origin = origin_with_a_changed_tag().await;
    let dir = common::scratch_dir();
    let (h2, mut args) = tls_reverse_cache(&dir, origin.addr);
    args.push(format!("https://localhost:{}/tagged", h2.addr().port()));
    let fetch = || {
        let args = args.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            curl_fetch_async(&refs).await
        }
    };
    assert_eq!(fetch().await.body, b"one");
    let validated = fetch().await;
    assert_eq!(validated.body, b"one");
    assert_eq!(validated.header("etag").as_deref(), Some("\"v1\""));
    let next = fetch().await;
    assert_eq!(next.body, b"two", "{}", next.headers);
    assert_eq!(origin.requests(), 3);
    let _ = std::fs::remove_dir_all(dir);
}

/// An origin whose responses are stale on arrival, by an old Date
/// (`/old-date`) or a large Age (`/old-age`), and which answers validation
/// with a bare 304: no Date, no Age.
async fn origin_stale_on_arrival() -> Scripted {
    Scripted::start(|head| {
        if common::header_in(head, "if-none-match").is_some() {
            return b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nConnection: close\r\n\r\n"
                .to_vec();
        }
        let old = if head.contains("/old-date") {
            "Date: Mon, 01 Jan 2024 00:00:00 GMT"
        } else {
            "Age: 7200"
        };
        format!(
            "HTTP/1.1 200 OK\r\n{old}\r\nETag: \"a\"\r\nCache-Control: max-age=60\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        .into_bytes()
    })
    .await
}

/// RFC 9111 §4.3.4 and §4.2.3: a 304 makes the stored response fresh
/// again, with the validation exchange's times: a 304 without Date gets
/// the time it arrived as Date (RFC 9110 §6.6.1), and the stored Age of the
/// old exchange no longer counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_without_date_or_age_makes_the_response_fresh_again() {
    let origin = origin_stale_on_arrival().await;
    let proxy = cache_proxy();
    for (i, path) in ["/old-date", "/old-age"].iter().enumerate() {
        let url = origin.url(path);
        get(&proxy, &url, &[]).await;
        let validated = get(&proxy, &url, &[]).await;
        assert_eq!(
            (validated.status, validated.body.as_slice()),
            (200, &b"ok"[..])
        );
        let cs = validated.header("cache-status").unwrap();
        assert!(cs.contains("fwd-status=304"), "{path}: {cs}");
        let age: u64 = validated.header("age").unwrap().parse().unwrap();
        assert!(age < 60, "{path}: Age {age}");
        let date = validated.header("date").unwrap_or_default();
        assert!(!date.contains("2024"), "{path}: Date {date}");
        // Fresh now: the next request is a hit.
        let hit = get(&proxy, &url, &[]).await;
        let cs = hit.header("cache-status").unwrap();
        assert!(cs.contains("hit"), "{path} is still stale: {cs}");
        assert_eq!(origin.requests(), 2 * (i + 1));
    }

    // The same for HTTP/2 clients.
    let origin = origin_stale_on_arrival().await;
    let dir = common::scratch_dir();
    let (h2, args) = tls_reverse_cache(&dir, origin.addr);
    for (i, path) in ["/old-date", "/old-age"].iter().enumerate() {
        let mut args = args.clone();
        args.push(format!("https://localhost:{}{path}", h2.addr().port()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_fetch_async(&refs).await;
        let validated = curl_fetch_async(&refs).await;
        let age: u64 = validated.header("age").unwrap().parse().unwrap();
        assert!(age < 60, "{path}: Age {age}");
        let hit = curl_fetch_async(&refs).await;
        let cs = hit.header("cache-status").unwrap();
        assert!(cs.contains("hit"), "{path} is still stale: {cs}");
        assert_eq!(origin.requests(), 2 * (i + 1));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Cache-Control is read in time linear in its length: a request whose
/// Cache-Control lists thousands of distinct directives is answered as
/// quickly as any other (it took most of a second per request when every
/// directive was compared with all those before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_cache_control_is_read_in_linear_time() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let url = origin.url("/bytes/10?h=cache-control:max-age=600");
    get(&proxy, &url, &[]).await;
    // About 50 KB: 9,000 distinct directives.
    let tokens: Vec<String> = (0..9000).map(|i| format!("x{i}")).collect();
    let header = format!("Cache-Control: {}, max-stale", tokens.join(","));
    assert!(header.len() > 50_000);
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: {}\r\n{header}\r\n\r\n",
        origin.addr()
    );
    let mut conn = common::Conn::connect(proxy.addr()).await;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        conn.send(request.as_bytes()).await;
        let r = conn.read_response(false).await;
        assert_eq!(r.status, 200);
        assert!(r.header("cache-status").unwrap().contains("hit"));
    }
    let took = started.elapsed();
    eprintln!("ten requests took {took:?}");
    assert!(took < Duration::from_secs(2), "ten requests took {took:?}");
    assert_eq!(origin.requests(), 1);
}

/// Collapsing: requests waiting for another one fetching the same URL are
/// let go as soon as its response turns out not to be storable (no-store,
/// or a Content-Length beyond what the cache keeps), not when its body has
/// reached its client: they go to the origin at once instead of waiting
/// out the collapsing limit (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_go_at_once_when_the_response_will_not_be_stored() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(
        "[cache]\nmemory = \"128MiB\"\nmax_object_size = \"1MiB\"\n",
    ));
    let size = 32 << 20;
    for (i, query) in ["h=cache-control:no-store", "h=cache-control:max-age=60"]
        .iter()
        .enumerate()
    {
        let url = origin.url(&format!("/bytes/{size}?{query}"));
        let request = format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr());
        // The first request's client takes the head, then stops reading:
        // its body cannot reach it for a long while.
        let mut slow = common::Conn::connect(proxy.addr()).await;
        slow.send(request.as_bytes()).await;
        assert!(slow.read_head().await.starts_with("HTTP/1.1 200"));
        let started = std::time::Instant::now();
        let mut next = common::Conn::connect(proxy.addr()).await;
        next.send(request.as_bytes()).await;
        let head = next.read_head().await;
        let waited = started.elapsed();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            waited < Duration::from_secs(4),
            "{query}: held back {waited:?} for a response that is not stored"
        );
        assert_eq!(origin.requests(), 2 * (i + 1));
    }
}

/// RFC 9111 §4.4: the Location and Content-Location of a successful unsafe
/// request's response are invalidated when on the same origin, also when
/// they are relative (resolved against the request's URL, RFC 3986 §5.2)
/// or spell the scheme in capitals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_relative_and_capitalised_locations() {
    let origin = Origin::start().await;
    let proxy = cache_proxy();
    let stored = [
        origin.url("/bytes/10?h=cache-control:max-age=60"),
        origin.url("/bytes/11?h=cache-control:max-age=60"),
    ];
    for url in &stored {
        get(&proxy, url, &[]).await;
        get(&proxy, url, &[]).await;
    }
    assert_eq!(origin.requests(), 2);
    let host = origin.addr().to_string().to_uppercase();
    let post = origin.url(&format!(
        "/status/201?h=location:../bytes/10%3Fh%3Dcache-control:max-age%3D60\
         &h=content-location:HTTP://{host}/bytes/11%3Fh%3Dcache-control:max-age%3D60"
    ));
    let created = get(&proxy, &post, &["-d", "x"]).await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.header("location").as_deref(),
        Some("../bytes/10?h=cache-control:max-age=60")
    );
    assert_eq!(origin.requests(), 3);
    let mut kept = Vec::new();
    for url in &stored {
        let f = get(&proxy, url, &[]).await;
        let cs = f.header("cache-status").unwrap();
        if !cs.contains("fwd=uri-miss") {
            kept.push(format!("{url}: {cs}"));
        }
    }
    assert!(kept.is_empty(), "not invalidated: {kept:?}");
    assert_eq!(origin.requests(), 5);
}
