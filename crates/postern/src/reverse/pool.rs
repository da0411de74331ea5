//! A pool's runtime state: which servers may take traffic (administrative
//! state, active health, passive ejection, capacity), and the choice of a
//! server per request with the configured algorithm. State carries over a
//! reload for servers that keep their address.

use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::balance::{self, Candidate};
use super::spec::{AdminState, Balance, PoolSpec, ServerSpec};

/// One server's live state.
pub struct ServerState {
    pub spec: ServerSpec,
    /// Value of the sticky cookie that names this server.
    pub id: String,
    healthy: AtomicBool,
    /// Passive ejection ends at this many ms after the process epoch (0: not ejected).
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    pub inflight: AtomicUsize,
    /// Latency EWMA in microseconds (0: unknown), and when it was last updated.
    ewma_us: AtomicU64,
    ewma_at: AtomicU64,
    /// When the server last became usable, for slow start (ms after epoch).
    up_since: AtomicU64,
    admin: AtomicU8,
    /// Set through the admin API: kept across reloads.
    admin_overridden: AtomicBool,
    /// A weight set through the admin API (0: the configured one); kept across reloads.
    weight_override: AtomicU32,
    /// Active-check counters toward a state change.
    pub(super) rise_count: AtomicU32,
    pub(super) fall_count: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl ServerState {
    fn new(spec: ServerSpec) -> ServerState {
        let id = format!("{:016x}", balance::hash64(spec.addr.as_bytes()));
        let admin = spec.state as u8;
        ServerState {
            spec,
            id,
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            inflight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            up_since: AtomicU64::new(0),
            admin: AtomicU8::new(admin),
            admin_overridden: AtomicBool::new(false),
            weight_override: AtomicU32::new(0),
            rise_count: AtomicU32::new(0),
            fall_count: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maintenance,
        }
    }

    /// An administrative change at run time (admin API); survives reloads.
    pub fn set_admin(&self, state: AdminState) {
        let was = self.admin.swap(state as u8, Ordering::Relaxed);
        self.admin_overridden.store(true, Ordering::Relaxed);
        // Back to taking new clients: slow start, as after a failure.
        if state == AdminState::Ready && was != AdminState::Ready as u8 {
            self.up_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// The weight in use: the admin API's, else the configured one.
    pub fn weight(&self) -> u32 {
        match self.weight_override.load(Ordering::Relaxed) {
            0 => self.spec.weight,
            w => w,
        }
    }

    /// A weight change at run time (admin API, as HAProxy's `set weight`);
    /// survives reloads.
    pub fn set_weight(&self, weight: u32) {
        self.weight_override.store(weight, Ordering::Relaxed);
    }

    /// What the admin API set (state, weight), for an upgrade to carry.
    pub fn overrides(&self) -> (Option<AdminState>, u32) {
        let admin = self
            .admin_overridden
            .load(Ordering::Relaxed)
            .then(|| self.admin());
        (admin, self.weight_override.load(Ordering::Relaxed))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    /// Healthy, not ejected, and not in maintenance (drain still serves sticky clients).
    fn usable(&self, sticky: bool) -> bool {
        let admin_ok = match self.admin() {
            AdminState::Ready => true,
            AdminState::Drain => sticky,
            AdminState::Maintenance => false,
        };
        admin_ok && self.is_healthy() && !self.is_ejected()
    }

    /// The latency estimate, halved for every 250 ms without a new sample, so
    /// a server that looked slow once is soon tried again (as in peak-EWMA
    /// balancers); a busy server is sampled too often for the decay to matter.
    fn latency_estimate(&self) -> u64 {
        let ewma = self.ewma_us.load(Ordering::Relaxed);
        let idle_ms = now_ms().saturating_sub(self.ewma_at.load(Ordering::Relaxed));
        (ewma as f64 * 0.5f64.powf(idle_ms as f64 / 250.0)) as u64
    }

    /// Weight after slow start: a server that just came back starts at a
    /// tenth of its weight and reaches all of it after `slow_start`.
    fn effective_weight(&self, slow_start: Duration) -> f64 {
        let w = f64::from(self.weight());
        let since = self.up_since.load(Ordering::Relaxed);
        if slow_start.is_zero() || since == 0 {
            return w;
        }
        let elapsed = now_ms().saturating_sub(since) as f64;
        let ramp = (elapsed / slow_start.as_millis() as f64).clamp(0.1, 1.0);
        w * ramp
    }

    pub(super) fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.up_since.store(now_ms(), Ordering::Relaxed);
        }
        was != healthy
    }
}

/// What `pick` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Server(usize),
    /// Usable servers exist but all are at `max_connections`: wait.
    Busy,
    /// No server may take traffic.
    NoneUsable,
}

/// What the request offers for choosing a server.
pub struct PickInput<'a> {
    /// Key for `hash` (client address, URI, header or cookie value).
    pub hash_key: &'a [u8],
    /// The sticky cookie's value, if the client sent one.
    pub sticky: Option<&'a str>,
}

