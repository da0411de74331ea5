//! Active health checks: every `interval`, each server of a pool is probed
//! (a TCP connect, or an HTTP request whose status must be in `expect`);
//! `fall` failures in a row take it out, `rise` successes bring it back. The
//! task ends by itself when its pool is replaced by a reload.

use std::sync::{Arc, Weak};

use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use tokio::time::timeout;

use super::pool::Pool;
use super::spec::{HealthKind, HealthSpec};
use crate::egress::senders::{Sender, no_body};
use crate::egress::{AddressPermit, Connector};

/// Starts the checks of `pool` if it has any.
pub fn spawn(pool: &Arc<Pool>, connector: Arc<Connector>) {
    let Some(spec) = pool.spec.health.clone() else {
        return;
    };
    let weak: Weak<Pool> = Arc::downgrade(pool);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(spec.interval).await;
            let Some(pool) = weak.upgrade() else { return };
            let mut checks = tokio::task::JoinSet::new();
            for i in 0..pool.servers.len() {
                let (pool, spec, connector) = (pool.clone(), spec.clone(), connector.clone());
                checks.spawn(async move { (i, probe(&pool, i, &spec, &connector).await) });
            }
            while let Some(done) = checks.join_next().await {
                if let Ok((i, result)) = done {
                    record(&pool, i, &spec, result);
                }
            }
        }
    });
}

fn record(pool: &Pool, i: usize, spec: &HealthSpec, result: Result<(), String>) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &pool.servers[i];
    match result {
        Ok(()) => {
            s.fall_count.store(0, Relaxed);
            let n = s.rise_count.fetch_add(1, Relaxed) + 1;
            if !s.is_healthy() && n >= spec.rise && s.set_healthy(true) {
                eprintln!(
                    "postern: pool {}: server {} is up ({n} checks passed)",
                    pool.spec.name, s.spec.addr
                );
                pool.changed();
            }
        }
        Err(why) => {
            s.rise_count.store(0, Relaxed);
            let n = s.fall_count.fetch_add(1, Relaxed) + 1;
            if s.is_healthy() && n >= spec.fall && s.set_healthy(false) {
                eprintln!(
                    "postern: pool {}: server {} is down ({n} checks failed, last: {why})",
                    pool.spec.name, s.spec.addr
                );
                pool.changed();
            }
        }
    }
}

/// One check of server `index`. An HTTP check reaches the server as the
/// pool's requests do: with its TLS settings, HTTP/2 when the pool speaks
/// it, and a PROXY header of its own (`LOCAL`) when the pool sends them.
async fn probe(
    pool: &Pool,
    index: usize,
    spec: &HealthSpec,
    connector: &Connector,
) -> Result<(), String> {
    let server = &pool.servers[index];
    let attempt = async {
        if spec.kind == HealthKind::Tcp {
            connector
                .connect(
                    &server.spec.host,
                    server.spec.port,
                    AddressPermit::CONFIGURED,
                    None,
                    spec.timeout,
                )
                .await
                .map_err(|e| e.detail)?;
            return Ok(());
        }
        let header = pool.spec.send_proxy.map(super::local_proxy_header);
        let (stream, _) = super::open_with(
            connector,
            spec.timeout,
            pool,
            index,
            None,
            header.as_deref(),
        )
        .await
        .map_err(|e| e.detail)?;
        let host = spec
            .host
            .clone()
            .unwrap_or_else(|| server.spec.addr.clone());
        let http2 = pool.spec.http2;
        // HTTP/2 takes the authority from the URI (RFC 9113 §8.3.1); HTTP/1
        // sends the path with Host.
        let request = if http2 {
            let scheme = if stream.is_tls() { "https" } else { "http" };
            Request::get(format!("{scheme}://{host}{}", spec.path))
        } else {
            Request::get(spec.path.as_str())
                .header(HOST, host)
                .header(CONNECTION, "close")
        };
        let request = request
            .header(USER_AGENT, "postern-health-check")
            .body(no_body())
            .map_err(|e| e.to_string())?;
        // The same client the pool's HTTP/2 path uses.
        let sent = match crate::ingress::h2::handshake(stream, http2)
            .await
            .map_err(|e| e.detail)?
        {
            Sender::Http1(mut s) => s.send_request(request).await,
            Sender::Http2(mut s) => s.send_request(request).await,
        };
        let status = sent.map_err(|e| e.to_string())?.status();
        let status = status.as_u16();
        if spec.expect.contains(status) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match timeout(spec.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}ms", spec.timeout.as_millis())),
    }
}
