//! Listening sockets that outlive a process: handed to a new copy of the
//! binary on SIGUSR2 (an upgrade that refuses no connection, as nginx's USR2
//! and HAProxy's `-x`), or received from systemd (socket activation). Also
//! tells systemd how the process is doing (`sd_notify`).
//!
//! An upgrade: the running process starts its binary again with the same
//! arguments, passing its listening sockets (`POSTERN_LISTEN_FDS`, names in
//! `POSTERN_LISTEN_FDNAMES`) and the write end of a pipe
//! (`POSTERN_READY_FD`). The new process loads its configuration, takes the
//! sockets whose listeners it still has, and writes one byte to the pipe once
//! it accepts on all of them; only then does the old process stop accepting
//! and drain. Connections waiting in a socket's backlog belong to the socket,
//! which never closes, so none is refused. If the new process fails (a bad
//! configuration, a missing binary) the pipe closes without that byte and
//! the old process keeps serving.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::ListenerConfig;

const LISTEN_FDS: &str = "POSTERN_LISTEN_FDS";
const LISTEN_FDNAMES: &str = "POSTERN_LISTEN_FDNAMES";
const READY_FD: &str = "POSTERN_READY_FD";
const UPGRADE_FROM: &str = "POSTERN_UPGRADE_FROM";

/// Where inherited sockets came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The previous process, on an upgrade: a socket serves the listener
    /// with its address (or its name, for a port chosen by the system).
    Upgrade,
    /// systemd (`LISTEN_FDS`): a socket serves the listener with its
    /// address, or the listener its `FileDescriptorName=` names.
    Systemd,
}

struct Socket {
    fd: OwnedFd,
    addr: SocketAddr,
    name: Option<String>,
}

/// The listening sockets this process was started with, and how to say it
/// is ready.
pub struct Inherited {
    source: Source,
    sockets: Vec<Socket>,
    /// The pipe to the process that started this one (on an upgrade).
    ready: Option<OwnedFd>,
}

impl Inherited {
    /// Reads what the environment hands over: sockets from an upgrading
    /// parent, or from systemd. Descriptors that are not listening TCP
    /// sockets are left alone, with a warning.
    pub fn from_env() -> Inherited {
        let mut inherited = Inherited {
            source: Source::Upgrade,
            sockets: Vec::new(),
            ready: None,
        };
        let parent = std::os::unix::process::parent_id().to_string();
        if std::env::var(UPGRADE_FROM).is_ok_and(|p| p == parent) {
            let fds = std::env::var(LISTEN_FDS).unwrap_or_default();
            let names = std::env::var(LISTEN_FDNAMES).unwrap_or_default();
            let fds = fds.split(',').filter(|f| !f.is_empty());
            let mut names = names.split(':');
            for fd in fds {
                let name = names.next().map(str::to_string);
                inherited.adopt(fd, name);
            }
            inherited.ready = std::env::var(READY_FD)
                .ok()
                .and_then(|fd| fd.parse::<RawFd>().ok())
                .and_then(owned_if_open);
            return inherited;
        }
        // sd_listen_fds(3): descriptors 3.. for this very process.
        let me = std::process::id().to_string();
        if std::env::var("LISTEN_PID").is_ok_and(|p| p == me) {
            inherited.source = Source::Systemd;
            let count = std::env::var("LISTEN_FDS")
                .ok()
                .and_then(|n| n.parse::<RawFd>().ok())
                .unwrap_or(0)
                .clamp(0, 4096);
            let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
            let mut names = names.split(':');
            for fd in 3..3 + count {
                let name = names.next().filter(|n| !n.is_empty()).map(str::to_string);
                inherited.adopt(&fd.to_string(), name);
            }
        }
        inherited
    }

    fn adopt(&mut self, fd: &str, name: Option<String>) {
        let Some(fd) = fd.parse::<RawFd>().ok().and_then(owned_if_open) else {
            eprintln!("postern: inherited descriptor {fd:?} is not open; ignored");
            return;
        };
        match listening_address(fd.as_fd()) {
            Some(addr) => self.sockets.push(Socket { fd, addr, name }),
            None => eprintln!(
                "postern: inherited descriptor {} is not a listening TCP socket; ignored",
                fd.as_raw_fd()
            ),
        }
    }

