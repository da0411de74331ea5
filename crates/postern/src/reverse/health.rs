//! Active health checks: every `interval`, each server of a pool is probed
//! (a TCP connect, or an HTTP request whose status must be in `expect`);
//! `fall` failures in a row take it out, `rise` successes bring it back. The
//! task ends by itself when its pool is replaced by a reload.

use std::sync::{Arc, Weak};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::pool::{Pool, ServerState};
use super::spec::{HealthKind, HealthSpec};
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
            for (i, server) in pool.servers.iter().enumerate() {
                let (server, spec, connector) = (server.clone(), spec.clone(), connector.clone());
                checks.spawn(async move { (i, probe(&server, &spec, &connector).await) });
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

async fn probe(
    server: &ServerState,
    spec: &HealthSpec,
    connector: &Connector,
) -> Result<(), String> {
    let attempt = async {
        let (mut stream, _) = connector
            .connect(
                &server.spec.host,
                server.spec.port,
                AddressPermit::CONFIGURED,
                None,
                spec.timeout,
            )
            .await
            .map_err(|e| e.detail)?;
        if spec.kind == HealthKind::Tcp {
            return Ok(());
        }
        let host = spec
            .host
            .clone()
            .unwrap_or_else(|| server.spec.addr.clone());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: postern-health-check\r\nConnection: close\r\n\r\n",
            spec.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let m = stream
                .read(&mut buf[n..])
                .await
                .map_err(|e| e.to_string())?;
            if m == 0 {
                return Err("closed before a status line".into());
            }
            n += m;
        }
        let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
        let status: u16 = line
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "not an HTTP response".to_string())?;
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
