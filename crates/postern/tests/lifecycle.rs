//! Signals and logs over a process's life: drain on SIGTERM, reopen on SIGUSR1,
//! reload on SIGHUP, and the access log formats.

use std::time::Duration;

use postern_testkit::{Origin, TestProxy, raw_exchange};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const SIGHUP: i32 = 1;
const SIGUSR1: i32 = 10;
const SIGTERM: i32 = 15;
const WAIT: Duration = Duration::from_secs(10);

fn config(extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n[egress]\nallow_private_destinations = true\n{extra}"
    )
}

fn get(origin: &Origin, path: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        origin.url(path),
        origin.addr()
    )
    .into_bytes()
}

/// SIGTERM stops accepting but lets a request in flight finish, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(BIN, &config("[log]\naccess = \"off\"\n"));
    let addr = proxy.addr();
    let request = get(&origin, "/delay/800");
    let slow = tokio::spawn(async move { raw_exchange(addr, &request, WAIT).await });
    // Signal only once the request has reached the origin.
    let deadline = std::time::Instant::now() + WAIT;
    while origin.requests() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.signal(SIGTERM);
    let reply = slow.await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.body(), b"delayed");
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(WAIT).map(|s| s.code()))
        .await
        .unwrap();
    assert_eq!(status, Some(Some(0)));
}

/// After logrotate moves the file, SIGUSR1 makes new lines go to a new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(BIN, &config("[log]\naccess = \"{dir}/access.log\"\n"));
    raw_exchange(proxy.addr(), &get(&origin, "/bytes/1"), WAIT).await;
    proxy.wait_for_file_line("access.log", |l| l.contains("/bytes/1 "), WAIT);
    std::fs::rename(
        proxy.dir().join("access.log"),
        proxy.dir().join("access.log.1"),
    )
    .unwrap();
    proxy.signal(SIGUSR1);
    // The reopen is asynchronous: retry until a request lands in the new file.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        raw_exchange(proxy.addr(), &get(&origin, "/bytes/2"), WAIT).await;
        if proxy.read_file("access.log").contains("/bytes/2 ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new access.log after SIGUSR1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.read_file("access.log.1").contains("/bytes/1 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_combined_formats() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(
        BIN,
        &config("[log]\naccess = \"{dir}/access.log\"\nformat = \"json\"\n"),
    );
    raw_exchange(proxy.addr(), &get(&origin, "/bytes/321"), WAIT).await;
    let line = proxy.wait_for_file_line("access.log", |l| l.contains("/bytes/321"), WAIT);
    for part in [
        "\"method\":\"GET\"",
        "\"status\":200",
        "\"result\":\"TCP_MISS\"",
        "\"listener\":\"proxy\"",
        "\"client\":\"127.0.0.1\"",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    assert!(
        line.contains(&format!("\"upstream\":\"{}\"", origin.addr())),
        "{line}"
    );

    let proxy = TestProxy::start(
        BIN,
        &config("[log]\naccess = \"{dir}/access.log\"\nformat = \"combined\"\n"),
    );
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nUser-Agent: tester/1\r\nReferer: http://ref.example/\r\nConnection: close\r\n\r\n",
        origin.url("/bytes/5")
    );
    raw_exchange(proxy.addr(), req.as_bytes(), WAIT).await;
    let line = proxy.wait_for_file_line("access.log", |l| l.contains("/bytes/5"), WAIT);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(&format!("\"GET {} HTTP/1.1\" 200 ", origin.url("/bytes/5"))),
        "{line}"
    );
    assert!(
        line.ends_with("\"http://ref.example/\" \"tester/1\""),
        "{line}"
    );
}

/// `format = "custom"` writes the template's line, with the request's
/// headers for HTTP/1.1 and HTTP/2 clients alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_format_writes_the_template() {
    use http_body_util::BodyExt;
    let origin = Origin::start().await;
    let proxy = TestProxy::start(
        BIN,
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\
             [egress]\nallow_private_destinations = true\n\
             [log]\naccess = \"{dir}/access.log\"\nformat = \"custom\"\n\
             template = 'client=$remote_addr \"$request_method $request_uri $server_protocol\" $status $bytes_sent up=$upstream_addr $squid_result ua=\"$http_user_agent\" ref=$http_referer $$'\n",
    );
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nUser-Agent: tester \"1\"\r\nReferer: http://ref.example/\r\nConnection: close\r\n\r\n",
        origin.url("/bytes/5")
    );
    raw_exchange(proxy.addr(), req.as_bytes(), WAIT).await;
    let line = proxy.wait_for_file_line("access.log", |l| l.contains("/bytes/5"), WAIT);
    assert_eq!(
        line,
        format!(
            "client=127.0.0.1 \"GET {} HTTP/1.1\" 200 {} up={} TCP_MISS ua=\"tester \\\"1\\\"\" ref=http://ref.example/ $",
            origin.url("/bytes/5"),
            reported_bytes(&line),
            origin.addr()
        )
    );

    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(origin.url("/bytes/7"))
        .header("user-agent", "h2-tester")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    let line = proxy.wait_for_file_line("access.log", |l| l.contains("/bytes/7"), WAIT);
    assert!(
        line.contains(" HTTP/2\" 200 ") && line.contains("ua=\"h2-tester\" ref=- $"),
        "{line}"
    );
}

