//! Load generator for SOCKS5 benchmarks: new tunnels per second. Each of
//! CONNECTIONS workers loops: connect to the proxy, SOCKS5 no-auth greeting,
//! CONNECT to the origin, `GET PATH` with `Connection: close`, read to the
//! end, close. Prints completed tunnels per second and failures.
//!
//!     socks_rate PROXY ORIGIN PATH CONNECTIONS SECONDS
//!     socks_rate 127.0.0.1:1080 127.0.0.1:28580 /1k 50 5

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one(proxy: SocketAddr, origin: SocketAddr, request: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    let SocketAddr::V4(v4) = origin else {
        return Err(std::io::Error::other("IPv4 origin expected"));
    };
    let mut connect = vec![5, 1, 0, 1];
    connect.extend_from_slice(&v4.ip().octets());
    connect.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&connect).await?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        return Err(std::io::Error::other("refused"));
    }
    s.write_all(request).await?;
    let mut sink = vec![0u8; 16 * 1024];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: socks_rate PROXY ORIGIN PATH CONNECTIONS SECONDS");
        std::process::exit(2);
    }
    let proxy: SocketAddr = args[1].parse().expect("proxy address");
    let origin: SocketAddr = args[2].parse().expect("origin address");
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n",
        args[3]
    )
    .into_bytes()
    .into();
    let workers: usize = args[4].parse().expect("connections");
    let secs: u64 = args[5].parse().expect("seconds");
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (done, failed, request) = (done.clone(), failed.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                match one(proxy, origin, &request).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "{:.0} tunnels/s ({n} in {secs} s, {} failed)",
        n as f64 / secs as f64,
        failed.load(Ordering::Relaxed)
    );
}
