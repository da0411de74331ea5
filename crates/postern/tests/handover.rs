//! Listening sockets that outlive a process: SIGUSR2 hands them to a new copy
//! of the binary (an upgrade that refuses no connection), and systemd can
//! hand them over at start (socket activation).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postern_testkit::{Origin, RawReply, TestProxy, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const SIGUSR2: i32 = 12;
const WAIT: Duration = Duration::from_secs(10);

fn config(via: &str) -> String {
    format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n\
         [egress]\nallow_private_destinations = true\n\
         [http]\nvia = \"{via}\"\n[log]\naccess = \"off\"\n"
    )
}

fn get(origin: &Origin, path: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        origin.url(path),
        origin.addr()
    )
    .into_bytes()
}

/// One request on a new connection; a refused connection is an error, not a panic.
async fn fetch(addr: std::net::SocketAddr, request: &[u8]) -> Result<RawReply, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(RawReply {
        bytes,
        closed: true,
    })
}

/// Kills, when the test ends, a process the test did not start itself.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z ") && !stat.contains(") X "))
}

/// The process id in an "upgrade: process N accepts ..." line.
fn successor(line: &str) -> u32 {
    line.split_once("process ")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no process id in {line:?}"))
}

/// Sends SIGUSR2 and waits until the new process accepts and the old one
/// has exited; the new one is killed when the returned guard goes.
async fn upgrade_and_wait(proxy: TestProxy) -> (Arc<TestProxy>, Reap) {
    proxy.signal(SIGUSR2);
    let line = proxy.wait_for_stderr_line(|l| l.contains("accepts on the listeners now"), WAIT);
    let reap = Reap(successor(&line));
    let proxy = Arc::new(proxy);
    let exited = tokio::task::spawn_blocking({
        let proxy = proxy.clone();
        move || proxy.wait_exit(WAIT)
    })
    .await
    .unwrap();
    assert!(exited.is_some(), "{}", proxy.stderr());
    (proxy, reap)
}

/// SIGUSR2 starts the binary again with the listening sockets: clients
/// connecting all along are never refused, the new configuration answers
/// from then on, and the old process finishes its request in flight before
/// it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_listeners_over_without_refusing_a_connection() {
    let origin = Arc::new(Origin::start().await);
    let proxy = TestProxy::start(BIN, &config("old"));
    let addr = proxy.addr();

    let request = get(&origin, "/delay/1500");
    let slow = tokio::spawn(async move { raw_exchange(addr, &request, WAIT).await });
    let deadline = Instant::now() + WAIT;
    while origin.requests() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (origin, stop) = (origin.clone(), stop.clone());
        tokio::spawn(async move {
            let request = get(&origin, "/bytes/100");
            let (mut vias, mut failures) = (Vec::new(), Vec::new());
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match fetch(addr, &request).await {
                    Ok(r) if r.status() == Some(200) && r.body().len() == 100 => {
                        vias.push(r.header("via").unwrap_or_default())
                    }
                    Ok(r) => failures.push(r.text()),
                    Err(e) => failures.push(e),
                }
            }
            (vias, failures)
        })
    };

    std::fs::write(proxy.dir().join("postern.toml"), config("new")).unwrap();
    proxy.signal(SIGUSR2);
    let line = proxy.wait_for_stderr_line(|l| l.contains("accepts on the listeners now"), WAIT);
    let _reap = Reap(successor(&line));

    // The request in flight is answered by the old process, which then exits.
    let reply = slow.await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.body(), b"delayed");
    assert!(reply.header("via").unwrap().contains("old"));
    let proxy = Arc::new(proxy);
    let status = tokio::task::spawn_blocking({
        let proxy = proxy.clone();
        move || proxy.wait_exit(WAIT).map(|s| s.code())
    })
    .await
    .unwrap();
    assert_eq!(status, Some(Some(0)), "{}", proxy.stderr());

    // The old process is gone; the port still answers, with the new settings.
    let after = fetch(addr, &get(&origin, "/bytes/100")).await.unwrap();
    assert_eq!(after.status(), Some(200), "{}", after.text());
    assert!(after.header("via").unwrap().contains("new"));

    stop.store(true, Ordering::Relaxed);
    let (vias, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}\n{}",
        failures.len(),
        failures.len() + vias.len(),
        failures.first(),
        proxy.stderr()
    );
    assert!(vias.iter().any(|v| v.contains("old")), "{vias:?}");
    assert!(vias.iter().any(|v| v.contains("new")), "{vias:?}");
}

