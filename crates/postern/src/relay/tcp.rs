//! CONNECT tunnels between two TCP sockets. Each direction starts by copying
//! through a small buffer; once a direction shows bulk traffic (a full buffer
//! after 64 KiB), it switches to splice(2), which moves the bytes socket → pipe
//! → socket inside the kernel without copying them through the proxy. One
//! watchdog timer per tunnel enforces the idle timeout, instead of a timer per
//! read. A direction's last bytes, when they come with the peer's FIN, leave
//! with the half-close in one segment.

use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::TunnelStats;
use crate::egress::Upstream;
use crate::guard::limits::Bucket;
use crate::ingress::stream::{ClientStream, RawSocket};

const COPY_BUFFER: usize = 16 * 1024;
const SPLICE_AFTER: u64 = 64 * 1024;

/// What both directions share: the time of the last byte moved, and whether
/// one direction has already ended.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    one_ended: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            one_ended: AtomicBool::new(false),
        }
    }

    /// Resolves once nothing has moved either way for `idle`: one watchdog
    /// timer per tunnel instead of one per read.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            sleep_until(deadline).await;
            if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
pub async fn tunnel_tcp(
    client: &mut TcpStream,
    client_pending: &[u8],
    server: &mut TcpStream,
    server_pending: &[u8],
    idle: Duration,
    downstream_limits: &[Arc<Bucket>],
) -> TunnelStats {
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let (client, server) = ((cr, cw, client_pending), (sr, sw, server_pending));
    tunnel_halves(client, server, idle, downstream_limits).await
}

/// An FTP data connection between two sockets: it carries one transfer in
/// one direction, so it is over (and both sockets may close) as soon as
/// either side has ended and its end is passed on, whether or not the other
/// side has closed yet (RFC 959 §3.3: the sender closes to mark the end).
pub async fn transfer_tcp(
    client: &mut TcpStream,
    server: &mut TcpStream,
    idle: Duration,
    downstream_limits: &[Arc<Bucket>],
) -> TunnelStats {
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let (client, server) = ((cr, cw, &[][..]), (sr, sw, &[][..]));
    transfer_halves(client, server, idle, downstream_limits).await
}

/// A tunnel between a client connection (plain or TLS) and a server (plain
/// or TLS); splice is used where both ends are plain sockets.
pub async fn tunnel_client(
    client: &mut ClientStream,
    client_pending: &[u8],
    server: &mut Upstream,
    server_pending: &[u8],
    idle: Duration,
    downstream_limits: &[Arc<Bucket>],
) -> TunnelStats {
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let (client, server) = ((cr, cw, client_pending), (sr, sw, server_pending));
    tunnel_halves(client, server, idle, downstream_limits).await
}

/// A tunnel from any byte stream (an HTTP/2 stream, say) to a server (plain
/// or TLS); `server_pending` (read from the server already) goes to the
/// client first.
pub async fn tunnel_io<C>(
    client: C,
    server: &mut Upstream,
    server_pending: &[u8],
    idle: Duration,
    downstream_limits: &[Arc<Bucket>],
) -> TunnelStats
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (r, w) = tokio::io::split(client);
    let (sr, sw) = server.split();
    let (client, server) = ((NoRaw(r), NoRaw(w), &[][..]), (sr, sw, server_pending));
    tunnel_halves(client, server, idle, downstream_limits).await
}

/// A stream half without a socket underneath (no splice).
struct NoRaw<T>(T);

impl<T> RawSocket for NoRaw<T> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for NoRaw<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoRaw<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// One side of a tunnel: its read and write halves and the bytes already
/// read from it that the other side must get first.
type Side<'p, R, W> = (R, W, &'p [u8]);