/// A reload cannot change the running log's format: lines keep their
/// format (and its fields) until a restart, and the warning says so only
/// when the file differs from what runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_running_log_format_whole() {
    let origin = Origin::start().await;
    let custom = config(
        "[log]\naccess = \"{dir}/access.log\"\nformat = \"custom\"\ntemplate = '$request_uri ua=\"$http_user_agent\"'\n",
    );
    let proxy = TestProxy::start(BIN, &custom);
    let path = proxy.dir().join("postern.toml");
    let dir = proxy.dir().to_string_lossy().into_owned();
    std::fs::write(
        &path,
        config("[log]\naccess = \"{dir}/access.log\"\nformat = \"squid\"\n").replace("{dir}", &dir),
    )
    .unwrap();
    proxy.signal(SIGHUP);
    proxy.wait_for_stderr_line(|l| l.contains("configuration reloaded"), WAIT);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nUser-Agent: kept/1\r\nConnection: close\r\n\r\n",
        origin.url("/bytes/6")
    );
    raw_exchange(proxy.addr(), req.as_bytes(), WAIT).await;
    let line = proxy.wait_for_file_line("access.log", |l| l.contains("/bytes/6"), WAIT);
    assert!(line.ends_with(" ua=\"kept/1\""), "{line}");
    // Back to the file it runs with: no warning this time.
    std::fs::write(&path, custom.replace("{dir}", &dir)).unwrap();
    proxy.signal(SIGHUP);
    let deadline = std::time::Instant::now() + WAIT;
    while proxy.stderr().matches("configuration reloaded").count() < 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let warnings = proxy
        .stderr()
        .matches("take effect after a restart")
        .count();
    assert_eq!(warnings, 1, "{}", proxy.stderr());
}

/// `access = "syslog:udp://..."` sends each line as one syslog message,
/// with the configured facility and Postern's tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_go_to_syslog() {
    let origin = Origin::start().await;
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let proxy = TestProxy::start(
        BIN,
        &config(&format!(
            "[log]\naccess = \"syslog:udp://{}\"\nsyslog_facility = \"local3\"\n",
            server.local_addr().unwrap()
        )),
    );
    for path in ["/bytes/3", "/bytes/4"] {
        raw_exchange(proxy.addr(), &get(&origin, path), WAIT).await;
    }
    let messages = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 4096];
        (0..2)
            .map(|_| {
                let n = server.recv(&mut buf).expect("a syslog message");
                String::from_utf8_lossy(&buf[..n]).into_owned()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let tag = format!(" postern[{}]: ", proxy.pid());
    for (message, path) in messages.iter().zip(["/bytes/3", "/bytes/4"]) {
        // local3 (19) × 8 + informational (6).
        assert!(message.starts_with("<158>"), "{message}");
        let line = message.split_once(&tag).map(|(_, line)| line);
        let line = line.unwrap_or_else(|| panic!("no tag in {message}"));
        assert!(
            line.contains(" TCP_MISS/200 ") && line.contains(path),
            "{message}"
        );
        assert!(!line.ends_with('\n'), "{message:?}");
    }
}

/// The `$bytes_sent` figure of a custom line written by the test above.
fn reported_bytes(line: &str) -> String {
    line.split("\" 200 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_string()
}

/// In the combined format a `"` in the URL or a header is escaped (`\"`, as
/// Apache writes it), so the quoted fields still end where they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_format_escapes_quotes() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(
        BIN,
        &config("[log]\naccess = \"{dir}/access.log\"\nformat = \"combined\"\n"),
    );
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nUser-Agent: a \"quoted\" agent\\\r\nConnection: close\r\n\r\n",
        origin.url("/a\"b")
    );
    let reply = raw_exchange(proxy.addr(), req.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), Some(404), "{}", reply.text());
    let line = proxy.wait_for_file_line("access.log", |l| l.contains("/a"), WAIT);
    assert!(
        line.contains(&format!("\"GET {} HTTP/1.1\" 404 ", origin.url("/a\\\"b"))),
        "{line}"
    );
    assert!(
        line.ends_with(" \"-\" \"a \\\"quoted\\\" agent\\\\\""),
        "{line}"
    );
    // Read as a combined-format parser does: the quoted fields, with `\`
    // escaping the next character.
    let mut fields = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut field = String::new();
        loop {
            match chars.next() {
                Some('\\') => field.extend(chars.next()),
                Some('"') | None => break,
                Some(c) => field.push(c),
            }
        }
        fields.push(field);
    }
    assert_eq!(
        fields,
        [
            format!("GET {} HTTP/1.1", origin.url("/a\"b")),
            "-".to_string(),
            "a \"quoted\" agent\\".to_string(),
        ],
        "{line}"
    );
}

