//! CONNECT tunnels (RFC 9110 §9.3.6): check the port, connect with the same
//! egress rules as plain HTTP, answer 200, then relay bytes both ways.

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use crate::egress::Destination;
use crate::error::ProxyError;
use crate::guard::Admission;
use crate::ingress::Client;
use crate::relay;

/// Runs the tunnel to completion, once the target is parsed and admitted.
/// `Err` means no 200 was sent yet.
pub async fn tunnel(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    dest: &Destination,
    port: u16,
    admission: &Admission<'_>,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let (mut upstream, addr) = shared
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
        &admission.buckets,
    )
    .await;
    ctx.bytes_in += stats.up;
    ctx.bytes_out += stats.down;
    if stats.idle_timeout {
        ctx.error = Some("connection_read_timeout");
    }
    Ok(())
}
