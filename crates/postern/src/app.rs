//! Wiring: binds the listeners, starts the accept loops and the helpers, and
//! runs until a signal says stop. SIGHUP reloads the configuration (new
//! connections use the new snapshot, running ones keep theirs), SIGUSR1 reopens
//! the access log, SIGUSR2 hands the listening sockets to a new copy of the
//! binary (see `handover`), SIGTERM/SIGINT drain and stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::egress::{Connector, Resolver, UpstreamPool};
use crate::ingress;
use crate::observe::AccessLog;

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// True once a stop signal arrived: responses then close their connections.
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::Relaxed)
}

/// Resolves once shutdown has begun.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// State shared by every connection.
pub struct Shared {
    config: ArcSwap<Config>,
    pub connector: Arc<Connector>,
    /// Runtime state of the configured pools (health, load), swapped on reload.
    pub pools: ArcSwap<crate::reverse::pool::Pools>,
    pub pool: UpstreamPool,
    /// Upstream connections of the HTTP/2 client path (hyper's client).
    pub senders: crate::egress::senders::Senders,
    pub log: AccessLog,
    pub metrics: crate::observe::metrics::Metrics,
    pub guard: crate::guard::Guard,
    /// The shared cache, when `[cache]` is configured (sized at start).
    pub cache: Option<Arc<crate::cache::Cache>>,
    shutdown: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
    /// Running listeners: name → (bind, mode, stop signal).
    running: std::sync::Mutex<Vec<Running>>,
    upgrades: Upgrades,
}

/// Upgrades (SIGUSR2, the admin API): where the binary is, the process one
/// started until it accepts, and where its outcome goes.
struct Upgrades {
    exe: std::io::Result<std::path::PathBuf>,
    starting: std::sync::Mutex<Option<u32>>,
    outcome: tokio::sync::mpsc::UnboundedSender<std::result::Result<u32, String>>,
}

struct Running {
    name: String,
    bind: std::net::SocketAddr,
    mode: crate::config::Mode,
    stop: watch::Sender<bool>,
    /// The listening socket, for an upgrade to hand over (a second
    /// descriptor of it: the accept loop owns the first).
    socket: Option<std::os::fd::OwnedFd>,
}

impl Shared {
    /// The configuration snapshot a new connection runs with.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The running configuration when it is not `seen` (a reload happened);
    /// cheap when it is (no reference count taken).
    pub fn config_if_changed(&self, seen: &Arc<Config>) -> Option<Arc<Config>> {
        let now = self.config.load();
        (!Arc::ptr_eq(&now, seen)).then(|| Arc::clone(&now))
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The end of a request or tunnel: counted in the metrics, written to
    /// the access log.
    pub fn finish(&self, ctx: &crate::context::RequestCtx) {
        let mode = self
            .config
            .load()
            .listeners
            .iter()
            .find(|l| *l.name == *ctx.listener)
            .map_or("forward", |l| l.mode.as_str());
        self.metrics.record(ctx, mode);
        if ctx.logging {
            self.log.write(ctx);
        }
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn track_connection(&self) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.active.clone())
    }
}

/// Counts a live connection until dropped, so shutdown can wait for them.
pub struct ConnectionGuard(Arc<AtomicUsize>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn run(config: Config) -> Result<()> {
    // Before the runtime opens descriptors of its own: the numbers the
    // environment names are then surely inherited ones.
    let inherited = crate::handover::Inherited::from_env();
    // Where this binary was started from, for SIGUSR2 (a package upgrade
    // replaces the file, or switches a link, under that path).
    let exe = crate::handover::own_path();
    raise_fd_limit();
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(config, inherited, exe))
}

