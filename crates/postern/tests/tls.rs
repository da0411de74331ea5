//! TLS on listeners: certificates chosen by SNI on a reverse listener, and a
//! forward listener as an HTTPS proxy (curl `--proxy https://`), for plain
//! HTTP and for CONNECT (TLS inside TLS).

mod common;

use std::path::Path;

use common::{BIN, curl_fetch_async, scratch_dir, start};
use postern_testkit::{Origin, TestCa, TlsOrigin, pattern_bytes};

/// Writes a certificate for `names` and its key; returns the two paths.
fn write_cert(ca: &TestCa, dir: &Path, stem: &str, names: &[&str]) -> (String, String) {
    let (cert, key) = ca.issue_pem(names);
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_listener_picks_the_certificate_by_sni() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (a_cert, a_key) = write_cert(&ca, &dir, "a", &["a.test"]);
    let (b_cert, b_key) = write_cert(&ca, &dir, "b", &["b.test", "*.b.test"]);
    let origin = Origin::start().await;
    let proxy = start(&format!(
        r#"[[listener]]
name = "web"
bind = "127.0.0.1:0"
mode = "reverse"
tls = {{ cert = "{a_cert}", key = "{a_key}", sni = [{{ names = ["b.test", "*.b.test"], cert = "{b_cert}", key = "{b_key}" }}] }}

[[pool]]
name = "app"
servers = ["{}"]

[[route]]
listener = "web"
pool = "app"
"#,
        origin.addr()
    ));
    let port = proxy.addr().port();
    let ca_pem = ca.write_ca_pem(&dir);
    let ca_pem = ca_pem.to_string_lossy();
    for host in ["a.test", "b.test", "www.b.test"] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let f = curl_fetch_async(&[
            "--resolve",
            &resolve,
            "--cacert",
            &ca_pem,
            &format!("https://{host}:{port}/headers"),
        ])
        .await;
        // curl checks the certificate against the name: only the right one passes.
        assert_eq!((f.exit, f.status), (0, 200), "{host}: {}", f.stderr);
        let body = String::from_utf8_lossy(&f.body);
        assert!(body.contains("x-forwarded-proto: https"), "{body}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_listener_is_an_https_proxy() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (cert, key) = write_cert(&ca, &dir, "proxy", &["localhost"]);
    let origin = Origin::start().await;
    let tls_origin = TlsOrigin::start(&ca).await;
    let port = tls_origin.addr().port();
    let proxy = start(&format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n\
         [egress]\nallow_private_destinations = true\nconnect_ports = [{port}]\n"
    ));
    let proxy_url = format!("https://localhost:{}", proxy.addr().port());
    let ca_pem = ca.write_ca_pem(&dir);
    let ca_pem = ca_pem.to_string_lossy();
    let f = curl_fetch_async(&[
        "--proxy",
        &proxy_url,
        "--proxy-cacert",
        &ca_pem,
        &origin.url("/bytes/20000"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(20_000));
    // TLS to the origin inside the TLS connection to the proxy.
    let f = curl_fetch_async(&[
        "--proxy",
        &proxy_url,
        "--proxy-cacert",
        &ca_pem,
        "--cacert",
        &ca_pem,
        &tls_origin.url("/bytes/300000"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(300_000));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unreadable_or_mismatched_certificates_are_config_errors() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (cert, _) = write_cert(&ca, &dir, "one", &["a.test"]);
    let (_, other_key) = write_cert(&ca, &dir, "two", &["a.test"]);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{cert}\", key = \"{other_key}\" }}\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"/nonexistent.pem\", key = \"{other_key}\" }}\n"
    );
    let (code, _, stderr) = postern_testkit::check_config(BIN, &toml);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":3:") && stderr.contains("does not belong to"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":7:") && stderr.contains("/nonexistent.pem"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_servers_checks_their_certificates() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let ca_pem = ca.write_ca_pem(&dir);
    let origin = TlsOrigin::start(&ca).await;
    let config = |extra: &str| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
             [[pool]]\nname = \"app\"\nservers = [\"{}\"]\ntls = true\n{extra}\n\n\
             [[route]]\nlistener = \"web\"\npool = \"app\"\n",
            origin.addr()
        )
    };
    let proxy = start(&config(&format!(
        "tls_ca = \"{}\"\ntls_server_name = \"localhost\"",
        ca_pem.display()
    )));
    let f = curl_fetch_async(&[&format!("http://{}/bytes/70000", proxy.addr())]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(70_000));
    assert_eq!(origin.requests(), 1);
    // With the system's roots the test CA is unknown: no request gets through.
    let untrusted = start(&config(""));
    let f = curl_fetch_async(&[&format!("http://{}/bytes/10", untrusted.addr())]).await;
    assert_eq!(f.status, 502, "{}", f.headers);
    assert_eq!(origin.requests(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// HTTP health checks reach a TLS pool's servers over TLS, as its requests
/// do: the servers stay up and keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_a_tls_pool_speak_tls() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let ca_pem = ca.write_ca_pem(&dir);
    let origin = TlsOrigin::start(&ca).await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\ntls = true\n\
         tls_ca = \"{}\"\ntls_server_name = \"localhost\"\n\n\
         [pool.health]\ntype = \"http\"\npath = \"/status/200\"\ninterval = \"50ms\"\n\
         timeout = \"2s\"\nfall = 1\nrise = 1\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr(),
        ca_pem.display()
    ));
    // Three checks answered by the server itself (over TLS, or they could
    // not be counted there).
    let deadline = std::time::Instant::now() + common::T;
    while origin.requests() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no health checks reached the server: {}",
            proxy.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!proxy.stderr().contains("is down"), "{}", proxy.stderr());
    let f = curl_fetch_async(&[&format!("http://{}/bytes/10", proxy.addr())]).await;
    assert_eq!(f.status, 200, "{}", f.headers);
    let _ = std::fs::remove_dir_all(dir);
}

/// On a TLS listener the cache keys its responses by their https URL, so
/// an absolute https `Location` from an unsafe method invalidates them
/// (RFC 9111 §4.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_locations_invalidate_what_a_tls_listener_cached() {
    let ca = TestCa::new();
    let dir = scratch_dir();
    let (cert, key) = write_cert(&ca, &dir, "site", &["localhost"]);
    let ca_pem = ca.write_ca_pem(&dir);
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\
         tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n\n\
         [cache]\nmemory = \"8MiB\"\n",
        origin.addr()
    ));
    let port = proxy.addr().port();
    let site = format!("https://localhost:{port}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca_path = ca_pem.to_string_lossy().into_owned();
    let fetch = |method: &'static str, url: String| {
        let (resolve, ca_path) = (resolve.clone(), ca_path.clone());
        async move {
            curl_fetch_async(&[
                "--resolve",
                &resolve,
                "--cacert",
                &ca_path,
                "-X",
                method,
                &url,
            ])
            .await
        }
    };
    let page = format!("{site}/bytes/100?h=cache-control:max-age=60");
    assert_eq!(fetch("GET", page.clone()).await.status, 200);
    let hit = fetch("GET", page.clone()).await;
    assert!(
        hit.header("cache-status").unwrap().contains("hit"),
        "{}",
        hit.headers
    );
    let encoded: String = page
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let post = fetch("POST", format!("{site}/status/201?h=location:{encoded}")).await;
    assert_eq!(post.status, 201, "{}", post.headers);
    let after = fetch("GET", page).await;
    assert!(
        !after.header("cache-status").unwrap().contains("hit"),
        "{}",
        after.headers
    );
    assert_eq!(origin.requests(), 3);
    let _ = std::fs::remove_dir_all(dir);
}
