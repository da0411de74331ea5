//! Upstream connections kept for reuse by requests that arrive over HTTP/2
//! (hyper's client on that path): an HTTP/2 connection to a server is shared
//! by every request at once (RFC 9113 multiplexing); an HTTP/1.1 connection
//! serves one request at a time and waits, idle, for the next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::client::conn::{http1, http2};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request sent on this path: an HTTP/2 client's stream, or
/// nothing (a request retried on another server carries no body).
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A request body as `UpBody`.
pub fn up_body<B>(body: B) -> UpBody
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed()
}

/// An empty request body.
pub fn no_body() -> UpBody {
    up_body(http_body_util::Empty::<Bytes>::new())
}

pub enum Sender {
    Http1(http1::SendRequest<UpBody>),
    Http2(http2::SendRequest<UpBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }
}

struct Kept {
    sender: Sender,
    addr: SocketAddr,
    tls: bool,
    since: Instant,
}

/// Bounds, so a burst of slow responses cannot pile up connections forever.
const MAX_PER_KEY: usize = 64;
const SWEEP_EVERY: u64 = 256;

#[derive(Default)]
pub struct Senders {
    kept: Mutex<HashMap<String, Vec<Kept>>>,
    checkins: std::sync::atomic::AtomicU64,
}

impl Senders {
    /// A connection for `key` ready for one more request, to an address
    /// `accept` allows; HTTP/2 connections stay shared.
    pub fn checkout(
        &self,
        key: &str,
        idle: Duration,
        accept: impl Fn(SocketAddr) -> bool,
    ) -> Option<(Sender, SocketAddr, bool)> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let list = kept.get_mut(key)?;
        let now = Instant::now();
        list.retain(|k| !k.sender.is_closed() && now.duration_since(k.since) < idle);
        let pos = list
            .iter()
            .rposition(|k| k.sender.is_ready() && accept(k.addr))?;
        let kept = &mut list[pos];
        if let Sender::Http2(s) = &kept.sender {
            let shared = Sender::Http2(s.clone());
            kept.since = now;
            return Some((shared, kept.addr, kept.tls));
        }
        let k = list.swap_remove(pos);
        Some((k.sender, k.addr, k.tls))
    }

    /// Keeps a connection for later requests: an HTTP/1.1 one after its
    /// response head arrived (it becomes ready once the body is read), an
    /// HTTP/2 one as soon as it is open.
    pub fn checkin(&self, key: &str, sender: Sender, addr: SocketAddr, tls: bool) {
        if sender.is_closed() {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let list = kept.entry(key.to_string()).or_default();
        if matches!(sender, Sender::Http2(_)) {
            // One shared connection per key is enough.
            list.retain(|k| !matches!(k.sender, Sender::Http2(_)));
        }
        if list.len() >= MAX_PER_KEY {
            list.remove(0);
        }
        list.push(Kept {
            sender,
            addr,
            tls,
            since: Instant::now(),
        });
        let n = self
            .checkins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(SWEEP_EVERY) {
            // Keys of servers or pools gone after a reload empty out here.
            kept.retain(|_, list| {
                list.retain(|k| !k.sender.is_closed());
                !list.is_empty()
            });
        }
    }
}