async fn serve(
    config: Config,
    mut inherited: crate::handover::Inherited,
    exe: std::io::Result<std::path::PathBuf>,
) -> Result<()> {
    // Handlers first: once a listener is announced, a signal must not find
    // the default action (SIGHUP would end the process).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut bound = Vec::new();
    for l in &config.listeners {
        let std_listener = inherited
            .take(l)
            .unwrap_or_else(|| ingress::bind(l))
            .with_context(|| format!("cannot listen on {} (listener {})", l.bind, l.name))?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        eprintln!(
            "postern: listener {} ({}) listening on {addr}",
            l.name,
            l.mode.as_str()
        );
        bound.push((listener, l.clone()));
    }
    for b in &config.blocklists {
        eprintln!(
            "postern: blocklist {}: {} domains, {} URL patterns ({:.1} MiB)",
            b.name,
            b.list.domain_count(),
            b.list.glob_count(),
            b.list.memory_bytes() as f64 / (1024.0 * 1024.0)
        );
    }
    let log = AccessLog::start(&config.log).context("cannot open the access log")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (outcome, mut successor_ready) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        connector: Arc::new(Connector::new(
            Arc::new(Resolver::from_system()),
            config.egress.bind.clone(),
        )),
        pools: ArcSwap::from_pointee(crate::reverse::pool::Pools::default()),
        pool: UpstreamPool::new(
            config.egress.pool_max_idle_per_host,
            config.egress.pool_max_idle,
            config.timeouts.pool_idle,
        ),
        senders: Default::default(),
        log,
        metrics: Default::default(),
        guard: crate::guard::Guard::default(),
        cache: match &config.cache {
            None => None,
            Some(c) => Some(Arc::new(crate::cache::Cache::new(
                c.memory,
                c.max_object_size,
                match &c.disk {
                    None => None,
                    Some(d) => Some(
                        crate::cache::disk::DiskStore::open(&d.path, d.size, d.max_object_size)
                            .with_context(|| {
                                format!("cannot open the disk cache {}", d.path.display())
                            })?,
                    ),
                },
            ))),
        },
        shutdown: shutdown_rx,
        active: Arc::new(AtomicUsize::new(0)),
        running: std::sync::Mutex::new(Vec::new()),
        upgrades: Upgrades {
            exe,
            starting: std::sync::Mutex::new(None),
            outcome,
        },
        config: ArcSwap::from_pointee(config),
    });
    if let Some(disk) = shared.cache.as_ref().and_then(|c| c.disk.as_ref()) {
        eprintln!("postern: disk cache: {} objects found", disk.objects());
    }
    shared
        .connector
        .resolver
        .set_hosts(shared.config().egress.hosts.clone());
    start_pools(&shared, &shared.config());
    restore_server_overrides(&shared, &inherited.servers);
    for (listener, cfg) in bound {
        start_listener(&shared, listener, cfg);
    }
    inherited.ready();
    let sweeper = shared.clone();
    tokio::spawn(async move {
        let every = (sweeper.pool.idle_timeout() / 2).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            sweeper.pool.sweep();
        }
    });

    let mut handed = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&shared),
            _ = usr1.recv() => shared.log.reopen(),
            _ = usr2.recv() => {
                if let Err(why) = start_upgrade(&shared) {
                    eprintln!("postern: {why}");
                }
            }
            Some(outcome) = successor_ready.recv() => {
                *shared.upgrades.starting.lock().unwrap_or_else(|e| e.into_inner()) = None;
                match outcome {
                    Ok(pid) => {
                        eprintln!("postern: upgrade: process {pid} accepts on the listeners now; this one stops");
                        handed = true;
                        break;
                    }
                    Err(why) => {
                        eprintln!("postern: upgrade failed, this process keeps serving: {why}");
                    }
                }
            }
        }
    }

    // Stopped while an upgrade was starting: the service stops, so the new
    // process must not go on serving.
    if let Some(pid) = upgrade_starting(&shared) {
        eprintln!("postern: stopping process {pid}, started by an upgrade that had not finished");
        #[allow(unsafe_code)]
        // SAFETY: kill only sends a signal; the process is this one's child
        // and not yet collected, so the id is still its.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    // After an upgrade the new process is systemd's main one: this one
    // leaves quietly.
    if !handed {
        crate::handover::notify("STOPPING=1");
    }
    // Drain: stop accepting (the second descriptors of the listening sockets
    // close too, so new clients are refused rather than queued for nobody),
    // let in-flight requests and tunnels finish.
    for r in shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter_mut()
    {
        r.socket = None;
    }
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    let drain = shared.config().timeouts.drain;
    let active = shared.active.load(Ordering::Relaxed);
    eprintln!(
        "postern: stopping; waiting up to {}s for {active} connection(s)",
        drain.as_secs()
    );
    let deadline = tokio::time::Instant::now() + drain;
    while shared.active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        // A second SIGTERM or SIGINT ends the drain at once (as nginx's
        // fast shutdown after a graceful one).
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let left = shared.active.load(Ordering::Relaxed);
    if left > 0 {
        eprintln!("postern: drain timeout; closing {left} connection(s)");
    }
    shared.log.flush();
    eprintln!("postern: stopped");
    Ok(())
}

/// Builds the pools' runtime state for `cfg` (keeping the state of servers
/// that stay) and starts their health checks; the old checks end with their pools.
fn start_pools(shared: &Shared, cfg: &Config) {
    let old = shared.pools.load_full();
    let pools = crate::reverse::pool::Pools::build(&cfg.pools, Some(&old));
    for pool in pools.by_name.values() {
        crate::reverse::health::spawn(pool, shared.connector.clone());
    }
    shared.pools.store(Arc::new(pools));
}

