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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::ListenerConfig;

const LISTEN_FDS: &str = "POSTERN_LISTEN_FDS";
const LISTEN_FDNAMES: &str = "POSTERN_LISTEN_FDNAMES";
/// The configured `bind` of each socket's listener in the old process.
const LISTEN_BINDS: &str = "POSTERN_LISTEN_BINDS";
const READY_FD: &str = "POSTERN_READY_FD";
const UPGRADE_FROM: &str = "POSTERN_UPGRADE_FROM";
/// Server states set through the admin API, which an upgrade keeps.
const SERVER_STATES: &str = "POSTERN_SERVER_STATES";

/// Environment of this process's own that programs it starts for other
/// purposes (auth programs) must not see.
pub const PRIVATE_ENVIRONMENT: &[&str] = &[
    LISTEN_FDS,
    LISTEN_FDNAMES,
    LISTEN_BINDS,
    READY_FD,
    UPGRADE_FROM,
    SERVER_STATES,
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

/// How long a new process may take to accept on the listeners before the
/// upgrade is given up (a large blocklist or disk cache takes seconds).
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Where inherited sockets came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The previous process, on an upgrade: a socket serves the listener
    /// with its address, or the listener of the same name and the same
    /// configured address (a port the system chose, a name systemd gave).
    Upgrade,
    /// systemd (`LISTEN_FDS`): a socket serves the listener with its
    /// address, or the listener its `FileDescriptorName=` names.
    Systemd,
}

struct Socket {
    fd: OwnedFd,
    addr: SocketAddr,
    name: Option<String>,
    /// The old process's configured address for it (upgrades).
    bind: Option<SocketAddr>,
}

/// The listening sockets this process was started with, and how to say it
/// is ready.
pub struct Inherited {
    source: Source,
    sockets: Vec<Socket>,
    /// The pipe to the process that started this one (on an upgrade).
    ready: Option<OwnedFd>,
    /// What the admin API had set in that process.
    pub servers: Vec<ServerOverride>,
}

/// A server's state or weight set through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOverride {
    pub pool: String,
    pub server: String,
    pub admin: Option<crate::reverse::spec::AdminState>,
    /// 0: the configured weight.
    pub weight: u32,
}

/// Records and their fields are kept apart by the ASCII separators, which
/// no pool name or server address contains.
const RECORD: char = '\u{1e}';
const FIELD: char = '\u{1f}';

fn encode_overrides(servers: &[ServerOverride]) -> String {
    servers
        .iter()
        .map(|s| {
            let admin = s.admin.map_or("-", |a| a.as_str());
            format!(
                "{}{FIELD}{}{FIELD}{admin}{FIELD}{}",
                s.pool, s.server, s.weight
            )
        })
        .collect::<Vec<_>>()
        .join(&RECORD.to_string())
}

fn decode_overrides(text: &str) -> Vec<ServerOverride> {
    text.split(RECORD)
        .filter_map(|record| {
            let mut fields = record.split(FIELD);
            let (pool, server, admin, weight) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            Some(ServerOverride {
                pool: pool.to_string(),
                server: server.to_string(),
                admin: crate::reverse::spec::AdminState::parse(admin),
                weight: weight.parse().ok()?,
            })
        })
        .collect()
}

