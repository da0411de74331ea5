//! Forwarded traffic through a pool of parent proxies (other Postern
//! processes here): plain HTTP and CONNECT, credentials, failover when a
//! parent stops during load, and source addresses from `egress.bind`.

mod common;

use std::time::{Duration, Instant};

use common::{BIN, config, curl_fetch_async, private_config, reqwest_via, scratch_dir, start};
use postern_testkit::{Origin, TestCa, TestProxy, TlsOrigin, pattern_bytes};

/// A parent: a forward proxy that may reach the loopback origins.
fn parent(extra: &str, connect_port: u16) -> TestProxy {
    start(&config(
        "",
        &format!("allow_private_destinations = true\nconnect_ports = [443, {connect_port}]"),
        extra,
    ))
}

/// A child forward proxy whose traffic leaves through `parents`.
fn child(parents: &[&TestProxy], pool_extra: &str, connect_port: u16) -> TestProxy {
    let list: Vec<String> = parents
        .iter()
        .map(|p| format!("\"{}\"", p.addr()))
        .collect();
    start(&json_log(config(
        "parent = \"up\"",
        &format!("allow_private_destinations = true\nconnect_ports = [443, {connect_port}]"),
        &format!(
            "[[pool]]\nname = \"up\"\nservers = [{}]\nretries = 2\nretry_budget = 1.0\n{pool_extra}\n",
            list.join(", ")
        ),
    )))
}

