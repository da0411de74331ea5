//! The ftp:// gateway: `GET ftp://[user:pass@]host[:port]/path` on a forward
//! listener is fetched with FTP (RFC 959; passive mode, EPSV then PASV,
//! RFC 2428) and answered as HTTP: files streamed with Content-Length and a
//! Content-Type from the extension, directories as an HTML listing (plain
//! text when asked), `PUT` stored with STOR.
//!
//! Safety: data connections go only to the control connection's peer, never
//! to an address a PASV reply names (no FTP bounce); the path is
//! percent-decoded once and refused if it holds CR, LF or NUL, so nothing
//! from the URL can become an FTP command.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Config;
use crate::context::RequestCtx;
use crate::egress::Destination;
use crate::error::{Answer, ErrorKind, ProxyError};
use crate::guard::Admission;
use crate::http1::RequestHead;
use crate::http1::body::{self, BodyKind, OutFraming, Sink, Source};
use crate::http1::head::Fields;
use crate::ingress::Client;

/// A parsed `ftp://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpTarget {
    pub dest: Destination,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Decoded path without the leading `/`.
    pub path: String,
    /// `;type=a` asks for ASCII mode.
    pub ascii: bool,
}

fn decode(s: &str) -> Result<String, &'static str> {
    let d = postern_policy::host::percent_decode(s).ok_or("invalid percent-encoding")?;
    if d.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("CR, LF or NUL in an FTP URL");
    }
    Ok(d)
}

/// Parses `ftp://[user[:pass]@]host[:port]/path[;type=a|i]`.
pub fn parse(url: &str) -> Result<FtpTarget, &'static str> {
    let rest = url
        .get(6..)
        .filter(|_| url[..6].eq_ignore_ascii_case("ftp://"))
        .ok_or("not an ftp:// URL")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => ("anonymous".to_string(), "postern@".to_string()),
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (decode(n)?, decode(p)?),
            None => (decode(u)?, String::new()),
        },
    };
    if user.is_empty() {
        return Err("empty FTP user");
    }
    let (_, dest, port) =
        super::target::parse_authority(hostport, Some(21)).map_err(|e| match e {
            super::target::TargetError::Malformed(m) => m,
            super::target::TargetError::UnsupportedScheme(_) => "invalid host",
        })?;
    let path = path.strip_prefix('/').unwrap_or(path);
    let (path, ascii) = match path.rsplit_once(";type=") {
        Some((p, "a" | "A")) => (p, true),
        Some((p, "i" | "I")) => (p, false),
        Some(_) => return Err("unknown ;type="),
        None => (path, false),
    };
    if path.contains(['?', '#']) {
        return Err("query or fragment in an FTP URL");
    }
    Ok(FtpTarget {
        dest,
        port,
        user,
        password,
        path: decode(path)?,
        ascii,
    })
}

/// The cache key of an anonymous download: the URL without its user part;
/// `None` for logins with a real user.
fn cache_key(target: &FtpTarget, url: &str) -> Option<String> {
    if !matches!(target.user.as_str(), "anonymous" | "ftp") {
        return None;
    }
    let rest = url.get(6..)?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!("ftp://{}{path}", host.to_ascii_lowercase()))
}

/// One FTP reply: code and text (the last line of a multi-line reply).
struct Reply {
    code: u16,
    text: String,
}

struct Control {
    stream: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
    limit: Duration,
}