async fn tunnel_halves<CR, CW, SR, SW>(
    (cr, cw, client_pending): Side<'_, CR, CW>,
    (sr, sw, server_pending): Side<'_, SR, SW>,
    idle: Duration,
    downstream_limits: &[Arc<Bucket>],
) -> TunnelStats
where
    CR: AsyncRead + RawSocket + Unpin,
    CW: AsyncWrite + RawSocket + Unpin,
    SR: AsyncRead + RawSocket + Unpin,
    SW: AsyncWrite + RawSocket + Unpin,
{
    let _open = crate::observe::metrics::TunnelGauge::open();
    let activity = Activity::new();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    // The pumps are built inside `join!`, not moved into it: they are large.
    let both = async {
        tokio::join!(
            pump(cr, sw, client_pending, &activity, &up, &[]),
            pump(sr, cw, server_pending, &activity, &down, downstream_limits)
        )
    };
    let idle_timeout = tokio::select! {
        _ = both => false,
        _ = activity.idle_for(idle) => true,
    };
    TunnelStats {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        idle_timeout,
    }
}

/// [`tunnel_halves`] for one-way transfers: over when either direction ends.
async fn transfer_halves<CR, CW, SR, SW>(
    (cr, cw, client_pending): Side<'_, CR, CW>,
    (sr, sw, server_pending): Side<'_, SR, SW>,
    idle: Duration,
    downstream_limits: &[Arc<Bucket>],
) -> TunnelStats
where
    CR: AsyncRead + RawSocket + Unpin,
    CW: AsyncWrite + RawSocket + Unpin,
    SR: AsyncRead + RawSocket + Unpin,
    SW: AsyncWrite + RawSocket + Unpin,
{
    let _open = crate::observe::metrics::TunnelGauge::open();
    let activity = Activity::new();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let idle_timeout = tokio::select! {
        _ = pump(cr, sw, client_pending, &activity, &up, &[]) => false,
        _ = pump(sr, cw, server_pending, &activity, &down, downstream_limits) => false,
        _ = activity.idle_for(idle) => true,
    };
    TunnelStats {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        idle_timeout,
    }
}

