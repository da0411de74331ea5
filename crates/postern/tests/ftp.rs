//! The ftp:// gateway against a real FTP server (pyftpdlib, started by the
//! test): files, listings, errors mapped to HTTP, uploads, and passive data
//! connections that never leave the control connection's peer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{curl_fetch_async, private_config, scratch_dir, start};
use postern_testkit::pattern_bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// pyftpdlib serving `dir` on 127.0.0.1 (anonymous; `write` allows STOR).
struct FtpServer {
    child: Child,
    port: u16,
}

impl FtpServer {
    fn start(dir: &Path, write: bool) -> FtpServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pyftpdlib",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if write {
            cmd.arg("-w");
        }
        let child = cmd
            .spawn()
            .expect("python3 -m pyftpdlib (pip install pyftpdlib)");
        // Ready once it accepts connections.
        let deadline = Instant::now() + common::T;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "FTP server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        FtpServer { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tree() -> PathBuf {
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("pub/sub dir")).unwrap();
    std::fs::write(dir.join("pub/data.bin"), pattern_bytes(300_000)).unwrap();
    std::fs::write(dir.join("pub/readme.txt"), "hello ftp\n").unwrap();
    dir
}

/// A native FTP relay listener (`mode = "ftp"`).
fn ftp_relay() -> postern_testkit::TestProxy {
    start(
        &common::config("", "allow_private_destinations = true", "").replace(
            "bind = \"127.0.0.1:0\"\n",
            "bind = \"127.0.0.1:0\"\nmode = \"ftp\"\n",
        ),
    )
}

