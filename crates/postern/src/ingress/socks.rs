//! SOCKS5 (RFC 1928, username/password RFC 1929) and SOCKS4/4a on `socks5`
//! listeners, or on forward listeners with `socks = true` (the first byte
//! tells SOCKS from HTTP). Destinations pass the same guard as HTTP: rules,
//! users, blocklists, limits, the SSRF guard; the access log gets one line
//! per tunnel.
//!
//! Every malformed handshake gets the protocol's failure reply where one
//! exists, then the connection is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout_at;

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use crate::egress::{Destination, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::guard::Subject;
use crate::guard::limits::Bucket;
use crate::ingress::stream::ClientStream;

/// RFC 1928 §6 reply codes.
mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const TTL_EXPIRED: u8 = 0x06;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_NOT_SUPPORTED: u8 = 0x08;
}

/// A connection whose first bytes (already in `buf`) may continue to arrive.
struct Conn {
    stream: ClientStream,
    buf: BytesMut,
    deadline: tokio::time::Instant,
}

impl Conn {
    /// Waits until `n` bytes are buffered; `false` on EOF or timeout.
    async fn need(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            match timeout_at(self.deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(m)) if m > 0 => {}
                _ => return false,
            }
        }
        true
    }

    async fn send(&mut self, bytes: &[u8]) -> bool {
        timeout_at(self.deadline, self.stream.write_all(bytes))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Serves one SOCKS connection (its first bytes may already be in `initial`).
pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<str>,
    stream: ClientStream,
    peer: SocketAddr,
    initial: BytesMut,
) {
    let cfg = shared.config();
    let mut conn = Conn {
        stream,
        buf: initial,
        deadline: tokio::time::Instant::now() + cfg.timeouts.client_header,
    };
    if !conn.need(1).await {
        return;
    }
    let mut ctx = RequestCtx::new(peer, &listener);
    ctx.method = "CONNECT".into();
    ctx.url = "-".into();
    ctx.version = "SOCKS";
    let outcome = match conn.buf[0] {
        5 => socks5(&cfg, &shared, &mut conn, &mut ctx).await,
        4 => socks4(&cfg, &shared, &mut conn, &mut ctx).await,
        _ => Err(ProxyError::new(
            ErrorKind::BadRequest,
            "not a SOCKS version",
        )),
    };
    if let Err(e) = outcome {
        ctx.record_error(&e);
        shared.finish(&ctx);
        return;
    }
    shared.finish(&ctx);
}

fn socks5_failure(e: &ProxyError) -> u8 {
    match e.kind {
        ErrorKind::Denied
        | ErrorKind::Blocked
        | ErrorKind::AuthRequired
        | ErrorKind::DestinationProhibited
        | ErrorKind::PortNotAllowed
        | ErrorKind::RateLimited => reply::NOT_ALLOWED,
        ErrorKind::DnsError | ErrorKind::DnsTimeout | ErrorKind::DestinationUnavailable => {
            reply::HOST_UNREACHABLE
        }
        ErrorKind::ConnectionRefused => reply::CONNECTION_REFUSED,
        ErrorKind::ConnectionTimeout => reply::TTL_EXPIRED,
        _ => reply::GENERAL_FAILURE,
    }
}

/// A reply with an address (the bound address on success, zeros otherwise).
fn socks5_reply(code: u8, bound: Option<SocketAddr>) -> Vec<u8> {
    let mut out = vec![5, code, 0];
    match bound {
        Some(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        None => out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]),
    }
    out
}

