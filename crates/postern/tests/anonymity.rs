//! Hiding the client: what an echo origin receives at each anonymity level,
//! header rules, and the SSRF guard against every spelling of a local address.

mod common;

use common::{config, curl_fetch_async, one_response, private_config, start};
use postern_testkit::Origin;

/// Headers the client sends that would reveal it or earlier proxies.
const CLIENT_SENT: &[&str] = &[
    "X-Forwarded-For: 198.51.100.7",
    "Forwarded: for=198.51.100.7",
    "Via: 1.1 corporate-gw",
    "X-Real-IP: 198.51.100.7",
    "Client-IP: 198.51.100.7",
    "True-Client-IP: 198.51.100.7",
    "Proxy-Connection: keep-alive",
];

/// The `name: value` lines the origin's `/headers` route received.
async fn headers_seen(level: &str, origin: &Origin) -> (Vec<(String, String)>, common::Fetch) {
    let proxy = start(&config(
        &format!("anonymity = \"{level}\""),
        "allow_private_destinations = true",
        "",
    ));
    let mut args = vec!["-x".to_string(), proxy.proxy_url()];
    for h in CLIENT_SENT {
        args.push("-H".into());
        args.push(h.to_string());
    }
    args.push(origin.url("/headers"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let f = curl_fetch_async(&refs).await;
    assert_eq!(f.status, 200, "{}", f.stderr);
    let text = String::from_utf8_lossy(&f.body).into_owned();
    let headers = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (headers, f)
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn carries_client_address(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, v)| {
            n != "host"
                && (v.contains("127.0.0.1") || v.contains("198.51.100.7") || v.contains("::1"))
        })
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_passes_the_client_address() {
    let origin = Origin::start().await;
    let (h, _) = headers_seen("transparent", &origin).await;
    assert_eq!(values(&h, "x-forwarded-for"), ["198.51.100.7, 127.0.0.1"]);
    assert_eq!(values(&h, "forwarded"), ["for=198.51.100.7, for=127.0.0.1"]);
    let via = values(&h, "via").join(", ");
    assert!(
        via.contains("corporate-gw") && via.contains("1.1 postern"),
        "{via}"
    );
    assert_eq!(values(&h, "x-real-ip"), ["198.51.100.7"]);
    assert!(values(&h, "proxy-connection").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sends_via_only() {
    let origin = Origin::start().await;
    let (h, f) = headers_seen("anonymous", &origin).await;
    assert_eq!(carries_client_address(&h), Vec::<String>::new(), "{h:?}");
    assert_eq!(values(&h, "via"), ["1.1 postern"]);
    for name in [
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "client-ip",
        "true-client-ip",
    ] {
        assert!(values(&h, name).is_empty(), "{name} reached the origin");
    }
    assert!(
        f.header("via").is_some(),
        "anonymous still names itself to the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elite_reveals_neither_client_nor_proxy() {
    let origin = Origin::start().await;
    let (h, f) = headers_seen("elite", &origin).await;
    assert_eq!(carries_client_address(&h), Vec::<String>::new(), "{h:?}");
    for (name, value) in &h {
        let line = format!("{name}: {value}").to_ascii_lowercase();
        assert!(
            !line.contains("postern")
                && !line.contains("proxy")
                && !line.starts_with("via")
                && !line.contains("forwarded"),
            "reveals a proxy: {line}"
        );
    }
    assert!(f.header("via").is_none(), "{}", f.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_remove_and_set_fields() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(
        "[headers]\nrequest_remove = [\"Referer\"]\nrequest_set = { \"User-Agent\" = \"Mozilla/5.0 (Postern)\", \"DNT\" = \"1\" }\nrequest_replace = { \"Accept-Language\" = \"en\" }\nresponse_remove = [\"X-Powered-By\"]\n",
    ));
    let f = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        "-H",
        "Referer: http://secret.example/page",
        "-H",
        "User-Agent: leaky/1.0",
        &origin.url("/headers?h=x-powered-by:PHP/5"),
    ])
    .await;
    assert_eq!(f.status, 200);
    let body = String::from_utf8_lossy(&f.body);
    assert!(!body.contains("secret.example"), "{body}");
    assert!(body.contains("user-agent: Mozilla/5.0 (Postern)"), "{body}");
    assert!(!body.contains("leaky"), "{body}");
    assert!(body.contains("dnt: 1"), "{body}");
    assert!(
        !body.contains("accept-language"),
        "replace adds nothing: {body}"
    );
    assert!(f.header("x-powered-by").is_none(), "{}", f.headers);
}

/// Every spelling of a loopback or unspecified address is refused by the
/// SSRF guard, whatever the rules allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ssrf_spelling_is_refused() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let proxy = start(&config("", "", ""));
    for host in [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "0x7f.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "0.0.0.0",
        "0",
        "localhost",
        "localhost.",
        "LOCALHOST",
        "%6c%6f%63%61%6c%68%6f%73%74",
        "\u{24db}\u{24de}\u{24d2}\u{24d0}\u{24db}\u{24d7}\u{24de}\u{24e2}\u{24e3}",
    ] {
        let request = format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let (resp, _) = one_response(proxy.addr(), request.as_bytes()).await;
        assert_eq!(resp.status, 403, "{host}: {}", resp.head);
        let ps = resp.header("proxy-status").unwrap_or_default();
        assert!(
            ps.contains("error=destination_ip_prohibited"),
            "{host}: {ps}"
        );
    }
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_metadata_is_refused_even_with_private_destinations() {
    let proxy = start(&private_config(""));
    for host in [
        "169.254.169.254",
        "[fd00:ec2::254]",
        "[::ffff:169.254.169.254]",
        "0xa9.0xfe.0xa9.0xfe",
    ] {
        let request = format!("GET http://{host}/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let (resp, _) = one_response(proxy.addr(), request.as_bytes()).await;
        assert_eq!(resp.status, 403, "{host}: {}", resp.head);
        let body = String::from_utf8_lossy(&resp.body);
        assert!(body.contains("egress.allow_ips"), "{host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_control_characters_in_the_url_are_refused() {
    let proxy = start(&private_config(""));
    for target in [
        "http://example.test/a%0d%0aSet-Cookie:%20x=1",
        "http://example.test/%00",
        "http://exa%0ample.test/",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (resp, _) = one_response(proxy.addr(), request.as_bytes()).await;
        assert_eq!(resp.status, 400, "{target}: {}", resp.head);
    }
}