/// Runs a Python script (ftplib as the client).
async fn python(script: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn ftp_proxy() -> postern_testkit::TestProxy {
    // FTP servers listen on high ports here; 21 is in the default http_ports.
    start(&private_config(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_come_back_byte_exact_with_length_and_type() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_proxy();
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &ftp.url("pub/data.bin")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(300_000));
    assert_eq!(f.header("content-length").as_deref(), Some("300000"));
    assert_eq!(
        f.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    let t = curl_fetch_async(&["-x", &proxy.proxy_url(), &ftp.url("pub/readme.txt")]).await;
    assert_eq!(t.body, b"hello ftp\n");
    assert_eq!(t.header("content-type").as_deref(), Some("text/plain"));
    common::wait_log_line(&proxy, &["TCP_MISS/200", "ftp://"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_are_listed_as_html_or_text() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_proxy();
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &ftp.url("pub/")]).await;
    assert_eq!(f.status, 200, "{}", f.stderr);
    let html = String::from_utf8_lossy(&f.body);
    assert!(html.contains("href=\"data.bin\""), "{html}");
    assert!(html.contains("href=\"sub%20dir/\""), "{html}");
    let plain = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        "-H",
        "Accept: text/plain",
        &ftp.url("pub/"),
    ])
    .await;
    assert!(
        plain
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(String::from_utf8_lossy(&plain.body).contains("readme.txt"));
    // A directory asked for as a file is redirected to its listing.
    let redirect = curl_fetch_async(&["-x", &proxy.proxy_url(), &ftp.url("pub/sub%20dir")]).await;
    assert_eq!(redirect.status, 301);
    let _ = std::fs::remove_dir_all(dir);
}

/// A password in an ftp:// URL is never shown back: not in a listing, not
/// in a redirect, not in the access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_passwords_are_not_echoed_or_logged() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_proxy();
    let base = format!("ftp://anonymous:S3CR3TPW@127.0.0.1:{}", ftp.port);
    let listing = curl_fetch_async(&["-x", &proxy.proxy_url(), &format!("{base}/pub/")]).await;
    assert_eq!(listing.status, 200, "{}", listing.stderr);
    let html = String::from_utf8_lossy(&listing.body);
    assert!(html.contains("anonymous@127.0.0.1"), "{html}");
    assert!(!html.contains("S3CR3TPW"), "{html}");
    let redirect =
        curl_fetch_async(&["-x", &proxy.proxy_url(), &format!("{base}/pub/sub%20dir")]).await;
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location").as_deref(),
        Some("./sub%20dir/"),
        "{}",
        redirect.headers
    );
    let line = common::wait_log_line(&proxy, &["TCP_MISS/301"]);
    assert!(!line.contains("S3CR3TPW"), "{line}");
    assert!(
        !proxy.read_file("access.log").contains("S3CR3TPW"),
        "{}",
        proxy.read_file("access.log")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_errors_become_http_errors() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_proxy();
    let missing = curl_fetch_async(&["-x", &proxy.proxy_url(), &ftp.url("pub/nothing.txt")]).await;
    assert_eq!(missing.status, 404, "{}", missing.headers);
    assert!(missing.header("proxy-status").is_some());
    let login = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        &format!("ftp://nobody:wrong@127.0.0.1:{}/pub/", ftp.port),
    ])
    .await;
    assert_eq!(login.status, 401, "{}", login.headers);
    let injected = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        &ftp.url("pub/a%0d%0aDELE%20readme.txt"),
    ])
    .await;
    assert_eq!(injected.status, 400);
    assert!(dir.join("pub/readme.txt").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_uploads_with_stor() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, true);
    let proxy = ftp_proxy();
    let upload = dir.join("local.bin");
    std::fs::write(&upload, pattern_bytes(50_000)).unwrap();
    let f = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        "-T",
        &upload.to_string_lossy(),
        &ftp.url("pub/uploaded.bin"),
    ])
    .await;
    assert_eq!(f.status, 201, "{} {}", f.stderr, f.headers);
    assert_eq!(
        std::fs::read(dir.join("pub/uploaded.bin")).unwrap(),
        pattern_bytes(50_000)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A server whose PASV reply names another host: the data connection must
/// still go to the control connection's peer (no FTP bounce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_replies_cannot_send_data_elsewhere() {
    let data = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dport = data.local_addr().unwrap().port();
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cport = control.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = control.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 fake\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply = match line.split(' ').next().unwrap_or("") {
                "USER" => "230 ok\r\n".to_string(),
                "TYPE" => "200 ok\r\n".to_string(),
                "SIZE" => "213 5\r\n".to_string(),
                "EPSV" => "500 no\r\n".to_string(),
                // Names 10.9.8.7: a bounce attempt.
                "PASV" => format!(
                    "227 Entering Passive Mode (10,9,8,7,{},{})\r\n",
                    dport / 256,
                    dport % 256
                ),
                "RETR" => {
                    w.write_all(b"150 here\r\n").await.unwrap();
                    let (mut d, _) = data.accept().await.unwrap();
                    d.write_all(b"hello").await.unwrap();
                    drop(d);
                    "226 done\r\n".to_string()
                }
                _ => "221 bye\r\n".to_string(),
            };
            if w.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let proxy = ftp_proxy();
    let f = curl_fetch_async(&[
        "-x",
        &proxy.proxy_url(),
        &format!("ftp://127.0.0.1:{cport}/f.txt"),
    ])
    .await;
    assert_eq!(
        (f.status, f.body.as_slice()),
        (200, &b"hello"[..]),
        "{}",
        f.stderr
    );
}