/// One direction, from `src` to `dst`, counting into `moved`.
async fn pump<R, W>(
    mut src: R,
    mut dst: W,
    pending: &[u8],
    activity: &Activity,
    moved: &AtomicU64,
    limits: &[Arc<Bucket>],
) where
    R: AsyncRead + RawSocket + Unpin,
    W: AsyncWrite + RawSocket + Unpin,
{
    let _ = async {
        dst.write_all(pending).await?;
        moved.fetch_add(pending.len() as u64, Ordering::Relaxed);
        // A limited direction moves in small steps, each paid for in its
        // buckets, and never switches to splice (which would bypass them).
        let step = limits.iter().map(|b| b.step()).min().unwrap_or(COPY_BUFFER);
        let mut buf = BytesMut::with_capacity(step);
        loop {
            buf.clear();
            // A short read clears the socket's readiness, so no extra system
            // call is spent finding it empty.
            let mut n = src.read_buf(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            activity.touch();
            // A short read that came with the peer's FIN (a server answering
            // and closing, say) is the direction's last: the bytes and the
            // half-close go out as one segment instead of two.
            #[cfg(target_os = "linux")]
            if limits.is_empty()
                && n < buf.capacity()
                && let (Some(s), Some(d)) = (src.raw_tcp(), dst.raw_tcp())
                && fin_arrived(s)
            {
                // Everything sent before the FIN is queued already, so this
                // read does not wait.
                match src.read_buf(&mut buf).await {
                    Ok(0) => {
                        send_with_fin(d, &buf).await?;
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                        // Set only now: until the FIN is out, the other
                        // direction must not take this one as ended.
                        activity.one_ended.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    Ok(more) => n += more,
                    // A reset after the bytes (a server closing with unread
                    // input): the bytes still go out before the tunnel ends.
                    Err(e) => {
                        dst.write_all(&buf).await?;
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            for bucket in limits {
                let wait = bucket.take(n);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    activity.touch();
                }
            }
            dst.write_all(&buf[..n]).await?;
            let total = moved.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            if limits.is_empty() && n == buf.capacity() && total >= SPLICE_AFTER {
                #[cfg(target_os = "linux")]
                if let (Some(s), Some(d)) = (src.raw_tcp(), dst.raw_tcp())
                    && let Ok(pipe) = splice::Pipe::new()
                {
                    drop(buf);
                    return splice::pump(s, d, &pipe, activity, moved).await;
                }
            }
        }
    }
    .await as std::io::Result<()>;
    // Pass the end on as a half-close, since the other direction may still be
    // busy. A plain socket's direction that ends second skips it: both
    // sockets close next, and what was written is in the kernel already.
    // A TLS (or other buffered) destination is always shut down: its last
    // records may still wait in user space, and only a flush sends them,
    // with close_notify, so the peer can tell the end from a truncation.
    let first = !activity.one_ended.swap(true, Ordering::Relaxed);
    match dst.raw_tcp() {
        Some(tcp) if first => {
            let _ = socket2::SockRef::from(tcp).shutdown(Shutdown::Write);
        }
        Some(_) => {}
        None => {
            let _ = dst.shutdown().await;
        }
    }
}

/// Whether the reactor has seen the peer's FIN on `tcp` (a readiness flag that
/// reads never clear).
#[cfg(target_os = "linux")]
fn fin_arrived(tcp: &TcpStream) -> bool {
    use std::future::Future;
    let ready = std::pin::pin!(tcp.ready(tokio::io::Interest::READABLE));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(ready.poll(&mut cx), std::task::Poll::Ready(Ok(r)) if r.is_read_closed())
}

/// The last bytes of a direction and its FIN in one segment: MSG_MORE holds
/// the bytes back until the shutdown appends the FIN and pushes them. (A
/// shutdown after the other direction ended is redundant but harmless: both
/// sockets close next.)
#[cfg(target_os = "linux")]
async fn send_with_fin(tcp: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let sent = tcp
            .async_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(tcp)
                    .send_with_flags(data, libc::MSG_MORE | libc::MSG_NOSIGNAL)
            })
            .await?;
        data = &data[sent..];
    }
    // As for the plain half-close below: the bytes are out, whatever the
    // shutdown says.
    let _ = socket2::SockRef::from(tcp).shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(target_os = "linux")]
mod splice {
    //! The kernel-side copy. The only unsafe code is the three system calls.
    #![allow(unsafe_code)]

    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::Activity;

    const PIPE_SIZE: libc::c_int = 1024 * 1024;

    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: pipe2 writes two descriptors into the array we pass.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both descriptors were just created and are owned by nobody else.
            let pipe = unsafe {
                Pipe {
                    read: OwnedFd::from_raw_fd(fds[0]),
                    write: OwnedFd::from_raw_fd(fds[1]),
                }
            };
            // A larger pipe means fewer system calls per MiB; failure is harmless.
            // SAFETY: F_SETPIPE_SZ takes an int and only resizes the pipe's buffer.
            unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
            Ok(pipe)
        }
    }

    fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> io::Result<usize> {
        // SAFETY: null offsets mean "use the file position", valid for sockets and pipes.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub async fn pump(
        src: &TcpStream,
        dst: &TcpStream,
        pipe: &Pipe,
        activity: &Activity,
        moved: &AtomicU64,
    ) -> io::Result<()> {
        let chunk = PIPE_SIZE as usize;
        loop {
            // The pipe is empty here, so EAGAIN can only mean "socket not readable".
            let n = src
                .async_io(Interest::READABLE, || {
                    splice(src.as_raw_fd(), pipe.write.as_raw_fd(), chunk)
                })
                .await?;
            if n == 0 {
                return Ok(());
            }
            activity.touch();
            let mut left = n;
            while left > 0 {
                let m = dst
                    .async_io(Interest::WRITABLE, || {
                        splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), left)
                    })
                    .await?;
                if m == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                left -= m;
            }
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