impl Control {
    async fn reply(&mut self) -> Result<Reply, ProxyError> {
        let lost = |m: &str| ProxyError::new(ErrorKind::UpstreamTerminated, format!("FTP: {m}"));
        let mut first_code: Option<[u8; 3]> = None;
        loop {
            let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > 64 * 1024 {
                    return Err(lost("reply too long"));
                }
                match timeout(self.limit, self.stream.read_buf(&mut self.buf)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    Ok(_) => return Err(lost("connection closed")),
                    Err(_) => {
                        return Err(ProxyError::new(
                            ErrorKind::UpstreamTimeout,
                            "FTP: no reply in time",
                        ));
                    }
                }
            };
            let line = self.buf.split_to(nl + 1);
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let b = line.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                if first_code.is_some() {
                    continue; // inside a multi-line reply
                }
                return Err(ProxyError::new(
                    ErrorKind::BadResponse,
                    "FTP: malformed reply",
                ));
            }
            let code: [u8; 3] = [b[0], b[1], b[2]];
            let last = b.get(3) != Some(&b'-');
            match first_code {
                None if last => {
                    let code = std::str::from_utf8(&code)
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0);
                    return Ok(Reply { code, text: line });
                }
                None => first_code = Some(code),
                Some(c) if c == code && last => {
                    let code = std::str::from_utf8(&code)
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0);
                    return Ok(Reply { code, text: line });
                }
                Some(_) => {}
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, ProxyError> {
        let out = format!("{line}\r\n");
        timeout(self.limit, self.stream.write_all(out.as_bytes()))
            .await
            .map_err(|_| ProxyError::new(ErrorKind::UpstreamTimeout, "FTP: send timed out"))?
            .map_err(|e| ProxyError::new(ErrorKind::UpstreamTerminated, format!("FTP: {e}")))?;
        self.reply().await
    }

    /// A passive data connection: EPSV, then PASV; always to the control
    /// connection's peer address (the port is all a reply may choose).
    async fn data(&mut self) -> Result<TcpStream, ProxyError> {
        let r = self.command("EPSV").await?;
        let port = if r.code == 229 {
            // 229 Entering Extended Passive Mode (|||port|)
            r.text
                .rsplit("|||")
                .next()
                .and_then(|s| s.split('|').next())
                .and_then(|p| p.parse::<u16>().ok())
        } else {
            let r = self.command("PASV").await?;
            if r.code != 227 {
                return Err(failure(&r));
            }
            let nums: Vec<u16> = r
                .text
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .skip(1)
                .filter_map(|s| s.parse().ok())
                .collect();
            (nums.len() >= 6).then(|| nums[nums.len() - 2] * 256 + nums[nums.len() - 1])
        };
        let port =
            port.ok_or_else(|| ProxyError::new(ErrorKind::BadResponse, "FTP: no passive port"))?;
        let addr = SocketAddr::new(self.peer.ip(), port);
        match timeout(self.limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(ProxyError::new(
                ErrorKind::ConnectionRefused,
                format!("FTP data connection: {e}"),
            )),
            Err(_) => Err(ProxyError::new(
                ErrorKind::ConnectionTimeout,
                "FTP data connection timed out",
            )),
        }
    }
}

/// RFC 959 replies as HTTP errors.
fn failure(r: &Reply) -> ProxyError {
    let (kind, status) = match r.code {
        550 | 450 => (ErrorKind::BadResponse, 404),
        530 | 532 => (ErrorKind::AuthRequired, 401),
        421 => (ErrorKind::UpstreamTerminated, 502),
        425 | 426 => (ErrorKind::UpstreamTimeout, 504),
        _ => (ErrorKind::BadResponse, 502),
    };
    let mut e = ProxyError::new(kind, format!("FTP server: {}", r.text));
    e = e.with_answer(Answer {
        status: Some(status),
        message: None,
        fields: if status == 401 {
            vec![("WWW-Authenticate", "Basic realm=\"FTP\"".into())]
        } else {
            Vec::new()
        },
    });
    e
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "md" | "asc" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "xz" => "application/x-xz",
        "bz2" => "application/x-bzip2",
        "iso" => "application/x-iso9660-image",
        "deb" => "application/vnd.debian.binary-package",
        "rpm" => "application/x-rpm",
        _ => "application/octet-stream",
    }
}

