//! The "accept" stage: binds each configured proxy port, bounds the number of
//! connections served at once, and hands each connection to its protocol.

pub mod admin;
pub mod ftp_relay;
pub mod h2;
pub mod h2_limits;
mod h2_streams;
pub mod http1;
pub mod proxy_protocol;
pub mod socks;
pub mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::Shared;
use crate::config::ListenerConfig;
use crate::context::RequestCtx;
use crate::error::{ErrorKind, PageStyle, ProxyError, error_response};
use crate::guard::limits::ConnectionSlot;
use crate::http1::HeadError;

/// A client connection and the bytes read from it but not yet consumed.
pub struct Client {
    pub stream: stream::ClientStream,
    pub buf: BytesMut,
    pub peer: SocketAddr,
    /// The connection became a tunnel, which has ended it.
    pub tunneled: bool,
    /// The wait for the next request, kept across requests.
    pub idle_timer: crate::deadline::Timer,
    /// The wait for a server's answer, kept across requests.
    pub answer_timer: crate::deadline::Timer,
}

impl Client {
    pub fn new(stream: stream::ClientStream, buf: BytesMut, peer: SocketAddr) -> Client {
        Client {
            stream,
            buf,
            peer,
            tunneled: false,
            idle_timer: Default::default(),
            answer_timer: Default::default(),
        }
    }

    /// Writes bytes the proxy produced itself; false when the client is gone or
    /// does not take them within `limit`.
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> bool {
        use tokio::io::AsyncWriteExt;
        matches!(
            crate::deadline::within(limit, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }
}

/// Changes the number of connection slots from `old` to `new`. Free slots
/// go at once; slots in use go as their connections end.
fn resize(slots: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        slots.add_permits(new - old);
    } else if new < old {
        let left = old - new - slots.forget_permits(old - new);
        if left > 0 {
            let slots = slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many_owned(left as u32).await {
                    p.forget();
                }
            });
        }
    }
}

