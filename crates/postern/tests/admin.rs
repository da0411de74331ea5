//! Operations: the admin listener (metrics, health, JSON API, dashboard),
//! the PAC file on forward listeners, and reloads under load.

mod common;

use std::time::{Duration, Instant};

use common::{curl_fetch_async, htpasswd, scratch_dir, start};
use postern_testkit::Origin;

fn ops_config(origin: &Origin) -> String {
    format!(
        r#"[[listener]]
name = "proxy"
bind = "127.0.0.1:0"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
mode = "reverse"

[[listener]]
name = "admin"
bind = "127.0.0.1:0"
mode = "admin"

[egress]
allow_private_destinations = true
connect_ports = [{}]

[log]
access = "{{dir}}/access.log"

[cache]
memory = "16MiB"

[[pool]]
name = "app"
servers = ["{}"]

[[route]]
listener = "web"
pool = "app"
"#,
        origin.addr().port(),
        origin.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_status() {
    let origin = Origin::start().await;
    let proxy = start(&ops_config(&origin));
    let admin = format!("http://{}", proxy.addr_of("admin"));
    let proxy_url = format!("http://{}", proxy.addr_of("proxy"));
    for _ in 0..3 {
        let f = curl_fetch_async(&["-x", &proxy_url, &origin.url("/bytes/100")]).await;
        assert_eq!(f.status, 200);
    }
    let refused = curl_fetch_async(&["-x", &proxy_url, "http://127.0.0.1:22/"]).await;
    assert_eq!(refused.status, 403);
    let m = curl_fetch_async(&[&format!("{admin}/metrics")]).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert!(
        text.contains(
            "postern_requests_total{listener=\"proxy\",mode=\"forward\",class=\"2xx\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains("postern_denials_total{reason=\"http_request_denied\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("postern_pool_server_up{pool=\"app\""),
        "{text}"
    );
    assert!(text.contains("postern_cache_hits_total"), "{text}");
    // The exposition format, checked by Prometheus' own tool when present.
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
    {
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        curl_fetch_async(&[&format!("{admin}/healthz")])
            .await
            .status,
        200
    );
    assert_eq!(
        curl_fetch_async(&[&format!("{admin}/readyz")]).await.status,
        200
    );
    let status = curl_fetch_async(&[&format!("{admin}/api/status")]).await;
    let json = String::from_utf8_lossy(&status.body);
    assert!(
        json.contains("\"name\":\"web\",\"mode\":\"reverse\""),
        "{json}"
    );
    assert!(json.contains("\"recent_denials\":[{"), "{json}");
    let page = curl_fetch_async(&[&format!("{admin}/")]).await;
    assert!(String::from_utf8_lossy(&page.body).contains("Requests per second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_states_change_at_run_time_and_survive_reload() {
    let origin = Origin::start().await;
    let proxy = start(&ops_config(&origin));
    let admin = format!("http://{}", proxy.addr_of("admin"));
    let web = format!("http://{}/status/200", proxy.addr_of("web"));
    assert_eq!(curl_fetch_async(&[&web]).await.status, 200);
    let action = format!(
        "{admin}/api/pools/app/servers/{}/maintenance",
        origin.addr()
    );
    let r = curl_fetch_async(&["-X", "POST", &action]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(curl_fetch_async(&[&web]).await.status, 503);
    let reload = curl_fetch_async(&["-X", "POST", &format!("{admin}/api/reload")]).await;
    assert_eq!(
        reload.status,
        200,
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    assert_eq!(
        curl_fetch_async(&[&web]).await.status,
        503,
        "the state survived the reload"
    );
    let enable = format!("{admin}/api/pools/app/servers/{}/enable", origin.addr());
    assert_eq!(curl_fetch_async(&["-X", "POST", &enable]).await.status, 200);
    assert_eq!(curl_fetch_async(&[&web]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_weight_changes_at_run_time_and_survives_reload() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\", \"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        a.addr(),
        b.addr()
    );
    let proxy = start(&config);
    let admin = format!("http://{}", proxy.addr_of("admin"));
    let web = format!("http://{}/status/200", proxy.addr_of("web"));
    let set = |w: &str| {
        format!(
            "{admin}/api/pools/app/servers/{}/weight?value={w}",
            a.addr()
        )
    };
    for bad in ["0", "1001", "x"] {
        let r = curl_fetch_async(&["-X", "POST", &set(bad)]).await;
        assert_eq!(r.status, 400, "weight {bad}");
    }
    let r = curl_fetch_async(&["-X", "POST", &set("3")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reload = curl_fetch_async(&["-X", "POST", &format!("{admin}/api/reload")]).await;
    assert_eq!(reload.status, 200);
    let status = curl_fetch_async(&[&format!("{admin}/api/status")]).await;
    assert!(
        String::from_utf8_lossy(&status.body).contains("\"weight\":3"),
        "{}",
        String::from_utf8_lossy(&status.body)
    );
    // Smooth weighted round robin: exactly 3 of every 4 requests go to `a`.
    let (before_a, before_b) = (a.requests(), b.requests());
    for _ in 0..40 {
        assert_eq!(curl_fetch_async(&[&web]).await.status, 200);
    }
    assert_eq!(a.requests() - before_a, 30);
    assert_eq!(b.requests() - before_b, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_can_require_a_login() {
    let dir = scratch_dir();
    let users = htpasswd(&dir, &[("ops", "s3cret")]);
    let proxy = start(&format!(
        "[[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\
         admin_htpasswd = \"{users}\"\n"
    ));
    let admin = format!("http://{}", proxy.addr_of("admin"));
    for path in ["/", "/metrics", "/api/status"] {
        let r = curl_fetch_async(&[&format!("{admin}{path}")]).await;
        assert_eq!(r.status, 401, "{path}");
        let head = r.headers.to_ascii_lowercase();
        assert!(
            head.contains("www-authenticate: basic realm=\"postern admin\""),
            "{head}"
        );
        let wrong = curl_fetch_async(&["-u", "ops:nope", &format!("{admin}{path}")]).await;
        assert_eq!(wrong.status, 401, "{path}");
        let ok = curl_fetch_async(&["-u", "ops:s3cret", &format!("{admin}{path}")]).await;
        assert_eq!(ok.status, 200, "{path}");
    }
    let reload = curl_fetch_async(&["-X", "POST", &format!("{admin}/api/reload")]).await;
    assert_eq!(reload.status, 401, "actions need the login too");
    // Probes stay open for load balancers and orchestrators.
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            curl_fetch_async(&[&format!("{admin}{probe}")]).await.status,
            200
        );
    }
    // Guessing is throttled per client address.
    let mut last = 0;
    for _ in 0..12 {
        last = curl_fetch_async(&["-u", "ops:guess", &format!("{admin}/metrics")])
            .await
            .status;
    }
    assert_eq!(last, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_listeners_serve_a_pac_file() {
    let origin = Origin::start().await;
    let proxy = start(&ops_config(&origin));
    let addr = proxy.addr_of("proxy");
    for path in ["/proxy.pac", "/wpad.dat"] {
        let f = curl_fetch_async(&[&format!("http://{addr}{path}")]).await;
        assert_eq!(f.status, 200);
        assert_eq!(
            f.header("content-type").as_deref(),
            Some("application/x-ns-proxy-autoconfig")
        );
        let body = String::from_utf8_lossy(&f.body);
        assert!(
            body.contains("function FindProxyForURL(url, host)"),
            "{body}"
        );
        assert!(body.contains(&format!("PROXY {addr}; DIRECT")), "{body}");
    }
}

/// Reload every 200 ms during 10 s of requests and a long-lived tunnel:
/// no request fails and the tunnel carries traffic to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_nothing() {
    let origin = Origin::start().await;
    let proxy = start(&ops_config(&origin));
    let proxy_url = format!("http://{}", proxy.addr_of("proxy"));
    let stop = Instant::now() + Duration::from_secs(10);
    // A tunnel opened before the reloads, used throughout.
    let mut tunnel = common::Conn::connect(proxy.addr_of("proxy")).await;
    let target = origin.addr();
    tunnel
        .send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await;
    assert!(tunnel.read_head().await.starts_with("HTTP/1.1 200"));
    let tunnel_task = tokio::spawn(async move {
        let mut rounds = 0;
        while Instant::now() < stop {
            tunnel
                .send(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let r = tunnel.read_response(false).await;
            assert_eq!(r.status, 200, "the tunnel broke after {rounds} rounds");
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rounds
    });
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (proxy_url, url) = (proxy_url.clone(), origin.url("/bytes/2000"));
        workers.push(tokio::spawn(async move {
            let client = common::reqwest_via(&proxy_url);
            let mut bad = Vec::new();
            let mut ok = 0;
            while Instant::now() < stop {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(b) if b.len() == 2000 => ok += 1,
                        other => bad.push(format!("{other:?}")),
                    },
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            (ok, bad)
        }));
    }
    let mut reloads = 0;
    while Instant::now() < stop {
        proxy.signal(1);
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut total = 0;
    for w in workers {
        let (ok, bad) = w.await.unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        total += ok;
    }
    let rounds = tunnel_task.await.unwrap();
    assert!(
        reloads >= 40 && total > 100 && rounds > 50,
        "{reloads} reloads, {total} requests, {rounds} tunnel rounds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners() {
    let origin = Origin::start().await;
    let proxy = start(&common::private_config(""));
    let old = proxy.addr();
    // A free port on an address no other test binds, so none can take it
    // between this probe and the reload.
    let free = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let new_addr = free.local_addr().unwrap();
    drop(free);
    let path = proxy.dir().join("postern.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "name = \"proxy\"\nbind = \"127.0.0.1:0\"",
        &format!("name = \"moved\"\nbind = \"{new_addr}\""),
    );
    std::fs::write(&path, text).unwrap();
    proxy.signal(1);
    proxy.wait_for_stderr_line(
        |l| l.contains(&format!("listener moved (forward) listening on {new_addr}")),
        common::T,
    );
    let f = curl_fetch_async(&[
        "-x",
        &format!("http://{new_addr}"),
        &origin.url("/status/204"),
    ])
    .await;
    assert_eq!(f.status, 204, "{}", f.stderr);
    // The removed listener stops accepting.
    let deadline = Instant::now() + common::T;
    while std::net::TcpStream::connect(old).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each admin listener admits the clients of its own `admin_from`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_from_is_per_listener() {
    let proxy = start(
        "[[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\
         admin_from = [\"127.0.0.2/32\"]\n\n\
         [[listener]]\nname = \"metrics\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\
         admin_from = [\"127.0.0.1/32\"]\n",
    );
    let from = |source: &'static str, listener: &'static str| {
        let addr = proxy.addr_of(listener);
        async move {
            let url = format!("http://{addr}/api/status");
            curl_fetch_async(&["--interface", source, &url])
                .await
                .status
        }
    };
    assert_eq!(from("127.0.0.1", "metrics").await, 200);
    assert_eq!(from("127.0.0.2", "admin").await, 200);
    assert_ne!(from("127.0.0.1", "admin").await, 200);
    assert_ne!(from("127.0.0.2", "metrics").await, 200);
}

/// A connection kept open across a reload that renames its listener still
/// needs the login it was accepted under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_admin_listener_keeps_asking_for_the_login() {
    let dir = scratch_dir();
    let users = htpasswd(&dir, &[("ops", "s3cret")]);
    let proxy = start(&format!(
        "[[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\
         admin_htpasswd = \"{users}\"\n"
    ));
    let mut conn = common::Conn::connect(proxy.addr_of("admin")).await;
    let ask = |auth: bool| {
        format!(
            "GET /api/status HTTP/1.1\r\nHost: x\r\n{}\r\n",
            if auth {
                "Authorization: Basic b3BzOnMzY3JldA==\r\n"
            } else {
                ""
            }
        )
    };
    conn.send(ask(true).as_bytes()).await;
    assert_eq!(conn.read_response(false).await.status, 200);
    let path = proxy.dir().join("postern.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("name = \"admin\"", "name = \"ops\"")).unwrap();
    proxy.signal(1);
    proxy.wait_for_stderr_line(|l| l.contains("configuration reloaded"), common::T);
    conn.send(ask(false).as_bytes()).await;
    assert_eq!(conn.read_response(false).await.status, 401);
    let _ = std::fs::remove_dir_all(dir);
}

/// State changes cannot be made by a web page through the operator's
/// browser (cross-site request forgery); scripts and the dashboard can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_cannot_change_the_proxy() {
    let proxy = start("[[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n");
    let admin = proxy.addr_of("admin");
    let reload = format!("http://{admin}/api/reload");
    let forged = curl_fetch_async(&[
        "-X",
        "POST",
        "-H",
        "Origin: http://evil.example",
        "--data",
        "x=1",
        &reload,
    ])
    .await;
    assert_eq!(forged.status, 403, "{}", forged.headers);
    let fetched =
        curl_fetch_async(&["-X", "POST", "-H", "Sec-Fetch-Site: cross-site", &reload]).await;
    assert_eq!(fetched.status, 403);
    let dashboard = curl_fetch_async(&[
        "-X",
        "POST",
        "-H",
        &format!("Origin: http://{admin}"),
        &reload,
    ])
    .await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.headers);
    let script = curl_fetch_async(&["-X", "POST", &reload]).await;
    assert_eq!(script.status, 200);
    let head = curl_fetch_async(&["-I", &format!("http://{admin}/healthz")]).await;
    assert_eq!(head.status, 200);
    // Bodies are not held whole: the API takes none.
    let big = proxy.dir().join("big.body");
    std::fs::write(&big, vec![b'x'; 300_000]).unwrap();
    let body = format!("@{}", big.display());
    let stuffed = curl_fetch_async(&["-X", "POST", "--data-binary", &body, &reload]).await;
    assert_eq!(stuffed.status, 413);
}

/// A reload whose new listener address cannot be bound is refused as a
/// whole: the old socket keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_bind_is_refused() {
    let origin = Origin::start().await;
    let proxy = start(&common::private_config(""));
    let path = proxy.dir().join("postern.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // A documentation address (RFC 5737) no interface here has.
    std::fs::write(
        &path,
        text.replace("bind = \"127.0.0.1:0\"", "bind = \"192.0.2.1:3128\""),
    )
    .unwrap();
    proxy.signal(1);
    let line = proxy.wait_for_stderr_line(|l| l.contains("reload refused"), common::T);
    assert!(line.contains("192.0.2.1:3128"), "{line}");
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/status/204")]).await;
    assert_eq!(f.status, 204, "the old listener still serves");
}

/// A listener's own settings change on reload without a new socket: here
/// it starts to require a PROXY protocol header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_a_listeners_settings_in_place() {
    let origin = Origin::start().await;
    let proxy = start(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{}\"]\n\n\
         [[route]]\nlistener = \"web\"\npool = \"app\"\n",
        origin.addr()
    ));
    let plain = b"GET /status/204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut c = common::Conn::connect(proxy.addr()).await;
    c.send(plain).await;
    assert_eq!(c.read_response(false).await.status, 204);
    let path = proxy.dir().join("postern.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "mode = \"reverse\"\n",
            "mode = \"reverse\"\nproxy_protocol = true\n",
        ),
    )
    .unwrap();
    proxy.signal(1);
    proxy.wait_for_stderr_line(|l| l.contains("configuration reloaded"), common::T);
    let mut c = common::Conn::connect(proxy.addr()).await;
    c.send(plain).await;
    assert!(c.read_to_end().await.is_empty(), "no PROXY header: closed");
    let mut c = common::Conn::connect(proxy.addr()).await;
    c.send(&[&b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\n"[..], plain].concat())
        .await;
    assert_eq!(c.read_response(false).await.status, 204);
}
