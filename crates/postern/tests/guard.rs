//! Access rules, proxy authentication, blocklists, limits and content rules,
//! end to end through the real binary with curl and raw clients.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    BIN, Conn, T, config, curl_fetch_async, htpasswd, one_response, private_config, scratch_dir,
    start, wait_log_line,
};
use postern_testkit::{Origin, TestCa, TlsOrigin, pattern_bytes};

fn auth_config(htpasswd: &str, extra: &str) -> String {
    private_config(&format!(
        "[auth]\nhtpasswd = \"{htpasswd}\"\nmax_failures = 3\n\n{extra}\n\n[[rule]]\naction = \"auth\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_407_flow_over_http() {
    let origin = Origin::start().await;
    let dir = scratch_dir();
    let file = htpasswd(&dir, &[("alice", "s3cret:with colon")]);
    let proxy = start(&auth_config(&file, ""));
    let url = origin.url("/headers");

    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
    assert_eq!(f.status, 407, "{}", f.headers);
    assert_eq!(
        f.header("proxy-authenticate").as_deref(),
        Some("Basic realm=\"Postern proxy\", charset=\"UTF-8\"")
    );
    assert!(
        f.header("proxy-status")
            .unwrap()
            .contains("http_request_denied")
    );
    assert_eq!(origin.requests(), 0);

    let f = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        "-U",
        "alice:s3cret:with colon",
        &url,
    ])
    .await;
    assert_eq!(f.status, 200, "{}", f.stderr);
    let seen = origin.last_request().unwrap();
    assert!(
        seen.header("proxy-authorization").is_none(),
        "credentials reached the origin"
    );
    let line = wait_log_line(&proxy, &["TCP_MISS/200"]);
    assert!(
        line.contains(" alice "),
        "user missing from the log: {line}"
    );

    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-U", "alice:wrong", &url]).await;
    assert_eq!(f.status, 407);
    let body = String::from_utf8_lossy(&f.body);
    assert!(body.contains("wrong user name or password"), "{body}");
    assert!(!body.contains("wrong\""), "{body}");
    let log = proxy.read_file("access.log");
    assert!(!log.contains("s3cret") && !log.contains("YWxpY2U"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_407_flow_over_connect() {
    let ca = TestCa::new();
    let origin = TlsOrigin::start(&ca).await;
    let port = origin.addr().port();
    let dir = scratch_dir();
    let file = htpasswd(&dir, &[("bob", "pw")]);
    let cfg = config(
        "",
        &format!("allow_private_destinations = true\nconnect_ports = [{port}]"),
        &format!("[auth]\nhtpasswd = \"{file}\"\n\n[[rule]]\naction = \"auth\"\n"),
    );
    let proxy = start(&cfg);
    let ca_pem = ca.write_ca_pem(proxy.dir());
    let ca_pem = ca_pem.to_string_lossy();
    let f = curl_fetch_async(&[
        "-p",
        "-x",
        &proxy.proxy_url(),
        "--cacert",
        &ca_pem,
        &origin.url("/bytes/10"),
    ])
    .await;
    assert_ne!(f.exit, 0);
    assert!(f.headers.contains(" 407 "), "{}", f.headers);
    assert_eq!(origin.connections(), 0);
    let f = curl_fetch_async(&[
        "-p",
        "-x",
        &proxy.proxy_url(),
        "-U",
        "bob:pw",
        "--cacert",
        &ca_pem,
        &origin.url("/bytes/1000"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(1000));
    let line = wait_log_line(&proxy, &["TCP_TUNNEL/200"]);
    assert!(line.contains(" bob "), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_client() {
    let origin = Origin::start().await;
    let dir = scratch_dir();
    let file = htpasswd(&dir, &[("alice", "right")]);
    let proxy = start(&auth_config(&file, ""));
    let url = origin.url("/status/200");
    for _ in 0..3 {
        let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-U", "alice:wrong", &url]).await;
        assert_eq!(f.status, 407);
    }
    // Even the right password waits out the window now.
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-U", "alice:right", &url]).await;
    assert_eq!(f.status, 429, "{}", f.headers);
    let retry: u64 = f.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A Squid basic authentication helper: `alice` with the password
/// `pa ss%`; a user named `broken` makes it report a failure (BH), `crash`
/// makes it exit, `hang` makes it stop answering. Each start is counted in
/// `starts`.
const HELPER: &str = r#"#!/bin/sh
echo started >> "$(dirname "$0")/starts"
while read -r user password; do
  case "$user" in
    alice) if [ "$password" = "pa%20ss%25" ]; then echo OK; else echo ERR; fi ;;
    anyone) echo OK ;;
    bye) echo OK; exit 0 ;;
    broken) echo "BH the directory is down" ;;
    crash) exit 3 ;;
    hang) exec sleep 30 ;;
    *) echo ERR ;;
  esac
done
"#;

/// `[auth] program` runs a Squid-style helper: its OK and ERR decide; a
/// helper that fails is answered with 503 (not 407, and not counted as the
/// client's failed login), and replaced by a fresh copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_program_checks_credentials_as_squid_helpers_do() {
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin::start().await;
    let dir = scratch_dir();
    let helper = dir.join("helper.sh");
    std::fs::write(&helper, HELPER).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let proxy = start(&private_config(&format!(
        "[auth]\nprogram = [\"{}\"]\nchildren = 1\nprogram_timeout = \"300ms\"\nmax_failures = 3\n\n[[rule]]\naction = \"auth\"\n",
        helper.display()
    )));
    let url = origin.url("/status/200");
    let fetch = |user: &'static str| {
        let proxy_url = proxy.proxy_url();
        let url = url.clone();
        async move {
            let mut args = vec!["-x".to_string(), proxy_url];
            if !user.is_empty() {
                args.extend(["-U".to_string(), user.to_string()]);
            }
            args.push(url);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl_fetch_async(&args).await
        }
    };
    assert_eq!(fetch("").await.status, 407);
    let f = fetch("alice:pa ss%").await;
    assert_eq!(f.status, 200, "{}", f.headers);
    assert!(wait_log_line(&proxy, &["TCP_MISS/200"]).contains(" alice "));
    assert_eq!(fetch("alice:pass").await.status, 407);
    // Failures of the program are not the client's: more of them than
    // max_failures, and the right password still passes.
    for user in ["broken:x", "crash:x", "hang:x", "broken:x"] {
        let f = fetch(user).await;
        assert_eq!(f.status, 503, "{user}: {}", f.headers);
        let status = f.header("proxy-status").unwrap();
        assert!(status.contains("proxy_internal_error"), "{status}");
        let body = String::from_utf8_lossy(&f.body);
        assert!(!body.contains("directory"), "{body}");
    }
    // (Throttling is checked before the remembered credentials.)
    assert_eq!(fetch("alice:pa ss%").await.status, 200);
    // One start, then one after each copy that said BH, crashed or hung.
    let starts = std::fs::read_to_string(dir.join("starts")).unwrap();
    assert_eq!(starts.lines().count(), 4, "{starts}");
    // An empty password never reaches the program (which would let anyone in).
    assert_eq!(fetch("anyone:").await.status, 407);
    // A copy that exits after answering costs the next client nothing.
    assert_eq!(fetch("bye:x").await.status, 200);
    assert_eq!(fetch("anyone:x").await.status, 200);
    let stderr = proxy.stderr();
    assert!(stderr.contains("BH the directory is down"), "{stderr}");
    assert!(stderr.contains("no answer within 300ms"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_htpasswd_is_a_config_error_naming_the_line() {
    let dir = scratch_dir();
    let file = dir.join("users.htpasswd");
    std::fs::write(
        &file,
        "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\nbob:plaintext\n",
    )
    .unwrap();
    let toml = auth_config(&file.to_string_lossy(), "");
    let (code, _, stderr) = postern_testkit::check_config(BIN, &toml);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:", file.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn blocklist_config(dir: &Path) -> String {
    let list = dir.join("ads.txt");
    std::fs::write(
        &list,
        "# ads\nads.example\n0.0.0.0 tracker.test\n||metrics.test^\nnot a domain\n*/banner/*\n",
    )
    .unwrap();
    private_config(&format!(
        "[[blocklist]]\nname = \"ads\"\nfile = \"{}\"\n\n[[rule]]\naction = \"deny\"\nblocklist = [\"ads\"]\n\n[[rule]]\naction = \"allow\"\nsrc = [\"127.0.0.0/8\"]\n",
        list.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklisted_hosts_get_a_page_naming_list_and_rule() {
    let dir = scratch_dir();
    let proxy = start(&blocklist_config(&dir));
    let stderr = proxy.wait_for_stderr_line(|l| l.contains("ads.txt:5"), T);
    assert!(stderr.contains("warning"), "{stderr}");
    for url in [
        "http://www.ads.example/x",
        "http://tracker.test/",
        "http://a.b.metrics.test/",
        "http://cdn.test/banner/1.gif",
    ] {
        let f = curl_fetch_async(&["-x", &proxy.proxy_url(), url]).await;
        assert_eq!(f.status, 403, "{url}");
        let body = String::from_utf8_lossy(&f.body);
        assert!(body.contains("blocklist `ads`"), "{url}: {body}");
        assert!(body.contains("rule #1"), "{body}");
        assert!(
            f.header("proxy-status")
                .unwrap()
                .contains("http_request_denied")
        );
    }
    // CONNECT is blocked by name, before any lookup.
    let (resp, _) = one_response(
        proxy.addr(),
        b"CONNECT www.ads.example:443 HTTP/1.1\r\nHost: www.ads.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.head);
    assert!(
        String::from_utf8_lossy(&resp.body).contains("blocklist"),
        "{}",
        resp.head
    );
    // A name that merely ends the same way is not blocked.
    let origin = Origin::start().await;
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/status/204")]).await;
    assert_eq!(f.status, 204);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklists_reload_with_the_configuration() {
    let dir = scratch_dir();
    let proxy = start(&blocklist_config(&dir));
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "http://late.test/"]).await;
    assert_ne!(f.status, 403, "not blocked yet");
    std::fs::write(dir.join("ads.txt"), "late.test\n").unwrap();
    proxy.signal(libc_sighup());
    proxy.wait_for_stderr_line(|l| l.contains("configuration reloaded"), T);
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "http://late.test/"]).await;
    assert_eq!(f.status, 403);
    let _ = std::fs::remove_dir_all(dir);
}

fn libc_sighup() -> i32 {
    1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_on_destination_method_and_port() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let proxy = start(&private_config(&format!(
        r#"
[matcher.uploads]
method = ["POST", "PUT"]

[[rule]]
action = "deny"
match = ["uploads"]
dst_port = ["{port}"]
message = "Uploads are not allowed"

[[rule]]
action = "deny"
url_ext = ["exe"]

[[rule]]
action = "deny"
dst_domain = [".social.test"]
redirect = "http://intranet.test/policy"

[[rule]]
action = "deny"
dst_ip = ["127.0.0.2/32"]
status = 451

[[rule]]
action = "allow"
src = ["127.0.0.1"]
"#
    )));
    let p = proxy.proxy_url();
    let get = curl_fetch_async(&["-x", &p, &origin.url("/status/200")]).await;
    assert_eq!(get.status, 200);
    let post = curl_fetch_async(&["-x", &p, "-d", "x", &origin.url("/echo")]).await;
    assert_eq!(post.status, 403);
    assert!(String::from_utf8_lossy(&post.body).contains("Uploads are not allowed"));
    let exe = curl_fetch_async(&["-x", &p, &origin.url("/files/setup.EXE")]).await;
    assert_eq!(exe.status, 403);
    let social = curl_fetch_async(&["-x", &p, "http://www.social.test/"]).await;
    assert_eq!(social.status, 302);
    assert_eq!(
        social.header("location").as_deref(),
        Some("http://intranet.test/policy")
    );
    // dst_ip is tested on the address: a literal and a name that resolves to it.
    let other = format!("http://127.0.0.2:{port}/status/200");
    let f = curl_fetch_async(&["-x", &p, &other]).await;
    assert_eq!(f.status, 451, "{}", f.headers);
    assert_eq!(origin.requests(), 1);
}

/// URL rules see one spelling of each URL: escapes of unreserved
/// characters, dot segments, repeated slashes and the scheme's case do not
/// get a request past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rules_match_every_spelling_of_a_url() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let dir = scratch_dir();
    let list = dir.join("banners.txt");
    std::fs::write(&list, format!("127.0.0.1:{port}/banner/*\n")).unwrap();
    let proxy = start(&private_config(&format!(
        r#"
[[blocklist]]
name = "banners"
file = "{list}"

[[rule]]
action = "deny"
url_ext = ["exe"]

[[rule]]
action = "deny"
url_regex = ["^http://127\\.0\\.0\\.1:{port}/admin/"]

[[rule]]
action = "deny"
blocklist = ["banners"]

[[rule]]
action = "allow"
src = ["127.0.0.1"]
"#,
        list = list.display()
    )));
    let base = format!("http://127.0.0.1:{port}");
    for path in [
        "/files/setup.exe",
        "/files/setup%2Eexe",
        "/files/setup.ex%65",
        "/admin/x",
        "/%61dmin/x",
        "//admin/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/banner/1.gif",
        "/%62anner/1.gif",
        "/./banner//1.gif",
    ] {
        let (resp, _) = one_response(
            proxy.addr(),
            format!("GET {base}{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(resp.status, 403, "{path}: {}", resp.head);
    }
    // The scheme's case, and the default spelling of the port.
    let (resp, _) = one_response(
        proxy.addr(),
        format!("GET HTTP://127.0.0.1:{port}/admin/x HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.head);
    assert_eq!(origin.requests(), 0);
    // What the rules do not cover still goes through, as written.
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &format!("{base}/status/200")]).await;
    assert_eq!(f.status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_ports_refuse_plain_http_to_mail_and_ssh() {
    let proxy = start(&private_config(""));
    for port in [22, 25, 110] {
        let f = curl_fetch_async(&[
            "-x",
            &proxy.proxy_url(),
            &format!("http://127.0.0.1:{port}/"),
        ])
        .await;
        assert_eq!(f.status, 403, "port {port}");
        assert!(String::from_utf8_lossy(&f.body).contains("egress.http_ports"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_per_client_gets_429_with_retry_after() {
    let origin = Origin::start().await;
    let proxy = start(&config(
        "",
        "allow_private_destinations = true",
        "[limits]\nclient_requests = \"3/min\"\n",
    ));
    let url = origin.url("/status/200");
    for _ in 0..3 {
        let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
        assert_eq!(f.status, 200);
    }
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
    assert_eq!(f.status, 429);
    let retry: u64 = f.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(String::from_utf8_lossy(&f.body).contains("limits.client_requests"));
    wait_log_line(&proxy, &["TCP_DENIED/429"]);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_are_limited() {
    let proxy = start(&config(
        "",
        "allow_private_destinations = true",
        "[limits]\nclient_connections = 2\n",
    ));
    let mut a = Conn::connect(proxy.addr()).await;
    let mut b = Conn::connect(proxy.addr()).await;
    // Both are served: an origin-form request gets the proxy's own page.
    for c in [&mut a, &mut b] {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let head = c.read_head().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let (resp, _) = one_response(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(resp.status, 429, "{}", resp.head);
    assert!(
        resp.header("proxy-status")
            .unwrap()
            .contains("connection_limit_reached")
    );
    drop(a);
    // The slot comes back once a connection closes.
    let deadline = Instant::now() + T;
    loop {
        let (resp, _) = one_response(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        if resp.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_per_client_slows_downloads() {
    let origin = Origin::start().await;
    let proxy = start(&config(
        "",
        "allow_private_destinations = true",
        "[limits]\nclient_bandwidth = \"100KiB/s\"\n",
    ));
    let started = Instant::now();
    // 300 KiB at 100 KiB/s with a one-second burst: at least two seconds.
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/bytes/307200")]).await;
    assert_eq!(f.status, 200);
    assert_eq!(f.body, pattern_bytes(307_200));
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rules_refuse_types_and_sizes() {
    let origin = Origin::start().await;
    let proxy = start(&private_config(
        "[content]\ndeny_types = [\"application/x-msdownload\", \"video/*\"]\nmax_response_size = \"100KiB\"\n",
    ));
    let p = proxy.proxy_url();
    let video = curl_fetch_async(&[
        "-x",
        &p,
        &origin.url("/status/200?h=content-type:video/mp4"),
    ])
    .await;
    assert_eq!(video.status, 403, "{}", video.headers);
    assert!(String::from_utf8_lossy(&video.body).contains("video/*"));
    let small = curl_fetch_async(&["-x", &p, &origin.url("/bytes/1000")]).await;
    assert_eq!(small.status, 200);
    // Announced too large: refused before anything is sent.
    let big = curl_fetch_async(&["-x", &p, &origin.url("/bytes/200000")]).await;
    assert_eq!(big.status, 502);
    assert!(
        big.header("proxy-status")
            .unwrap()
            .contains("http_response_body_size")
    );
    // Not announced (chunked): the stream is cut and never looks complete.
    let chunked = curl_fetch_async(&["-x", &p, &origin.url("/chunked/200000")]).await;
    assert_eq!(chunked.status, 200);
    assert_ne!(chunked.exit, 0, "a cut response must not look complete");
    assert!(chunked.body.len() < 200_000);
}

/// HTTP/2 clients meet the same content and bandwidth rules as HTTP/1
/// ones (curl speaking h2c to the proxy port, by prior knowledge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_meet_the_content_and_bandwidth_rules() {
    let origin = Origin::start().await;
    let proxy = start(&config(
        "h2c = true",
        "allow_private_destinations = true",
        "[content]\ndeny_types = [\"video/*\"]\nmax_response_size = \"400KiB\"\n\n\
         [limits]\nclient_bandwidth = \"100KiB/s\"\n",
    ));
    let via_h2 = format!(
        "{}:{}:{}",
        origin.addr().ip(),
        origin.addr().port(),
        proxy.addr()
    );
    let fetch = |path: &str| {
        let url = origin.url(path);
        let via_h2 = via_h2.clone();
        async move {
            curl_fetch_async(&["--http2-prior-knowledge", "--connect-to", &via_h2, &url]).await
        }
    };
    let video = fetch("/status/200?h=content-type:video/mp4").await;
    assert_eq!(video.status, 403, "{}", video.headers);
    let big = fetch("/bytes/500000").await;
    assert_eq!(big.status, 502, "{}", big.headers);
    let chunked = fetch("/chunked/500000").await;
    assert_ne!(chunked.exit, 0, "a cut response must not look complete");
    assert!(chunked.body.len() < 500_000);
    // 300 KiB at 100 KiB/s with a one-second burst: at least two seconds.
    let started = Instant::now();
    let paced = fetch("/bytes/307200").await;
    assert_eq!(paced.status, 200, "{}", paced.stderr);
    assert_eq!(paced.body, pattern_bytes(307_200));
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_running_proxy() {
    let dir = scratch_dir();
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let list = dir.join("ads.txt");
    std::fs::write(&list, "ads.example\n").unwrap();
    let toml = private_config(&format!(
        r#"
[[blocklist]]
name = "ads"
file = "{}"

[[rule]]
action = "deny"
blocklist = ["ads"]

[[rule]]
action = "deny"
method = ["DELETE"]
status = 405

[[rule]]
action = "allow"
src = ["127.0.0.0/8"]
"#,
        list.display()
    ));
    let cfg_path = dir.join("postern.toml");
    std::fs::write(&cfg_path, toml.replace("{dir}", &dir.to_string_lossy())).unwrap();
    let proxy = start(&toml);
    let cases: Vec<(&str, String)> = vec![
        ("GET", origin.url("/status/200")),
        ("DELETE", origin.url("/status/200")),
        ("GET", "http://www.ads.example/".into()),
        ("GET", "http://127.0.0.1:22/".to_string()),
        ("GET", format!("http://169.254.169.254:{port}/")),
        ("GET", format!("http://0x7f.1:{port}/status/200")),
    ];
    for (method, url) in cases {
        let f = curl_fetch_async(&["-x", &proxy.proxy_url(), "-X", method, &url]).await;
        let out = Command::new(BIN)
            .args(["explain", "-c"])
            .arg(&cfg_path)
            .args(["--client", "127.0.0.1", "-X", method, &url])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        if f.status == 200 {
            assert_eq!(out.status.code(), Some(0), "{url}: {report}");
            assert!(report.contains("decision: allow"), "{report}");
        } else {
            assert_eq!(out.status.code(), Some(3), "{url}: {report}");
            assert!(
                report.contains(&format!("decision: refuse, {} ", f.status)),
                "{method} {url}: proxy said {}, explain said {report}",
                f.status
            );
            let ps = f.header("proxy-status").unwrap();
            let error = ps
                .split("error=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap();
            assert!(
                report.contains(&format!("error={error}")),
                "{report} vs {ps}"
            );
        }
    }
    // A reverse listener is not explained as if it were a forward proxy.
    let reverse = dir.join("reverse.toml");
    std::fs::write(
        &reverse,
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
             [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
             [[route]]\nlistener = \"web\"\npool = \"app\"\n",
            origin.addr()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["explain", "-c"])
        .arg(&reverse)
        .args([
            "--client",
            "127.0.0.1",
            "--listener",
            "web",
            "http://app.example/",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("reverse listener"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rule_values_are_located() {
    let toml = private_config(
        r#"
[[rule]]
action = "deny"
dst_port = ["9-1"]
time = ["Funday"]
dst_regex = ["("]
match = ["nope"]
blocklist = ["missing"]
"#,
    );
    let (code, _, stderr) = postern_testkit::check_config(BIN, &toml);
    assert_eq!(code, 1);
    for needle in [
        ":15:13: port range",
        "port range",
        "is not a day",
        "invalid regular expression: unclosed group",
        "no [matcher.nope]",
        "no [[blocklist]] is named `missing`",
    ] {
        assert!(stderr.contains(needle), "{needle} missing in:\n{stderr}");
    }
}