async fn socks5(
    cfg: &Config,
    shared: &Shared,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let bad = |m: &str| ProxyError::new(ErrorKind::BadRequest, format!("SOCKS5: {m}"));
    // Method negotiation: VER NMETHODS METHODS...
    if !conn.need(2).await {
        return Err(bad("truncated greeting"));
    }
    let n = usize::from(conn.buf[1]);
    if n == 0 {
        conn.send(&[5, 0xff]).await;
        return Err(bad("no authentication methods offered"));
    }
    if !conn.need(2 + n).await {
        return Err(bad("truncated method list"));
    }
    let methods = conn.buf[2..2 + n].to_vec();
    conn.buf.advance(2 + n);
    let mut user = None;
    if let Some(auth_cfg) = &cfg.auth {
        if !methods.contains(&2) {
            conn.send(&[5, 0xff]).await;
            return Err(ProxyError::new(
                ErrorKind::AuthRequired,
                "SOCKS5: username/password required",
            ));
        }
        conn.send(&[5, 2]).await;
        // RFC 1929: VER ULEN UNAME PLEN PASSWD
        if !conn.need(2).await || conn.buf[0] != 1 {
            conn.send(&[1, 1]).await;
            return Err(bad("malformed username/password request"));
        }
        let ulen = usize::from(conn.buf[1]);
        if ulen == 0 || !conn.need(2 + ulen + 1).await {
            conn.send(&[1, 1]).await;
            return Err(bad("empty or truncated user name"));
        }
        let plen = usize::from(conn.buf[2 + ulen]);
        if !conn.need(3 + ulen + plen).await {
            conn.send(&[1, 1]).await;
            return Err(bad("truncated password"));
        }
        // The pair is checked as HTTP Basic credentials: a user name with a
        // colon (which would move part of it into the password) or bytes that
        // are not UTF-8 (which would be replaced) cannot be said exactly.
        let (uname, pass) = match (
            std::str::from_utf8(&conn.buf[2..2 + ulen]),
            std::str::from_utf8(&conn.buf[3 + ulen..3 + ulen + plen]),
        ) {
            (Ok(u), Ok(p)) if !u.contains(':') => (u.to_string(), p.to_string()),
            _ => {
                conn.send(&[1, 1]).await;
                return Err(ProxyError::new(
                    ErrorKind::AuthRequired,
                    "SOCKS5: a user name with a colon or credentials that are not UTF-8",
                ));
            }
        };
        conn.buf.advance(3 + ulen + plen);
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{uname}:{pass}"));
        let field = format!("Basic {token}");
        // RFC 1929 §2: the status comes before the request.
        match shared
            .guard
            .auth
            .check(auth_cfg, ctx.client.ip(), Some(field.as_bytes()))
            .await
        {
            crate::guard::auth::Credentials::Valid(name) => {
                conn.send(&[1, 0]).await;
                user = Some(name.to_string());
            }
            _ => {
                conn.send(&[1, 1]).await;
                return Err(ProxyError::new(
                    ErrorKind::AuthRequired,
                    "SOCKS5: wrong user name or password",
                ));
            }
        }
    } else {
        if !methods.contains(&0) {
            conn.send(&[5, 0xff]).await;
            return Err(bad("no acceptable authentication method"));
        }
        conn.send(&[5, 0]).await;
    }

    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    if !conn.need(4).await {
        return Err(bad("truncated request"));
    }
    let (ver, cmd, atyp) = (conn.buf[0], conn.buf[1], conn.buf[3]);
    if ver != 5 {
        conn.send(&socks5_reply(reply::GENERAL_FAILURE, None)).await;
        return Err(bad("wrong version in request"));
    }
    let addr_len = match atyp {
        1 => 4,
        4 => 16,
        3 => {
            if !conn.need(5).await {
                return Err(bad("truncated domain"));
            }
            let l = usize::from(conn.buf[4]);
            if l == 0 {
                conn.send(&socks5_reply(reply::ADDRESS_NOT_SUPPORTED, None))
                    .await;
                return Err(bad("empty domain name"));
            }
            1 + l
        }
        _ => {
            conn.send(&socks5_reply(reply::ADDRESS_NOT_SUPPORTED, None))
                .await;
            return Err(bad("unknown address type"));
        }
    };
    if !conn.need(4 + addr_len + 2).await {
        return Err(bad("truncated address"));
    }
    let raw = &conn.buf[4..4 + addr_len];
    let dest = match atyp {
        1 => Ok(Destination::Ip(IpAddr::V4(Ipv4Addr::new(
            raw[0], raw[1], raw[2], raw[3],
        )))),
        4 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(raw);
            Ok(Destination::Ip(IpAddr::V6(Ipv6Addr::from(o))))
        }
        _ => std::str::from_utf8(&raw[1..])
            .map_err(|_| "not text")
            .and_then(Destination::parse),
    };
    let port = u16::from_be_bytes([conn.buf[4 + addr_len], conn.buf[5 + addr_len]]);
    conn.buf.advance(4 + addr_len + 2);
    if cmd == 3 {
        // RFC 1928 §7: DST.ADDR/DST.PORT name where the client will send
        // from (zeros when it does not know).
        let declared = match dest {
            Ok(Destination::Ip(ip)) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let from = (declared, port);
        return udp_associate(cfg, shared, conn, ctx, user.as_deref(), from).await;
    }
    if cmd != 1 {
        conn.send(&socks5_reply(reply::COMMAND_NOT_SUPPORTED, None))
            .await;
        return Err(ProxyError::new(
            ErrorKind::NotImplemented,
            format!("SOCKS5 command {cmd}"),
        ));
    }
    let dest = match dest {
        Ok(d) => d,
        Err(why) => {
            conn.send(&socks5_reply(reply::ADDRESS_NOT_SUPPORTED, None))
                .await;
            return Err(bad(&format!("destination: {why}")));
        }
    };
    if port == 0 {
        conn.send(&socks5_reply(reply::GENERAL_FAILURE, None)).await;
        return Err(bad("port 0"));
    }
    match connect(cfg, shared, ctx, &dest, port, user.as_deref()).await {
        Ok((mut upstream, bound, buckets)) => {
            if !conn
                .send(&socks5_reply(reply::SUCCEEDED, Some(bound)))
                .await
            {
                return Ok(());
            }
            relay(cfg, conn, &mut upstream, &buckets, ctx).await;
            Ok(())
        }
        Err(e) => {
            conn.send(&socks5_reply(socks5_failure(&e), None)).await;
            Err(e)
        }
    }
}

