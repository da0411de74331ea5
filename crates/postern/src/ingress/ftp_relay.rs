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

/// The longest command or reply line taken (RFC 959 sets no limit; servers
/// use a few hundred bytes to a few KiB).
const LINE_LIMIT: usize = 4096;

/// Reads one LF-terminated line (at most [`LINE_LIMIT`] bytes) without its
/// line end. Lines stay bytes: file names are often not UTF-8 (RFC 2640
/// leaves servers in Latin-1 and others), and must reach the server exactly.
async fn read_line(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: std::time::Duration,
) -> Option<Vec<u8>> {
    loop {
        if let Some(nl) = memchr::memchr(b'\n', buf) {
            if nl > LINE_LIMIT {
                return None;
            }
            let mut line = buf.split_to(nl + 1).to_vec();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(line);
        }
        if buf.len() > LINE_LIMIT {
            return None;
        }
        match timeout(limit, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// A whole server reply (multi-line replies included, RFC 959 §4.2) with
/// its line ends, and its code.
async fn read_reply(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: std::time::Duration,
) -> Option<(u16, Vec<u8>)> {
    let first = read_line(stream, buf, limit).await?;
    let code: u16 = std::str::from_utf8(first.get(..3)?).ok()?.parse().ok()?;
    let mut all = first.clone();
    all.extend_from_slice(b"\r\n");
    if first.get(3) == Some(&b'-') {
        loop {
            let line = read_line(stream, buf, limit).await?;
            all.extend_from_slice(&line);
            all.extend_from_slice(b"\r\n");
            if all.len() > 16 * LINE_LIMIT {
                return None;
            }
            if line.len() >= 4 && line[..3] == first[..3] && line[3] == b' ' {
                break;
            }
        }
    }
    Some((code, all))
}

/// A command line split into its verb (upper-cased) and argument bytes.
fn split_command(line: &[u8]) -> (String, &[u8]) {
    let (verb, arg) = match memchr::memchr(b' ', line) {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, &[][..]),
    };
    (String::from_utf8_lossy(verb).to_ascii_uppercase(), arg)
}

/// Why a command line is not passed on, if it is not: a CR or NUL inside it
/// would end the line early at some servers and smuggle a second command
/// past the relay (RFC 959 §4.1.3 ends commands with CRLF only).
fn refused_command(line: &[u8]) -> Option<&'static [u8]> {
    if line.iter().any(|&b| b == b'\r' || b == 0) {
        return Some(b"501 CR and NUL are not allowed in a command\r\n");
    }
    None
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
        let (verb, arg) = split_command(&line);
        let reply: &[u8] = match verb.as_str() {
            _ if let Some(refusal) = refused_command(&line) => refusal,
            "USER" => match arg.iter().rposition(|&b| b == b'@') {
                Some(at) if at > 0 => {
                    let hostport = std::str::from_utf8(&arg[at + 1..]).unwrap_or("");
                    match crate::forward::target::parse_authority(hostport, Some(21)) {
                        Ok((_, dest, port)) => break (arg[..at].to_vec(), dest, port),
                        Err(_) => b"501 Invalid host in USER name@host[:port]\r\n",
                    }
                }
                _ => b"530 Log in as USER name@host[:port]\r\n",
            },
            "QUIT" => {
                let _ = client.write_all(b"221 Bye\r\n").await;
                return;
            }
            _ => b"530 Log in with USER first\r\n",
        };
        let _ = client.write_all(reply).await;
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
    // Bandwidth limits pace the downloads of the session's transfers.
    let (mut server, server_peer, buckets) = server;
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
        .write_all(&[&b"USER "[..], &user, b"\r\n"].concat())
        .await;
    let Some((_, reply)) = read_reply(&mut server, &mut sbuf, cfg.timeouts.first_byte).await else {
        let _ = client.write_all(b"421 The FTP server went away\r\n").await;
        return;
    };
    login.status = 200;
    shared.finish(&login);
    if client.write_all(&reply).await.is_err() {
        return;
    }
    let mut passive: Option<DataJoin> = None;
    let mut cwd = WorkingDir::default();
    loop {
        let Some(line) = read_line(&mut client, &mut cbuf, limit).await else {
            return;
        };
        let (verb, arg) = split_command(&line);
        if let Some(refusal) = refused_command(&line) {
            let _ = client.write_all(refusal).await;
            continue;
        }
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
                    Some((229, text)) => passive_port(&text),
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
                    buckets.clone(),
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
            .write_all(&[&line[..], b"\r\n"].concat())
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
        let _ = client.write_all(&reply).await;
        let transfer = matches!(
            verb.as_str(),
            "RETR" | "STOR" | "STOU" | "APPE" | "LIST" | "NLST" | "MLSD"
        );
        // A passive setup serves one transfer command, whatever its answer.
        let join = if transfer { passive.take() } else { None };
        // A preliminary reply (1xx) is followed by the command's final one
        // (RFC 959 §4.2), after the transfer when there is one.
        if (100..200).contains(&code) {
            let mut ctx = RequestCtx::new(peer, &listener);
            ctx.method = verb.clone();
            ctx.version = "FTP";
            ctx.url = format!(
                "ftp://{}:{port}/{}",
                host.rule_host(),
                cwd.resolve(arg).url_path()
            );
            ctx.upstream = Some(server_peer);
            let (done, moved) =
                finish_transfer(&mut server, &mut sbuf, join, cfg.timeouts.io).await;
            let Some((code, reply)) = done else {
                let _ = client.write_all(b"421 The FTP server went away\r\n").await;
                return;
            };
            let _ = client.write_all(&reply).await;
            if transfer {
                ctx.status = if code == 226 || code == 250 { 200 } else { 502 };
                ctx.result = "TCP_MISS";
                ctx.bytes_in = moved.0;
                ctx.bytes_out = moved.1;
                shared.finish(&ctx);
            }
        }
        match verb.as_str() {
            "CWD" | "XCWD" if code == 250 || code == 200 => cwd = cwd.resolve(arg),
            "CDUP" | "XCUP" if code == 250 || code == 200 => cwd = cwd.resolve(b".."),
            "QUIT" => return,
            _ => {}
        }
    }
}

/// The session's working directory, followed through CWD and CDUP for the
/// URLs in the log, relative to the login directory unless absolute.
#[derive(Default, Clone)]
struct WorkingDir {
    absolute: bool,
    segments: Vec<Vec<u8>>,
}

impl WorkingDir {
    /// Where `path` leads from here (`.` and `..` followed).
    fn resolve(&self, path: &[u8]) -> WorkingDir {
        let mut to = if path.first() == Some(&b'/') {
            WorkingDir {
                absolute: true,
                segments: Vec::new(),
            }
        } else {
            self.clone()
        };
        for segment in path.split(|&b| b == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => {
                    to.segments.pop();
                }
                name => to.segments.push(name.to_vec()),
            }
        }
        to
    }

    /// As a URL path (RFC 1738 §3.2.2: an absolute path starts with `%2F`).
    fn url_path(&self) -> String {
        let names: Vec<String> = self.segments.iter().map(|s| url_path(s)).collect();
        let path = names.join("/");
        if self.absolute {
            format!("%2F{path}")
        } else {
            path
        }
    }
}