/// Serves an ftp:// request. `Err`: nothing was sent to the client yet.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    cfg: &Config,
    shared: &crate::app::Shared,
    client: &mut Client,
    head: &RequestHead,
    body: BodyKind,
    target: &FtpTarget,
    admission: &Admission<'_>,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    let listing = target.path.is_empty() || target.path.ends_with('/');
    // Anonymous downloads go through the cache (RFC 9111 §3.5 keeps
    // anything fetched with credentials out of a shared cache).
    let cached = shared
        .cache
        .as_ref()
        .filter(|_| !listing && (head.is_method("GET") || head.is_method("HEAD")))
        .and_then(|c| Some((c, cache_key(target, head.target())?)));
    if let Some((cache, key)) = &cached {
        let scrubber = cfg.scrubber(&ctx.listener);
        let conn = crate::http1::fields::connection_options(head);
        let probe = crate::forward::http::Outbound {
            head,
            body,
            conn: &conn,
            admission,
            scrubber: &scrubber,
            via: cfg.http.via.as_deref(),
            set_cookie: None,
            retry_statuses: false,
            first_byte: cfg.timeouts.first_byte,
            cache: None,
            compress: None,
        };
        if let Some(done) =
            crate::cache::flow::answer_if_stored(cfg, client, cache, key, &probe, ctx).await
        {
            return Ok(done.client_keep_alive);
        }
    }
    let request_time = crate::cache::now();
    let (stream, peer) = shared
        .connector
        .connect(
            &target.dest,
            target.port,
            cfg.address_permit(),
            admission.pinned.as_deref(),
            cfg.timeouts.connect,
        )
        .await?;
    ctx.upstream = Some(peer);
    let mut ctl = Control {
        stream,
        buf: BytesMut::with_capacity(1024),
        peer,
        limit: cfg.timeouts.first_byte,
    };
    let hello = ctl.reply().await?;
    if hello.code != 220 {
        return Err(failure(&hello));
    }
    let r = ctl.command(&format!("USER {}", target.user)).await?;
    let r = if r.code == 331 {
        ctl.command(&format!("PASS {}", target.password)).await?
    } else {
        r
    };
    if r.code != 230 {
        return Err(failure(&r));
    }
    let r = ctl
        .command(if target.ascii { "TYPE A" } else { "TYPE I" })
        .await?;
    if r.code != 200 {
        return Err(failure(&r));
    }
    let keep = body == BodyKind::None
        && crate::http1::fields::connection_options(head).persistent(head.minor);
    if head.is_method("PUT") {
        return upload(cfg, &mut ctl, client, head, body, target, ctx).await;
    }
    if !(head.is_method("GET") || head.is_method("HEAD")) {
        return Err(ProxyError::new(
            ErrorKind::MethodNotAllowed,
            "ftp:// supports GET, HEAD and PUT",
        ));
    }
    if !listing {
        let size = ctl.command(&format!("SIZE {}", target.path)).await?;
        // RFC 3659 §3: the modification time, as Last-Modified (which also
        // gives the cache a heuristic freshness, §4.2.2).
        let mdtm = ctl.command(&format!("MDTM {}", target.path)).await?;
        let last_modified = (mdtm.code == 213)
            .then(|| {
                mdtm.text
                    .get(4..)
                    .and_then(crate::observe::time::parse_ftp_time)
            })
            .flatten()
            .map(|t| {
                crate::observe::time::http_date(
                    std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64),
                )
            });
        let length = (size.code == 213)
            .then(|| {
                size.text
                    .get(4..)
                    .and_then(|t| t.trim().parse::<u64>().ok())
            })
            .flatten();
        let mut data = ctl.data().await?;
        let r = ctl.command(&format!("RETR {}", target.path)).await?;
        if r.code == 550 {
            // Perhaps a directory: say where its listing is.
            let cwd = ctl.command(&format!("CWD {}", target.path)).await?;
            if cwd.code == 250 {
                // Relative, so the client's credentials are not echoed and
                // still apply (RFC 3986 §5.2 keeps the base's authority).
                let name = head.target().rsplit('/').next().unwrap_or_default();
                let location = format!("./{name}/");
                let bytes = format!(
                    "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                );
                ctx.status = 301;
                client.send(bytes.as_bytes(), cfg.timeouts.io).await;
                return Ok(keep);
            }
            return Err(failure(&r));
        }
        if !(r.code == 150 || r.code == 125) {
            return Err(failure(&r));
        }
        ctx.status = 200;
        ctx.content_type = Some(content_type(&target.path).to_string());
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\n",
            content_type(&target.path)
        );
        let framing_close = length.is_none();
        match length {
            Some(n) => out.push_str(&format!("Content-Length: {n}\r\n")),
            None => out.push_str("Connection: close\r\n"),
        }
        if let Some(lm) = &last_modified {
            out.push_str(&format!("Last-Modified: {lm}\r\n"));
        }
        // Only a download with a length and a date can be stored and
        // judged fresh later.
        let mut copy = cached
            .as_ref()
            .filter(|(c, _)| {
                head.is_method("GET")
                    && last_modified.is_some()
                    && length.is_some_and(|n| n <= c.tap_limit() as u64)
            })
            .map(|_| Vec::new());
        if copy.is_some() {
            out.push_str(&format!(
                "Cache-Status: {}; fwd=uri-miss; stored\r\n",
                cfg.http.via.as_deref().unwrap_or("postern")
            ));
        }
        if let Some(via) = &cfg.http.via {
            out.push_str(&format!("Via: 1.1 {via}\r\n"));
        }
        out.push_str("\r\n");
        if !client.send(out.as_bytes(), cfg.timeouts.io).await {
            return Ok(false);
        }
        ctx.bytes_out += out.len() as u64;
        if head.is_method("HEAD") {
            return Ok(keep && !framing_close);
        }
        let copied = copy_data(
            &mut data,
            client,
            (cfg.timeouts.io, &admission.buckets),
            length,
            copy.as_mut(),
        )
        .await;
        ctx.bytes_out += copied.0;
        let done = ctl
            .reply()
            .await
            .map(|r| r.code == 226 || r.code == 250)
            .unwrap_or(false);
        if !copied.1 || !done || length.is_some_and(|n| n != copied.0) {
            ctx.aborted = true;
            return Ok(false);
        }
        if let (Some((cache, key)), Some(body), Some(lm)) = (&cached, copy, last_modified) {
            let now = crate::observe::time::http_date(std::time::SystemTime::now());
            let headers = vec![
                (
                    "Content-Type".to_string(),
                    Bytes::from_static(content_type(&target.path).as_bytes()),
                ),
                ("Last-Modified".to_string(), Bytes::from(lm)),
                ("Date".to_string(), Bytes::from(now)),
            ];
            cache.keep_plain(key, request_time, headers, Bytes::from(body));
        }
        let _ = ctl.command("QUIT").await;
        return Ok(keep && !framing_close);
    }
    // A directory listing.
    if !target.path.is_empty() {
        let r = ctl.command(&format!("CWD {}", target.path)).await?;
        if r.code != 250 {
            return Err(failure(&r));
        }
    }
    let mut data = ctl.data().await?;
    let r = ctl.command("LIST").await?;
    if !(r.code == 150 || r.code == 125) {
        return Err(failure(&r));
    }
    let mut raw = Vec::new();
    let _ = timeout(cfg.timeouts.io, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match data.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) if raw.len() < 8 << 20 => raw.extend_from_slice(&chunk[..n]),
                Ok(_) => break,
            }
        }
    })
    .await;
    let _ = ctl.reply().await;
    let _ = ctl.command("QUIT").await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let html = head
        .first("accept")
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .is_none_or(|a| a.contains("text/html") || a.contains("*/*") || !a.contains("text/plain"));
    let (ctype, body_text) = if html {
        (
            "text/html; charset=utf-8",
            listing_html(
                &super::target::without_password(head.target()),
                &target.path,
                &text,
            ),
        )
    } else {
        ("text/plain; charset=utf-8", text)
    };
    let out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{}",
        body_text.len(),
        if head.is_method("HEAD") {
            ""
        } else {
            body_text.as_str()
        }
    );
    ctx.status = 200;
    if !client.send(out.as_bytes(), cfg.timeouts.io).await {
        return Ok(false);
    }
    ctx.bytes_out += out.len() as u64;
    Ok(keep)
}

