//! The native FTP relay (`mode = "ftp"`), the convention of Squid's
//! ftp_port and 3proxy: the client logs in to Postern as
//! `USER name@host[:port]`; Postern checks the destination like any other
//! (rules, SSRF guard), connects, and relays the control channel. Data
//! connections are passive only: a client's PASV/EPSV is answered with an
//! address of Postern's own, whose connections are joined to the server's
//! passive port — always on the control connection's peer (no FTP bounce).
//! Active mode (PORT/EPRT) is refused. Each transfer is logged with its bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use crate::egress::Destination;
use crate::guard::Subject;

/// Reads one CRLF-terminated line (at most 4 KiB) into a String.
async fn read_line(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: std::time::Duration,
) -> Option<String> {
    loop {
        if let Some(nl) = memchr::memchr(b'\n', buf) {
            let line = buf.split_to(nl + 1);
            return Some(
                String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            );
        }
        if buf.len() > 4096 {
            return None;
        }
        match timeout(limit, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// A whole server reply (multi-line replies included) and its code.
async fn read_reply(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: std::time::Duration,
) -> Option<(u16, String)> {
    let first = read_line(stream, buf, limit).await?;
    let code: u16 = first.get(..3)?.parse().ok()?;
    let mut all = format!("{first}\r\n");
    if first.as_bytes().get(3) == Some(&b'-') {
        loop {
            let line = read_line(stream, buf, limit).await?;
            all.push_str(&line);
            all.push_str("\r\n");
            if line.len() >= 4 && line[..3] == first[..3] && line.as_bytes()[3] == b' ' {
                break;
            }
        }
    }
    Some((code, all))
}

pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<str>,
    mut client: TcpStream,
    peer: SocketAddr,
) {
    let cfg = shared.config();
    let limit = cfg.timeouts.client_idle;
    let mut cbuf = BytesMut::new();
    let _ = client
        .write_all(b"220 Postern FTP relay: log in as USER name@host[:port]\r\n")
        .await;
    // Until USER name@host, the relay answers alone.
    let (user, host, port) = loop {
        let Some(line) = read_line(&mut client, &mut cbuf, cfg.timeouts.client_header).await else {
            return;
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "USER" => match arg.rsplit_once('@') {
                Some((name, hostport)) if !name.is_empty() => {
                    match crate::forward::target::parse_authority(hostport, Some(21)) {
                        Ok((_, dest, port)) => break (name.to_string(), dest, port),
                        Err(_) => {
                            let _ = client
                                .write_all(b"501 Invalid host in USER name@host[:port]\r\n")
                                .await;
                        }
                    }
                }
                _ => {
                    let _ = client
                        .write_all(b"530 Log in as USER name@host[:port]\r\n")
                        .await;
                }
            },
            "QUIT" => {
                let _ = client.write_all(b"221 Bye\r\n").await;
                return;
            }
            _ => {
                let _ = client.write_all(b"530 Log in with USER first\r\n").await;
            }
        }
    };
    let mut login = RequestCtx::new(peer, &listener);
    login.method = "USER".into();
    login.version = "FTP";
    login.url = format!("ftp://{}:{port}/", host.rule_host());
    let server = match open(&cfg, &shared, &mut login, &host, port).await {
        Ok(s) => s,
        Err(e) => {
            login.record_error(&e);
            shared.finish(&login);
            let msg = format!("421 {}\r\n", e.detail.replace(['\r', '\n'], " "));
            let _ = client.write_all(msg.as_bytes()).await;
            return;
        }
    };
    let (mut server, server_peer) = server;
    // A relay asked to reach itself would nest sessions, one connection
    // pair per `@host:port` the user name repeats.
    if client.local_addr().is_ok_and(|own| own == server_peer) {
        drop(server);
        login.status = 508;
        login.error = Some("proxy_loop_detected");
        shared.finish(&login);
        let _ = client
            .write_all(b"421 That address is this relay itself\r\n")
            .await;
        return;
    }
    let mut sbuf = BytesMut::new();
    // The server's greeting is replaced by ours; then the login goes on.
    if !matches!(
        read_reply(&mut server, &mut sbuf, cfg.timeouts.first_byte).await,
        Some((220, _))
    ) {
        let _ = client
            .write_all(b"421 The FTP server did not greet\r\n")
            .await;
        return;
    }
    let _ = server
        .write_all(format!("USER {user}\r\n").as_bytes())
        .await;
    let Some((_, reply)) = read_reply(&mut server, &mut sbuf, cfg.timeouts.first_byte).await else {
        let _ = client.write_all(b"421 The FTP server went away\r\n").await;
        return;
    };
    login.status = 200;
    shared.finish(&login);
    if client.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    let mut passive: Option<DataJoin> = None;
    loop {
        let Some(line) = read_line(&mut client, &mut cbuf, limit).await else {
            return;
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "PORT" | "EPRT" => {
                let _ = client
                    .write_all(b"502 Active mode is not relayed; use PASV or EPSV\r\n")
                    .await;
                continue;
            }
            "PASV" | "EPSV" => {
                let _ = server.write_all(b"EPSV\r\n").await;
                let port = match read_reply(&mut server, &mut sbuf, cfg.timeouts.first_byte).await {
                    Some((229, text)) => text
                        .rsplit("|||")
                        .next()
                        .and_then(|s| s.split('|').next())
                        .and_then(|p| p.parse::<u16>().ok()),
                    _ => None,
                };
                let Some(server_port) = port else {
                    let _ = client
                        .write_all(b"425 The server offered no passive port\r\n")
                        .await;
                    continue;
                };
                let local_ip = client.local_addr().map(|a| a.ip()).unwrap_or(peer.ip());
                let Ok(l) = TcpListener::bind(SocketAddr::new(local_ip, 0)).await else {
                    let _ = client.write_all(b"425 Cannot open a data port\r\n").await;
                    continue;
                };
                let our = l.local_addr().map(|a| a.port()).unwrap_or(0);
                let answer = match (verb.as_str(), local_ip) {
                    ("PASV", std::net::IpAddr::V4(v4)) => {
                        let o = v4.octets();
                        format!(
                            "227 Entering Passive Mode ({},{},{},{},{},{})\r\n",
                            o[0],
                            o[1],
                            o[2],
                            o[3],
                            our / 256,
                            our % 256
                        )
                    }
                    _ => format!("229 Entering Extended Passive Mode (|||{our}|)\r\n"),
                };
                // Joined from now on: clients connect as soon as they have the
                // passive reply, and some servers (vsftpd, ProFTPD) take the data
                // connection before they answer the transfer command with 150.
                passive = Some(DataJoin(tokio::spawn(join_data(
                    (cfg.timeouts.connect, cfg.timeouts.tunnel_idle),
                    l,
                    SocketAddr::new(server_peer.ip(), server_port),
                    peer,
                ))));
                let _ = client.write_all(answer.as_bytes()).await;
                continue;
            }
            _ => {}
        }
        if server
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .is_err()
        {
            let _ = client.write_all(b"421 The FTP server went away\r\n").await;
            return;
        }
        let Some((code, reply)) = read_reply(&mut server, &mut sbuf, cfg.timeouts.first_byte).await
        else {
            let _ = client.write_all(b"421 The FTP server went away\r\n").await;
            return;
        };
        let _ = client.write_all(reply.as_bytes()).await;
        let transfer = matches!(
            verb.as_str(),
            "RETR" | "STOR" | "STOU" | "APPE" | "LIST" | "NLST" | "MLSD"
        );
        // A passive setup serves one transfer command, whatever its answer.
        let join = if transfer { passive.take() } else { None };
        if let Some(mut join) = join
            && (code == 150 || code == 125)
        {
            let mut ctx = RequestCtx::new(peer, &listener);
            ctx.method = verb.clone();
            ctx.version = "FTP";
            ctx.url = format!("ftp://{}:{port}/{arg}", host.rule_host());
            ctx.upstream = Some(server_peer);
            let moved = (&mut join.0).await.unwrap_or((0, 0));
            let Some((code, reply)) = read_reply(&mut server, &mut sbuf, cfg.timeouts.io).await
            else {
                return;
            };
            let _ = client.write_all(reply.as_bytes()).await;
            ctx.status = if code == 226 || code == 250 { 200 } else { 502 };
            ctx.result = "TCP_MISS";
            ctx.bytes_in = moved.0;
            ctx.bytes_out = moved.1;
            shared.finish(&ctx);
        }
        if verb == "QUIT" {
            return;
        }
    }
}

/// A data connection being joined in the background; dropped (a new passive
/// setup, a refused transfer, the session's end), it is abandoned.
struct DataJoin(tokio::task::JoinHandle<(u64, u64)>);

impl Drop for DataJoin {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts the client's data connection (only from the client's address)
/// and joins it to the server's passive port; (bytes up, bytes down).
async fn join_data(
    (connect, idle): (std::time::Duration, std::time::Duration),
    listener: TcpListener,
    server: SocketAddr,
    client_peer: SocketAddr,
) -> (u64, u64) {
    let accepted = timeout(connect, async {
        loop {
            match listener.accept().await {
                Ok((s, from)) if from.ip() == client_peer.ip() => return Some(s),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await;
    let Ok(Some(mut client)) = accepted else {
        return (0, 0);
    };
    let Ok(Ok(upstream)) = timeout(connect, TcpStream::connect(server)).await else {
        return (0, 0);
    };
    let mut upstream = crate::egress::Upstream::Plain(upstream);
    let stats = crate::relay::tunnel_io(&mut client, &mut upstream, &[], idle, &[]).await;
    (stats.up, stats.down)
}

/// The destination through the guard, then a control connection to it.
async fn open(
    cfg: &Config,
    shared: &Shared,
    ctx: &mut RequestCtx,
    dest: &Destination,
    port: u16,
) -> Result<(TcpStream, SocketAddr), crate::error::ProxyError> {
    let host = dest.rule_host();
    let url = ctx.url.clone();
    let listener = ctx.listener.clone();
    let subject = Subject {
        client: ctx.client.ip(),
        listener: &listener,
        method: "USER",
        scheme: "ftp",
        host: &host,
        literal_ip: dest.literal_ip(),
        port,
        url: &url,
        proxy_authorization: None,
        assume_user: None,
    };
    let admission = shared
        .guard
        .admit(cfg, &shared.connector.resolver, &subject)
        .await?;
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
    Ok((stream, addr))
}
