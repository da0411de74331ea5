//! Helpers shared by the integration tests: configurations for the real
//! binary, curl and reqwest clients, and a small raw HTTP/1.1 client for
//! exchanges that need one connection across several steps.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postern_testkit::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Upper bound for any single network step in a test.
pub const T: Duration = Duration::from_secs(10);

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// One forward listener `proxy` on `127.0.0.1:0`, access log in
/// `{dir}/access.log`. `listener` adds keys to the listener table, `egress`
/// fills `[egress]`, `extra` is appended (other tables, `[[rule]]`s).
pub fn config(listener: &str, egress: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n{listener}\n\n\
         [egress]\n{egress}\n\n\
         [log]\naccess = \"{{dir}}/access.log\"\n\n\
         {extra}\n"
    )
}

/// A config allowing private destinations (every origin in these tests
/// listens on 127.0.0.1), plus `extra` TOML.
pub fn private_config(extra: &str) -> String {
    config("", "allow_private_destinations = true", extra)
}

/// Starts the real binary with `config`.
pub fn start(config: &str) -> TestProxy {
    TestProxy::start(BIN, config)
}

/// Waits for an access log line containing every one of `needles`.
pub fn wait_log_line(proxy: &TestProxy, needles: &[&str]) -> String {
    proxy.wait_for_file_line("access.log", |l| needles.iter().all(|n| l.contains(n)), T)
}

// ---------------------------------------------------------------- curl

/// Runs curl with `-sS --max-time 20` and `args`, ignoring proxy variables
/// from the environment. Returns (stdout, stderr, exit code).
pub fn curl(args: &[&str]) -> (Vec<u8>, String, i32) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(Stdio::null())
        .output()
        .expect("running curl (is it on the PATH?)");
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// What one curl transfer produced.
#[derive(Debug)]
pub struct Fetch {
    /// `%{http_code}` (0 when no response arrived).
    pub status: u16,
    /// Every response head curl saw (`-D`), including CONNECT and 1xx.
    pub headers: String,
    pub body: Vec<u8>,
    pub stderr: String,
    pub exit: i32,
}

impl Fetch {
    /// First value of `name` in the last response head.
    pub fn header(&self, name: &str) -> Option<String> {
        let last = self
            .headers
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .last()
            .unwrap_or("");
        header_in(last, name)
    }
}

/// An htpasswd file `users.htpasswd` in `dir`, made by `postern passwd`
/// itself (bcrypt at the lowest cost). Returns its path.
pub fn htpasswd(dir: &std::path::Path, users: &[(&str, &str)]) -> String {
    use std::io::Write;
    let mut lines = String::new();
    for (user, password) in users {
        let mut child = Command::new(BIN)
            .args(["passwd", user, "--cost", "4"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run postern passwd");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.starts_with(&format!("{user}:$2y$04$")), "{line}");
        lines.push_str(&line);
    }
    let path = dir.join("users.htpasswd");
    std::fs::write(&path, lines).unwrap();
    path.to_string_lossy().into_owned()
}

/// A fresh scratch directory for client-side files.
pub fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "postern-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs curl with `args`, writing the body and the heads to files so status,
/// headers and body come back separately.
pub fn curl_fetch(args: &[&str]) -> Fetch {
    let dir = scratch_dir();
    let body_path = dir.join("body");
    let head_path = dir.join("head");
    let body_s = body_path.to_string_lossy().into_owned();
    let head_s = head_path.to_string_lossy().into_owned();
    let mut all: Vec<&str> = vec!["-o", &body_s, "-D", &head_s, "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let (stdout, stderr, exit) = curl(&all);
    let status = String::from_utf8_lossy(&stdout).trim().parse().unwrap_or(0);
    let fetch = Fetch {
        status,
        headers: std::fs::read_to_string(&head_path).unwrap_or_default(),
        body: std::fs::read(&body_path).unwrap_or_default(),
        stderr,
        exit,
    };
    let _ = std::fs::remove_dir_all(&dir);
    fetch
}

/// [`curl_fetch`] on the blocking pool, so in-process origins keep running.
pub async fn curl_fetch_async(args: &[&str]) -> Fetch {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_fetch(&refs)
    })
    .await
    .expect("curl task")
}

/// [`curl`] on the blocking pool.
pub async fn curl_async(args: &[&str]) -> (Vec<u8>, String, i32) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    })
    .await
    .expect("curl task")
}