pub struct Pool {
    pub spec: Arc<PoolSpec>,
    pub servers: Vec<Arc<ServerState>>,
    /// Per server, the key of its idle connections in the shared upstream
    /// pool, unique to this pool of this configuration, so a connection
    /// opened for one pool (a private server, its TLS settings) never
    /// carries another pool's request or a forward-proxy client's, whose
    /// keys are `host:port`.
    pub idle_keys: Vec<String>,
    rr: Mutex<Vec<f64>>,
    /// Maglev lookup table, rebuilt when the set of usable servers changes.
    maglev: Mutex<(u64, Vec<u16>)>,
    generation: AtomicU64,
    /// Requests in flight through the pool, and how many of them are retries.
    pub active: AtomicUsize,
    pub retrying: AtomicUsize,
    queued: AtomicUsize,
    /// Requests ended so far, and a wake-up for every queued request at
    /// each: a request waits for its own server (a hash or sticky pick), so
    /// waking one arbitrary waiter could wake one that still cannot go.
    releases: AtomicU64,
    freed: Notify,
}

impl Pool {
    /// Builds the pool, keeping the live state of servers from `old` whose
    /// address did not change.
    pub fn new(spec: Arc<PoolSpec>, old: Option<&Pool>) -> Pool {
        let servers = spec
            .servers
            .iter()
            .map(|s| {
                let carried = old.and_then(|o| o.servers.iter().find(|x| x.spec.addr == s.addr));
                let state = ServerState::new(s.clone());
                if let Some(prev) = carried {
                    state.healthy.store(prev.is_healthy(), Ordering::Relaxed);
                    state.ejected_until.store(
                        prev.ejected_until.load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                    state
                        .ewma_us
                        .store(prev.ewma_us.load(Ordering::Relaxed), Ordering::Relaxed);
                    if prev.admin_overridden.load(Ordering::Relaxed) {
                        state.set_admin(prev.admin());
                    }
                    state.weight_override.store(
                        prev.weight_override.load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                }
                Arc::new(state)
            })
            .collect::<Vec<_>>();
        let n = servers.len();
        // Short keys (they are hashed twice a request): a number of this
        // pool's own, and the server's place in it.
        static POOLS_BUILT: AtomicU64 = AtomicU64::new(0);
        let built = POOLS_BUILT.fetch_add(1, Ordering::Relaxed);
        let idle_keys = (0..spec.servers.len())
            .map(|i| format!("pool/{built}/{i}"))
            .collect();
        Pool {
            spec,
            servers,
            idle_keys,
            rr: Mutex::new(vec![0.0; n]),
            maglev: Mutex::new((u64::MAX, Vec::new())),
            generation: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            releases: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Chooses a server, skipping `exclude` (servers already tried).
    pub fn pick(&self, input: &PickInput<'_>, exclude: &[usize]) -> Pick {
        // Sticky first: the client's server if it may still take traffic.
        if let Some(id) = input.sticky
            && self.spec.sticky_cookie.is_some()
            && let Some(i) = self.servers.iter().position(|s| s.id == id)
            && !exclude.contains(&i)
            && self.servers[i].usable(true)
        {
            return if self.has_room(i) {
                Pick::Server(i)
            } else {
                Pick::Busy
            };
        }
        // A request without the key (no such header or cookie) is spread
        // like any other, as nginx and HAProxy do, instead of all such
        // requests landing on the empty key's server.
        if self.spec.balance == Balance::Hash && !input.hash_key.is_empty() {
            // The key's server among all usable ones, so that a busy server
            // does not move its keys elsewhere.
            let usable = |backup: bool| -> SmallVec<[usize; 16]> {
                (0..self.servers.len())
                    .filter(|i| {
                        let s = &self.servers[*i];
                        s.spec.backup == backup && !exclude.contains(i) && s.usable(false)
                    })
                    .collect()
            };
            let mut candidates = usable(false);
            if candidates.is_empty() {
                candidates = usable(true);
            }
            if candidates.is_empty() {
                return Pick::NoneUsable;
            }
            let i = self.maglev_pick(&candidates, input.hash_key);
            return if self.has_room(i) {
                Pick::Server(i)
            } else {
                Pick::Busy
            };
        }
        // One pass over the servers (backups only when no other is usable),
        // keeping those with room as the algorithm sees them. Inline up to 16
        // servers: a pick is made for every request.
        // Only p2c reads the latency estimate (a clock read and a power).
        let p2c = self.spec.balance == Balance::P2c;
        let mut view: SmallVec<[Candidate; 16]> = SmallVec::new();
        let mut any_usable = false;
        for backup in [false, true] {
            for (i, s) in self.servers.iter().enumerate() {
                if s.spec.backup != backup || exclude.contains(&i) || !s.usable(false) {
                    continue;
                }
                any_usable = true;
                if self.has_room(i) {
                    view.push(Candidate {
                        index: i,
                        weight: s.effective_weight(self.spec.slow_start),
                        inflight: s.inflight.load(Ordering::Relaxed),
                        latency_us: if p2c { s.latency_estimate() } else { 0 },
                    });
                }
            }
            if any_usable {
                break;
            }
        }
        if !any_usable {
            return Pick::NoneUsable;
        }
        if view.is_empty() {
            return Pick::Busy;
        }
        let chosen = match self.spec.balance {
            Balance::RoundRobin => {
                let mut current = self.rr.lock().expect("rr state");
                balance::smooth_weighted(&view, &mut current)
            }
            Balance::LeastConnections => balance::least_connections(&view),
            Balance::P2c => balance::p2c(&view),
            Balance::Random | Balance::Hash => balance::weighted_random(&view),
        };
        Pick::Server(chosen)
    }

    /// Whether a server other than `current` and those in `tried` may take
    /// a request now (a retry has somewhere to go).
    pub fn has_other_usable(&self, current: usize, tried: &[usize]) -> bool {
        self.servers
            .iter()
            .enumerate()
            .any(|(i, s)| i != current && !tried.contains(&i) && s.usable(false))
    }

    fn has_room(&self, i: usize) -> bool {
        let max = self.spec.max_connections;
        max == 0 || self.servers[i].inflight.load(Ordering::Relaxed) < max
    }

    fn maglev_pick(&self, candidates: &[usize], key: &[u8]) -> usize {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut table = self.maglev.lock().expect("maglev table");
        let ids: Vec<&str> = candidates
            .iter()
            .map(|i| self.servers[*i].id.as_str())
            .collect();
        // The table is keyed by the set of candidates: rebuild when it changes.
        let fingerprint = generation ^ balance::hash64(ids.concat().as_bytes());
        if table.0 != fingerprint {
            *table = (fingerprint, balance::maglev_table(&ids));
        }
        let slot = (balance::hash64(key) % table.1.len() as u64) as usize;
        candidates[usize::from(table.1[slot])]
    }

    /// A server for the next try, waiting in the queue while every server is
    /// at `max_connections`. Fails when the queue is full or timed out, or
    /// when no server is up.
    pub async fn pick_or_queue(
        &self,
        input: &PickInput<'_>,
        tried: &[usize],
    ) -> Result<usize, crate::error::ProxyError> {
        use crate::error::{ErrorKind, ProxyError};
        let mut room = self.room_wait();
        loop {
            match self.pick(input, tried) {
                Pick::Server(i) => return Ok(i),
                Pick::Busy if room.wait().await => continue,
                Pick::Busy => {
                    return Err(ProxyError::new(
                        ErrorKind::QueueFull,
                        format!("pool {}: every server is busy", self.spec.name),
                    ));
                }
                Pick::NoneUsable => {
                    return Err(ProxyError::new(
                        ErrorKind::NoServer,
                        format!("pool {}: no server is up", self.spec.name),
                    ));
                }
            }
        }
    }

    /// A request's place in the queue, made before its first pick: each
    /// [`RoomWait::wait`] after a busy pick waits for a request to end
    /// anywhere in the pool, within one `queue_timeout` for the whole stay.
    pub fn room_wait(&self) -> RoomWait<'_> {
        RoomWait {
            pool: self,
            seen: self.releases.load(Ordering::Acquire),
            deadline: None,
        }
    }
    /// Marks a request in flight on server `i` until the guard drops.
    pub fn start(self: &Arc<Self>, i: usize) -> InFlight {
        let s = &self.servers[i];
        s.inflight.fetch_add(1, Ordering::Relaxed);
        s.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            pool: self.clone(),
            index: i,
            started: Instant::now(),
        }
    }

    /// A server of this pool could not be reached for a request: the failure
    /// counts toward its ejection, and the request does not try it again.
    /// Returns whether the request may move on to another server: within
    /// `retries`, and within the retry budget when it starts retrying (a
    /// request already retrying keeps its place; `retrying` holds it).
    pub fn failed_attempt(
        self: &Arc<Self>,
        i: usize,
        tried: &mut Vec<usize>,
        retrying: &mut Option<super::RetryGuard>,
    ) -> bool {
        self.report_failure(i);
        tried.push(i);
        if tried.len() > self.spec.retries as usize {
            return false;
        }
        if retrying.is_none() {
            if !self.may_retry() {
                return false;
            }
            *retrying = Some(super::RetryGuard::new(self));
        }
        true
    }

    /// A connect failure or a 5xx: counts toward passive ejection.
    pub fn report_failure(&self, i: usize) {
        let s = &self.servers[i];
        s.failures.fetch_add(1, Ordering::Relaxed);
        let n = s.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let o = &self.spec.outlier;
        if o.consecutive_failures == 0 || n < o.consecutive_failures || s.is_ejected() {
            return;
        }
        // Never eject more than the allowed share, so a pool-wide problem
        // does not empty the pool.
        let ejected = self.servers.iter().filter(|x| x.is_ejected()).count();
        let cap = (self.servers.len() as f64 * o.max_ejected).floor() as usize;
        if ejected >= cap {
            return;
        }
        s.ejected_until.store(
            now_ms() + o.ejection_time.as_millis() as u64,
            Ordering::Relaxed,
        );
        s.consecutive_failures.store(0, Ordering::Relaxed);
        // Slow start begins when the ejection ends.
        s.up_since
            .store(s.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
        eprintln!(
            "postern: pool {}: server {} ejected for {}s after {n} failures in a row",
            self.spec.name,
            s.spec.addr,
            o.ejection_time.as_secs()
        );
        self.changed();
    }

    pub fn report_success(&self, i: usize) {
        self.servers[i]
            .consecutive_failures
            .store(0, Ordering::Relaxed);
    }

    /// Retries allowed now: at least one, else the budget's share of the
    /// requests in flight (a retry storm cannot multiply the load).
    pub fn may_retry(&self) -> bool {
        let active = self.active.load(Ordering::Relaxed) as f64;
        let retrying = self.retrying.load(Ordering::Relaxed) as f64;
        retrying < (active * self.spec.retry_budget).max(1.0)
    }
}

/// A request in flight on one server: counted for balancing and capacity.
pub struct InFlight {
    pool: Arc<Pool>,
    index: usize,
    started: Instant,
}

impl InFlight {
    /// Starts the latency clock again (after connecting, so connection setup
    /// does not count as the server's slowness).
    pub fn restart_clock(&mut self) {
        self.started = Instant::now();
    }

    /// Records the time to the response head in the latency EWMA.
    pub fn observe_latency(&self) {
        let s = &self.pool.servers[self.index];
        let sample = self.started.elapsed().as_micros() as u64;
        let old = s.ewma_us.load(Ordering::Relaxed);
        // α = 0.3: reacts within a few requests, smooths single outliers.
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample * 3) / 10
        };
        s.ewma_us.store(new.max(1), Ordering::Relaxed);
        s.ewma_at.store(now_ms(), Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.servers[self.index]
            .inflight
            .fetch_sub(1, Ordering::Relaxed);
        // Waking is skipped while nobody queues (the common case, and
        // `notify_waiters` takes a lock). SeqCst here and in `RoomWait::wait`:
        // a request that queues after this check sees the release counted.
        self.pool.releases.fetch_add(1, Ordering::SeqCst);
        if self.pool.queued.load(Ordering::SeqCst) > 0 {
            self.pool.freed.notify_waiters();
        }
    }
}

/// See [`Pool::room_wait`].
pub struct RoomWait<'p> {
    pool: &'p Pool,
    /// `releases` when the caller last picked: a release since then means
    /// a pick may succeed now.
    seen: u64,
    /// Set at the first wait, when the request takes a queue place.
    deadline: Option<Instant>,
}

impl RoomWait<'_> {
    /// Waits until some request of the pool ends (then the caller picks
    /// again); `false` when the queue is full or the request has waited
    /// `queue_timeout` in all.
    pub async fn wait(&mut self) -> bool {
        let pool = self.pool;
        let deadline = match self.deadline {
            Some(d) => d,
            None => {
                if pool.queued.fetch_add(1, Ordering::SeqCst) >= pool.spec.queue {
                    pool.queued.fetch_sub(1, Ordering::Relaxed);
                    return false;
                }
                *self
                    .deadline
                    .insert(Instant::now() + pool.spec.queue_timeout)
            }
        };
        let notified = pool.freed.notified();
        tokio::pin!(notified);
        // Registered before the check below, so no release is missed.
        notified.as_mut().enable();
        let now = pool.releases.load(Ordering::SeqCst);
        if now != self.seen {
            self.seen = now;
            return true;
        }
        let woke = tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_ok();
        self.seen = pool.releases.load(Ordering::Acquire);
        woke
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        if self.deadline.is_some() {
            self.pool.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Every pool of the running configuration, by name.
#[derive(Default)]
pub struct Pools {
    pub by_name: crate::fasthash::FastMap<String, Arc<Pool>>,
}

impl Pools {
    pub fn build(specs: &[Arc<PoolSpec>], old: Option<&Pools>) -> Pools {
        let by_name = specs
            .iter()
            .map(|spec| {
                let prev = old.and_then(|o| o.by_name.get(&spec.name));
                (
                    spec.name.clone(),
                    Arc::new(Pool::new(spec.clone(), prev.map(|p| p.as_ref()))),
                )
            })
            .collect();
        Pools { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.by_name.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Destination;
    use crate::reverse::spec::*;

    pub fn spec(n: usize, balance: Balance) -> PoolSpec {
        PoolSpec {
            name: "p".into(),
            servers: (0..n)
                .map(|i| ServerSpec {
                    addr: format!("127.0.0.1:{}", 9000 + i),
                    host: Destination::Ip("127.0.0.1".parse().unwrap()),
                    port: 9000 + i as u16,
                    weight: 1,
                    backup: false,
                    state: AdminState::Ready,
                })
                .collect(),
            balance,
            hash_on: HashOn::Client,
            sticky_cookie: None,
            retries: 2,
            retry_budget: 0.2,
            per_try_timeout: None,
            max_connections: 0,
            queue: 10,
            queue_timeout: Duration::from_millis(50),
            slow_start: Duration::ZERO,
            health: None,
            outlier: OutlierSpec {
                consecutive_failures: 3,
                ejection_time: Duration::from_secs(30),
                max_ejected: 0.5,
            },
            protocol: ParentProtocol::Http,
            credentials: None,
            send_proxy: None,
            tls: None,
            http2: false,
        }
    }

    fn input(key: &[u8]) -> PickInput<'_> {
        PickInput {
            hash_key: key,
            sticky: None,
        }
    }

    fn counts(pool: &Pool, rounds: usize) -> Vec<usize> {
        let mut counts = vec![0; pool.servers.len()];
        for i in 0..rounds {
            let key = i.to_le_bytes();
            if let Pick::Server(s) = pool.pick(&input(&key), &[]) {
                counts[s] += 1;
            }
        }
        counts
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let mut s = spec(3, Balance::RoundRobin);
        s.servers[0].weight = 3;
        let pool = Pool::new(Arc::new(s), None);
        assert_eq!(counts(&pool, 500), vec![300, 100, 100]);
    }

    #[test]
    fn a_failed_attempt_retries_within_retries_and_the_budget() {
        let mut s = spec(4, Balance::RoundRobin);
        s.retries = 2;
        s.retry_budget = 0.0;
        let pool = Arc::new(Pool::new(Arc::new(s), None));
        // The first request to fail starts retrying: the budget's floor is one.
        let (mut tried, mut retrying) = (Vec::new(), None);
        assert!(pool.failed_attempt(0, &mut tried, &mut retrying));
        assert!(retrying.is_some());
        // A second failing request finds the budget spent.
        let (mut other_tried, mut other_retrying) = (Vec::new(), None);
        assert!(!pool.failed_attempt(1, &mut other_tried, &mut other_retrying));
        assert!(other_retrying.is_none());
        // The first keeps its place, up to `retries`.
        assert!(pool.failed_attempt(2, &mut tried, &mut retrying));
        assert!(!pool.failed_attempt(3, &mut tried, &mut retrying));
        assert_eq!(tried, vec![0, 2, 3]);
        // Once it is done, the budget is free again.
        drop(retrying);
        assert!(pool.failed_attempt(1, &mut other_tried, &mut other_retrying));
    }

    #[test]
    fn backup_only_when_primaries_are_gone() {
        let mut s = spec(3, Balance::RoundRobin);
        s.servers[2].backup = true;
        let pool = Pool::new(Arc::new(s), None);
        assert_eq!(counts(&pool, 100)[2], 0);
        pool.servers[0].set_healthy(false);
        pool.servers[1].set_healthy(false);
        assert_eq!(counts(&pool, 10), vec![0, 0, 10]);
    }

    #[test]
    fn passive_ejection_is_capped() {
        let pool = Pool::new(Arc::new(spec(4, Balance::RoundRobin)), None);
        for i in 0..3 {
            for _ in 0..3 {
                pool.report_failure(i);
            }
        }
        let ejected = pool.servers.iter().filter(|s| s.is_ejected()).count();
        assert_eq!(ejected, 2, "at most half of four servers");
        assert_eq!(counts(&pool, 100).iter().filter(|c| **c > 0).count(), 2);
    }

    /// Queued requests wait for their own server (hash keys): when a
    /// server frees up, the request waiting for it goes, even when another
    /// request for a still-busy server has waited longer.
    #[tokio::test]
    async fn a_freed_server_takes_its_own_queued_request() {
        let mut s = spec(2, Balance::Hash);
        s.max_connections = 1;
        s.queue_timeout = Duration::from_secs(20);
        let pool = Arc::new(Pool::new(Arc::new(s), None));
        let key_for = |want: usize| {
            (0u32..)
                .map(u32::to_le_bytes)
                .find(|k| pool.pick(&input(k), &[]) == Pick::Server(want))
                .unwrap()
        };
        let (key_a, key_b) = (key_for(0), key_for(1));
        let busy_a = pool.start(0);
        let busy_b = pool.start(1);
        let queue = |key: [u8; 4]| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.pick_or_queue(&input(&key), &[]).await.ok() })
        };
        let queued = |n: usize| {
            let pool = pool.clone();
            async move {
                while pool.queued.load(Ordering::Relaxed) < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let waits_for_a = queue(key_a);
        queued(1).await;
        let waits_for_b = queue(key_b);
        queued(2).await;
        drop(busy_b);
        let got = tokio::time::timeout(Duration::from_secs(5), waits_for_b)
            .await
            .expect("the request for the freed server goes at once")
            .unwrap();
        assert_eq!(got, Some(1));
        assert!(!waits_for_a.is_finished());
        drop(busy_a);
        assert_eq!(waits_for_a.await.unwrap(), Some(0));
    }

    /// A server back from maintenance or from an ejection starts slowly,
    /// like one back from failed health checks.
    #[test]
    fn slow_start_follows_maintenance_and_ejection() {
        let mut s = spec(3, Balance::RoundRobin);
        s.slow_start = Duration::from_secs(60);
        s.outlier.consecutive_failures = 1;
        s.outlier.ejection_time = Duration::from_secs(30);
        let pool = Pool::new(Arc::new(s), None);
        let ramp = |i: usize| pool.servers[i].effective_weight(Duration::from_secs(60));
        assert_eq!(ramp(0), 1.0, "full weight from the start");
        pool.servers[0].set_admin(AdminState::Maintenance);
        pool.servers[0].set_admin(AdminState::Ready);
        assert!(ramp(0) < 0.2, "{}", ramp(0));
        pool.report_failure(1);
        assert!(pool.servers[1].is_ejected());
        let server = &pool.servers[1];
        assert_eq!(
            server.up_since.load(Ordering::Relaxed),
            server.ejected_until.load(Ordering::Relaxed),
            "the ramp starts when the ejection ends"
        );
        assert!(ramp(1) < 0.2, "{}", ramp(1));
    }

    #[test]
    fn requests_without_a_hash_key_are_spread() {
        let pool = Pool::new(Arc::new(spec(4, Balance::Hash)), None);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            if let Pick::Server(s) = pool.pick(&input(b""), &[]) {
                seen[s] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
    }

    #[test]
    fn hash_is_stable_and_moves_little_when_a_server_goes() {
        let pool = Pool::new(Arc::new(spec(5, Balance::Hash)), None);
        let before: Vec<Pick> = (0..2000u32)
            .map(|k| pool.pick(&input(&k.to_le_bytes()), &[]))
            .collect();
        let again: Vec<Pick> = (0..2000u32)
            .map(|k| pool.pick(&input(&k.to_le_bytes()), &[]))
            .collect();
        assert_eq!(before, again);
        pool.servers[4].set_healthy(false);
        pool.changed();
        let after: Vec<Pick> = (0..2000u32)
            .map(|k| pool.pick(&input(&k.to_le_bytes()), &[]))
            .collect();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **b != Pick::Server(4))
            .count();
        // Only keys of the removed server should move (Maglev allows a little more).
        assert!(moved < 2000 / 20, "{moved} keys moved");
    }

    #[test]
    fn capacity_makes_the_pool_busy_and_frees_on_drop() {
        let mut s = spec(1, Balance::LeastConnections);
        s.max_connections = 1;
        let pool = Arc::new(Pool::new(Arc::new(s), None));
        let first = pool.start(0);
        assert_eq!(pool.pick(&input(b"x"), &[]), Pick::Busy);
        drop(first);
        assert_eq!(pool.pick(&input(b"x"), &[]), Pick::Server(0));
    }

    #[test]
    fn sticky_and_drain() {
        let mut s = spec(2, Balance::RoundRobin);
        s.sticky_cookie = Some("SRV".into());
        let pool = Pool::new(Arc::new(s), None);
        let id = pool.servers[1].id.clone();
        pool.servers[1]
            .admin
            .store(AdminState::Drain as u8, Ordering::Relaxed);
        let sticky = PickInput {
            sticky: Some(&id),
            ..input(b"x")
        };
        assert_eq!(
            pool.pick(&sticky, &[]),
            Pick::Server(1),
            "drain keeps sticky clients"
        );
        assert_eq!(counts(&pool, 10), vec![10, 0], "but takes no new ones");
    }
}
