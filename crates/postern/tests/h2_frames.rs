//! HTTP/2 from clients, frame by frame (h2c by prior knowledge): stream
//! states (RFC 9113 §5.1), answers made by the proxy while a request body is
//! still arriving, and `h2c = "only"` listeners (§3.4).

mod common;

use std::net::SocketAddr;

use common::{T, start};
use postern_testkit::Origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// What every request asks the origin for: ten bytes.
const PATH: &str = "/bytes/10";

const PROTOCOL_ERROR: u32 = 0x1;
const STREAM_CLOSED: u32 = 0x5;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// A client that writes and reads raw frames.
struct RawH2 {
    tcp: TcpStream,
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, and acknowledges the
    /// server's SETTINGS.
    async fn connect(addr: SocketAddr) -> RawH2 {
        let tcp = timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
        let mut c = RawH2 { tcp };
        c.write_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        c.send(SETTINGS, 0, 0, &[]).await;
        loop {
            let f = c.read().await.expect("server SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                c.send(SETTINGS, ACK, 0, &[]).await;
                return c;
            }
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) {
        timeout(T, self.tcp.write_all(bytes))
            .await
            .unwrap()
            .unwrap();
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.write_raw(&frame(kind, flags, stream, payload)).await;
    }

    async fn request(&mut self, stream: u32, method: &str, authority: &str, ends: bool) {
        self.write_raw(&request(stream, method, authority, ends))
            .await;
    }

    /// The next frame; `None` when the server closed the connection.
    async fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        match timeout(T, self.tcp.read_exact(&mut head)).await {
            Err(_) => panic!("no frame within {T:?}"),
            Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        timeout(T, self.tcp.read_exact(&mut payload))
            .await
            .unwrap()
            .ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Frames up to the one `stop` accepts (included), or to the close.
    async fn read_until(&mut self, stop: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(f) = self.read().await {
            let done = stop(&f);
            seen.push(f);
            if done {
                break;
            }
        }
        seen
    }

    /// Sends a PING and reads up to its acknowledgement: the server has
    /// processed every frame sent before it.
    async fn round_trip(&mut self) -> Vec<Frame> {
        self.send(PING, 0, 0, b"postern!").await;
        let seen = self
            .read_until(|f| f.kind == PING && f.flags & ACK != 0)
            .await;
        assert!(
            seen.last().is_some_and(|f| f.kind == PING),
            "connection closed before the PING was answered: {seen:?}"
        );
        seen
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A request head (HPACK, static table and literals only).
fn request(stream: u32, method: &str, authority: &str, ends: bool) -> Vec<u8> {
    let mut block = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x86];
    // :path and :authority: literals without indexing, names from the
    // static table (indexes 4 and 1).
    for (index, value) in [(0x04, PATH), (0x01, authority)] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    if method == "POST" {
        // content-length: 10 (static index 28).
        block.extend_from_slice(&[0x0f, 0x0d, 2]);
        block.extend_from_slice(b"10");
    }
    let flags = END_HEADERS | if ends { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

fn reverse_config(origin: SocketAddr, h2c: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = {h2c}\n\n\
         [[pool]]\nname = \"app\"\nservers = [\"{origin}\"]\n\n\
         [[route]]\nlistener = \"web\"\nhost = [\"app.test\"]\npool = \"app\"\n"
    )
}

fn ends_stream(f: &Frame, stream: u32) -> bool {
    f.stream == stream && (f.flags & END_STREAM != 0 || f.kind == RST_STREAM)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_on_a_stream_closed_by_both_sides_ends_the_connection() {
    let origin = Origin::start().await;
    let proxy = start(&reverse_config(origin.addr(), "true"));
    let mut c = RawH2::connect(proxy.addr()).await;
    c.request(1, "GET", "app.test", true).await;
    let answer = c.read_until(|f| ends_stream(f, 1)).await;
    assert!(
        answer
            .iter()
            .any(|f| f.kind == HEADERS && f.stream == 1 && f.payload.first() == Some(&0x88)),
        "200 on stream 1: {answer:?}"
    );
    assert_eq!(answer.last().map(|f| f.kind), Some(DATA));
    // Both sides ended stream 1. RFC 9113 §5.1 allows (and RFC 7540 §5.1
    // required) a connection error of type STREAM_CLOSED.
    c.send(DATA, 0, 1, b"late").await;
    let after = c.read_until(|_| false).await;
    let goaway = after
        .iter()
        .map(|f| (f.kind, f.error_code()))
        .collect::<Vec<_>>();
    assert_eq!(
        goaway,
        [(GOAWAY, STREAM_CLOSED)],
        "GOAWAY, then the close; not a stream reset: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_flight_after_a_reset_keep_the_connection() {
    let origin = Origin::start().await;
    let proxy = start(&reverse_config(origin.addr(), "true"));
    let mut c = RawH2::connect(proxy.addr()).await;
    // More body than its content-length (10): the proxy resets the stream
    // (RFC 9113 §8.1.1).
    c.request(1, "POST", "app.test", false).await;
    c.send(DATA, 0, 1, b"0123456789ab").await;
    let seen = c.read_until(|f| ends_stream(f, 1)).await;
    let last = seen.last().expect("a frame for stream 1");
    assert_eq!(
        (last.kind, last.error_code()),
        (RST_STREAM, PROTOCOL_ERROR),
        "{seen:?}"
    );
    // DATA the client sent before it saw the reset is ignored (§5.1,
    // "closed"), and the connection goes on.
    c.send(DATA, END_STREAM, 1, b"late").await;
    c.round_trip().await;
    c.request(3, "GET", "app.test", true).await;
    let answer = c.read_until(|f| ends_stream(f, 3)).await;
    assert!(
        answer
            .iter()
            .any(|f| f.kind == HEADERS && f.stream == 3 && f.payload.first() == Some(&0x88)),
        "200 on stream 3: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_made_here_follows_the_whole_request() {
    let origin = Origin::start().await;
    let proxy = start(&reverse_config(origin.addr(), "true"));
    let mut c = RawH2::connect(proxy.addr()).await;
    // No route for this host: the proxy answers 404 itself. Its answer waits
    // for the body, so a body shorter than its content-length is seen first
    // and the stream is reset (RFC 9113 §8.1.1), never answered.
    c.request(1, "POST", "elsewhere.test", false).await;
    let early = c.round_trip().await;
    assert!(
        early.iter().all(|f| f.stream != 1),
        "nothing for stream 1 before its body: {early:?}"
    );
    c.send(DATA, END_STREAM, 1, b"short").await;
    let seen = c.read_until(|f| ends_stream(f, 1)).await;
    let last = seen.last().expect("a frame for stream 1");
    assert_eq!(
        (last.kind, last.error_code()),
        (RST_STREAM, PROTOCOL_ERROR),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|f| f.kind != HEADERS),
        "the malformed request got no answer: {seen:?}"
    );
    // A whole body: the 404 page (HPACK 0x8d is `:status 404`).
    c.request(3, "POST", "elsewhere.test", false).await;
    c.send(DATA, END_STREAM, 3, b"0123456789").await;
    let seen = c.read_until(|f| ends_stream(f, 3)).await;
    assert!(
        seen.iter()
            .any(|f| f.kind == HEADERS && f.stream == 3 && f.payload.first() == Some(&0x8d)),
        "404 on stream 3: {seen:?}"
    );
}

/// A reverse listener serves http and https URIs; another `:scheme` gets
/// 400 and never reaches a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_schemes_get_400_on_a_reverse_listener() {
    let origin = Origin::start().await;
    let proxy = start(&reverse_config(origin.addr(), "true"));
    let mut c = RawH2::connect(proxy.addr()).await;
    // GET, then `:scheme`, `:path` and `:authority` as literals with names
    // from the static table (indexes 6, 4 and 1).
    let mut block = vec![0x82];
    for (index, value) in [(0x06, "gopher"), (0x04, PATH), (0x01, "app.test")] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    c.send(HEADERS, END_HEADERS | END_STREAM, 1, &block).await;
    let seen = c.read_until(|f| ends_stream(f, 1)).await;
    assert!(
        seen.iter()
            .any(|f| f.kind == HEADERS && f.stream == 1 && f.payload.first() == Some(&0x8c)),
        "400 on stream 1: {seen:?}"
    );
    assert_eq!(origin.requests(), 0);
    // The same request with `http` is served.
    c.request(3, "GET", "app.test", true).await;
    let seen = c.read_until(|f| ends_stream(f, 3)).await;
    assert!(
        seen.iter()
            .any(|f| f.kind == HEADERS && f.stream == 3 && f.payload.first() == Some(&0x88)),
        "200 on stream 3: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_only_listener_closes_other_protocols() {
    let origin = Origin::start().await;
    let proxy = start(&reverse_config(origin.addr(), "\"only\""));
    // RFC 9113 §3.4: an invalid preface is a connection error; no HTTP/1.1
    // page, no GOAWAY (nothing was agreed yet).
    let mut conn = common::Conn::connect(proxy.addr()).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    let answer = conn.read_to_end().await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let mut c = RawH2::connect(proxy.addr()).await;
    c.request(1, "GET", "app.test", true).await;
    let answer = c.read_until(|f| ends_stream(f, 1)).await;
    assert!(
        answer
            .iter()
            .any(|f| f.kind == HEADERS && f.payload.first() == Some(&0x88)),
        "{answer:?}"
    );
}