/// The native relay (`mode = "ftp"`) with Python's ftplib as the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_logs_in_as_user_at_host() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_relay();
    let out = dir.join("fetched.bin");
    let script = format!(
        r#"
import ftplib, sys
f = ftplib.FTP()
f.connect('127.0.0.1', {proxy_port}, timeout=10)
f.login('anonymous@127.0.0.1:{ftp_port}', 'x@')
with open(r'{out}', 'wb') as w:
    f.retrbinary('RETR pub/data.bin', w.write)
names = f.nlst('pub')
f.set_pasv(False)
try:
    f.retrbinary('RETR pub/readme.txt', lambda b: None)
    active = 'allowed'
except ftplib.error_perm as e:
    active = str(e)[:3]
f.quit()
sys.stdout.write(active + ' ' + ','.join(sorted(n.split('/')[-1] for n in names)))
"#,
        proxy_port = proxy.addr().port(),
        ftp_port = ftp.port,
        out = out.display()
    );
    let result = python(script).await;
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        stdout, "502 data.bin,readme.txt,sub dir",
        "active mode must be refused"
    );
    assert_eq!(std::fs::read(&out).unwrap(), pattern_bytes(300_000));
    let line = common::wait_log_line(&proxy, &["RETR", "ftp://127.0.0.1"]);
    assert!(line.contains("300000"), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

/// An FTP server with vsftpd's order: a transfer command is answered with
/// 150 only once the passive data connection is in. Without one, it answers
/// 150 and then 425, as a server does whose active connection failed. RETR
/// sends `body`, or the file name's own bytes when `body` is empty; PWD
/// names a Latin-1 directory.
async fn accept_first_ftp_server(body: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (control, _) = listener.accept().await.unwrap();
        let (r, mut w) = control.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 ready\r\n").await.unwrap();
        let mut data = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.strip_suffix(b"\r\n").unwrap_or(&line);
            let (verb, arg) = match line.iter().position(|&b| b == b' ') {
                Some(sp) => (&line[..sp], &line[sp + 1..]),
                None => (line, &[][..]),
            };
            let reply: &[u8] = match verb.to_ascii_uppercase().as_slice() {
                b"USER" => b"331 password\r\n",
                b"PASS" => b"230 in\r\n",
                b"PWD" => b"257 \"/d\xe9j\xe0\" is the directory\r\n",
                b"EPSV" => {
                    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let msg = format!(
                        "229 Entering Extended Passive Mode (|||{}|)\r\n",
                        l.local_addr().unwrap().port()
                    );
                    data = Some(l);
                    w.write_all(msg.as_bytes()).await.unwrap();
                    continue;
                }
                b"RETR" => {
                    let Some(l) = data.take() else {
                        w.write_all(b"150 opening data connection\r\n")
                            .await
                            .unwrap();
                        w.write_all(b"425 no data connection\r\n").await.unwrap();
                        continue;
                    };
                    let accepted = tokio::time::timeout(Duration::from_secs(5), l.accept()).await;
                    let Ok(Ok((mut d, _))) = accepted else {
                        w.write_all(b"425 no data connection\r\n").await.unwrap();
                        continue;
                    };
                    w.write_all(b"150 here it comes\r\n").await.unwrap();
                    d.write_all(if body.is_empty() { arg } else { body })
                        .await
                        .unwrap();
                    drop(d);
                    b"226 done\r\n"
                }
                b"QUIT" => {
                    let _ = w.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => b"200 ok\r\n",
            };
            w.write_all(reply).await.unwrap();
        }
    });
    port
}

/// A client's side of the relay's control connection, read line by line.
struct Control {
    lines: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Control {
    /// Connected to the relay and logged in to the server at `ftp_port`.
    async fn login(relay: std::net::SocketAddr, ftp_port: u16) -> Control {
        let (r, w) = tokio::net::TcpStream::connect(relay)
            .await
            .unwrap()
            .into_split();
        let mut c = Control {
            lines: BufReader::new(r),
            w,
        };
        assert!(c.line().await.starts_with(b"220"));
        let user = format!("USER anonymous@127.0.0.1:{ftp_port}");
        assert!(c.command(user.as_bytes()).await.starts_with(b"331"));
        assert!(c.command(b"PASS x@").await.starts_with(b"230"));
        c
    }

    /// The next reply line, without its CRLF.
    async fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        tokio::time::timeout(common::T, self.lines.read_until(b'\n', &mut line))
            .await
            .expect("a reply line in time")
            .unwrap();
        line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec()
    }

    /// Sends `command` with CRLF and returns the first reply line.
    async fn command(&mut self, command: &[u8]) -> Vec<u8> {
        self.w
            .write_all(&[command, b"\r\n"].concat())
            .await
            .unwrap();
        self.line().await
    }

    /// EPSV through the relay, and a data connection to the port it names.
    async fn passive(&mut self, relay: std::net::SocketAddr) -> tokio::net::TcpStream {
        let reply = String::from_utf8(self.command(b"EPSV").await).unwrap();
        let port: u16 = reply
            .rsplit("|||")
            .next()
            .and_then(|p| p.split('|').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{reply}"));
        tokio::net::TcpStream::connect((relay.ip(), port))
            .await
            .unwrap()
    }
}

/// Servers that take the data connection before answering RETR (vsftpd,
/// ProFTPD) get it: the relay joins a passive connection as soon as the
/// client opens it, not after the 150.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_works_with_servers_that_accept_data_first() {
    let ftp_port = accept_first_ftp_server(b"hello from the data connection").await;
    let proxy = ftp_relay();
    let script = format!(
        r#"
import ftplib, sys
f = ftplib.FTP()
f.connect('127.0.0.1', {proxy_port}, timeout=20)
f.login('anonymous@127.0.0.1:{ftp_port}', 'x@')
got = []
f.retrbinary('RETR hello.txt', got.append)
f.quit()
sys.stdout.write(b''.join(got).decode())
"#,
        proxy_port = proxy.addr().port(),
    );
    let result = python(script).await;
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&result.stdout),
        "hello from the data connection"
    );
}

