//! Per-client and per-user limits: request rates (GCRA, answered with 429 and
//! Retry-After), connections open at once per client address, and bandwidth
//! (token buckets that the relay waits on, like Squid's delay pools).
//!
//! State lives for the process; limits are read from the configuration at each
//! use, so a reload changes them without losing counts.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Rate;

/// Tables are swept of idle entries when they grow past this.
const SWEEP_AT: usize = 50_000;

/// Generic cell rate algorithm: `count` requests per `per`, in bursts of up to
/// `count`. One instant per key: the theoretical arrival time.
pub struct RateLimiter<K> {
    tat: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter {
            tat: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `Ok` if the request may go, else how long until it could.
    pub fn check(&self, key: &K, rate: Rate) -> Result<(), Duration> {
        let now = Instant::now();
        let interval = rate.per / rate.count;
        let tolerance = rate.per.saturating_sub(interval);
        let mut table = self.tat.lock().expect("rate table");
        if table.len() >= SWEEP_AT {
            table.retain(|_, tat| *tat > now);
        }
        let tat = table.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        table.insert(key.clone(), tat + interval);
        Ok(())
    }
}

/// Connections open per client address.
#[derive(Default, Clone)]
pub struct ConnectionCounter {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one connection's place; gives it back when dropped.
pub struct ConnectionSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ConnectionCounter {
    /// A slot, or `None` if the client already has `max` connections.
    pub fn enter(&self, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().expect("connection table");
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            open: self.open.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connection table");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A token bucket of bytes shared by every transfer of one client or user.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            state: Mutex::new(BucketState {
                rate,
                tokens: rate as f64,
                last: Instant::now(),
            }),
        }
    }

    /// Takes `n` bytes' worth of tokens, returning how long to wait before
    /// sending them (the debt is paid by waiting, so large reads are allowed).
    pub fn take(&self, n: usize) -> Duration {
        let mut s = self.state.lock().expect("bucket");
        let now = Instant::now();
        let rate = s.rate as f64;
        // At most one second's worth accumulates: the burst size.
        s.tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * rate).min(rate);
        s.last = now;
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / rate)
        }
    }

    /// How many bytes to move per step: a tenth of a second's worth keeps the
    /// flow smooth without a wake-up per packet.
    pub fn step(&self) -> usize {
        let rate = self.state.lock().expect("bucket").rate;
        (rate / 10).clamp(1024, 256 * 1024) as usize
    }
}

/// Buckets per key, created on first use.
pub struct Buckets<K> {
    table: Mutex<HashMap<K, Arc<Bucket>>>,
}

impl<K: Hash + Eq + Clone> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn get(&self, key: &K, rate: u64) -> Arc<Bucket> {
        let mut table = self.table.lock().expect("buckets");
        if table.len() >= SWEEP_AT {
            // Buckets nobody holds any more can go.
            table.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let bucket = table
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Bucket::new(rate)));
        bucket.state.lock().expect("bucket").rate = rate;
        bucket.clone()
    }
}

/// All limit state of the process.
#[derive(Default)]
pub struct Limits {
    pub client_requests: RateLimiter<IpAddr>,
    pub user_requests: RateLimiter<Arc<str>>,
    pub connections: ConnectionCounter,
    pub client_bandwidth: Buckets<IpAddr>,
    pub user_bandwidth: Buckets<Arc<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::default();
        let rate = Rate {
            count: 3,
            per: Duration::from_secs(60),
        };
        for _ in 0..3 {
            assert!(limiter.check(&1u8, rate).is_ok());
        }
        let wait = limiter.check(&1u8, rate).unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limiter.check(&2u8, rate).is_ok());
    }

    #[test]
    fn connection_slots_are_returned() {
        let c = ConnectionCounter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = c.enter(ip, 2).unwrap();
        let _b = c.enter(ip, 2).unwrap();
        assert!(c.enter(ip, 2).is_none());
        drop(a);
        assert!(c.enter(ip, 2).is_some());
    }

    #[test]
    fn bucket_makes_large_transfers_wait() {
        let b = Bucket::new(100_000);
        assert_eq!(b.take(50_000), Duration::ZERO);
        let wait = b.take(150_000);
        assert!(
            wait >= Duration::from_millis(900) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
    }
}