/// SIGHUP applies a valid new file to new connections and refuses an invalid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_refuses_a_broken_file() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(BIN, &config("[log]\naccess = \"off\"\n"));
    let ok = raw_exchange(proxy.addr(), &get(&origin, "/bytes/1"), WAIT).await;
    assert_eq!(ok.status(), Some(200));
    let path = proxy.dir().join("postern.toml");
    let original = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, format!("{original}\n[[rule]]\naction = \"deny\"\n")).unwrap();
    proxy.signal(SIGHUP);
    proxy.wait_for_stderr_line(|l| l.contains("configuration reloaded"), WAIT);
    let denied = raw_exchange(proxy.addr(), &get(&origin, "/bytes/1"), WAIT).await;
    assert_eq!(denied.status(), Some(403), "{}", denied.text());
    assert!(
        denied
            .header("proxy-status")
            .unwrap_or_default()
            .contains("error=http_request_denied")
    );

    std::fs::write(&path, format!("{original}\n[[rule]]\nactoin = \"allow\"\n")).unwrap();
    proxy.signal(SIGHUP);
    let line = proxy.wait_for_stderr_line(
        |l| l.contains("postern.toml:") && l.contains("actoin"),
        WAIT,
    );
    assert!(line.contains("unknown key `actoin`"), "{line}");
    // The last good configuration (deny) still applies.
    let still = raw_exchange(proxy.addr(), &get(&origin, "/bytes/1"), WAIT).await;
    assert_eq!(still.status(), Some(403));
}

/// IPv6 listeners work like IPv4 ones (skipped where the machine has no ::1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let origin = Origin::start().await;
    let proxy = TestProxy::start(
        BIN,
        "[[listener]]\nname = \"v4\"\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"v6\"\nbind = \"[::1]:0\"\n[egress]\nallow_private_destinations = true\n[log]\naccess = \"off\"\n",
    );
    let v6 = proxy.addr_of("v6");
    assert!(v6.is_ipv6());
    let reply = raw_exchange(v6, &get(&origin, "/bytes/64"), WAIT).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.body(), postern_testkit::pattern_bytes(64));
}

/// The longest durations the configuration accepts (ten years) are safe to
/// add to the clock: a keep-alive connection waits for its next request
/// under `client_idle`, and SIGTERM drains under `drain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_accepted_durations_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let origin = Origin::start().await;
    let proxy = TestProxy::start(
        BIN,
        &config(
            "[log]\naccess = \"off\"\n[timeouts]\nclient_idle = \"87600h\"\n\
             client_header = \"87600h\"\nio = \"87600h\"\ndrain = \"87600h\"\n",
        ),
    );
    let mut conn = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(proxy.addr()))
        .await
        .unwrap()
        .unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/bytes/3"),
        origin.addr()
    );
    // Two requests on one connection: the second is read under `client_idle`.
    for _ in 0..2 {
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !ends_with_body(&seen, 3) {
            let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(
            seen.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
    drop(conn);
    proxy.signal(SIGTERM);
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(WAIT).map(|s| s.code()))
        .await
        .unwrap();
    assert_eq!(status, Some(Some(0)));
}

/// A complete head followed by `len` body bytes.
fn ends_with_body(bytes: &[u8], len: usize) -> bool {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_some_and(|end| bytes.len() >= end + 4 + len)
}

/// `n` in "N line(s) lost" or "N line(s) dropped" on a report line.
fn reported(line: &str, what: &str) -> u64 {
    let before = line
        .split_once(what)
        .unwrap_or_else(|| panic!("no `{what}` in {line}"))
        .0;
    let words: Vec<&str> = before.split_whitespace().collect();
    words[words.len() - 2].parse().unwrap()
}

/// Writes to the access log fail (a full disk): the proxy keeps serving and
/// says so on stderr once, then sums up, rather than once per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_write_errors_are_reported_rarely() {
    let began = std::time::Instant::now();
    let proxy = TestProxy::start(
        BIN,
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n[log]\naccess = \"/dev/full\"\n",
    );
    let request =
        b"GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n";
    for _ in 0..20 {
        let reply = raw_exchange(proxy.addr(), request, WAIT).await;
        assert_eq!(reply.status(), Some(403), "{}", reply.text());
    }
    proxy.signal(SIGTERM);
    proxy.wait_for_stderr_line(|l| l.starts_with("postern: stopped"), WAIT);
    let stderr = proxy.stderr();
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("access log"))
        .collect();
    // Once at the first failure, then at most once per 5 s, and at exit.
    let allowed = 2 + began.elapsed().as_secs() as usize / 5;
    assert!(
        !reports.is_empty() && reports.len() <= allowed,
        "{} report lines, {allowed} allowed:\n{stderr}",
        reports.len()
    );
    let mut lost = 0;
    for line in &reports {
        assert!(
            line.starts_with("postern: access log: ")
                && line.ends_with(" lost: No space left on device (os error 28)"),
            "{line}"
        );
        lost += reported(line, " lost:");
    }
    assert_eq!(lost, 20, "{stderr}");
}

