//! A connection to the next hop: plain TCP, or TLS to a server that wants it
//! (`tls = true` on a pool). Plain connections keep direct socket access.

use tokio::net::{TcpStream, tcp};
use tokio_rustls::client::TlsStream;

use crate::ingress::stream::{RawSocket, either_io};

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

either_io!(Upstream: read);
either_io!(Upstream: write);
either_io!(UpRead<'_>: read);
either_io!(UpWrite<'_>: write);
