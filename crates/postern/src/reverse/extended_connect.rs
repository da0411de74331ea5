//! Extended CONNECT from HTTP/2 clients (RFC 8441), such as WebSocket over
//! HTTP/2, on reverse listeners. It reaches a server of the route's pool as
//! an HTTP/1.1 Upgrade (RFC 9110 §7.8).
//!
//! The client's `:protocol` becomes the `Upgrade` token. A WebSocket request
//! also gets the `Sec-WebSocket-Key` that HTTP/1.1 servers require (RFC 6455
//! §4.1), since HTTP/2 clients send none (RFC 8441 §5). After the server's
//! 101, the client gets 200 and the stream becomes a tunnel to it. Any other
//! answer reaches the client with its status and no body.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::{PickInput, Pool};
use super::spec::RouteSpec;
use crate::app::Shared;
use crate::config::{Config, ListenerConfig};
use crate::context::RequestCtx;
use crate::egress::Upstream;
use crate::error::{ErrorKind, ProxyError};
use crate::http1::RequestHead;
use crate::http1::body::BodyKind;
use crate::http1::fields::connection_options;
use crate::http1::head::{HeadLimits, ResponseHead, parse_response};
use crate::relay::TunnelStats;

/// The fields an HTTP/1.1 Upgrade request for `protocol` adds to the
/// client's own: `Connection`, `Upgrade`, and a WebSocket key.
pub fn upgrade_fields(protocol: &str, has_key: bool) -> String {
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
    out
}

/// The server's answer to the Upgrade request: its status, and for a 101
/// the connection with what the server sent after its head.
pub struct Answer {
    pub status: u16,
    pub switched: Option<(Upstream, BytesMut)>,
}

/// Sends `head` (an HTTP/1.1 Upgrade request) to a server of `pool` and
/// reads its answer. A server that cannot be reached is left for another,
/// within the pool's `retries`.
pub async fn upgrade(
    cfg: &Config,
    shared: &Shared,
    (listener, route): (&ListenerConfig, &RouteSpec),
    pool: &Arc<Pool>,
    (peer, local): (SocketAddr, SocketAddr),
    (head, authority): (&RequestHead, &str),
    ctx: &mut RequestCtx,
) -> Result<Answer, ProxyError> {
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
    );
    let _active = super::ActiveGuard::new(pool);
    let mut tried = Vec::new();
    loop {
        let input = PickInput {
            hash_key: &[],
            sticky: None,
        };
        let index = pool.pick_or_queue(&input, &tried).await?;
        let _inflight = pool.start(index);
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
            Err(e) => {
                pool.report_failure(index);
                tried.push(index);
                if tried.len() <= pool.spec.retries as usize {
                    continue;
                }
                return Err(e);
            }
        };
        ctx.upstream = Some(addr);
        ctx.result = "TCP_MISS";
        let limit = cfg.limits.max_header_size;
        let answered = async {
            server.write_all(&bytes).await?;
            read_head(&mut server, limit).await
        };
        let (status, rest) = match tokio::time::timeout(cfg.timeouts.first_byte, answered).await {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) => {
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
                return Err(ProxyError::new(
                    ErrorKind::UpstreamTimeout,
                    "no answer to the upgrade in time",
                ));
            }
        };
        pool.report_success(index);
        return Ok(Answer {
            status,
            switched: (status == 101).then_some((server, rest)),
        });
    }
}

/// Reads a response head: its status and the bytes read past it. `None`
/// when it is not a valid HTTP/1.1 head within `limit` bytes.
async fn read_head(
    server: &mut Upstream,
    limit: usize,
) -> std::io::Result<Option<(u16, BytesMut)>> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let limits = HeadLimits {
            max_line: limit,
            max_size: limit,
            max_fields: 100,
        };
        match parse_response(&buf, limits) {
            Ok(Some((n, parts))) => {
                let head = buf.split_to(n).freeze();
                return Ok(Some((ResponseHead::new(head, parts).status, buf)));
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
/// both ends are done, or nothing moves for `idle`.
pub async fn relay<C>(
    client: C,
    (mut server, rest): (Upstream, BytesMut),
    idle: std::time::Duration,
) -> TunnelStats
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    crate::relay::tunnel_io_to(client, &mut server, &rest, idle, &[]).await
}