/// A client may wait for 226 before it closes its end of the data
/// connection: the relay passes the reply on once the data are through,
/// without waiting for that close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_passes_226_on_before_the_client_closes_its_data_end() {
    let ftp_port = accept_first_ftp_server(b"the whole file").await;
    let proxy = ftp_relay();
    let mut control = Control::login(proxy.addr(), ftp_port).await;
    let mut data = control.passive(proxy.addr()).await;
    assert!(control.command(b"RETR file").await.starts_with(b"150"));
    let mut got = Vec::new();
    tokio::time::timeout(common::T, data.read_to_end(&mut got))
        .await
        .expect("the data end in time")
        .unwrap();
    assert_eq!(got, b"the whole file");
    // `data` stays open while the client waits for the final reply.
    assert_eq!(control.line().await, b"226 done");
    drop(data);
    let line = common::wait_log_line(&proxy, &["RETR", "ftp://127.0.0.1"]);
    assert!(line.contains("TCP_MISS/200 14 RETR"), "{line}");
}

/// Names that are not UTF-8 reach the server byte for byte, and so do
/// replies: many servers speak Latin-1 or other 8-bit names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_keeps_8_bit_names_exact() {
    let ftp_port = accept_first_ftp_server(b"").await;
    let proxy = ftp_relay();
    let mut control = Control::login(proxy.addr(), ftp_port).await;
    assert_eq!(
        control.command(b"PWD").await,
        b"257 \"/d\xe9j\xe0\" is the directory"
    );
    let mut data = control.passive(proxy.addr()).await;
    assert!(
        control
            .command(b"RETR caf\xe9.txt")
            .await
            .starts_with(b"150")
    );
    let mut got = Vec::new();
    data.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"caf\xe9.txt", "the name the server got");
    assert_eq!(control.line().await, b"226 done");
    common::wait_log_line(&proxy, &["RETR", "/caf%E9.txt"]);
}

/// A command's preliminary reply is followed by its final one, also when no
/// data connection was set up; commands and replies stay in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_passes_a_final_reply_after_a_preliminary_one() {
    let ftp_port = accept_first_ftp_server(b"unused").await;
    let proxy = ftp_relay();
    let mut control = Control::login(proxy.addr(), ftp_port).await;
    assert!(control.command(b"RETR file").await.starts_with(b"150"));
    assert_eq!(control.line().await, b"425 no data connection");
    assert_eq!(control.command(b"NOOP").await, b"200 ok");
}