/// The process an upgrade started, while it has not taken over yet.
pub fn upgrade_starting(shared: &Shared) -> Option<u32> {
    *shared
        .upgrades
        .starting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// SIGUSR2 and `POST /api/upgrade`: starts the binary again with the
/// listening sockets; the outcome arrives in the signal loop. The new
/// process's id, or why none was started (one is starting already, this
/// process is stopping, the binary cannot be run).
pub fn start_upgrade(shared: &Shared) -> std::result::Result<u32, String> {
    if shutting_down() {
        return Err("upgrade refused: this process is stopping".into());
    }
    let mut starting = shared
        .upgrades
        .starting
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(pid) = *starting {
        return Err(format!("upgrade already under way (process {pid})"));
    }
    let pid = upgrade(shared)?;
    *starting = Some(pid);
    Ok(pid)
}

fn upgrade(shared: &Shared) -> std::result::Result<u32, String> {
    use std::os::fd::AsFd;
    let exe = match &shared.upgrades.exe {
        Ok(exe) => exe,
        Err(e) => {
            return Err(format!(
                "upgrade failed: cannot tell where this binary is: {e}"
            ));
        }
    };
    let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
    let sockets: Vec<_> = running
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.bind, r.socket.as_ref()?.as_fd())))
        .collect();
    let servers = server_overrides(shared);
    match crate::handover::spawn_successor(exe, &sockets, &servers) {
        Ok(successor) => {
            eprintln!(
                "postern: upgrade: started {} (process {}), handing over {} listener(s)",
                exe.display(),
                successor.pid,
                sockets.len()
            );
            let pid = successor.pid;
            let outcome = shared.upgrades.outcome.clone();
            tokio::spawn(async move {
                let _ = outcome.send(successor.ready().await);
            });
            Ok(pid)
        }
        Err(e) => Err(format!(
            "upgrade failed: cannot start {}: {e}",
            exe.display()
        )),
    }
}

/// What the operator set through the admin API, for an upgrade to carry.
fn server_overrides(shared: &Shared) -> Vec<crate::handover::ServerOverride> {
    let mut servers = Vec::new();
    for (pool_name, pool) in &shared.pools.load().by_name {
        for s in &pool.servers {
            let (admin, weight) = s.overrides();
            if admin.is_some() || weight != 0 {
                servers.push(crate::handover::ServerOverride {
                    pool: pool_name.clone(),
                    server: s.spec.addr.clone(),
                    admin,
                    weight,
                });
            }
        }
    }
    servers
}

/// After an upgrade: the states the previous process's operator set, on
/// the servers the configuration still has.
fn restore_server_overrides(shared: &Shared, carried: &[crate::handover::ServerOverride]) {
    let pools = shared.pools.load();
    for c in carried {
        let server = pools
            .get(&c.pool)
            .and_then(|p| p.servers.iter().find(|s| s.spec.addr == c.server));
        if let Some(server) = server {
            if let Some(state) = c.admin {
                server.set_admin(state);
            }
            if c.weight != 0 {
                server.set_weight(c.weight);
            }
        }
    }
}

fn start_listener(shared: &Arc<Shared>, listener: TcpListener, cfg: crate::config::ListenerConfig) {
    use std::os::fd::AsFd;
    let socket = listener.as_fd().try_clone_to_owned().ok();
    let (stop, removed) = watch::channel(false);
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Running {
            name: cfg.name.clone(),
            bind: cfg.bind,
            mode: cfg.mode,
            stop,
            socket,
        });
    tokio::spawn(ingress::serve(listener, cfg, shared.clone(), removed));
}

/// The listener changes a reload makes, worked out (and the new sockets
/// bound) before anything changes, so a listener that cannot be bound
/// refuses the reload instead of leaving its port dead.
struct ListenerPlan {
    /// Listeners no longer configured, or moved to another address or mode.
    stop: Vec<Running>,
    keep: Vec<Running>,
    /// New (or moved) listeners, with their sockets when bound already.
    start: Vec<(crate::config::ListenerConfig, Option<TcpListener>)>,
}