    /// The inherited socket that serves `listener`, if there is one.
    pub fn take(&mut self, listener: &ListenerConfig) -> Option<io::Result<std::net::TcpListener>> {
        let by_name = |s: &Socket| s.name.as_deref() == Some(listener.name.as_str());
        let at = self
            .sockets
            .iter()
            .position(|s| s.addr == listener.bind)
            .or_else(|| {
                self.sockets.iter().position(|s| match self.source {
                    Source::Systemd => by_name(s),
                    Source::Upgrade => {
                        by_name(s) && listener.bind.port() == 0 && s.addr.ip() == listener.bind.ip()
                    }
                })
            })?;
        let socket = socket2::Socket::from(self.sockets.remove(at).fd);
        let configured = socket
            .set_nonblocking(true)
            // Accepted sockets inherit it (see `ingress::bind`); systemd's
            // sockets come without it.
            .and_then(|()| socket.set_nodelay(true));
        Some(configured.map(|()| socket.into()))
    }

    /// After every listener took its socket: the ones left are closed, and
    /// the process that handed them over (or systemd) hears that this one is ready.
    pub fn ready(mut self) {
        for s in self.sockets.drain(..) {
            eprintln!(
                "postern: inherited socket {} matches no listener; closed",
                s.addr
            );
        }
        let upgraded = self.ready.is_some();
        if let Some(fd) = self.ready.take() {
            let _ = io::Write::write_all(&mut std::fs::File::from(fd), b"R");
        }
        if upgraded {
            // The old process ends soon: systemd follows this one instead
            // (needs `NotifyAccess=all`).
            notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
        } else {
            notify("READY=1");
        }
    }
}

/// Takes `fd` if it is open, marking it close-on-exec (as every descriptor
/// this process opens itself).
fn owned_if_open(fd: RawFd) -> Option<OwnedFd> {
    if fd < 3 {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: F_GETFD/F_SETFD read and set the flags of a descriptor number;
    // an invalid one fails with EBADF. Once it is known to be open, nothing
    // else in this process owns it: it was handed over at exec.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return None;
        }
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// The local address of a listening TCP socket; `None` for anything else.
fn listening_address(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(&fd);
    let stream = socket.r#type().ok()? == socket2::Type::STREAM;
    let listening = socket.is_listener().ok()?;
    let addr = socket.local_addr().ok()?.as_socket()?;
    (stream && listening).then_some(addr)
}

/// A new process started by [`spawn_successor`], not ready yet.
pub struct Successor {
    pub pid: u32,
    child: tokio::process::Child,
    ready: tokio::net::unix::pipe::Receiver,
}

/// Starts `exe` with this process's arguments, handing it `sockets`
/// (listener name and listening socket).
pub fn spawn_successor(exe: &Path, sockets: &[(String, BorrowedFd<'_>)]) -> io::Result<Successor> {
    let (read, write) = pipe()?;
    let fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let list = fds
        .iter()
        .map(RawFd::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // A name that cannot be written in the list is left out: that listener
    // is then matched by its address only.
    let names = sockets
        .iter()
        .map(|(n, _)| if n.contains([':', '\n']) { "" } else { n })
        .collect::<Vec<_>>()
        .join(":");
    let mut keep = fds;
    keep.push(write.as_raw_fd());
    let mut command = tokio::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(LISTEN_FDS, list)
        .env(LISTEN_FDNAMES, names)
        .env(READY_FD, write.as_raw_fd().to_string())
        .env(UPGRADE_FROM, std::process::id().to_string())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .kill_on_drop(false);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the child between fork and exec, and only
    // calls fcntl (async-signal-safe) on descriptors the parent keeps open
    // until `spawn` returns.
    unsafe {
        command.pre_exec(move || {
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Only the child holds the write end now: its exit closes the pipe.
    drop(write);
    Ok(Successor {
        pid: child.id().unwrap_or(0),
        child,
        ready: tokio::net::unix::pipe::Receiver::from_owned_fd(read)?,
    })
}

impl Successor {
    /// Waits until the new process accepts on every listener; the error
    /// says why it never will.
    pub async fn ready(mut self) -> Result<u32, String> {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        match self.ready.read(&mut byte).await {
            Ok(1) => Ok(self.pid),
            _ => match self.child.wait().await {
                Ok(status) => Err(format!("process {} exited ({status})", self.pid)),
                Err(e) => Err(format!("process {}: {e}", self.pid)),
            },
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    #[allow(unsafe_code)]
    // SAFETY: pipe2 writes two new descriptors into the array on success;
    // they are owned from then on.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// sd_notify(3): tells systemd about the process's state, when it runs
/// under systemd with `Type=notify` (otherwise nothing happens).
pub fn notify(state: &str) {
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name)
        }
        None => UnixAddr::from_pathname(&path),
    };
    if let (Ok(addr), Ok(socket)) = (addr, UnixDatagram::unbound()) {
        let _ = socket.send_to_addr(state.as_bytes(), &addr);
    }
}

/// `RELOADING=1` as `Type=notify-reload` wants it: with the monotonic clock.
pub fn notify_reloading() {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: clock_gettime writes the struct passed by pointer.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}
