//! SOCKS5 (RFC 1928/1929) and SOCKS4a through the real binary: curl as the
//! client, the same rules and users as HTTP, and one raw exchange per
//! malformed handshake.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, config, curl_fetch_async, scratch_dir, start};
use postern_testkit::{Origin, TestProxy, pattern_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn socks_config(egress: &str, extra: &str) -> String {
    config("", egress, extra).replace(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\nmode = \"socks5\"\n",
    )
}

fn socks_url(scheme: &str, proxy: &TestProxy) -> String {
    format!("{scheme}://{}", proxy.addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_socks5_socks5h_and_socks4a() {
    let origin = Origin::start().await;
    let proxy = start(&socks_config("allow_private_destinations = true", ""));
    let port = origin.addr().port();
    for (scheme, host) in [
        ("socks5", "127.0.0.1"),
        ("socks5h", "localhost"),
        ("socks4", "127.0.0.1"),
        ("socks4a", "localhost"),
    ] {
        let f = curl_fetch_async(&[
            "--proxy",
            &socks_url(scheme, &proxy),
            &format!("http://{host}:{port}/bytes/40000"),
        ])
        .await;
        assert_eq!((f.exit, f.status), (0, 200), "{scheme}: {}", f.stderr);
        assert_eq!(f.body, pattern_bytes(40_000), "{scheme}");
    }
    let line = common::wait_log_line(&proxy, &["TCP_TUNNEL/200", &format!("localhost:{port}")]);
    assert!(line.contains("CONNECT"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safe_defaults_and_rules_apply() {
    let origin = Origin::start().await;
    let proxy = start(&socks_config("", ""));
    let f = curl_fetch_async(&[
        "--proxy",
        &socks_url("socks5", &proxy),
        &origin.url("/bytes/10"),
    ])
    .await;
    assert_ne!(f.exit, 0, "a loopback destination must be refused");
    assert_eq!(origin.requests(), 0);
    common::wait_log_line(&proxy, &["TCP_DENIED/403"]);
}

fn htpasswd(dir: &Path) -> String {
    htpasswd_for(dir, "alice", "wonder")
}

fn htpasswd_for(dir: &Path, user: &str, password: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["passwd", user, "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let line = format!("{password}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let path = dir.join("users");
    std::fs::write(&path, out.stdout).unwrap();
    path.to_string_lossy().into_owned()
}

/// RFC 1929 sends user and password apart; the pair is not re-split at a
/// colon, so `bob:p` / `ss` is not `bob` / `p:ss`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colon_cannot_move_from_user_name_to_password() {
    let dir = scratch_dir();
    let file = htpasswd_for(&dir, "bob", "p:ss");
    let proxy = start(&socks_config(
        "allow_private_destinations = true",
        &format!("[auth]\nhtpasswd = \"{file}\"\n\n[[rule]]\naction = \"auth\"\n"),
    ));
    let login = |user: &[u8], pass: &[u8]| {
        let mut m = vec![1, user.len() as u8];
        m.extend_from_slice(user);
        m.push(pass.len() as u8);
        m.extend_from_slice(pass);
        m
    };
    for (user, pass, status) in [(&b"bob"[..], &b"p:ss"[..], 0u8), (b"bob:p", b"ss", 1)] {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(&[5, 1, 2]).await.unwrap();
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await.unwrap();
        assert_eq!(choice, [5, 2]);
        s.write_all(&login(user, pass)).await.unwrap();
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [1, status], "{:?}", String::from_utf8_lossy(user));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_users_are_the_http_users() {
    let origin = Origin::start().await;
    let dir = scratch_dir();
    let file = htpasswd(&dir);
    let proxy = start(&socks_config(
        "allow_private_destinations = true",
        &format!("[auth]\nhtpasswd = \"{file}\"\n\n[[rule]]\naction = \"auth\"\n"),
    ));
    let with = format!("socks5h://alice:wonder@{}", proxy.addr());
    let f = curl_fetch_async(&["--proxy", &with, &origin.url("/bytes/100")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    let line = common::wait_log_line(&proxy, &["TCP_TUNNEL/200"]);
    assert!(line.contains(" alice "), "{line}");
    let wrong = format!("socks5h://alice:nope@{}", proxy.addr());
    let f = curl_fetch_async(&["--proxy", &wrong, &origin.url("/bytes/100")]).await;
    assert_ne!(f.exit, 0);
    let none = curl_fetch_async(&[
        "--proxy",
        &socks_url("socks5h", &proxy),
        &origin.url("/bytes/1"),
    ])
    .await;
    assert_ne!(none.exit, 0);
    assert_eq!(origin.requests(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_port_can_serve_socks_too() {
    let origin = Origin::start().await;
    let proxy = start(&config(
        "socks = true",
        "allow_private_destinations = true",
        "",
    ));
    let http = curl_fetch_async(&["-x", &proxy.proxy_url(), &origin.url("/bytes/10")]).await;
    assert_eq!(http.status, 200);
    let socks = curl_fetch_async(&[
        "--proxy",
        &socks_url("socks5", &proxy),
        &origin.url("/bytes/10"),
    ])
    .await;
    assert_eq!((socks.exit, socks.status), (0, 200), "{}", socks.stderr);
}

/// Sends `bytes` after a no-auth greeting (when `greet`), returns what the
/// proxy answered before closing.
async fn exchange(proxy: &TestProxy, greet: bool, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    if greet {
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await.unwrap();
        assert_eq!(choice, [5, 0]);
    }
    s.write_all(bytes).await.unwrap();
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(common::T, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy hung on {bytes:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_get_the_proper_failure_and_a_close() {
    let proxy = start(&socks_config("allow_private_destinations = true", ""));
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = l.local_addr().unwrap().port().to_be_bytes();
    drop(l);
    assert!(
        exchange(&proxy, false, &[6, 1, 0]).await.is_empty(),
        "bad version"
    );
    assert_eq!(
        exchange(&proxy, false, &[5, 0]).await,
        [5, 0xff],
        "no methods"
    );
    assert_eq!(
        exchange(&proxy, false, &[5, 1, 2]).await,
        [5, 0xff],
        "no acceptable method"
    );
    assert!(
        exchange(&proxy, false, &[5, 3, 0]).await.is_empty(),
        "truncated methods"
    );
    let reply = |code: u8| vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        exchange(&proxy, true, &[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await,
        reply(7),
        "BIND"
    );
    assert_eq!(
        exchange(&proxy, true, &[5, 9, 0, 1, 127, 0, 0, 1, 0, 80]).await,
        reply(7),
        "unknown command"
    );
    assert_eq!(
        exchange(&proxy, true, &[5, 1, 0, 9, 1, 2]).await,
        reply(8),
        "unknown address type"
    );
    assert_eq!(
        exchange(&proxy, true, &[5, 1, 0, 3, 0, 0, 80]).await,
        reply(8),
        "empty domain"
    );
    assert!(
        exchange(&proxy, true, &[5, 1, 0, 3, 10, b'a'])
            .await
            .is_empty(),
        "truncated domain"
    );
    let mut refused = vec![5, 1, 0, 1, 127, 0, 0, 1];
    refused.extend_from_slice(&closed);
    assert_eq!(
        exchange(&proxy, true, &refused).await,
        reply(5),
        "connection refused"
    );
    let mut unknown = vec![5, 1, 0, 3, 20];
    unknown.extend_from_slice(b"no-such-host.invalid");
    unknown.extend_from_slice(&[0, 80]);
    assert_eq!(
        exchange(&proxy, true, &unknown).await,
        reply(4),
        "host unreachable"
    );
    // SOCKS4: a rejected request gets 0x5b.
    let mut v4 = vec![4, 2, 0, 80, 127, 0, 0, 1];
    v4.extend_from_slice(b"user\0");
    assert_eq!(
        exchange(&proxy, false, &v4).await,
        [0, 0x5b, 0, 0, 0, 0, 0, 0]
    );
    // Refused by the SSRF guard on a proxy without allow_private_destinations.
    let strict = start(&socks_config("", ""));
    let mut private = vec![5, 1, 0, 1, 127, 0, 0, 1];
    private.extend_from_slice(&closed);
    assert_eq!(
        exchange(&strict, true, &private).await,
        reply(2),
        "not allowed"
    );
}

/// A UDP echo server on `echo`.
fn spawn_echo(echo: tokio::net::UdpSocket) {
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
}

/// A UDP association with the proxy: its control connection (the
/// association lives as long as it does) and the relay's address.
async fn udp_association(proxy: &TestProxy) -> (TcpStream, std::net::SocketAddr) {
    let mut control = TcpStream::connect(proxy.addr()).await.unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    control.read_exact(&mut choice).await.unwrap();
    control
        .write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[..4], &[5, 0, 0, 1]);
    let relay = std::net::SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (control, relay)
}

/// A rule on a name holds for datagrams to that name even after the same
/// address was allowed under another spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_rules_on_names_hold_after_the_address_was_allowed() {
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    spawn_echo(echo);
    let proxy = start(&socks_config(
        "allow_private_destinations = true\nhosts = { \"blocked.test\" = \"127.0.0.1\" }",
        "[[rule]]\naction = \"deny\"\ndst_domain = [\"blocked.test\"]\n\n\
         [[rule]]\naction = \"allow\"\nsrc = [\"127.0.0.0/8\"]\n",
    ));
    let (control, relay) = udp_association(&proxy).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let by_ip = |payload: &[u8]| {
        let mut p = vec![0, 0, 0, 1, 127, 0, 0, 1];
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(payload);
        p
    };
    let mut by_name = vec![0, 0, 0, 3, 12];
    by_name.extend_from_slice(b"blocked.test");
    by_name.extend_from_slice(&port.to_be_bytes());
    by_name.extend_from_slice(b"to the name");
    let mut buf = [0u8; 2048];
    // The address itself is allowed: its echo comes back.
    udp.send_to(&by_ip(b"first"), relay).await.unwrap();
    let (n, _) = tokio::time::timeout(common::T, udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[10..n], b"first");
    // The denied name, then the address again: the first echo to come back
    // must be the second datagram's (the relay keeps their order).
    udp.send_to(&by_name, relay).await.unwrap();
    udp.send_to(&by_ip(b"second"), relay).await.unwrap();
    let (n, _) = tokio::time::timeout(common::T, udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[10..n]),
        "second",
        "a datagram to a denied name went through"
    );
    drop(control);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_relays_datagrams_both_ways() {
    // A UDP echo server.
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    spawn_echo(echo);
    let proxy = start(&socks_config("allow_private_destinations = true", ""));
    let (control, relay) = udp_association(&proxy).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut packet = vec![0, 0, 0, 1, 127, 0, 0, 1];
    packet.extend_from_slice(&echo_addr.port().to_be_bytes());
    packet.extend_from_slice(b"ping over socks");
    udp.send_to(&packet, relay).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(common::T, udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..4], &[0, 0, 0, 1]);
    assert_eq!(u16::from_be_bytes([buf[8], buf[9]]), echo_addr.port());
    assert_eq!(&buf[10..n], b"ping over socks");
    drop(control);
}

/// A name whose first address is of the other family (`localhost` is ::1
/// first) is sent to an address of the association's own family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_to_names_use_the_associations_family() {
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    spawn_echo(echo);
    let proxy = start(&socks_config("allow_private_destinations = true", ""));
    let (control, relay) = udp_association(&proxy).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut packet = vec![0, 0, 0, 3, 9];
    packet.extend_from_slice(b"localhost");
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(b"by name");
    udp.send_to(&packet, relay).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(common::T, udp.recv_from(&mut buf))
        .await
        .expect("the echo of a datagram sent to localhost")
        .unwrap();
    assert!(buf[..n].ends_with(b"by name"));
    drop(control);
}

/// Datagrams the relay ignores (from another sender) do not keep an idle
/// association alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_datagrams_do_not_keep_an_association_alive() {
    let proxy = start(&socks_config(
        "allow_private_destinations = true",
        "[timeouts]\nudp_idle = \"1s\"\n",
    ));
    let (mut control, relay) = udp_association(&proxy).await;
    let junk = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let started = std::time::Instant::now();
    let closed = async {
        let mut byte = [0u8; 1];
        let _ = control.read(&mut byte).await;
    };
    let sending = async {
        loop {
            let _ = junk.send_to(b"junk", relay).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = closed => {}
        _ = sending => unreachable!(),
        _ = tokio::time::sleep(common::T) => panic!("the association outlived its idle timeout"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

/// A client that names its UDP port in UDP ASSOCIATE (RFC 1928 §7) is the
/// only sender the association takes: datagrams from its other ports, even
/// from its own address, are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_udp_port_is_the_only_one_served() {
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    spawn_echo(echo);
    let proxy = start(&socks_config("allow_private_destinations = true", ""));
    let mine = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut control = TcpStream::connect(proxy.addr()).await.unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    control.read_exact(&mut choice).await.unwrap();
    let mut request = vec![5, 3, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&mine.local_addr().unwrap().port().to_be_bytes());
    control.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[..2], &[5, 0]);
    let relay = std::net::SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    let packet = |payload: &[u8]| {
        let mut p = vec![0, 0, 0, 1, 127, 0, 0, 1];
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(payload);
        p
    };
    // From another port first: dropped, so it cannot claim the association.
    other.send_to(&packet(b"not mine"), relay).await.unwrap();
    mine.send_to(&packet(b"mine"), relay).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(common::T, mine.recv_from(&mut buf))
        .await
        .expect("the declared port's echo")
        .unwrap();
    assert_eq!(&buf[10..n], b"mine");
    let mut stray = [0u8; 64];
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(300),
            other.recv_from(&mut stray)
        )
        .await
        .is_err(),
        "the other port got an answer"
    );
    drop(control);
}
