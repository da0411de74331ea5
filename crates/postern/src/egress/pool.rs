//! Idle upstream connections kept for reuse, per destination, bounded in number
//! (per destination and in total) and in age, like Squid's server persistent
//! connections.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Upstream;

struct Idle {
    stream: Upstream,
    addr: SocketAddr,
    since: Instant,
}

#[derive(Default)]
struct Idles {
    by_key: crate::fasthash::FastMap<String, Vec<Idle>>,
    total: usize,
}

pub struct UpstreamPool {
    idle: Mutex<Idles>,
    max_per_host: usize,
    /// Bounds the whole pool, so many destinations cannot exhaust descriptors.
    max_total: usize,
    idle_timeout: Duration,
}

impl UpstreamPool {
    pub fn new(max_per_host: usize, max_total: usize, idle_timeout: Duration) -> UpstreamPool {
        UpstreamPool {
            idle: Mutex::new(Idles::default()),
            max_per_host,
            max_total,
            idle_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idles> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live connection to `key`, if any. With `probe`,
    /// the socket itself is asked whether the server closed it (one system
    /// call), for requests that must not meet a stale connection.
    pub fn checkout(&self, key: &str, probe: bool) -> Option<(Upstream, SocketAddr)> {
        let mut idles = self.lock();
        let idles = &mut *idles;
        let list = idles.by_key.get_mut(key)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            idles.total -= 1;
            if idle.since.elapsed() < self.idle_timeout && is_quiet(&idle.stream, probe) {
                found = Some((idle.stream, idle.addr));
                break;
            }
        }
        if list.is_empty() {
            idles.by_key.remove(key);
        }
        found
    }

    pub fn checkin(&self, key: &str, stream: Upstream, addr: SocketAddr) {
        if self.max_per_host == 0 || self.max_total == 0 {
            return;
        }
        let mut idles = self.lock();
        if idles.total >= self.max_total {
            evict_oldest(&mut idles);
        }
        let idles = &mut *idles;
        let list = match idles.by_key.get_mut(key) {
            Some(list) => list,
            None => idles.by_key.entry(key.to_string()).or_default(),
        };
        if list.len() >= self.max_per_host {
            // Keep the warmest connections: drop the oldest.
            list.remove(0);
            idles.total -= 1;
        }
        list.push(Idle {
            stream,
            addr,
            since: Instant::now(),
        });
        idles.total += 1;
    }

    /// Drops connections idle for longer than the timeout.
    pub fn sweep(&self) {
        let mut idles = self.lock();
        let idles = &mut *idles;
        let mut total = 0;
        idles.by_key.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < self.idle_timeout);
            total += list.len();
            !list.is_empty()
        });
        idles.total = total;
    }

    /// Drops every idle connection (after a reload: they were opened under the
    /// old rules).
    pub fn clear(&self) {
        let mut idles = self.lock();
        idles.by_key.clear();
        idles.total = 0;
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

/// Removes the connection idle the longest, across all destinations.
fn evict_oldest(idles: &mut Idles) {
    let oldest = idles
        .by_key
        .iter()
        .filter_map(|(k, list)| list.first().map(|i| (i.since, k.clone())))
        .min();
    if let Some((_, key)) = oldest
        && let Some(list) = idles.by_key.get_mut(&key)
    {
        list.remove(0);
        idles.total -= 1;
        if list.is_empty() {
            idles.by_key.remove(&key);
        }
    }
}

/// An idle connection must have nothing to read: data or EOF means the server
/// closed it or broke the protocol, and it cannot carry a new request. Without
/// `probe` only the readiness the reactor has already seen is consulted.
fn is_quiet(upstream: &Upstream, probe: bool) -> bool {
    let stream = upstream.tcp();
    if upstream.is_tls() {
        // Reading would eat TLS records (session tickets arrive unasked):
        // only an end of stream disqualifies the connection.
        let mut peek = [MaybeUninit::<u8>::uninit(); 1];
        return !matches!(socket2::SockRef::from(stream).peek(&mut peek), Ok(0));
    }
    let mut byte = [0u8; 1];
    let seen_quiet =
        matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    if !seen_quiet || !probe {
        return seen_quiet;
    }
    let mut peek = [MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(stream).peek(&mut peek),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn connection(listener: &TcpListener) -> (Upstream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Upstream::Plain(client), server)
    }

    #[tokio::test]
    async fn reuses_live_connections_and_probes_for_closed_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = UpstreamPool::new(2, 10, Duration::from_secs(60));
        let (a, _server_a) = connection(&listener).await;
        pool.checkin("k", a, addr);
        assert!(pool.checkout("k", true).is_some());
        assert!(pool.checkout("k", true).is_none());

        let (b, mut server_b) = connection(&listener).await;
        pool.checkin("k", b, addr);
        server_b.shutdown().await.unwrap();
        drop(server_b);
        // The probe asks the socket, so the FIN is seen even before the reactor
        // reports it; poll briefly for the FIN to cross loopback.
        let mut refused = false;
        for _ in 0..200 {
            if !is_quiet(&pool.lock().by_key["k"][0].stream, true) {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused, "the closed connection still looks quiet");
        assert!(pool.checkout("k", true).is_none());
        assert_eq!(pool.lock().total, 0);
    }

    #[tokio::test]
    async fn bounded_per_host_and_in_total() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = UpstreamPool::new(2, 3, Duration::from_secs(60));
        let mut servers = Vec::new();
        for key in ["a", "a", "a", "b", "c"] {
            let (c, s) = connection(&listener).await;
            servers.push(s);
            pool.checkin(key, c, addr);
        }
        let idles = pool.lock();
        assert_eq!(idles.total, 3);
        assert_eq!(idles.by_key.values().map(Vec::len).sum::<usize>(), 3);
        assert!(idles.by_key.get("a").map_or(0, Vec::len) <= 2);
        assert!(
            idles.by_key.contains_key("c"),
            "the newest entry was evicted"
        );
    }
}