/// Copies the data connection to the client, and into `copy` when given;
/// (bytes, ended cleanly).
/// Copies a download to the client, paced by the client's and user's
/// bandwidth buckets; (bytes, whether the data connection ended cleanly).
async fn copy_data(
    data: &mut TcpStream,
    client: &mut Client,
    (io, buckets): (Duration, &[std::sync::Arc<crate::guard::limits::Bucket>]),
    length: Option<u64>,
    mut copy: Option<&mut Vec<u8>>,
) -> (u64, bool) {
    let mut total = 0u64;
    // A limited download moves in small steps, each paid for in its buckets.
    let step = buckets.iter().map(|b| b.step()).min().unwrap_or(64 * 1024);
    let mut chunk = vec![0u8; step];
    loop {
        let n = match timeout(io, data.read(&mut chunk)).await {
            Ok(Ok(0)) => return (total, true),
            Ok(Ok(n)) => n,
            _ => return (total, false),
        };
        if length.is_some_and(|l| total + n as u64 > l) {
            return (total, false);
        }
        for bucket in buckets {
            let wait = bucket.take(n);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        if !client.send(&chunk[..n], io).await {
            return (total, false);
        }
        if let Some(copy) = copy.as_mut() {
            copy.extend_from_slice(&chunk[..n]);
        }
        total += n as u64;
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML page for a Unix-style LIST output, one link per entry.
fn listing_html(url: &str, path: &str, list: &str) -> String {
    let mut rows = String::new();
    for line in list.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 {
            continue;
        }
        let name = fields[8..].join(" ");
        if name == "." || name == ".." {
            continue;
        }
        let dir = line.starts_with('d');
        let href: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let slash = if dir { "/" } else { "" };
        rows.push_str(&format!(
            "<tr><td><a href=\"{href}{slash}\">{}{slash}</a></td><td>{}</td><td>{} {} {}</td></tr>\n",
            escape(&name),
            escape(fields[4]),
            escape(fields[5]),
            escape(fields[6]),
            escape(fields[7])
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of /{p}</title></head>\n<body><h1>Index of /{p}</h1>\n<p><a href=\"../\">Parent directory</a></p>\n<table>\n{rows}</table>\n<hr><address>{u}</address></body></html>\n",
        p = escape(path),
        u = escape(url)
    )
}

async fn upload(
    cfg: &Config,
    ctl: &mut Control,
    client: &mut Client,
    head: &RequestHead,
    body: BodyKind,
    target: &FtpTarget,
    ctx: &mut RequestCtx,
) -> Result<bool, ProxyError> {
    let mut data = ctl.data().await?;
    let r = ctl.command(&format!("STOR {}", target.path)).await?;
    if !(r.code == 150 || r.code == 125) {
        return Err(failure(&r));
    }
    let (mut cr, _cw) = client.stream.split();
    let result = {
        let mut src = Source {
            io: &mut cr,
            buf: &mut client.buf,
            timeout: cfg.timeouts.io,
        };
        let mut sink = Sink::new(&mut data, Vec::new(), cfg.timeouts.io);
        body::relay(
            &mut src,
            &mut sink,
            body,
            OutFraming::Raw,
            cfg.limits.max_header_size,
        )
        .await
    };
    let stats =
        result.map_err(|e| ProxyError::new(ErrorKind::BadRequest, format!("request body: {e}")))?;
    let _ = data.shutdown().await;
    drop(data);
    let done = ctl.reply().await?;
    if done.code != 226 && done.code != 250 {
        return Err(failure(&done));
    }
    let _ = ctl.command("QUIT").await;
    ctx.bytes_in += stats.payload;
    ctx.status = 201;
    let out = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    let keep = crate::http1::fields::connection_options(head).persistent(head.minor);
    if !client.send(out.as_bytes(), cfg.timeouts.io).await {
        return Ok(false);
    }
    ctx.bytes_out += out.len() as u64;
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse("ftp://example.com/pub/file.txt").unwrap();
        assert_eq!(
            (t.user.as_str(), t.path.as_str(), t.port, t.ascii),
            ("anonymous", "pub/file.txt", 21, false)
        );
        let t = parse("FTP://bob:s%3Acret@example.com:2121/a%20b;type=a").unwrap();
        assert_eq!(
            (t.user.as_str(), t.password.as_str(), t.port),
            ("bob", "s:cret", 2121)
        );
        assert_eq!((t.path.as_str(), t.ascii), ("a b", true));
        assert_eq!(parse("ftp://example.com").unwrap().path, "");
        for bad in [
            "ftp://example.com/a%0d%0aDELE%20x",
            "ftp://example.com/a%00",
            "ftp://example.com/a;type=x",
            "ftp://@example.com/",
            "http://example.com/",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listing_links_are_escaped() {
        let html = listing_html(
            "ftp://h/",
            "",
            "drwxr-xr-x 2 u g 4096 Jan 01 00:00 sub dir\r\n-rw-r--r-- 1 u g 5 Jan 01 00:00 <x>.txt\r\n",
        );
        assert!(html.contains("href=\"sub%20dir/\""), "{html}");
        assert!(html.contains("&lt;x&gt;.txt"), "{html}");
        assert!(!html.contains("<x>"));
    }
}
