//! The "relay" stage for tunnels (CONNECT, upgraded connections): bytes copied
//! both ways with back-pressure, half-close passed on, and one idle timeout that
//! counts activity in either direction.

mod tcp;

#[cfg(test)]
pub use tcp::tunnel_tcp;
pub use tcp::{transfer_tcp, tunnel_client, tunnel_io};

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

    /// A client and a server application with a tunnel between them: the
    /// client's end, the server's end, and the running relay.
    async fn tunnel(
        client_early: &'static [u8],
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<TunnelStats>) {
        let (client_app, mut client_proxy) = pair().await;
        let (server_app, mut server_proxy) = pair().await;
        let relay = tokio::spawn(async move {
            tunnel_tcp(
                &mut client_proxy,
                client_early,
                &mut server_proxy,
                b"",
                Duration::from_secs(5),
                &[],
            )
            .await
        });
        (client_app, server_app, relay)
    }

    #[tokio::test]
    async fn relays_both_ways_and_half_closes() {
        let (mut client_app, mut server_app, relay) = tunnel(b"early").await;
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

    /// Segments the socket has received so far (TCP_INFO).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn segments_in(stream: &TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        // SAFETY: getsockopt fills at most `len` bytes of a plain C struct.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0, "TCP_INFO");
            info.tcpi_segs_in
        }
    }

    /// Passes two bytes from the client to the server. Once the server has
    /// them, the relay has tried the server's side and found nothing, so what
    /// the server sends next arrives as a readiness event, as in real tunnels.
    async fn relay_waits_on_the_server(client_app: &mut TcpStream, server_app: &mut TcpStream) {
        client_app.write_all(b"hi").await.unwrap();
        let mut hi = [0u8; 2];
        server_app.read_exact(&mut hi).await.unwrap();
    }

    /// A server that answers and closes in one segment gets the same on the
    /// client side, and the client can still send after the server's FIN.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_answer_and_its_fin_reach_the_client_in_one_segment() {
        let (mut client_app, mut server_app, relay) = tunnel(b"").await;
        relay_waits_on_the_server(&mut client_app, &mut server_app).await;
        let before = segments_in(&client_app);
        let server = socket2::SockRef::from(&server_app);
        server
            .send_with_flags(b"answer", libc::MSG_MORE)
            .expect("send");
        server.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
        assert_eq!(segments_in(&client_app) - before, 1, "answer and FIN");
        client_app.write_all(b"after").await.unwrap();
        client_app.shutdown().await.unwrap();
        let mut up = Vec::new();
        server_app.read_to_end(&mut up).await.unwrap();
        assert_eq!(up, b"after");
        let stats = relay.await.unwrap();
        assert_eq!((stats.up, stats.down), (7, 6));
    }

    /// A server that answers and then resets (it closed with unread input)
    /// still gets its answer to the client: the reset comes after the bytes.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_answer_followed_by_a_reset_still_reaches_the_client() {
        let (mut client_app, mut server_app, relay) = tunnel(b"").await;
        relay_waits_on_the_server(&mut client_app, &mut server_app).await;
        server_app.write_all(b"answer").await.unwrap();
        socket2::SockRef::from(&server_app)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server_app);
        let mut got = Vec::new();
        let mut chunk = [0u8; 64];
        // The tunnel may end with a reset of its own once the bytes are out.
        while let Ok(n) = client_app.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, b"answer");
        drop(client_app);
        assert_eq!(relay.await.unwrap().down, 6);
    }

    /// An answer longer than one read still arrives whole when its FIN
    /// comes with the last part.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_long_answer_ending_with_fin_is_exact() {
        let (mut client_app, server_app, relay) = tunnel(b"").await;
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let server = socket2::SockRef::from(&server_app);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = server.send_with_flags(rest, libc::MSG_MORE).expect("send");
            rest = &rest[n..];
        }
        server.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "{} bytes of {}", got.len(), data.len());
        drop(client_app);
        assert_eq!(relay.await.unwrap().down, data.len() as u64);
    }

    #[tokio::test]
    async fn bulk_switches_to_kernel_copy_and_stays_exact() {
        let (mut client_app, mut server_app, relay) = tunnel(b"").await;
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

    /// A client stream that keeps what it is given until flushed, as TLS
    /// keeps its last records in user space.
    struct Buffered {
        io: tokio::io::DuplexStream,
        held: Vec<u8>,
    }

    impl tokio::io::AsyncRead for Buffered {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Buffered {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.held.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = &mut *self;
            while !this.held.is_empty() {
                let n =
                    std::task::ready!(std::pin::Pin::new(&mut this.io).poll_write(cx, &this.held))?;
                this.held.drain(..n);
            }
            std::pin::Pin::new(&mut this.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::ready!(self.as_mut().poll_flush(cx))?;
            std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The direction that ends second still flushes a buffered (TLS)
    /// destination: the server's last bytes reach a client that half-closed
    /// first, instead of staying in the proxy when the tunnel ends.
    #[tokio::test]
    async fn a_buffered_client_gets_the_last_bytes_of_a_second_ending_direction() {
        let (mut client_app, client_proxy) = tokio::io::duplex(64 * 1024);
        let client = Buffered {
            io: client_proxy,
            held: Vec::new(),
        };
        let (mut server_app, server_proxy) = pair().await;
        let relay = tokio::spawn(async move {
            let mut upstream = crate::egress::Upstream::Plain(server_proxy);
            tunnel_io(client, &mut upstream, &[], Duration::from_secs(5), &[]).await
        });
        // The client sends and half-closes first; the server answers after.
        client_app.write_all(b"question").await.unwrap();
        client_app.shutdown().await.unwrap();
        let mut asked = Vec::new();
        server_app.read_to_end(&mut asked).await.unwrap();
        assert_eq!(asked, b"question");
        server_app.write_all(b"the answer").await.unwrap();
        drop(server_app);
        let stats = relay.await.unwrap();
        assert_eq!(stats.down, 10);
        let mut answer = Vec::new();
        client_app.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"the answer");
    }

    /// An FTP data connection is over once one side has ended: the other
    /// side gets the end and need not close first.
    #[tokio::test]
    async fn a_transfer_ends_with_its_sender() {
        let (mut client_app, mut client_proxy) = pair().await;
        let (mut server_app, mut server_proxy) = pair().await;
        let relay = tokio::spawn(async move {
            transfer_tcp(
                &mut client_proxy,
                &mut server_proxy,
                Duration::from_secs(30),
                &[],
            )
            .await
        });
        server_app.write_all(b"file").await.unwrap();
        server_app.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"file");
        // The client's end is still open, and the relay is done.
        let stats = tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("the transfer ends without the client's close")
            .unwrap();
        assert_eq!((stats.up, stats.down, stats.idle_timeout), (0, 4, false));
        drop(client_app);
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