/// Binds a listening socket (IPv6 sockets are IPv6-only, so `[::]` and
/// `0.0.0.0` can both be configured).
pub fn bind(cfg: &ListenerConfig) -> io::Result<std::net::TcpListener> {
    let domain = Domain::for_address(cfg.bind);
    let socket = Socket::new(domain, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if cfg.bind.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Accepted sockets inherit TCP_NODELAY on Linux: one call here instead of
    // one per connection.
    socket.set_nodelay(true)?;
    socket.bind(&cfg.bind.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts until shutdown. A connection waits for a free slot (max_connections)
/// before it is accepted, so excess clients queue in the kernel's backlog.
pub async fn serve(
    listener: TcpListener,
    mut cfg: ListenerConfig,
    shared: Arc<Shared>,
    mut removed: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let name: Arc<str> = cfg.name.as_str().into();
    let mut shutdown = shared.shutdown_signal();
    let mut seen = shared.config();
    loop {
        // Removed by a reload: stop accepting; running connections finish.
        if *shutdown.borrow() || *removed.borrow() {
            return;
        }
        // Under load a slot is free and a connection already waits: take them
        // without setting up the waits below (a fifth of the accept cost).
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = crate::app::stopped(&mut shutdown) => return,
                _ = crate::app::stopped(&mut removed) => return,
            },
        };
        // The poll spends the task's cooperative budget: after a run of
        // ready connections the wait below yields to the others.
        let ready =
            listener.poll_accept(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let accepted = match ready {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => tokio::select! {
                r = listener.accept() => r,
                _ = crate::app::stopped(&mut shutdown) => return,
                _ = crate::app::stopped(&mut removed) => return,
            },
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                eprintln!("postern: listener {name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Reloaded: the listener's own settings (TLS, PROXY protocol, h2c,
        // SOCKS, max_connections) apply from this connection on.
        if let Some(now) = shared.config_if_changed(&seen) {
            if let Some(l) = now.listeners.iter().find(|l| *l.name == *name) {
                resize(&slots, cfg.max_connections, l.max_connections);
                cfg = l.clone();
            }
            seen = now;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let name = name.clone();
        let guard = shared.track_connection();
        let trusted = cfg.proxy_protocol.clone();
        let tls = cfg.tls.is_some();
        let h2c = cfg.h2c;
        let socks_mode = cfg.mode == crate::config::Mode::Socks5;
        let ftp_mode = cfg.mode == crate::config::Mode::Ftp;
        let admin_mode = cfg.mode == crate::config::Mode::Admin;
        let socks_too = cfg.socks && !tls;
        tokio::spawn(async move {
            let mut stream = stream;
            let mut peer = peer;
            let mut initial = BytesMut::new();
            if let Some(trusted) = trusted {
                if !trusted.iter().any(|c| c.contains(peer.ip())) {
                    // Only a trusted balancer may speak for its clients.
                    return;
                }
                let limit = shared.config().timeouts.client_header;
                match proxy_protocol::read(&mut stream, &mut initial, limit).await {
                    Ok(Some(source)) => peer = source,
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
            let Some((slot, stream)) = client_slot(&shared, &name, stream, peer).await else {
                return;
            };
            if admin_mode {
                Box::pin(admin::serve(shared, name, stream, peer)).await;
                drop(permit);
                drop(guard);
                return;
            }
            if ftp_mode {
                Box::pin(ftp_relay::serve(shared, name, stream, peer)).await;
                drop(slot);
                drop(permit);
                drop(guard);
                return;
            }
            if socks_mode || socks_too {
                // SOCKS starts with its version byte (4 or 5); HTTP never does.
                let is_socks = socks_mode
                    || first_byte(&stream, &mut initial, &shared)
                        .await
                        .is_some_and(|b| b == 4 || b == 5);
                if is_socks {
                    Box::pin(socks::serve(
                        shared,
                        name,
                        stream::ClientStream::Plain(stream),
                        peer,
                        initial,
                    ))
                    .await;
                    drop(slot);
                    drop(permit);
                    drop(guard);
                    return;
                }
            }
            if h2c != crate::config::H2c::Off && !tls {
                match h2_preface(&stream, &mut initial, &shared).await {
                    Some(true) => {
                        let local = stream.local_addr().unwrap_or(peer);
                        let io = stream::Rewind {
                            prefix: initial.split(),
                            inner: stream,
                        };
                        Box::pin(h2::serve(shared, name, io, peer, local)).await;
                        drop(slot);
                        drop(permit);
                        drop(guard);
                        return;
                    }
                    // RFC 9113 §3.4: an invalid preface is a connection
                    // error; GOAWAY may be left out, and is (nothing was agreed).
                    Some(false) if h2c == crate::config::H2c::Only => return,
                    Some(false) => {}
                    None => return,
                }
            }
            let stream = if tls {
                let Some(s) =
                    Box::pin(tls_handshake(&shared, &name, stream, initial.split())).await
                else {
                    return;
                };
                s
            } else {
                stream::ClientStream::Plain(stream)
            };
            if let stream::ClientStream::Tls(tls) = &stream
                && tls.get_ref().1.alpn_protocol() == Some(b"h2")
            {
                let local = stream.local_addr().unwrap_or(peer);
                Box::pin(h2::serve(shared, name, stream, peer, local)).await;
                drop(slot);
                drop(permit);
                drop(guard);
                return;
            }
            // Every protocol's state machine is boxed: the task is spawned
            // (and moved) small, and only the protocol in use is allocated.
            Box::pin(http1::serve_connection(shared, name, stream, peer, initial)).await;
            drop(slot);
            drop(permit);
            drop(guard);
        });
    }
}

/// The connection's first byte, read into `buf` (which keeps it).
async fn first_byte(stream: &TcpStream, buf: &mut BytesMut, shared: &Shared) -> Option<u8> {
    if let Some(b) = buf.first() {
        return Some(*b);
    }
    let limit = shared.config().timeouts.client_header;
    let read = async {
        loop {
            stream.readable().await.ok()?;
            let mut chunk = [0u8; 512];
            match stream.try_read(&mut chunk) {
                Ok(0) => return None,
                Ok(m) => {
                    buf.extend_from_slice(&chunk[..m]);
                    return Some(chunk[0]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

/// RFC 9113 §3.4: a client with prior knowledge starts with this preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes show whether the client speaks HTTP/2 with
/// prior knowledge; what was read stays in `buf`. `None`: the client left.
async fn h2_preface(stream: &TcpStream, buf: &mut BytesMut, shared: &Shared) -> Option<bool> {
    let limit = shared.config().timeouts.client_header;
    let read = async {
        loop {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            stream.readable().await.ok()?;
            let mut chunk = [0u8; 64];
            match stream.try_read(&mut chunk) {
                Ok(0) => return None,
                Ok(m) => buf.extend_from_slice(&chunk[..m]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

/// Terminates TLS with the listener's current certificates (a reload renews
/// them for new connections).
async fn tls_handshake(
    shared: &Shared,
    listener: &str,
    tcp: TcpStream,
    prefix: BytesMut,
) -> Option<stream::ClientStream> {
    let cfg = shared.config();
    let server_config = cfg
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .and_then(|l| l.tls.clone())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let io = stream::Rewind { prefix, inner: tcp };
    match tokio::time::timeout(cfg.timeouts.client_header, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Some(stream::ClientStream::Tls(Box::new(tls))),
        _ => None,
    }
}

/// Applies `limits.client_connections`: a client over its share is answered
/// 429 and closed; otherwise the connection holds a slot until it ends.
async fn client_slot(
    shared: &Shared,
    listener: &Arc<str>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(Option<ConnectionSlot>, TcpStream)> {
    let cfg = shared.config();
    let Some(max) = cfg.limits.client_connections else {
        return Some((None, stream));
    };
    if let Some(slot) = shared.guard.limits.connections.enter(peer.ip(), max) {
        return Some((Some(slot), stream));
    }
    let err = ProxyError::new(
        ErrorKind::ConnectionLimit,
        format!(
            "{} already has {max} connections open (limits.client_connections)",
            peer.ip()
        ),
    );
    let mut ctx = RequestCtx::new(peer, listener);
    ctx.method = "-".into();
    ctx.url = "-".into();
    ctx.record_error(&err);
    let style = PageStyle {
        html: false,
        head_only: false,
        connection: Some("close"),
    };
    let page = error_response(
        &err,
        style,
        cfg.http.via.as_deref().unwrap_or("postern"),
        cfg.http.error_page.as_ref(),
    );
    let mut client = Client::new(stream::ClientStream::Plain(stream), BytesMut::new(), peer);
    if client.send(&page, cfg.timeouts.io).await {
        ctx.bytes_out = page.len() as u64;
    }
    shared.finish(&ctx);
    None
}

pub fn head_error_text(e: &HeadError) -> String {
    match e {
        HeadError::Malformed(m) => (*m).to_string(),
        HeadError::LineTooLong => "request line too long".into(),
        HeadError::TooLarge => "header section too large".into(),
        HeadError::TooManyHeaders => "too many header fields".into(),
        HeadError::Version => "unsupported HTTP version".into(),
    }
}