/// A command's argument as a URL path for the log: bytes that are not
/// printable ASCII are percent-encoded, so 8-bit names stay exact.
fn url_path(arg: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(arg.len());
    for &b in arg {
        match b {
            b'!'..=b'~' if b != b'%' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The server's passive port from its EPSV reply, `229 ... (|||port|)`
/// (RFC 2428 §3).
fn passive_port(reply: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(reply).ok()?;
    text.rsplit("|||").next()?.split('|').next()?.parse().ok()
}

/// After a preliminary reply: the data connection (if any) runs to its end
/// while the final reply is read. A transfer is over for the client once
/// the data are through, so the final reply is passed on then, and not
/// before: the server may send it before its data have crossed the relay.
/// A failure reply ends a transfer that is still joined. Returns the final
/// reply (none if the server went away) and the bytes moved (up, down).
async fn finish_transfer(
    server: &mut TcpStream,
    sbuf: &mut BytesMut,
    join: Option<DataJoin>,
    wait: std::time::Duration,
) -> (Option<(u16, Vec<u8>)>, (u64, u64)) {
    let Some(mut join) = join else {
        return (read_reply(server, sbuf, wait).await, (0, 0));
    };
    // The reply is read as one future, never dropped half-way (a multi-line
    // reply's first lines would be lost), and without a time limit while
    // the data connection, with its own idle timeout, is still moving.
    let reply = read_reply(server, sbuf, std::time::Duration::MAX);
    tokio::pin!(reply);
    tokio::select! {
        joined = &mut join.0 => {
            let moved = joined.unwrap_or((0, 0));
            (timeout(wait, reply).await.ok().flatten(), moved)
        }
        reply = &mut reply => {
            // The final reply came first: a success waits for the data to
            // get through (bounded by the data connection's idle timeout); a
            // failure ends the transfer now.
            let moved = match &reply {
                Some((code, _)) if (200..300).contains(code) => {
                    (&mut join.0).await.unwrap_or((0, 0))
                }
                _ => (0, 0),
            };
            (reply, moved)
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
    buckets: Vec<Arc<crate::guard::limits::Bucket>>,
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
    let mut upstream = upstream;
    let stats = crate::relay::transfer_tcp(&mut client, &mut upstream, idle, &buckets).await;
    (stats.up, stats.down)
}

/// The destination through the guard, then a control connection to it.
async fn open(
    cfg: &Config,
    shared: &Shared,
    ctx: &mut RequestCtx,
    dest: &Destination,
    port: u16,
) -> Result<
    (
        TcpStream,
        SocketAddr,
        Vec<Arc<crate::guard::limits::Bucket>>,
    ),
    crate::error::ProxyError,
> {
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
    Ok((stream, addr, admission.buckets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_into_verb_and_argument_bytes() {
        assert_eq!(
            split_command(b"retr caf\xe9 1.txt"),
            ("RETR".to_string(), &b"caf\xe9 1.txt"[..])
        );
        assert_eq!(split_command(b"PWD"), ("PWD".to_string(), &b""[..]));
    }

    #[test]
    fn cr_and_nul_inside_a_command_are_refused() {
        assert!(refused_command(b"NOOP\rDELE x").is_some());
        assert!(refused_command(b"CWD a\0b").is_some());
        assert!(refused_command(b"RETR caf\xe9").is_none());
    }

    #[test]
    fn logged_paths_keep_8_bit_names_exact() {
        assert_eq!(url_path(b"pub/caf\xe9 1%.txt"), "pub/caf%E9%201%25.txt");
    }

    #[test]
    fn logged_urls_follow_the_working_directory() {
        let home = WorkingDir::default();
        let pub_dir = home.resolve(b"pub/./sub/..");
        assert_eq!(pub_dir.url_path(), "pub");
        assert_eq!(
            pub_dir.resolve(b"caf\xe9 1.txt").url_path(),
            "pub/caf%E9%201.txt"
        );
        assert_eq!(pub_dir.resolve(b"../../x").url_path(), "x");
        assert_eq!(pub_dir.resolve(b"/etc//motd").url_path(), "%2Fetc/motd");
        assert_eq!(pub_dir.resolve(b"").url_path(), "pub");
    }

    #[test]
    fn passive_ports_come_from_epsv_replies() {
        assert_eq!(
            passive_port(b"229 Entering Extended Passive Mode (|||40001|)\r\n"),
            Some(40001)
        );
        assert_eq!(passive_port(b"229 nothing here\r\n"), None);
        assert_eq!(passive_port(b"229 (|||70000|)\r\n"), None);
    }
}
