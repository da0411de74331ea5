//! CONNECT tunnels (RFC 9110 §9.3.6): check the port, connect with the same
//! egress rules as plain HTTP, answer 200, then relay bytes both ways.

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use crate::error::{ErrorKind, ProxyError};
use crate::http1::RequestHead;
use crate::ingress::Client;
use crate::relay;

use super::target::{TargetError, parse_authority};

/// Runs the tunnel to completion. `Err` means no 200 was sent yet.
pub async fn tunnel(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let (host, dest, port) = parse_authority(head.target(), None).map_err(|e| match e {
        TargetError::Malformed(m) => {
            ProxyError::new(ErrorKind::BadRequest, format!("CONNECT target: {m}"))
        }
        TargetError::UnsupportedScheme(s) => {
            ProxyError::new(ErrorKind::BadRequest, format!("CONNECT target: {s}"))
        }
    })?;
    if ctx.logging {
        ctx.url = format!("{host}:{port}");
    }
    if !cfg.egress.connect_ports.contains(&port) {
        return Err(ProxyError::new(
            ErrorKind::PortNotAllowed,
            format!("CONNECT to port {port} is not allowed (egress.connect_ports)"),
        ));
    }
    let (mut upstream, addr) = shared
        .connector
        .connect(
            &dest,
            port,
            cfg.egress.allow_private_destinations,
            cfg.timeouts.connect,
        )
        .await?;
    ctx.upstream = Some(addr);
    let established: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
    ctx.status = 200;
    ctx.result = "TCP_TUNNEL";
    if !client.send(established, cfg.timeouts.io).await {
        ctx.aborted = true;
        return Ok(());
    }
    ctx.bytes_out += established.len() as u64;
    let early = client.buf.split();
    client.tunneled = true;
    let stats = relay::tunnel_tcp(
        &mut client.stream,
        &early,
        &mut upstream,
        &[],
        cfg.timeouts.tunnel_idle,
    )
    .await;
    ctx.bytes_in += stats.up;
    ctx.bytes_out += stats.down;
    if stats.idle_timeout {
        ctx.error = Some("connection_read_timeout");
    }
    Ok(())
}
