//! Parent proxies: forwarded traffic leaves through a pool of HTTP or SOCKS5
//! proxies instead of going direct. Parents are chosen, health-checked and
//! failed over with the same pool machinery as reverse-proxy servers.

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::egress::Destination;
use crate::error::{ErrorKind, ProxyError};

/// `Proxy-Authorization` for a parent's credentials.
pub fn basic_credentials(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// The authority a parent is asked for: `host:port`, IPv6 in brackets.
pub fn authority(dest: &Destination, port: u16) -> String {
    match dest {
        Destination::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Destination::Ip(ip) => format!("{ip}:{port}"),
        Destination::Name(n) => format!("{n}:{port}"),
    }
}

/// Asks an HTTP parent for a tunnel (`CONNECT`); returns bytes that arrived
/// after the parent's 200 (the start of the tunnel).
pub async fn http_connect(
    stream: &mut TcpStream,
    dest: &Destination,
    port: u16,
    credentials: Option<&(String, String)>,
    limit: Duration,
) -> Result<Vec<u8>, ProxyError> {
    let target = authority(dest, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((u, p)) = credentials {
        request.push_str(&format!(
            "Proxy-Authorization: {}\r\n",
            basic_credentials(u, p)
        ));
    }
    request.push_str("\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                return Ok((buf, end + 4));
            }
            if buf.len() > 16 * 1024 {
                return Err(std::io::Error::other("parent's response head too large"));
            }
        }
    };
    let (buf, head_len) = match timeout(limit, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(ProxyError::new(
                ErrorKind::UpstreamTerminated,
                format!("parent proxy: {e}"),
            ));
        }
        Err(_) => {
            return Err(ProxyError::new(
                ErrorKind::UpstreamTimeout,
                "parent proxy did not answer CONNECT in time",
            ));
        }
    };
    let status_line =
        String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == b'\r').unwrap_or(0)])
            .into_owned();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !(200..300).contains(&status) {
        return Err(ProxyError::new(
            ErrorKind::DestinationUnavailable,
            format!("parent proxy refused the tunnel: {status_line}"),
        ));
    }
    Ok(buf[head_len..].to_vec())
}

/// SOCKS5 CONNECT (RFC 1928) with optional username/password (RFC 1929).
/// Names are sent as names, so the parent resolves them.
pub async fn socks5_connect(
    stream: &mut TcpStream,
    dest: &Destination,
    port: u16,
    credentials: Option<&(String, String)>,
    limit: Duration,
) -> Result<(), ProxyError> {
    let fail = |why: String| {
        ProxyError::new(
            ErrorKind::DestinationUnavailable,
            format!("SOCKS5 parent: {why}"),
        )
    };
    let handshake = async {
        let methods: &[u8] = if credentials.is_some() {
            &[5, 2, 0, 2]
        } else {
            &[5, 1, 0]
        };
        stream
            .write_all(methods)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut reply = [0u8; 2];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| fail(e.to_string()))?;
        match (reply, credentials) {
            ([5, 0], _) => {}
            ([5, 2], Some((user, password))) => {
                if user.len() > 255 || password.len() > 255 {
                    return Err(fail("credentials longer than 255 bytes".into()));
                }
                let mut auth = vec![1, user.len() as u8];
                auth.extend_from_slice(user.as_bytes());
                auth.push(password.len() as u8);
                auth.extend_from_slice(password.as_bytes());
                stream
                    .write_all(&auth)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let mut status = [0u8; 2];
                stream
                    .read_exact(&mut status)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if status[1] != 0 {
                    return Err(fail("username/password refused".into()));
                }
            }
            _ => return Err(fail("no acceptable authentication method".into())),
        }
        let mut request = vec![5, 1, 0];
        match dest {
            Destination::Ip(std::net::IpAddr::V4(v4)) => {
                request.push(1);
                request.extend_from_slice(&v4.octets());
            }
            Destination::Ip(std::net::IpAddr::V6(v6)) => {
                request.push(4);
                request.extend_from_slice(&v6.octets());
            }
            Destination::Name(name) => {
                if name.len() > 255 {
                    return Err(fail("host name longer than 255 bytes".into()));
                }
                request.push(3);
                request.push(name.len() as u8);
                request.extend_from_slice(name.as_bytes());
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        stream
            .write_all(&request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut head = [0u8; 4];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if head[1] != 0 {
            let why = match head[1] {
                2 => "connection not allowed by ruleset",
                3 => "network unreachable",
                4 => "host unreachable",
                5 => "connection refused",
                6 => "TTL expired",
                7 => "command not supported",
                8 => "address type not supported",
                _ => "general failure",
            };
            let kind = if head[1] == 5 {
                ErrorKind::ConnectionRefused
            } else {
                ErrorKind::DestinationUnavailable
            };
            return Err(ProxyError::new(kind, format!("SOCKS5 parent: {why}")));
        }
        // Skip the bound address the parent reports.
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                stream
                    .read_exact(&mut len)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                usize::from(len[0]) + 2
            }
            _ => return Err(fail("malformed reply".into())),
        };
        let mut skip = vec![0u8; rest];
        stream
            .read_exact(&mut skip)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    };
    match timeout(limit, handshake).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::new(
            ErrorKind::UpstreamTimeout,
            "SOCKS5 parent did not answer in time",
        )),
    }
}