fn plan_listeners(shared: &Arc<Shared>, cfg: &Config) -> std::result::Result<ListenerPlan, String> {
    let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
    let (keep, stop): (Vec<Running>, Vec<Running>) = running.drain(..).partition(|r| {
        cfg.listeners.iter().any(|l| {
            l.name == r.name && l.mode == r.mode && (l.bind == r.bind || l.bind.port() == 0)
        })
    });
    let mut start = Vec::new();
    let mut failed = None;
    for l in cfg
        .listeners
        .iter()
        .filter(|l| !keep.iter().any(|r| r.name == l.name))
    {
        // An address a stopping listener still holds is bound once that
        // socket has closed (it was bindable: it is bound now).
        if l.bind.port() != 0 && stop.iter().any(|r| r.bind == l.bind) {
            start.push((l.clone(), None));
            continue;
        }
        match ingress::bind(l).and_then(TcpListener::from_std) {
            Ok(socket) => start.push((l.clone(), Some(socket))),
            Err(e) => {
                failed = Some(format!(
                    "postern: reload refused, the running configuration stays: \
                     cannot listen on {} (listener {}): {e}\n",
                    l.bind, l.name
                ));
                break;
            }
        }
    }
    if let Some(why) = failed {
        // Nothing changed: the sockets bound so far close with `start`.
        running.extend(keep);
        running.extend(stop);
        return Err(why);
    }
    Ok(ListenerPlan { stop, keep, start })
}

/// After a reload: listeners no longer configured (or moved) stop accepting,
/// while their connections finish; new ones start. The others keep their
/// sockets (and take their changed settings from the new configuration).
fn apply_listeners(shared: &Arc<Shared>, plan: ListenerPlan) {
    let ListenerPlan { stop, keep, start } = plan;
    for r in &stop {
        let _ = r.stop.send(true);
        eprintln!("postern: listener {} stopped", r.name);
    }
    *shared.running.lock().unwrap_or_else(|e| e.into_inner()) = keep;
    for (l, socket) in start {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut socket = socket;
            // The old socket of a moved listener closes asynchronously: retry briefly.
            for _ in 0..100 {
                if socket.is_some() {
                    break;
                }
                match ingress::bind(&l).and_then(TcpListener::from_std) {
                    Ok(bound) => socket = Some(bound),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        eprintln!(
                            "postern: cannot listen on {} (listener {}): {e}",
                            l.bind, l.name
                        );
                        return;
                    }
                }
            }
            let Some(listener) = socket else {
                eprintln!(
                    "postern: cannot listen on {} (listener {}): address in use",
                    l.bind, l.name
                );
                return;
            };
            let addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            eprintln!(
                "postern: listener {} ({}) listening on {addr}",
                l.name,
                l.mode.as_str()
            );
            start_listener(&shared, listener, l);
        });
    }
}

fn reload(shared: &Arc<Shared>) {
    match reload_now(shared) {
        Ok(msg) | Err(msg) => eprint!("{msg}"),
    }
}

/// Reloads the configuration file (SIGHUP, admin API); the message says how it went.
pub fn reload_now(shared: &Arc<Shared>) -> std::result::Result<String, String> {
    let current = shared.config();
    let Some(path) = current.source.clone() else {
        return Err("postern: reload ignored: running with the built-in configuration\n".into());
    };
    // A new listener bound now could hold a port the starting process needs
    // (it reads the same file): the upgrade applies the file anyway.
    if let Some(pid) = upgrade_starting(shared) {
        return Err(format!(
            "postern: reload refused: an upgrade is under way (process {pid} reads the configuration)\n"
        ));
    }
    crate::handover::notify_reloading();
    let outcome = reload_with(shared, &current, &path);
    crate::handover::notify("READY=1");
    outcome
}

fn reload_with(
    shared: &Arc<Shared>,
    current: &Config,
    path: &std::path::Path,
) -> std::result::Result<String, String> {
    match Config::load(path) {
        Ok(new) => {
            let listeners = plan_listeners(shared, &new)?;
            for w in &new.warnings {
                eprintln!("{w}");
            }
            if !shared.log.runs(&new.log) {
                eprintln!(
                    "postern: access log changes (target, format) take effect after a restart or an upgrade"
                );
            }
            if new.cache.is_some() != current.cache.is_some()
                || new.cache.as_ref().map(|c| (&c.memory, &c.disk))
                    != current.cache.as_ref().map(|c| (&c.memory, &c.disk))
            {
                eprintln!("postern: [cache] size and disk changes take effect after a restart");
            }
            shared
                .connector
                .sources
                .store(Arc::new(new.egress.bind.clone()));
            shared
                .connector
                .resolver
                .set_hosts(new.egress.hosts.clone());
            let new = Arc::new(new);
            start_pools(shared, &new);
            shared.config.store(new.clone());
            apply_listeners(shared, listeners);
            // Idle upstream connections were opened under the old egress rules.
            shared.pool.clear();
            Ok(format!(
                "postern: configuration reloaded from {}\n",
                path.display()
            ))
        }
        Err(e) => Err(format!(
            "postern: reload refused, the running configuration stays:\n{e}\n"
        )),
    }
}

/// A proxy holds two descriptors per connection: lift the soft limit to the hard one.
fn raise_fd_limit() {
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
