//! Extended CONNECT from HTTP/2 clients (RFC 8441), such as WebSocket over
//! HTTP/2, on reverse listeners. It reaches a server of the route's pool as
//! an HTTP/1.1 Upgrade (RFC 9110 §7.8).
//!
//! The client's `:protocol` becomes the `Upgrade` token. A WebSocket request
//! also gets the `Sec-WebSocket-Key` that HTTP/1.1 servers require (RFC 6455
//! §4.1), since HTTP/2 clients send none (RFC 8441 §5). After the server's
//! 101 for that same protocol, the client gets 200 with the server's
//! end-to-end fields (the WebSocket subprotocol and extensions it chose), and
//! the stream becomes a tunnel to it, counted on the server until it ends.
//! Any other final answer reaches the client with its status and no body.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::{InFlight, PickInput, Pool};
use super::spec::RouteSpec;
use crate::app::Shared;
use crate::config::{Config, ListenerConfig};
use crate::context::RequestCtx;
use crate::egress::Upstream;
use crate::error::{ErrorKind, ProxyError};
use crate::guard::limits::Bucket;
use crate::http1::RequestHead;
use crate::http1::body::BodyKind;
use crate::http1::fields::connection_options;
use crate::http1::head::{Fields, HeadLimits, ResponseHead, parse_response};
use crate::relay::TunnelStats;

/// The fields an HTTP/1.1 Upgrade request for `protocol` adds to the
/// client's own: `Connection`, `Upgrade`, and a WebSocket key. `None` when
/// `protocol` is not a token (RFC 9110 §5.6.2), which also keeps line
/// breaks out of the request.
pub fn upgrade_fields(protocol: &str, has_key: bool) -> Option<String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if protocol.is_empty() || !protocol.bytes().all(tchar) {
        return None;
    }
    let mut out = format!("Connection: upgrade\r\nUpgrade: {protocol}\r\n");
    if protocol.eq_ignore_ascii_case("websocket") && !has_key {
        // A nonce, not a secret (RFC 6455 §4.1: 16 random bytes, base64).
        let state = std::collections::hash_map::RandomState::new();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
        nonce[8..].copy_from_slice(&state.hash_one(2u8).to_le_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        out.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    Some(out)
}

/// The server's answer to the Upgrade request.
pub struct Answer {
    /// Its final status.
    pub status: u16,
    /// Its end-to-end fields (for a 101: what the switch agreed on).
    pub fields: Vec<(String, Vec<u8>)>,
    /// After a 101 for the protocol asked: the tunnel's server side.
    pub switched: Option<Switched>,
}

/// A server connection that switched protocols: what the server sent after
/// its head, and the request's count on the server while the tunnel lasts.
pub struct Switched {
    server: Upstream,
    rest: BytesMut,
    _inflight: InFlight,
}

/// Fields of the server's answer that stay between it and the proxy.
const HOP_FIELDS: [&str; 8] = [
    "connection",
    "upgrade",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "sec-websocket-accept",
];

/// Sends `head` (an HTTP/1.1 Upgrade request) to a server of `pool` and
/// reads its answer. A server that cannot be reached is left for another,
/// within the pool's `retries`.
pub async fn upgrade(
    cfg: &Config,
    shared: &Shared,
    (listener, route): (&ListenerConfig, &RouteSpec),
    pool: &Arc<Pool>,
    (peer, local): (SocketAddr, SocketAddr),
    (head, authority, hash_key): (&RequestHead, &str, &[u8]),
    ctx: &mut RequestCtx,
) -> Result<Answer, ProxyError> {
    let protocol = head.first("upgrade").unwrap_or_default().to_vec();
    let conn = connection_options(head);
    let bytes = super::reverse_head(
        head,
        BodyKind::None,
        &conn,
        true,
        listener,
        route,
        (peer.ip(), true),
        authority,
        ctx.request_id.as_deref(),
    );
    // A sticky session's cookie comes along with the WebSocket.
    let sticky = pool
        .spec
        .sticky_cookie
        .as_deref()
        .and_then(|name| super::cookie_value(head, name));
    let _active = super::ActiveGuard::new(pool);
    let mut tried = Vec::new();
    let mut retrying = None;
    loop {
        let input = PickInput {
            hash_key,
            sticky: sticky.as_deref(),
        };
        let index = pool.pick_or_queue(&input, &tried).await?;
        let inflight = pool.start(index);
        let ends = (peer, Some(local));
        let opened = super::open(
            &shared.connector,
            cfg.timeouts.connect,
            pool,
            index,
            None,
            ends,
        );
        let (mut server, addr) = match opened.await {
            Ok(c) => c,
            Err(_) if pool.failed_attempt(index, &mut tried, &mut retrying) => continue,
            Err(e) => return Err(e),
        };
        ctx.upstream = Some(addr);
        ctx.result = "TCP_MISS";
        let limit = cfg.limits.max_header_size;
        let answered = async {
            server.write_all(&bytes).await?;
            read_head(&mut server, limit).await
        };
        let first_byte = pool.spec.per_try_timeout.unwrap_or(cfg.timeouts.first_byte);
        let (response, rest) = match tokio::time::timeout(first_byte, answered).await {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) => {
                pool.report_failure(index);
                return Err(ProxyError::new(
                    ErrorKind::BadResponse,
                    "the server's answer to the upgrade is not HTTP/1.1",
                ));
            }
            Ok(Err(e)) => {
                pool.report_failure(index);
                return Err(ProxyError::new(
                    ErrorKind::UpstreamTerminated,
                    e.to_string(),
                ));
            }
            Err(_) => {
                pool.report_failure(index);
                return Err(ProxyError::new(
                    ErrorKind::UpstreamTimeout,
                    "no answer to the upgrade in time",
                ));
            }
        };
        let status = response.status;
        if status >= 500 {
            pool.report_failure(index);
        } else {
            pool.report_success(index);
        }
        let fields = response
            .fields
            .iter()
            .map(|f| (response.name(f), response.value(f)))
            .filter(|(n, _)| {
                !HOP_FIELDS
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h.as_bytes()))
            })
            .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), v.to_vec()))
            .collect();
        // RFC 9110 §15.2.2: the server switches to a protocol it names.
        let same = response
            .values("upgrade")
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(&protocol));
        let switched = (status == 101 && same).then_some(Switched {
            server,
            rest,
            _inflight: inflight,
        });
        return Ok(Answer {
            status,
            fields,
            switched,
        });
    }
}

/// Reads the final response head (interim 1xx answers other than 101 are
/// skipped) and the bytes read past it. `None` when it is not a valid
/// HTTP/1.1 head within `limit` bytes.
async fn read_head(
    server: &mut Upstream,
    limit: usize,
) -> std::io::Result<Option<(ResponseHead, BytesMut)>> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let limits = HeadLimits {
            max_line: limit,
            max_size: limit,
            max_fields: 100,
        };
        match parse_response(&buf, limits) {
            Ok(Some((n, parts))) => {
                let head = ResponseHead::new(buf.split_to(n).freeze(), parts);
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                return Ok(Some((head, buf)));
            }
            Ok(None) if buf.len() < limit => {}
            _ => return Ok(None),
        }
        if server.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Relays the client's upgraded stream and the server's connection until
/// both ends are done, or nothing moves for `idle`; `limits`: the client's
/// bandwidth buckets.
pub async fn relay<C>(
    client: C,
    mut switched: Switched,
    idle: std::time::Duration,
    limits: &[Arc<Bucket>],
) -> TunnelStats
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let rest = std::mem::take(&mut switched.rest);
    crate::relay::tunnel_io(client, &mut switched.server, &rest, idle, limits).await
}