async fn socks4(
    cfg: &Config,
    shared: &Shared,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let bad = |m: &str| ProxyError::new(ErrorKind::BadRequest, format!("SOCKS4: {m}"));
    let reject = [0u8, 0x5b, 0, 0, 0, 0, 0, 0];
    // VN CD DSTPORT DSTIP USERID NUL [DOMAIN NUL]
    if !conn.need(9).await {
        return Err(bad("truncated request"));
    }
    let cmd = conn.buf[1];
    let port = u16::from_be_bytes([conn.buf[2], conn.buf[3]]);
    let ip = Ipv4Addr::new(conn.buf[4], conn.buf[5], conn.buf[6], conn.buf[7]);
    let mut end = 8;
    let nul = loop {
        if let Some(i) = conn.buf[end..].iter().position(|b| *b == 0) {
            break end + i;
        }
        if conn.buf.len() > 8 + 512 {
            conn.send(&reject).await;
            return Err(bad("user id too long"));
        }
        end = conn.buf.len();
        if !conn.need(conn.buf.len() + 1).await {
            return Err(bad("truncated user id"));
        }
    };
    let mut consumed = nul + 1;
    // SOCKS4a: 0.0.0.x (x != 0) means a domain name follows.
    let o = ip.octets();
    let dest = if o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0 {
        let start = consumed;
        let dnul = loop {
            if let Some(i) = conn.buf[start..].iter().position(|b| *b == 0) {
                break start + i;
            }
            if conn.buf.len() > start + 255 {
                conn.send(&reject).await;
                return Err(bad("domain too long"));
            }
            if !conn.need(conn.buf.len() + 1).await {
                return Err(bad("truncated domain"));
            }
        };
        consumed = dnul + 1;
        match std::str::from_utf8(&conn.buf[start..dnul])
            .map_err(|_| "not text")
            .and_then(Destination::parse)
        {
            Ok(d) => d,
            Err(why) => {
                conn.send(&reject).await;
                return Err(bad(&format!("destination: {why}")));
            }
        }
    } else {
        Destination::Ip(IpAddr::V4(ip))
    };
    conn.buf.advance(consumed);
    if cmd != 1 || port == 0 {
        conn.send(&reject).await;
        return Err(ProxyError::new(
            ErrorKind::NotImplemented,
            format!("SOCKS4 command {cmd}"),
        ));
    }
    if cfg.auth.is_some() {
        // SOCKS4 carries no password: refused where users must log in.
        conn.send(&reject).await;
        return Err(ProxyError::new(
            ErrorKind::AuthRequired,
            "SOCKS4 cannot authenticate; use SOCKS5",
        ));
    }
    match connect(cfg, shared, ctx, &dest, port, None).await {
        Ok((mut upstream, _, buckets)) => {
            if !conn.send(&[0, 0x5a, 0, 0, 0, 0, 0, 0]).await {
                return Ok(());
            }
            relay(cfg, conn, &mut upstream, &buckets, ctx).await;
            Ok(())
        }
        Err(e) => {
            conn.send(&reject).await;
            Err(e)
        }
    }
}