// ---------------------------------------------------------------- reqwest

/// A reqwest client that sends everything through `proxy_url`.
pub fn reqwest_via(proxy_url: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy_url).expect("proxy url"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------- raw HTTP

/// First value of header `name` (case-insensitive) in a response head.
pub fn header_in(head: &str, name: &str) -> Option<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

/// A response read by [`Conn`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Status line and header lines, without the blank line.
    pub head: String,
    /// The payload (de-chunked).
    pub body: Vec<u8>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<String>,
    /// The body was delimited by Transfer-Encoding: chunked.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        header_in(&self.head, name)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One client connection, read with a bounded wait per step.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Conn::from_stream(stream)
    }

    /// A connection made elsewhere (from a chosen source address, say).
    pub fn from_stream(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        timeout(T, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Reads more bytes; 0 at EOF. Panics after [`T`].
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        let n = timeout(T, self.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no data within {T:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads up to and including the next blank line; returns the head
    /// without it.
    pub async fn read_head(&mut self) -> String {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return String::from_utf8_lossy(&head[..pos]).into_owned();
            }
            if self.fill().await == 0 {
                panic!(
                    "connection closed before a complete head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill().await == 0 {
                panic!("connection closed after {} of {n} bytes", self.buf.len());
            }
        }
        self.buf.drain(..n).collect()
    }

    async fn read_line(&mut self) -> String {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return String::from_utf8_lossy(&line[..pos]).into_owned();
            }
            if self.fill().await == 0 {
                panic!("connection closed inside a chunked body");
            }
        }
    }

    /// Everything until the peer closes (bounded by [`T`] per read).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// True if the peer closes (EOF or reset) within `wait` without sending
    /// anything more.
    pub async fn closes_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        if !self.buf.is_empty() {
            return false;
        }
        matches!(
            timeout(wait, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// True if nothing at all arrives within `wait` (neither data nor EOF).
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut chunk = [0u8; 1024];
        match timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Ok(Err(_)) => false,
        }
    }

    /// Reads one complete response; `head_request` says whether it answers a
    /// HEAD (RFC 9112 §6.3: then there is no body whatever the headers say).
    pub async fn read_response(&mut self, head_request: bool) -> Response {
        let head = self.read_head().await;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut resp = Response {
            status,
            head,
            body: Vec::new(),
            trailers: Vec::new(),
            chunked: false,
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return resp;
        }
        let te = resp.header("transfer-encoding");
        if te.is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            resp.chunked = true;
            loop {
                let line = self.read_line().await;
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                if size == 0 {
                    break;
                }
                let data = self.read_exact(size).await;
                resp.body.extend_from_slice(&data);
                assert_eq!(
                    self.read_exact(2).await,
                    b"\r\n",
                    "chunk data not followed by CRLF"
                );
            }
            loop {
                let line = self.read_line().await;
                if line.is_empty() {
                    break;
                }
                resp.trailers.push(line);
            }
        } else if let Some(len) = resp.header("content-length") {
            let n: usize = len.parse().expect("numeric Content-Length");
            resp.body = self.read_exact(n).await;
        } else {
            resp.body = self.read_to_end().await;
        }
        resp
    }
}

/// Sends `request` on a fresh connection and reads one response, leaving the
/// connection's fate aside (for answers on connections that stay open).
pub async fn one_response(addr: SocketAddr, request: &[u8]) -> (Response, Conn) {
    let mut c = Conn::connect(addr).await;
    c.send(request).await;
    let r = c.read_response(false).await;
    (r, c)
}
