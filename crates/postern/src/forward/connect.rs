//! CONNECT tunnels (RFC 9110 §9.3.6): check the port, connect with the same
//! egress rules as plain HTTP, answer 200, then relay bytes both ways.

use crate::app::Shared;
use crate::config::Config;
use crate::context::RequestCtx;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::egress::{AddressPermit, Destination, parent};
use crate::error::ErrorKind;
use crate::error::ProxyError;
use crate::guard::Admission;
use crate::ingress::Client;
use crate::relay;
use crate::reverse::pool::{Pick, PickInput, Pool};
use crate::reverse::spec::ParentProtocol;

/// Runs the tunnel to completion, once the target is parsed and admitted.
/// `Err` means no 200 was sent yet.
/// Where a tunnel goes.
pub struct TunnelTarget<'a> {
    pub dest: &'a Destination,
    pub port: u16,
    /// Through a parent of this pool instead of directly.
    pub parent: Option<&'a Arc<Pool>>,
}

pub async fn tunnel(
    cfg: &Config,
    shared: &Shared,
    client: &mut Client,
    target: TunnelTarget<'_>,
    admission: &Admission<'_>,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let TunnelTarget { dest, port, parent } = target;
    let (upstream, addr, pending) = match parent {
        Some(pool) => through_parent(cfg, shared, pool, dest, port).await?,
        None => {
            let (s, a) = shared
                .connector
                .connect(
                    dest,
                    port,
                    cfg.address_permit(),
                    admission.pinned.as_deref(),
                    cfg.timeouts.connect,
                )
                .await?;
            (s, a, Vec::new())
        }
    };
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
    let mut upstream = crate::egress::Upstream::Plain(upstream);
    let stats = relay::tunnel_client(
        &mut client.stream,
        &early,
        &mut upstream,
        &pending,
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

/// A tunnel through a parent of `pool`: the next parent is tried when one
/// cannot be reached or fails the handshake (nothing was sent to the
/// destination yet, so this is always safe).
pub(crate) async fn through_parent(
    cfg: &Config,
    shared: &Shared,
    pool: &Arc<Pool>,
    dest: &Destination,
    port: u16,
) -> Result<(TcpStream, SocketAddr, Vec<u8>), ProxyError> {
    let spec = &pool.spec;
    let key = parent::authority(dest, port);
    // In flight through the pool: the retry budget is a share of these.
    let _active = crate::reverse::ActiveGuard::new(pool);
    let mut tried = Vec::new();
    let mut retrying = None;
    let mut last_error = None;
    let mut room = pool.room_wait();
    loop {
        let input = PickInput {
            hash_key: key.as_bytes(),
            sticky: None,
        };
        let index = match pool.pick(&input, &tried) {
            Pick::Server(i) => i,
            Pick::Busy if room.wait().await => continue,
            Pick::Busy => {
                return Err(ProxyError::new(
                    ErrorKind::QueueFull,
                    format!("parent pool {}: every parent is busy", spec.name),
                ));
            }
            Pick::NoneUsable => {
                return Err(last_error.unwrap_or_else(|| {
                    ProxyError::new(
                        ErrorKind::NoServer,
                        format!("parent pool {}: no parent is up", spec.name),
                    )
                }));
            }
        };
        let _inflight = pool.start(index);
        let server = &pool.servers[index];
        let attempt = async {
            let (mut stream, addr) = shared
                .connector
                .connect(
                    &server.spec.host,
                    server.spec.port,
                    AddressPermit::CONFIGURED,
                    None,
                    cfg.timeouts.connect,
                )
                .await?;
            let pending = match spec.protocol {
                ParentProtocol::Http => {
                    parent::http_connect(
                        &mut stream,
                        dest,
                        port,
                        spec.credentials.as_ref(),
                        cfg.timeouts.first_byte,
                    )
                    .await?
                }
                ParentProtocol::Socks5 => {
                    parent::socks5_connect(
                        &mut stream,
                        dest,
                        port,
                        spec.credentials.as_ref(),
                        cfg.timeouts.connect,
                    )
                    .await?;
                    Vec::new()
                }
            };
            Ok::<_, ProxyError>((stream, addr, pending))
        };
        match attempt.await {
            Ok(done) => {
                pool.report_success(index);
                return Ok(done);
            }
            Err(e) if pool.failed_attempt(index, &mut tried, &mut retrying) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
}