/// An access log nobody reads (a FIFO whose reader never reads) does not make
/// the proxy's memory grow: lines beyond a bounded queue are dropped, counted
/// in /metrics and reported on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_access_log_drops_lines_and_says_so() {
    use std::os::unix::fs::OpenOptionsExt;

    let dir = std::env::temp_dir().join(format!(
        "postern-fifo-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("running mkfifo");
    assert!(made.success());
    // A reader that never reads: the proxy's writes fill the pipe and block.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let proxy = TestProxy::start(
        BIN,
        &format!(
            "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\
             [limits]\nmax_request_line = \"1MiB\"\nmax_header_size = \"2MiB\"\n\
             [log]\naccess = \"{}\"\n",
            fifo.display()
        ),
    );
    // Lines of about 1 MB each: the queue (16 MiB) fills after some 17.
    let request = format!(
        "GET http://127.0.0.1:9/{} HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
        "a".repeat(1_000_000)
    );
    for _ in 0..30 {
        let reply = raw_exchange(proxy.addr(), request.as_bytes(), WAIT).await;
        assert_eq!(reply.status(), Some(403), "{}", reply.text());
    }
    let line = proxy.wait_for_stderr_line(|l| l.contains("access log"), WAIT);
    assert!(
        line.starts_with("postern: access log: ")
            && line.ends_with(" dropped (the log cannot keep up)"),
        "{line}"
    );
    assert!(reported(&line, " dropped") >= 1, "{line}");
    let metrics = raw_exchange(
        proxy.addr_of("admin"),
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let text = metrics.text();
    let dropped: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("postern_access_log_dropped_lines_total{reason=\"queue_full\"} ")
        })
        .unwrap_or_else(|| panic!("no dropped-lines counter in\n{text}"))
        .parse()
        .unwrap();
    // Some 13 of the 30 lines cannot be queued; allow for a larger pipe.
    assert!((5..=30).contains(&dropped), "{dropped}\n{text}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An h2c connection to `addr`; the task ends when the connection does.
async fn h2c_connection(
    addr: std::net::SocketAddr,
) -> tokio::task::JoinHandle<Result<(), hyper::Error>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        // The client keeps its side open as long as it holds the sender.
        let _keep: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> =
            sender;
        conn.await
    })
}

/// An admin connection that made one request and stays open (keep-alive).
async fn idle_admin_connection(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    s
}

/// HTTP/2 and admin connections without requests are closed after
/// `client_idle`, like HTTP/1 ones, and do not hold a stop for the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_and_admin_connections_neither_linger_nor_hold_a_stop() {
    let proxy = TestProxy::start(
        BIN,
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\n\
         [[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\n\
         [timeouts]\nclient_idle = \"1s\"\ndrain = \"30s\"\n\n[log]\naccess = \"off\"\n",
    );
    let idle = h2c_connection(proxy.addr_of("proxy")).await;
    let ended = tokio::time::timeout(WAIT, idle).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    // Fresh idle connections of both kinds, then a stop.
    let _h2 = h2c_connection(proxy.addr_of("proxy")).await;
    let _admin = idle_admin_connection(proxy.addr_of("admin")).await;
    let started = std::time::Instant::now();
    proxy.signal(SIGTERM);
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(WAIT).map(|s| s.code()))
        .await
        .unwrap();
    assert_eq!(status, Some(Some(0)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A second SIGTERM (or SIGINT) during the drain stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_drain() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(
        BIN,
        &config("[timeouts]\ndrain = \"60s\"\n[log]\naccess = \"off\"\n"),
    );
    let addr = proxy.addr();
    let request = get(&origin, "/delay/30000");
    let _slow = tokio::spawn(async move { raw_exchange(addr, &request, WAIT * 6).await });
    let deadline = std::time::Instant::now() + WAIT;
    while origin.requests() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.signal(SIGTERM);
    proxy.wait_for_stderr_line(|l| l.contains("stopping"), WAIT);
    let started = std::time::Instant::now();
    proxy.signal(2);
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(WAIT).map(|s| s.code()))
        .await
        .unwrap();
    assert_eq!(status, Some(Some(0)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
