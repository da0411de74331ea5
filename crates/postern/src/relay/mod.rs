//! The "relay" stage for tunnels (CONNECT, upgraded connections): bytes copied
//! both ways with back-pressure, half-close passed on, and one idle timeout that
//! counts activity in either direction.

mod tcp;

#[cfg(test)]
pub use tcp::tunnel_tcp;
pub use tcp::{tunnel_client, tunnel_io};

#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelStats {
    /// Bytes from the client side to the server side.
    pub up: u64,
    /// Bytes from the server side to the client side.
    pub down: u64,
    /// The tunnel ended because nothing moved either way for the idle timeout.
    pub idle_timeout: bool,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Two connected sockets: (the far end, the proxy's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (near, _) = listener.accept().await.unwrap();
        (far, near)
    }

    #[tokio::test]
    async fn relays_both_ways_and_half_closes() {
        let (mut client_app, mut client_proxy) = pair().await;
        let (mut server_app, mut server_proxy) = pair().await;
        let relay = tokio::spawn(async move {
            tunnel_tcp(
                &mut client_proxy,
                b"early",
                &mut server_proxy,
                b"",
                Duration::from_secs(5),
                &[],
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
        assert_eq!((stats.up, stats.down, stats.idle_timeout), (11, 5, false));
    }

    #[tokio::test]
    async fn bulk_switches_to_kernel_copy_and_stays_exact() {
        let (mut client_app, mut client_proxy) = pair().await;
        let (mut server_app, mut server_proxy) = pair().await;
        let relay = tokio::spawn(async move {
            tunnel_tcp(
                &mut client_proxy,
                b"",
                &mut server_proxy,
                b"",
                Duration::from_secs(5),
                &[],
            )
            .await
        });
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i * 7 + i / 4093) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            server_app.write_all(&sent).await.unwrap();
            server_app.shutdown().await.unwrap();
            server_app
        });
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.unwrap();
        assert!(
            got == data,
            "bytes differ after {} of {}",
            got.len(),
            data.len()
        );
        drop(client_app);
        drop(writer.await.unwrap());
        assert_eq!(relay.await.unwrap().down, data.len() as u64);
    }

    #[tokio::test]
    async fn idle_tunnels_end() {
        let (_client_app, mut client_proxy) = pair().await;
        let (_server_app, mut server_proxy) = pair().await;
        let stats = tunnel_tcp(
            &mut client_proxy,
            b"",
            &mut server_proxy,
            b"",
            Duration::from_millis(200),
            &[],
        )
        .await;
        assert!(stats.idle_timeout);
    }
}
