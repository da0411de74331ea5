//! Egress behaviour that needs more than one address for a name: Happy
//! Eyeballs (RFC 8305) racing the address families of `localhost`.

mod common;

use std::time::{Duration, Instant};

use common::{T, private_config, start};
use postern_testkit::{Origin, pattern_bytes, raw_exchange};
use socket2::{Domain, Socket, Type};

/// `localhost` resolves to ::1 first, then 127.0.0.1. When ::1 swallows the
/// SYN (a listener whose accept queue is full drops it), the next address is
/// tried after the RFC 8305 §5 delay (250 ms) instead of after the whole
/// connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_address_does_not_stall_the_connection() {
    let origin = Origin::start().await;
    let port = origin.addr().port();
    // A black hole on [::1]:port: listening, never accepting, queue full.
    let Ok(hole) = Socket::new(Domain::IPV6, Type::STREAM, None) else {
        eprintln!("no IPv6 here; skipping");
        return;
    };
    hole.set_only_v6(true).unwrap();
    let addr: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    if hole.bind(&addr.into()).is_err() {
        eprintln!("[::1]:{port} is not available here; skipping");
        return;
    }
    hole.listen(0).unwrap();
    // Fill the accept queue; later SYNs are dropped, not refused.
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    assert!(
        !fillers.is_empty(),
        "could not queue a connection on the black hole"
    );

    let proxy = start(&private_config("[timeouts]\nconnect = \"8s\"\n"));
    let started = Instant::now();
    let request = format!(
        "GET http://localhost:{port}/bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let reply = raw_exchange(proxy.addr(), request.as_bytes(), T).await;
    let took = started.elapsed();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.body(), pattern_bytes(10));
    assert!(
        took >= Duration::from_millis(200),
        "no ::1 attempt first? {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "waited for the stalled address: {took:?}"
    );
}
