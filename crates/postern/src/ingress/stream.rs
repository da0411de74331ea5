//! A client connection as the request path sees it: plain TCP, or TLS
//! terminated on the listener. Plain connections keep their direct access to
//! the socket (borrowed halves, splice for tunnels); TLS ones go through rustls.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp;
use tokio_rustls::server::TlsStream;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<Rewind>>),
}

/// A socket with bytes already read from it put back in front (what followed
/// a PROXY protocol header, when TLS starts next).
pub struct Rewind {
    pub prefix: bytes::BytesMut,
    pub inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl ClientStream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => &s.get_ref().0.inner,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Independent read and write halves for concurrent use.
    pub fn split(&mut self) -> (ClientRead<'_>, ClientWrite<'_>) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.split();
                (ClientRead::Plain(r), ClientWrite::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ClientRead::Tls(r), ClientWrite::Tls(w))
            }
        }
    }
}

/// The underlying socket of a half, when bytes may bypass user space.
pub trait RawSocket {
    fn raw_tcp(&self) -> Option<&TcpStream>;
}

type TlsHalf<'a> = &'a mut TlsStream<Rewind>;

pub enum ClientRead<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<TlsHalf<'a>>),
}

pub enum ClientWrite<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<TlsHalf<'a>>),
}

impl RawSocket for ClientRead<'_> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientRead::Plain(h) => Some(h.as_ref()),
            ClientRead::Tls(_) => None,
        }
    }
}

impl RawSocket for ClientWrite<'_> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientWrite::Plain(h) => Some(h.as_ref()),
            ClientWrite::Tls(_) => None,
        }
    }
}

impl RawSocket for tcp::ReadHalf<'_> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl RawSocket for tcp::WriteHalf<'_> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

/// `AsyncRead`/`AsyncWrite` for an enum of a `Plain` and a `Tls` stream,
/// by delegating to whichever the value holds.
macro_rules! either_io {
    ($ty:ty: read) => {
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
    ($ty:ty: write) => {
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}
pub(crate) use either_io;

either_io!(ClientStream: read);
either_io!(ClientStream: write);
either_io!(ClientRead<'_>: read);
either_io!(ClientWrite<'_>: write);
