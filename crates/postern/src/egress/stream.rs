//! A connection to the next hop: plain TCP, or TLS to a server that wants it
//! (`tls = true` on a pool). Plain connections keep direct socket access.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, tcp};
use tokio_rustls::client::TlsStream;

use crate::ingress::stream::RawSocket;

pub enum Upstream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

type TlsHalf<'a> = &'a mut TlsStream<TcpStream>;

pub enum UpRead<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<TlsHalf<'a>>),
}

pub enum UpWrite<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<TlsHalf<'a>>),
}

impl Upstream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Upstream::Plain(s) => s,
            Upstream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Upstream::Tls(_))
    }

    pub fn split(&mut self) -> (UpRead<'_>, UpWrite<'_>) {
        match self {
            Upstream::Plain(s) => {
                let (r, w) = s.split();
                (UpRead::Plain(r), UpWrite::Plain(w))
            }
            Upstream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (UpRead::Tls(r), UpWrite::Tls(w))
            }
        }
    }
}

impl RawSocket for UpRead<'_> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        match self {
            UpRead::Plain(h) => Some(h.as_ref()),
            UpRead::Tls(_) => None,
        }
    }
}

impl RawSocket for UpWrite<'_> {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        match self {
            UpWrite::Plain(h) => Some(h.as_ref()),
            UpWrite::Tls(_) => None,
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Upstream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for UpRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpRead::Plain(h) => Pin::new(h).poll_read(cx, buf),
            UpRead::Tls(h) => Pin::new(h).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpWrite::Plain(h) => Pin::new(h).poll_write(cx, buf),
            UpWrite::Tls(h) => Pin::new(h).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpWrite::Plain(h) => Pin::new(h).poll_flush(cx),
            UpWrite::Tls(h) => Pin::new(h).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpWrite::Plain(h) => Pin::new(h).poll_shutdown(cx),
            UpWrite::Tls(h) => Pin::new(h).poll_shutdown(cx),
        }
    }
}