/// A new binary that cannot start (here: a broken configuration) leaves the
/// old process serving with its own settings; a later upgrade can succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(BIN, &config("old"));
    let path = proxy.dir().join("postern.toml");
    std::fs::write(&path, "[[listener]]\nname = \"proxy\"\nbind = 3128\n").unwrap();
    proxy.signal(SIGUSR2);
    proxy.wait_for_stderr_line(
        |l| l.starts_with("postern: upgrade failed, this process keeps serving"),
        WAIT,
    );
    assert!(running(proxy.pid()));
    let reply = fetch(proxy.addr(), &get(&origin, "/bytes/10"))
        .await
        .unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert!(reply.header("via").unwrap().contains("old"));

    std::fs::write(&path, config("new")).unwrap();
    proxy.signal(SIGUSR2);
    let line = proxy.wait_for_stderr_line(|l| l.contains("accepts on the listeners now"), WAIT);
    let new = successor(&line);
    let _reap = Reap(new);
    let deadline = Instant::now() + WAIT;
    while proxy.wait_exit(Duration::ZERO).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = fetch(proxy.addr(), &get(&origin, "/bytes/10"))
        .await
        .unwrap();
    assert!(reply.header("via").unwrap().contains("new"));

    // The new process stops on SIGTERM as any other.
    let _ = Command::new("kill")
        .args(["-15", &new.to_string()])
        .status();
    let deadline = Instant::now() + WAIT;
    while running(new) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!running(new), "{}", proxy.stderr());
}

/// Started by systemd with a socket of its own (`LISTEN_FDS`, descriptor 3),
/// Postern serves on that socket, including a connection that was waiting in
/// its backlog before Postern started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_the_socket_systemd_hands_over() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let origin = Origin::start().await;
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    // Queued in the backlog: nothing accepts yet.
    let request = get(&origin, "/bytes/10");
    let early = tokio::spawn(async move { raw_exchange(addr, &request, WAIT).await });

    let fd = socket.as_raw_fd();
    // The listener is matched by the name systemd gives the socket
    // (`FileDescriptorName=proxy`), though the address configured differs.
    let config = format!(
        "[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.2:{}\"\n\
         [egress]\nallow_private_destinations = true\n[log]\naccess = \"off\"\n",
        addr.port()
    );
    // systemd sets LISTEN_PID to the started process's id: a shell that
    // execs the binary keeps its own.
    let proxy = TestProxy::start_command(&config, |path| {
        let mut command = Command::new("sh");
        command
            .args(["-c", "LISTEN_PID=$$ exec \"$0\" -c \"$1\"", BIN])
            .arg(path)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "proxy");
        #[allow(unsafe_code)]
        // SAFETY: only dup2/fcntl between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let moved = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    });
    // Postern could not have bound the address itself: this process still
    // holds it open.
    assert_eq!(proxy.addr(), addr);
    drop(socket);

    let reply = early.await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let reply = fetch(addr, &get(&origin, "/bytes/10")).await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());

    // An upgrade hands the same socket on, matched by name again.
    let (_proxy, _reap) = upgrade_and_wait(proxy).await;
    let reply = fetch(addr, &get(&origin, "/bytes/10")).await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
}

/// Under systemd (`Type=notify`), Postern says when it is ready, reloading
/// and stopping; after an upgrade, the new process names itself the main one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    let dir = std::env::temp_dir().join(format!("postern-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let next = |socket: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let proxy = TestProxy::start_command(&config("old"), |config| {
        let mut command = Command::new(BIN);
        command.arg("-c").arg(config).env("NOTIFY_SOCKET", &path);
        command
    });
    let (mut messages, proxy, notify) = tokio::task::spawn_blocking(move || {
        let mut messages = vec![next(&notify)];
        proxy.signal(1);
        messages.push(next(&notify));
        messages.push(next(&notify));
        proxy.signal(SIGUSR2);
        messages.push(next(&notify));
        proxy.wait_exit(WAIT);
        (messages, proxy, notify)
    })
    .await
    .unwrap();
    let line = proxy.wait_for_stderr_line(|l| l.contains("accepts on the listeners now"), WAIT);
    let new = successor(&line);
    let _reap = Reap(new);
    // The old process has exited: whatever it sent is here already.
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let after = notify
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(after.is_err(), "{after:?}");
    notify.set_nonblocking(false).unwrap();
    let _ = Command::new("kill")
        .args(["-15", &new.to_string()])
        .status();
    messages.push(next(&notify));
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(messages[0], "READY=1");
    assert!(
        messages[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{messages:?}"
    );
    assert_eq!(messages[2], "READY=1");
    // The old process stops without STOPPING=1: the service goes on.
    assert_eq!(messages[3], format!("MAINPID={new}\nREADY=1"));
    assert_eq!(messages[4], "STOPPING=1");
}