/// The guard, then the connection (with the SSRF check on its address).
async fn connect(
    cfg: &Config,
    shared: &Shared,
    ctx: &mut RequestCtx,
    dest: &Destination,
    port: u16,
    user: Option<&str>,
) -> Result<(Upstream, SocketAddr, Vec<Arc<Bucket>>), ProxyError> {
    let host = dest.rule_host();
    let url = match dest {
        Destination::Ip(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    ctx.url = url.clone();
    let listener = ctx.listener.clone();
    let subject = Subject {
        client: ctx.client.ip(),
        listener: &listener,
        method: "CONNECT",
        scheme: "tunnel",
        host: &host,
        literal_ip: dest.literal_ip(),
        port,
        url: &url,
        proxy_authorization: None,
        // Verified during the handshake (RFC 1929).
        assume_user: user,
    };
    let admission = shared
        .guard
        .admit(cfg, &shared.connector.resolver, &subject)
        .await?;
    ctx.user = admission.user.clone();
    let (stream, addr) = shared
        .connector
        .connect(
            dest,
            port,
            cfg.address_permit(),
            admission.pinned.as_deref(),
            cfg.timeouts.connect,
        )
        .await?;
    ctx.upstream = Some(addr);
    let bound = stream.local_addr().unwrap_or(addr);
    Ok((Upstream::Plain(stream), bound, admission.buckets))
}

async fn relay(
    cfg: &Config,
    conn: &mut Conn,
    upstream: &mut Upstream,
    buckets: &[Arc<Bucket>],
    ctx: &mut RequestCtx,
) {
    ctx.status = 200;
    ctx.result = "TCP_TUNNEL";
    let early = conn.buf.split();
    let stats = crate::relay::tunnel_client(
        &mut conn.stream,
        &early,
        upstream,
        &[],
        cfg.timeouts.tunnel_idle,
        buckets,
    )
    .await;
    ctx.bytes_in += stats.up;
    ctx.bytes_out += stats.down;
    if stats.idle_timeout {
        ctx.error = Some("connection_read_timeout");
    }
}

/// UDP ASSOCIATE (RFC 1928 §7): datagrams from the client, each with a
/// SOCKS header naming its destination, are relayed after the same checks as
/// a tunnel (rules, SSRF guard) for each new destination; replies come back
/// with a header naming their source. The association ends with the TCP
/// connection or after `timeouts.udp_idle` without traffic.
async fn udp_associate(
    cfg: &Config,
    shared: &Shared,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    user: Option<&str>,
    (declared_ip, declared_port): (Option<IpAddr>, u16),
) -> Result<(), ProxyError> {
    use std::collections::HashSet;
    use tokio::net::UdpSocket;
    let fail =
        |e: std::io::Error| ProxyError::new(ErrorKind::DestinationUnavailable, format!("UDP: {e}"));
    let local = conn.stream.local_addr().map_err(fail)?;
    let client_side = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
        .await
        .map_err(fail)?;
    let unspecified: IpAddr = if local.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let out_side = UdpSocket::bind(SocketAddr::new(unspecified, 0))
        .await
        .map_err(fail)?;
    let mut bound = client_side.local_addr().map_err(fail)?;
    if let Some(ip) = cfg.egress.udp_advertise {
        bound.set_ip(ip);
    }
    if !conn
        .send(&socks5_reply(reply::SUCCEEDED, Some(bound)))
        .await
    {
        return Ok(());
    }
    ctx.method = "UDP_ASSOCIATE".into();
    ctx.url = bound.to_string();
    ctx.status = 200;
    ctx.result = "TCP_TUNNEL";
    let client_ip = ctx.client.ip();
    let mut client_endpoint: Option<SocketAddr> = None;
    // Destinations the rules allowed, as the client named them (a rule on a
    // name must not be passed by naming its address first), and the
    // addresses they went to (only those may answer).
    let mut admitted: std::collections::HashMap<(String, u16), SocketAddr> =
        std::collections::HashMap::new();
    let mut allowed: HashSet<SocketAddr> = HashSet::new();
    let mut control = [0u8; 64];
    let mut from_client = vec![0u8; 65_536];
    let mut from_out = vec![0u8; 65_536];
    // Idle counts from the last datagram relayed either way; ignored ones
    // (other senders, refused destinations) do not keep it alive.
    let mut idle_at = tokio::time::Instant::now() + cfg.timeouts.udp_idle;
    // The outgoing socket has one family: destinations are sent to an
    // address of that family.
    let out_v6 = out_side.local_addr().map_err(fail)?.is_ipv6();
    loop {
        let idle = tokio::time::sleep_until(idle_at);
        tokio::select! {
            // The association lives as long as its TCP connection.
            r = conn.stream.read(&mut control) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            r = client_side.recv_from(&mut from_client) => {
                let Ok((n, src)) = r else { return Ok(()) };
                // Only the client that asked may use the association, from
                // the port it named when that is known to be its own (a
                // client behind NAT names an address that is not).
                if src.ip() != client_ip || client_endpoint.is_some_and(|e| e != src) {
                    continue;
                }
                if declared_port != 0
                    && declared_ip.is_none_or(|ip| ip == client_ip)
                    && src.port() != declared_port
                {
                    continue;
                }
                client_endpoint = Some(src);
                let Some((dest, port, payload)) = parse_udp_header(&from_client[..n]) else {
                    continue;
                };
                let known = (&mut admitted, &mut allowed);
                let Ok(target) =
                    udp_target(cfg, shared, ctx, (&dest, port, out_v6), user, known).await
                else {
                    continue;
                };
                if out_side.send_to(payload, target).await.is_ok() {
                    ctx.bytes_in += payload.len() as u64;
                    idle_at = tokio::time::Instant::now() + cfg.timeouts.udp_idle;
                }
            }
            r = out_side.recv_from(&mut from_out) => {
                let Ok((n, src)) = r else { return Ok(()) };
                // Replies only from destinations the client sent to.
                let (Some(endpoint), true) = (client_endpoint, allowed.contains(&src)) else {
                    continue;
                };
                let mut packet = udp_header(src);
                packet.extend_from_slice(&from_out[..n]);
                if client_side.send_to(&packet, endpoint).await.is_ok() {
                    ctx.bytes_out += n as u64;
                    idle_at = tokio::time::Instant::now() + cfg.timeouts.udp_idle;
                }
            }
            _ = idle => {
                ctx.error = Some("connection_read_timeout");
                return Ok(());
            }
        }
    }
}

/// `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`; fragments are dropped.
fn parse_udp_header(p: &[u8]) -> Option<(Destination, u16, &[u8])> {
    if p.len() < 4 || p[2] != 0 {
        return None;
    }
    let (dest, rest) = match p[3] {
        1 if p.len() >= 10 => (
            Destination::Ip(IpAddr::V4(Ipv4Addr::new(p[4], p[5], p[6], p[7]))),
            &p[8..],
        ),
        4 if p.len() >= 22 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&p[4..20]);
            (Destination::Ip(IpAddr::V6(Ipv6Addr::from(o))), &p[20..])
        }
        3 if p.len() >= 5 => {
            let l = usize::from(p[4]);
            let name = std::str::from_utf8(p.get(5..5 + l)?).ok()?;
            (Destination::parse(name).ok()?, p.get(5 + l..)?)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    Some((dest, port, &rest[2..]))
}

fn udp_header(src: SocketAddr) -> Vec<u8> {
    let mut out = vec![0, 0, 0];
    match src {
        SocketAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out
}

/// At most this many destinations are remembered per association (a few MiB
/// at most); datagrams to more are still checked and sent, but their answers
/// are not let back.
const UDP_REMEMBERED: usize = 65_536;

/// The checked address for a datagram's destination; remembered once
/// allowed, under the destination as named.
async fn udp_target(
    cfg: &Config,
    shared: &Shared,
    ctx: &RequestCtx,
    (dest, port, v6): (&Destination, u16, bool),
    user: Option<&str>,
    (admitted, allowed): (
        &mut std::collections::HashMap<(String, u16), SocketAddr>,
        &mut std::collections::HashSet<SocketAddr>,
    ),
) -> Result<SocketAddr, ProxyError> {
    let host = dest.rule_host();
    if let Some(addr) = admitted.get(&(host.to_string(), port)) {
        return Ok(*addr);
    }
    let ips = match dest {
        Destination::Ip(ip) => vec![*ip],
        Destination::Name(n) => shared
            .connector
            .resolver
            .resolve(n)
            .await
            .map_err(|e| crate::egress::connect::resolve_error(n, e))?,
    };
    let url = format!("{host}:{port}");
    let listener = ctx.listener.clone();
    let subject = Subject {
        client: ctx.client.ip(),
        listener: &listener,
        method: "UDP",
        scheme: "tunnel",
        host: &host,
        literal_ip: dest.literal_ip(),
        port,
        url: &url,
        proxy_authorization: None,
        assume_user: user,
    };
    let admission = shared
        .guard
        .admit(cfg, &shared.connector.resolver, &subject)
        .await?;
    let ips = admission.pinned.clone().unwrap_or(ips);
    let ok = cfg.address_permit().filter(&host, &ips)?;
    let Some(ip) = ok.iter().find(|ip| ip.is_ipv6() == v6) else {
        return Err(ProxyError::new(
            ErrorKind::DestinationUnavailable,
            format!("{host} has no address of the association's family"),
        ));
    };
    let addr = SocketAddr::new(*ip, port);
    if admitted.len() < UDP_REMEMBERED {
        admitted.insert((host.into_owned(), port), addr);
        allowed.insert(addr);
    }
    Ok(addr)
}