impl Inherited {
    /// Reads what the environment hands over: sockets from an upgrading
    /// parent, or from systemd. To be called before this process opens any
    /// descriptor of its own (the runtime's among them), so that every
    /// number named is one it inherited. Descriptors that are not listening
    /// TCP sockets are left alone, with a warning.
    pub fn from_env() -> Inherited {
        let mut inherited = Inherited {
            source: Source::Upgrade,
            sockets: Vec::new(),
            ready: None,
            servers: Vec::new(),
        };
        let parent = std::os::unix::process::parent_id().to_string();
        let fds = std::env::var(LISTEN_FDS).unwrap_or_default();
        let fds = fds.split(',').filter(|f| !f.is_empty());
        if std::env::var(UPGRADE_FROM).is_ok_and(|p| p == parent) {
            let names = std::env::var(LISTEN_FDNAMES).unwrap_or_default();
            let binds = std::env::var(LISTEN_BINDS).unwrap_or_default();
            let (mut names, mut binds) = (names.split(':'), binds.split(','));
            for fd in fds {
                let name = names.next().filter(|n| !n.is_empty()).map(str::to_string);
                let bind = binds.next().and_then(|b| b.parse().ok());
                inherited.adopt(fd, name, bind);
            }
            inherited.ready = std::env::var(READY_FD)
                .ok()
                .and_then(|fd| fd.parse::<RawFd>().ok())
                .and_then(owned_if_open);
            inherited.servers = decode_overrides(&std::env::var(SERVER_STATES).unwrap_or_default());
            return inherited;
        }
        if std::env::var_os(UPGRADE_FROM).is_some() {
            // The process that started this one is gone: its sockets are
            // nobody's now, and this process binds its own.
            for fd in fds {
                if let Some(fd) = fd.parse::<RawFd>().ok().and_then(owned_if_open) {
                    if listening_address(fd.as_fd()).is_some() {
                        drop(fd);
                    } else {
                        let _ = fd.into_raw_fd();
                    }
                }
            }
            if let Some(fd) = std::env::var(READY_FD)
                .ok()
                .and_then(|fd| fd.parse::<RawFd>().ok())
            {
                drop(owned_if_open(fd));
            }
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
                inherited.adopt(&fd.to_string(), name, None);
            }
        }
        inherited
    }

    fn adopt(&mut self, fd: &str, name: Option<String>, bind: Option<SocketAddr>) {
        let Some(fd) = fd.parse::<RawFd>().ok().and_then(owned_if_open) else {
            eprintln!("postern: inherited descriptor {fd:?} is not open; ignored");
            return;
        };
        match listening_address(fd.as_fd()) {
            Some(addr) => self.sockets.push(Socket {
                fd,
                addr,
                name,
                bind,
            }),
            None => {
                eprintln!(
                    "postern: inherited descriptor {} is not a listening TCP socket; ignored",
                    fd.as_raw_fd()
                );
                // Not ours to close.
                let _ = fd.into_raw_fd();
            }
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
                    Source::Upgrade => by_name(s) && s.bind == Some(listener.bind),
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
        match self.ready.take() {
            Some(fd) => {
                // systemd first: the old process ends once it has the byte,
                // and systemd must know by then which process is the service
                // (`MAINPID=` needs `NotifyAccess=all`).
                notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
                let _ = io::Write::write_all(&mut std::fs::File::from(fd), b"R");
            }
            None => notify("READY=1"),
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
/// (listener name, configured address and listening socket).
pub fn spawn_successor(
    exe: &Path,
    sockets: &[(String, SocketAddr, BorrowedFd<'_>)],
    servers: &[ServerOverride],
) -> io::Result<Successor> {
    let (read, write) = pipe()?;
    let fds: Vec<RawFd> = sockets.iter().map(|(_, _, fd)| fd.as_raw_fd()).collect();
    let list = fds
        .iter()
        .map(RawFd::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // A name that cannot be written in the list is left out: that listener
    // is then matched by its address only.
    let names = sockets
        .iter()
        .map(|(n, _, _)| if n.contains([':', '\n']) { "" } else { n })
        .collect::<Vec<_>>()
        .join(":");
    let binds = sockets
        .iter()
        .map(|(_, bind, _)| bind.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut keep = fds;
    keep.push(write.as_raw_fd());
    let mut command = tokio::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(LISTEN_FDS, list)
        .env(LISTEN_FDNAMES, names)
        .env(LISTEN_BINDS, binds)
        .env(SERVER_STATES, encode_overrides(servers))
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
        match tokio::time::timeout(READY_WITHIN, self.ready.read(&mut byte)).await {
            Ok(Ok(1)) => Ok(self.pid),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(format!(
                    "process {} did not accept within {} s; stopped it",
                    self.pid,
                    READY_WITHIN.as_secs()
                ))
            }
            Ok(_) => match self.child.wait().await {
                Ok(status) => Err(format!("process {} exited ({status})", self.pid)),
                Err(e) => Err(format!("process {}: {e}", self.pid)),
            },
        }
    }
}

/// The path this binary was started by, for an upgrade to start again:
/// `argv[0]` as given (a symbolic link an upgrade switches stays a link),
/// made absolute, or found on `PATH`; else where the running file is.
pub fn own_path() -> io::Result<std::path::PathBuf> {
    let given = std::env::args_os().next().map(std::path::PathBuf::from);
    let found = given.and_then(|argv0| {
        if argv0.as_os_str().as_bytes().contains(&b'/') {
            std::path::absolute(&argv0).ok()
        } else {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(&argv0))
                .find(|candidate| candidate.is_file())
                .and_then(|p| std::path::absolute(p).ok())
        }
    });
    match found {
        Some(path) => Ok(path),
        None => std::env::current_exe(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reverse::spec::AdminState;

    #[test]
    fn server_overrides_survive_the_environment() {
        let servers = vec![
            ServerOverride {
                pool: "app".into(),
                server: "10.0.0.1:80".into(),
                admin: Some(AdminState::Drain),
                weight: 0,
            },
            ServerOverride {
                pool: "web pool".into(),
                server: "[::1]:8080".into(),
                admin: None,
                weight: 7,
            },
        ];
        assert_eq!(decode_overrides(&encode_overrides(&servers)), servers);
        assert!(decode_overrides("").is_empty());
    }
}
