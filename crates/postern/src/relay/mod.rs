//! The "relay" stage for tunnels (CONNECT, upgraded connections): bytes copied
//! both ways with back-pressure, half-close passed on, and one idle timeout that
//! counts activity in either direction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout};

mod tcp;
pub use tcp::tunnel_tcp;

/// Large buffers keep bulk tunnels close to loopback speed (fewer system calls).
const TUNNEL_BUFFER: usize = 64 * 1024;

#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelStats {
    /// Bytes from the client side to the server side.
    pub up: u64,
    /// Bytes from the server side to the client side.
    pub down: u64,
    pub idle_timeout: bool,
}

/// Relays between stream halves (upgraded connections) until both directions
/// have ended (EOF passed on as a half-close), an error occurs, or nothing moved
/// either way for `idle`.
#[allow(clippy::too_many_arguments)]
pub async fn tunnel<CR, CW, SR, SW>(
    client_r: &mut CR,
    client_w: &mut CW,
    client_pending: &[u8],
    server_r: &mut SR,
    server_w: &mut SW,
    server_pending: &[u8],
    idle: Duration,
) -> TunnelStats
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let up = copy_half(client_r, server_w, client_pending, idle, start, &last);
    let down = copy_half(server_r, client_w, server_pending, idle, start, &last);
    let (up, down) = tokio::join!(up, down);
    TunnelStats {
        up: up.0,
        down: down.0,
        idle_timeout: up.1 || down.1,
    }
}

/// One direction; returns the bytes copied and whether it ended by idling out.
async fn copy_half<R, W>(
    r: &mut R,
    w: &mut W,
    pending: &[u8],
    idle: Duration,
    start: Instant,
    last: &AtomicU64,
) -> (u64, bool)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    if !pending.is_empty() {
        if w.write_all(pending).await.is_err() {
            return (0, false);
        }
        total += pending.len() as u64;
    }
    let mut buf = BytesMut::with_capacity(TUNNEL_BUFFER);
    loop {
        buf.clear();
        let n = match timeout(idle, r.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => {
                let quiet_ms = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if quiet_ms >= idle.as_millis() as u64 {
                    let _ = w.shutdown().await;
                    return (total, true);
                }
                continue;
            }
        };
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if w.write_all(&buf[..n]).await.is_err() {
            return (total, false);
        }
        total += n as u64;
    }
    // Pass the half-close on: the other side may still be sending.
    let _ = w.shutdown().await;
    (total, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn relays_both_ways_and_half_closes() {
        let (mut client_app, client_proxy) = duplex(1024);
        let (server_proxy, mut server_app) = duplex(1024);
        let (mut cr, mut cw) = tokio::io::split(client_proxy);
        let (mut sr, mut sw) = tokio::io::split(server_proxy);
        let relay = tokio::spawn(async move {
            tunnel(
                &mut cr,
                &mut cw,
                b"early",
                &mut sr,
                &mut sw,
                b"",
                Duration::from_secs(5),
            )
            .await
        });
        client_app.write_all(b" hello").await.unwrap();
        client_app.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early hello");
        // The server can still answer after the client's half-close.
        server_app.write_all(b"reply").await.unwrap();
        server_app.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_app.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");
        let stats = relay.await.unwrap();
        assert_eq!((stats.up, stats.down), (11, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnels_end() {
        let (_client_app, client_proxy) = duplex(1024);
        let (server_proxy, _server_app) = duplex(1024);
        let (mut cr, mut cw) = tokio::io::split(client_proxy);
        let (mut sr, mut sw) = tokio::io::split(server_proxy);
        let stats = tunnel(
            &mut cr,
            &mut cw,
            b"",
            &mut sr,
            &mut sw,
            b"",
            Duration::from_secs(30),
        )
        .await;
        assert!(stats.idle_timeout);
    }
}