/// The same configuration with the access log in JSON (errors in detail).
fn json_log(toml: String) -> String {
    toml.replace("[log]\n", "[log]\nformat = \"json\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_connect_go_through_the_parent() {
    let origin = Origin::start().await;
    let ca = TestCa::new();
    let tls = TlsOrigin::start(&ca).await;
    let port = tls.addr().port();
    let p1 = parent("", port);
    let c = child(&[&p1], "", port);
    let f = curl_fetch_async(&["-x", &c.proxy_url(), &origin.url("/bytes/5000")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(5000));
    // The origin was reached by the parent, not by the child.
    common::wait_log_line(&p1, &["TCP_MISS/200", "/bytes/5000"]);
    let ca_pem = ca.write_ca_pem(c.dir());
    let f = curl_fetch_async(&[
        "-p",
        "-x",
        &c.proxy_url(),
        "--cacert",
        &ca_pem.to_string_lossy(),
        &tls.url("/bytes/3000"),
    ])
    .await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(3000));
    common::wait_log_line(&p1, &["TCP_TUNNEL/200"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_through_parents_is_cached() {
    let origin = Origin::start().await;
    let p1 = parent("", 443);
    // A child with a cache; the parent has none.
    let c = start(&config(
        "parent = \"up\"",
        "allow_private_destinations = true",
        &format!(
            "[cache]\nmemory = \"8MiB\"\n\n[[pool]]\nname = \"up\"\nservers = [\"{}\"]\n",
            p1.addr()
        ),
    ));
    let url = origin.url("/bytes/700?h=cache-control:max-age=60");
    let miss = curl_fetch_async(&["-x", &c.proxy_url(), &url]).await;
    assert_eq!((miss.exit, miss.status), (0, 200), "{}", miss.stderr);
    let cs = miss.header("cache-status").unwrap();
    assert!(cs.contains("fwd=uri-miss") && cs.contains("stored"), "{cs}");
    let hit = curl_fetch_async(&["-x", &c.proxy_url(), &url]).await;
    assert_eq!(hit.body, pattern_bytes(700));
    assert!(hit.header("cache-status").unwrap().contains("hit"));
    assert!(hit.header("via").is_some(), "{}", hit.headers);
    assert_eq!(origin.requests(), 1);
    common::wait_log_line(&c, &["TCP_HIT/200", "/bytes/700"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_credentials_are_sent() {
    let origin = Origin::start().await;
    let dir = scratch_dir();
    let out = std::process::Command::new(BIN)
        .args(["passwd", "child", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(b"s3cret\n")?;
            p.wait_with_output()
        })
        .unwrap();
    let file = dir.join("users");
    std::fs::write(&file, out.stdout).unwrap();
    let p1 = parent(
        &format!(
            "[auth]\nhtpasswd = \"{}\"\n\n[[rule]]\naction = \"auth\"\n",
            file.display()
        ),
        443,
    );
    let without = child(&[&p1], "", 443);
    let f = curl_fetch_async(&["-x", &without.proxy_url(), &origin.url("/status/200")]).await;
    assert_eq!(f.status, 407, "the parent's answer is relayed");
    let with = child(&[&p1], "username = \"child\"\npassword = \"s3cret\"", 443);
    let f = curl_fetch_async(&["-x", &with.proxy_url(), &origin.url("/status/200")]).await;
    assert_eq!(f.status, 200, "{}", f.headers);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_parent_during_load_loses_no_request() {
    let origin = Origin::start().await;
    let p1 = parent("", 443);
    let p2 = parent("", 443);
    let c = child(&[&p1, &p2], "", 443);
    let url = origin.url("/bytes/1024");
    let proxy_url = c.proxy_url();
    let stop = Instant::now() + Duration::from_secs(3);
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (url, proxy_url) = (url.clone(), proxy_url.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest_via(&proxy_url);
            let (mut ok, mut bad) = (0, Vec::new());
            while Instant::now() < stop {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(b) if b.len() == 1024 => ok += 1,
                        other => bad.push(format!("body: {other:?}")),
                    },
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            (ok, bad)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(p1);
    let mut total = 0;
    for w in workers {
        let (ok, bad) = w.await.unwrap();
        if !bad.is_empty() {
            let log = c.read_file("access.log");
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("\"status\":502"))
                .collect();
            panic!("failed requests: {bad:?}\n{lines:#?}\n{}", c.stderr());
        }
        total += ok;
    }
    assert!(total > 50, "only {total} requests");
    drop(p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_bind_rotates_source_addresses() {
    let origin = Origin::start().await;
    let proxy = start(&private_config("").replace(
        "allow_private_destinations = true",
        "allow_private_destinations = true\nbind = [\"127.0.0.2\", \"127.0.0.3\"]\npool_max_idle_per_host = 0",
    ));
    for _ in 0..4 {
        let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/status/204")]).await;
        assert_eq!(f.status, 204, "{}", f.stderr);
    }
    let sources: Vec<String> = origin.peers().iter().map(|p| p.ip().to_string()).collect();
    assert_eq!(
        sources,
        ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]
    );
}

/// What the child checks on addresses holds through its parents, which
/// resolve names themselves: loopback names are refused by the default
/// guard, and a name some of whose addresses a rule refuses is not handed
/// to a parent that could choose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_checks_hold_for_names_sent_to_parents() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    let p1 = parent("", port);
    let pool = format!("[[pool]]\nname = \"up\"\nservers = [\"{}\"]\n", p1.addr());
    // The default guard: no private destinations.
    let guarded = start(&config(
        "parent = \"up\"",
        &format!("connect_ports = [443, {port}]"),
        &pool,
    ));
    let by_name = format!("http://localhost:{port}/status/200");
    let f = curl_fetch_async(&["-x", &guarded.proxy_url(), &by_name]).await;
    assert_eq!(f.status, 403, "{}", f.headers);
    assert!(
        f.header("proxy-status")
            .unwrap_or_default()
            .contains("destination_ip_prohibited"),
        "{}",
        f.headers
    );
    let f = curl_fetch_async(&["-p", "-x", &guarded.proxy_url(), &by_name]).await;
    assert_ne!(f.status, 200, "{}", f.stderr);
    // A rule on addresses: `localhost` is ::1 and 127.0.0.1, and the rule
    // refuses one of them (which the parent might well pick).
    let ruled = start(&config(
        "parent = \"up\"",
        &format!("allow_private_destinations = true\nconnect_ports = [443, {port}]"),
        &format!(
            "{pool}\n[[rule]]\naction = \"deny\"\ndst_ip = [\"::1/128\"]\n\n\
             [[rule]]\naction = \"allow\"\nsrc = [\"127.0.0.0/8\"]\n"
        ),
    ));
    let f = curl_fetch_async(&["-x", &ruled.proxy_url(), &by_name]).await;
    assert_eq!(f.status, 403, "{}", f.headers);
    assert_eq!(origin.requests(), 0, "nothing reached the origin");
    // An address the rules allow still goes through the parent.
    let f = curl_fetch_async(&["-x", &ruled.proxy_url(), &origin.url("/status/204")]).await;
    assert_eq!(f.status, 204, "{}", f.headers);
    common::wait_log_line(&p1, &["/status/204"]);
}
