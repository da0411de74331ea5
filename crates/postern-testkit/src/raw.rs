//! Raw TCP helpers: [`RawOrigin`], an origin that answers every connection
//! with fixed bytes (for malformed responses), and [`raw_exchange`], a client
//! that writes raw bytes and collects whatever comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

/// Largest request head a [`RawOrigin`] reads before answering anyway.
const MAX_HEAD: usize = 1024 * 1024;

#[derive(Default)]
struct RawStats {
    connections: AtomicUsize,
    requests: Mutex<Vec<Vec<u8>>>,
}

/// TCP origin on `127.0.0.1` that, for every connection, reads the request
/// head (up to `\r\n\r\n`), writes the configured bytes verbatim and closes.
/// Dropping it stops the listener.
pub struct RawOrigin {
    addr: SocketAddr,
    stats: Arc<RawStats>,
    _shutdown: watch::Sender<()>,
}

impl RawOrigin {
    /// Binds `127.0.0.1:0` and starts answering with `response`.
    pub async fn start(response: impl Into<Vec<u8>>) -> RawOrigin {
        let response: Arc<[u8]> = response.into().into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("raw origin local_addr");
        let stats = Arc::new(RawStats::default());
        let (tx, mut rx) = watch::channel(());
        let task_stats = stats.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            tokio::task::yield_now().await;
                            continue;
                        }
                    },
                    _ = rx.changed() => return,
                };
                task_stats.connections.fetch_add(1, Ordering::SeqCst);
                let stats = task_stats.clone();
                let response = response.clone();
                let mut conn_rx = rx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = answer(stream, &stats, &response) => {}
                        _ = conn_rx.changed() => {}
                    }
                });
            }
        });
        RawOrigin {
            addr,
            stats,
            _shutdown: tx,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Raw request heads received so far (each ending in `\r\n\r\n`).
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.stats
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn answer(mut stream: TcpStream, stats: &RawStats, response: &[u8]) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Only the tail can complete a terminator split across reads.
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = find(&head[scan_from..], b"\r\n\r\n") {
            head.truncate(scan_from + pos + 4);
            break;
        }
        if head.len() > MAX_HEAD {
            break;
        }
    }
    stats
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(head);
    if stream.write_all(response).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Read what the peer still sends (e.g. a request body) so that closing
    // does not turn into a reset that could discard the response.
    let _ = timeout(Duration::from_secs(2), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What [`raw_exchange`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// The peer closed (EOF or reset) before the timeout.
    pub closed: bool,
}

impl RawReply {
    /// The first response head, without the terminating blank line (the
    /// whole reply if it has no blank line).
    pub fn head(&self) -> String {
        let end = find(&self.bytes, b"\r\n\r\n").unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// Everything after the first response head (empty if there is none).
    pub fn body(&self) -> &[u8] {
        match find(&self.bytes, b"\r\n\r\n") {
            Some(pos) => &self.bytes[pos + 4..],
            None => &[],
        }
    }

    /// Status code from the first line.
    pub fn status(&self) -> Option<u16> {
        let head = self.head();
        let line = head.lines().next()?;
        let mut parts = line.split_whitespace();
        if !parts.next()?.starts_with("HTTP/") {
            return None;
        }
        parts.next()?.parse().ok()
    }

    /// First value of header `name` (case-insensitive) in the first
    /// response head.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head()
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    }

    /// The whole reply as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Connects to `addr`, writes `request`, then reads until the peer closes or
/// `timeout` (counted from the start) expires.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawReply {
    let deadline = Instant::now() + timeout;
    let mut stream = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    // A failed write (peer closed early) still leaves its answer to read.
    let _ = timeout_at(deadline, stream.write_all(request)).await;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    RawReply { bytes, closed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raw_origin_answers_verbatim() {
        let origin = RawOrigin::start("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").await;
        let r = raw_exchange(
            origin.addr(),
            b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(r.closed);
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.header("CONTENT-LENGTH").as_deref(), Some("10"));
        assert_eq!(r.body(), b"short");
        assert_eq!(origin.connections(), 1);
        assert_eq!(
            origin.requests(),
            vec![b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()]
        );
        assert_eq!(origin.url("/y"), format!("http://{}/y", origin.addr()));
    }

    #[tokio::test]
    async fn raw_exchange_times_out_without_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            // Keep the connection open until the client gives up.
            let mut buf = [0u8; 64];
            while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
        });
        let r = raw_exchange(addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_millis(300)).await;
        assert!(!r.closed);
        assert_eq!(r.status(), Some(204));
        assert!(r.body().is_empty());
        server.await.unwrap();
    }
}
