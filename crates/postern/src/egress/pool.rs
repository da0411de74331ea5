//! Idle upstream connections kept for reuse, per destination, bounded in number
//! and age (like Squid's server persistent connections).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

struct Idle {
    stream: TcpStream,
    addr: SocketAddr,
    since: Instant,
}

pub struct UpstreamPool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    max_per_host: usize,
    idle_timeout: Duration,
}

impl UpstreamPool {
    pub fn new(max_per_host: usize, idle_timeout: Duration) -> UpstreamPool {
        UpstreamPool {
            idle: Mutex::new(HashMap::new()),
            max_per_host,
            idle_timeout,
        }
    }

    /// The most recently used live connection to `key`, if any.
    pub fn checkout(&self, key: &str) -> Option<(TcpStream, SocketAddr)> {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(key)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < self.idle_timeout && is_quiet(&idle.stream) {
                return Some((idle.stream, idle.addr));
            }
        }
        None
    }

    pub fn checkin(&self, key: &str, stream: TcpStream, addr: SocketAddr) {
        if self.max_per_host == 0 {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = match map.get_mut(key) {
            Some(list) => list,
            None => map.entry(key.to_string()).or_default(),
        };
        if list.len() >= self.max_per_host {
            // Keep the warmest connections: drop the oldest.
            list.remove(0);
        }
        list.push(Idle {
            stream,
            addr,
            since: Instant::now(),
        });
    }

    /// Drops connections idle for longer than the timeout.
    pub fn sweep(&self) {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < self.idle_timeout);
            !list.is_empty()
        });
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

/// An idle connection must have nothing to read: data or EOF means the server
/// closed it or broke the protocol, and it cannot carry a new request.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reuses_live_connections_and_drops_closed_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = UpstreamPool::new(2, Duration::from_secs(60));
        let a = TcpStream::connect(addr).await.unwrap();
        let (mut server_a, _) = listener.accept().await.unwrap();
        pool.checkin("k", a, addr);
        assert!(pool.checkout("k").is_some());
        assert!(pool.checkout("k").is_none());

        let b = TcpStream::connect(addr).await.unwrap();
        let (mut server_b, _) = listener.accept().await.unwrap();
        pool.checkin("k", b, addr);
        server_b.shutdown().await.unwrap();
        drop(server_b);
        // Wait until the FIN has arrived, then the pooled connection must be refused.
        for _ in 0..100 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pool.checkout("k").is_none());
        server_a.shutdown().await.ok();
    }
}
