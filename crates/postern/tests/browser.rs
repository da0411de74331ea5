//! In headless Chromium: the admin dashboard renders with live numbers that
//! change under load (a screenshot is kept in target/test-artifacts), the
//! PAC file's logic, and Chromium browsing through Postern with only the
//! PAC URL configured.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::start;
use postern_testkit::Origin;

fn chromium(args: &[&str], profile: &Path) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium (apt-get install chromium)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cell(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    dom.split(&marker)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("")
        .to_string()
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_numbers() {
    let origin = Origin::start().await;
    let proxy = start(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\n[egress]\nallow_private_destinations = true\n\n[log]\naccess = \"off\"\n",
    );
    let dashboard = format!("http://{}/", proxy.addr_of("admin"));
    let proxy_url = format!("http://{}", proxy.addr_of("proxy"));
    // Load for the whole test.
    let stop = Instant::now() + Duration::from_secs(20);
    let url = origin.url("/bytes/512");
    let load = tokio::spawn(async move {
        let client = common::reqwest_via(&proxy_url);
        while Instant::now() < stop {
            if let Ok(r) = client.get(&url).send().await {
                let _ = r.bytes().await;
            }
        }
    });
    let profile = common::scratch_dir();
    let shot = artifacts().join("dashboard.png");
    let (dashboard2, profile2, shot2) = (dashboard.clone(), profile.clone(), shot.clone());
    let (first, errors) = tokio::task::spawn_blocking(move || {
        let (dom, log) = chromium(
            &["--virtual-time-budget=4000", "--dump-dom", &dashboard2],
            &profile2,
        );
        chromium(
            &[
                "--virtual-time-budget=3000",
                "--window-size=1200,900",
                &format!("--screenshot={}", shot2.display()),
                &dashboard2,
            ],
            &profile2,
        );
        (dom, log)
    })
    .await
    .unwrap();
    let (second, _) = {
        let (d, p) = (dashboard.clone(), profile.clone());
        tokio::task::spawn_blocking(move || {
            chromium(&["--virtual-time-budget=4000", "--dump-dom", &d], &p)
        })
        .await
        .unwrap()
    };
    load.abort();
    assert!(!errors.contains("Uncaught"), "console errors: {errors}");
    let (a, b) = (cell(&first, "total"), cell(&second, "total"));
    let (a, b): (u64, u64) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
    assert!(a > 0 && b > a, "request totals did not move: {a} then {b}");
    let rps = cell(&second, "rps");
    // A rate needs two samples; its value depends on how busy the machine is.
    assert!(rps.parse::<f64>().is_ok(), "requests/s shows {rps:?}");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot"
    );
    let _ = std::fs::remove_dir_all(profile);
}

/// The PAC file as Chromium runs it: loaded from the proxy port, it sends a
/// public host through Postern and keeps plain host names direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_the_pac_file() {
    let proxy = start("[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n");
    let addr = proxy.addr_of("proxy");
    let pac = common::curl_fetch_async(&[&format!("http://{addr}/proxy.pac")]).await;
    let pac = String::from_utf8_lossy(&pac.body).into_owned();
    // The PAC functions browsers provide, as far as this file uses them.
    let page = format!(
        "<html><body><pre id=out></pre><script>\
         function isPlainHostName(h){{return h.indexOf('.')<0}}\
         function dnsDomainIs(h,d){{return h.endsWith(d)}}\
         function dnsResolve(h){{return h=='intranet.test'?'10.1.2.3':'93.184.215.14'}}\
         function isInNet(ip,net,mask){{var a=ip.split('.'),n=net.split('.'),m=mask.split('.');\
           for(var i=0;i<4;i++)if((a[i]&m[i])!=(n[i]&m[i]))return false;return true}}\
         {pac}\
         document.getElementById('out').textContent=[\
           FindProxyForURL('http://example.com/','example.com'),\
           FindProxyForURL('http://printer/','printer'),\
           FindProxyForURL('http://intranet.test/','intranet.test')].join('|');\
         </script></body></html>"
    );
    let file = common::scratch_dir().join("pac.html");
    std::fs::write(&file, page).unwrap();
    let profile = common::scratch_dir();
    let url = format!("file://{}", file.display());
    let (dom, log) = tokio::task::spawn_blocking(move || chromium(&["--dump-dom", &url], &profile))
        .await
        .unwrap();
    assert!(!log.contains("Uncaught"), "{log}");
    let out = cell(&dom, "out");
    assert_eq!(out, format!("PROXY {addr}; DIRECT|DIRECT|DIRECT"), "{dom}");
}

/// Chromium configured with nothing but the PAC URL reaches an origin
/// through Postern. Chromium never proxies loopback names or addresses, so
/// the origin has a name of its own, which Postern answers from
/// `egress.hosts` (Chromium itself never resolves it: the PAC sends it to
/// the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_only_the_pac_url_browses_through_postern() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let proxy = start(&common::config(
        "",
        "allow_private_destinations = true\nhosts = { \"pac-origin.test\" = \"127.0.0.1\" }",
        "",
    ));
    let pac_url = format!("http://{}/proxy.pac", proxy.addr());
    let page = format!("http://pac-origin.test:{port}/status/200");
    let profile = common::scratch_dir();
    let pac_arg = format!("--proxy-pac-url={pac_url}");
    let (dom, log) = tokio::task::spawn_blocking(move || {
        chromium(
            &[&pac_arg, "--virtual-time-budget=5000", "--dump-dom", &page],
            &profile,
        )
    })
    .await
    .unwrap();
    assert!(dom.contains("status 200"), "{dom}\n{log}");
    common::wait_log_line(&proxy, &["/proxy.pac"]);
    common::wait_log_line(
        &proxy,
        &[
            "TCP_MISS/200",
            &format!("GET http://pac-origin.test:{port}/status/200"),
        ],
    );
}