/// A CR or NUL inside a command line could end it early at the server and
/// smuggle in a second command: such lines are refused, not passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_refuses_commands_with_cr_or_nul() {
    let ftp_port = accept_first_ftp_server(b"unused").await;
    let proxy = ftp_relay();
    let mut control = Control::login(proxy.addr(), ftp_port).await;
    for bad in [&b"NOOP\rDELE x"[..], b"CWD a\0b"] {
        let reply = control.command(bad).await;
        assert!(
            reply.starts_with(b"501"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(control.command(b"NOOP").await, b"200 ok");
}

/// The relay refuses to reach its own address: a user name repeating
/// `@relay` would otherwise nest one session in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_refuses_to_reach_itself() {
    let proxy = ftp_relay();
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = lines.next_line().await.unwrap().unwrap();
    assert!(greeting.starts_with("220"), "{greeting}");
    let user = format!("USER anonymous@127.0.0.1:{}\r\n", proxy.addr().port());
    w.write_all(user.as_bytes()).await.unwrap();
    let reply = tokio::time::timeout(common::T, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("421"), "{reply}");
}

/// curl through the native relay: the FTP user carries the server
/// (`USER anonymous@host:port`), percent-encoded in the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_relay_with_curl() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_relay();
    let url = format!(
        "ftp://anonymous%40127.0.0.1%3A{}:x@{}/pub/data.bin",
        ftp.port,
        proxy.addr()
    );
    let f = curl_fetch_async(&[&url]).await;
    assert_eq!(f.exit, 0, "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(300_000));
    // curl changes to `pub` first: the logged URL follows it.
    let line = common::wait_log_line(&proxy, &["RETR"]);
    let want = format!("ftp://127.0.0.1:{}/pub/data.bin ", ftp.port);
    assert!(line.contains(&want), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A 100 MiB file through the ftp:// gateway arrives identical, and the
/// proxy streams it: its memory grows by less than 16 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_in_bounded_memory() {
    let dir = tree();
    let big = pattern_bytes(100 << 20);
    std::fs::write(dir.join("pub/big.bin"), &big).unwrap();
    let ftp = FtpServer::start(&dir, false);
    let proxy = ftp_proxy();
    let before = rss_kib(proxy.pid());
    let out = dir.join("big.out");
    let out_s = out.to_string_lossy().into_owned();
    let (_, stderr, code) = common::curl_async(&[
        "-x",
        &proxy.proxy_url(),
        "-o",
        &out_s,
        &ftp.url("pub/big.bin"),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let after = rss_kib(proxy.pid());
    assert!(std::fs::read(&out).unwrap() == big, "the download differs");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_downloads_go_through_the_cache() {
    let dir = tree();
    // Ten days old: a day of heuristic freshness (RFC 9111 §4.2.2).
    let file = std::fs::File::options()
        .write(true)
        .open(dir.join("pub/data.bin"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(10 * 86_400))
        .unwrap();
    let ftp = FtpServer::start(&dir, false);
    let proxy = start(&private_config("[cache]\nmemory = \"16MiB\"\n"));
    let url = ftp.url("pub/data.bin");
    let miss = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
    assert_eq!(miss.status, 200, "{}", miss.stderr);
    assert!(miss.header("last-modified").is_some(), "{}", miss.headers);
    assert!(miss.header("cache-status").unwrap().contains("stored"));
    // The entry is kept once the server's 226 is in, which can be after
    // curl has the whole body; the request's log line comes after that.
    common::wait_log_line(&proxy, &["TCP_MISS/200", "data.bin"]);
    drop(ftp);
    // The server is gone: the second download can only come from the cache.
    let hit = curl_fetch_async(&["-x", &proxy.proxy_url(), &url]).await;
    assert_eq!(hit.status, 200, "{}", hit.headers);
    assert_eq!(hit.body, pattern_bytes(300_000));
    assert!(hit.header("cache-status").unwrap().contains("hit"));
    let range = curl_fetch_async(&["-x", &proxy.proxy_url(), "-r", "0-9", &url]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &pattern_bytes(300_000)[..10]);
    let _ = std::fs::remove_dir_all(dir);
}

/// ftp:// downloads are paced by the client's bandwidth limit, like HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_downloads_meet_the_bandwidth_limit() {
    let dir = tree();
    let ftp = FtpServer::start(&dir, false);
    let proxy = start(&private_config(
        "[limits]\nclient_bandwidth = \"100KiB/s\"\n",
    ));
    let started = Instant::now();
    // 293 KiB at 100 KiB/s with a one-second burst: at least 1.9 seconds.
    let f = curl_fetch_async(&["-x", &proxy.proxy_url(), &ftp.url("pub/data.bin")]).await;
    assert_eq!((f.exit, f.status), (0, 200), "{}", f.stderr);
    assert_eq!(f.body, pattern_bytes(300_000));
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    // The same through the native relay's data connections.
    let relay = start(&common::config(
        "mode = \"ftp\"",
        "allow_private_destinations = true",
        "[limits]\nclient_bandwidth = \"100KiB/s\"\n",
    ));
    let script = format!(
        r#"
import ftplib, sys, time
f = ftplib.FTP()
f.connect('127.0.0.1', {relay_port}, timeout=20)
f.login('anonymous@127.0.0.1:{ftp_port}', 'x@')
got = []
started = time.monotonic()
f.retrbinary('RETR pub/data.bin', got.append)
took = time.monotonic() - started
f.quit()
sys.stdout.write('%d %.2f' % (len(b''.join(got)), took))
"#,
        relay_port = relay.addr().port(),
        ftp_port = ftp.port,
    );
    let out = python(script).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (len, took) = stdout
        .split_once(' ')
        .unwrap_or_else(|| panic!("{stdout} {out:?}"));
    assert_eq!(len, "300000");
    assert!(took.parse::<f64>().unwrap() >= 1.8, "took {took} s");
    let _ = std::fs::remove_dir_all(dir);
}