/// SIGTERM while an upgrade's new process is still starting (here: it
/// waits to read a blocklist from a pipe) stops that process too, and from
/// the stop on, new clients are refused rather than queued for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_an_upgrade_stops_the_new_process_and_refuses_clients() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start(BIN, &config("old"));
    let addr = proxy.addr();
    let fifo = proxy.dir().join("list.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::fs::write(
        proxy.dir().join("postern.toml"),
        format!(
            "{}[[blocklist]]\nname = \"slow\"\nfile = \"{}\"\n",
            config("new"),
            fifo.display()
        ),
    )
    .unwrap();
    proxy.signal(SIGUSR2);
    let line = proxy.wait_for_stderr_line(|l| l.contains("upgrade: started"), WAIT);
    let new = successor(&line);
    let _reap = Reap(new);

    // A request in flight keeps the old process draining for a while.
    let request = get(&origin, "/delay/3000");
    let slow = tokio::spawn(async move { raw_exchange(addr, &request, WAIT).await });
    let deadline = Instant::now() + WAIT;
    while origin.requests() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.signal(15);
    proxy.wait_for_stderr_line(|l| l.starts_with("postern: stopping;"), WAIT);
    let deadline = Instant::now() + WAIT;
    while running(new) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!running(new), "{}", proxy.stderr());
    // The accept loops close their sockets as they see the stop: from then
    // on, while the old process still drains, new clients are refused.
    let mut refused = false;
    while !slow.is_finished() {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "new clients were queued while the old process drained"
    );
    let reply = slow.await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
}

/// A server the operator drained through the admin API stays drained in the
/// new process (it would otherwise take clients again after an upgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_the_server_states_set_through_the_admin_api() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let proxy = TestProxy::start(
        BIN,
        &format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\
             [[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n\
             [log]\naccess = \"off\"\n\
             [[pool]]\nname = \"app\"\nservers = [\"{}\", \"{}\"]\n\
             [[route]]\nlistener = \"web\"\npool = \"app\"\n",
            a.addr(),
            b.addr()
        ),
    );
    let (web, admin) = (proxy.addr_of("web"), proxy.addr_of("admin"));
    let drain = format!(
        "POST /api/pools/app/servers/{}/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        a.addr()
    );
    let reply = fetch(admin, drain.as_bytes()).await.unwrap();
    assert_eq!(reply.status(), Some(200), "{}", reply.text());

    let (_proxy, _reap) = upgrade_and_wait(proxy).await;

    let before = a.requests();
    let request = b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for _ in 0..10 {
        let reply = fetch(web, request).await.unwrap();
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
    }
    assert_eq!(a.requests(), before, "the drained server took clients");
    assert!(b.requests() >= 10);
}

/// `POST /api/upgrade` on the admin listener starts an upgrade as SIGUSR2
/// does, and says when it cannot (one is under way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_starts_an_upgrade() {
    let admin = "[[listener]]\nname = \"admin\"\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\n[log]\naccess = \"off\"\n";
    let proxy = TestProxy::start(BIN, admin);
    // The new process waits to read a blocklist from a pipe: the upgrade
    // stays under way until the test writes it.
    let fifo = proxy.dir().join("list.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        proxy.dir().join("postern.toml"),
        format!(
            "{admin}[[blocklist]]\nname = \"slow\"\nfile = \"{}\"\n",
            fifo.display()
        ),
    )
    .unwrap();
    let request =
        b"POST /api/upgrade HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let reply = fetch(proxy.addr(), request).await.unwrap();
    assert_eq!(reply.status(), Some(202), "{}", reply.text());
    let _reap = Reap(successor(&reply.text()));
    let again = fetch(proxy.addr(), request).await.unwrap();
    assert_eq!(again.status(), Some(409), "{}", again.text());
    assert!(
        again.text().contains("already under way"),
        "{}",
        again.text()
    );
    // A reload meanwhile could take ports the new process needs.
    let reload =
        b"POST /api/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let refused = fetch(proxy.addr(), reload).await.unwrap();
    assert_eq!(refused.status(), Some(422), "{}", refused.text());
    assert!(
        refused.text().contains("an upgrade is under way"),
        "{}",
        refused.text()
    );
    // So is a server state change, which the new process would not have.
    let drain = b"POST /api/pools/app/servers/127.0.0.1:9/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let refused = fetch(proxy.addr(), drain).await.unwrap();
    assert_eq!(refused.status(), Some(409), "{}", refused.text());

    tokio::task::spawn_blocking(move || std::fs::write(fifo, "ads.example\n"))
        .await
        .unwrap()
        .unwrap();
    proxy.wait_for_stderr_line(|l| l.contains("accepts on the listeners now"), WAIT);
    let health = fetch(
        proxy.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(health.status(), Some(200), "{}", health.text());
}
