//! The PROXY protocol (HAProxy's spec, versions 1 and 2) on listeners behind
//! a load balancer: the first bytes of a connection name the real client.
//! Accepted only from `proxy_protocol_from` addresses; a missing or malformed
//! header closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What a complete header said.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub consumed: usize,
    /// The client's address; `None` for `LOCAL`/`UNKNOWN` (health checks of
    /// the balancer itself): the connection's own peer stands.
    pub source: Option<SocketAddr>,
}

/// Parses a header at the start of `buf`: `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    if buf.len() >= 12 && &buf[..12] == V2_SIGNATURE {
        return parse_v2(buf);
    }
    if V2_SIGNATURE.starts_with(&buf[..buf.len().min(12)]) && buf.len() < 12 {
        return Ok(None);
    }
    if !b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
        return Err("no PROXY protocol header");
    }
    // v1: one line of at most 107 bytes.
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= 107 {
            Err("PROXY v1 line too long")
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| "PROXY v1 line is not text")?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src.parse().map_err(|_| "PROXY v1: bad source address")?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err("PROXY v1: address does not match its family");
            }
            let port: u16 = sport.parse().map_err(|_| "PROXY v1: bad source port")?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err("malformed PROXY v1 line"),
    };
    Ok(Some(Header {
        consumed: end + 2,
        source,
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err("PROXY v2: unknown version");
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let consumed = 16 + len;
    let source = match (version_command & 0x0f, buf[13]) {
        (0, _) => None, // LOCAL
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x00) => None, // UNSPEC
        (1, _) => return Err("PROXY v2: unsupported address family or too short"),
        _ => return Err("PROXY v2: unknown command"),
    };
    Ok(Some(Header { consumed, source }))
}

/// Reads the header from a new connection; leftover bytes stay in `buf`.
pub async fn read(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: Duration,
) -> Result<Option<SocketAddr>, &'static str> {
    let read = async {
        loop {
            if let Some(h) = parse(buf)? {
                let _ = buf.split_to(h.consumed);
                return Ok(h.source);
            }
            if buf.len() > 16 + 65_535 {
                return Err("PROXY header too long");
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return Err("closed before the PROXY header"),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err("no PROXY header in time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reverse::proxy_header;
    use crate::reverse::spec::ProxyProtocolVersion;

    #[test]
    fn both_versions_round_trip() {
        let client: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let local: SocketAddr = "10.0.0.1:80".parse().unwrap();
        for v in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            let mut bytes = proxy_header(v, client, Some(local));
            let n = bytes.len();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&bytes),
                Ok(Some(Header {
                    consumed: n,
                    source: Some(client)
                }))
            );
            // Every prefix asks for more.
            for cut in 0..n {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{v:?} cut at {cut}");
            }
        }
        let v6: SocketAddr = "[2001:db8::1]:1234".parse().unwrap();
        let bytes = proxy_header(ProxyProtocolVersion::V2, v6, None);
        assert_eq!(parse(&bytes).unwrap().unwrap().source, Some(v6));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x00",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04abcd",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(parse(&long).is_err());
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some(Header {
                consumed: 15,
                source: None
            }))
        );
    }

    /// The headers health checks send (`LOCAL`, `UNKNOWN`) read back as a
    /// connection that names no client.
    #[test]
    fn health_check_headers_name_no_client() {
        use crate::reverse::spec::ProxyProtocolVersion;
        for (version, len) in [
            (ProxyProtocolVersion::V1, 15),
            (ProxyProtocolVersion::V2, 16),
        ] {
            let header = crate::reverse::local_proxy_header(version);
            assert_eq!(
                parse(&header),
                Ok(Some(Header {
                    consumed: len,
                    source: None
                })),
                "{header:?}"
            );
        }
    }
}
