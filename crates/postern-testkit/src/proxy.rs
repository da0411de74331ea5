//! [`TestProxy`] runs the real `postern` binary against a generated config in
//! a fresh temporary directory, waits for its listener readiness lines and
//! kills it on drop. [`check_config`] runs `postern check`.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// One listener announced by the binary on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    pub name: String,
    pub mode: String,
    pub addr: SocketAddr,
}

/// A running `postern` process. Dropping it kills the process (SIGKILL) and
/// removes its temporary directory.
pub struct TestProxy {
    child: Mutex<Child>,
    pid: u32,
    dir: PathBuf,
    listeners: Vec<ListenerInfo>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl TestProxy {
    /// Writes `config_toml` (with every `{dir}` replaced by the temporary
    /// directory) to `{dir}/postern.toml`, runs `bin -c {dir}/postern.toml`
    /// and waits until one readiness line per `[[listener]]` table (at least
    /// one) has appeared on stderr. Panics with the captured output if the
    /// process exits first or 20 s pass.
    pub fn start(bin: &str, config_toml: &str) -> TestProxy {
        Self::start_command(config_toml, |path| {
            let mut command = Command::new(bin);
            command.arg("-c").arg(path);
            command
        })
    }

    /// As [`start`](Self::start), with the command `command` makes for the
    /// config file's path (another way to start the binary, extra
    /// environment, descriptors to inherit). Its standard streams are set here.
    pub fn start_command(config_toml: &str, command: impl FnOnce(&Path) -> Command) -> TestProxy {
        let dir = fresh_dir();
        let config = config_toml.replace("{dir}", &dir.to_string_lossy());
        let path = dir.join("postern.toml");
        fs::write(&path, &config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let expected = count_listeners(&config).max(1);

        let mut command = command(&path);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        let pid = child.id();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        drain(
            child.stdout.take().expect("piped stdout"),
            stdout.clone(),
            None,
        );
        drain(
            child.stderr.take().expect("piped stderr"),
            stderr.clone(),
            Some(tx),
        );

        let mut listeners = Vec::new();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let failure = loop {
            if listeners.len() >= expected {
                break None;
            }
            let now = Instant::now();
            if now >= deadline {
                break Some(format!("no readiness after {STARTUP_TIMEOUT:?}"));
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
                Ok(line) => listeners.extend(parse_listener_line(&line)),
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Let the reader collect the last output.
                        while rx.recv_timeout(Duration::from_secs(1)).is_ok() {}
                        break Some(format!("exited early with {status}"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    break Some(format!("closed stderr (exit status {status:?})"));
                }
            }
        };
        if let Some(reason) = failure {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "postern {reason}; saw {}/{expected} listener lines\n--- config ---\n{config}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                listeners.len(),
                lock(&stderr),
                lock(&stdout),
            );
        }
        TestProxy {
            child: Mutex::new(child),
            pid,
            dir,
            listeners,
            stdout,
            stderr,
        }
    }

    /// Address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Address of the listener called `name`; panics if there is none.
    pub fn addr_of(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
            .unwrap_or_else(|| panic!("no listener named {name:?}: {:?}", self.listeners))
    }

    /// All announced listeners, in announcement order.
    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    /// `http://ADDR` of the first listener.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The temporary directory holding the config (and whatever `{dir}`
    /// paths in it point to).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        lock(&self.stdout).clone()
    }

    /// Everything written to stderr so far (including the readiness lines).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Sends signal number `sig` (e.g. 1 for SIGHUP, 15 for SIGTERM).
    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        if !status.success() {
            eprintln!("kill -{sig} {} failed: {status}", self.pid);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = lock(&self.child).try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Contents of `name` in [`dir`](Self::dir) (lossy UTF-8; empty if
    /// missing).
    pub fn read_file(&self, name: &str) -> String {
        fs::read(self.dir.join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Polls file `name` in [`dir`](Self::dir) until a line satisfies
    /// `predicate` and returns that line; panics with the file's contents
    /// after `timeout`.
    pub fn wait_for_file_line(
        &self,
        name: &str,
        predicate: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let contents = self.read_file(name);
            if let Some(line) = contents.lines().find(|l| predicate(l)) {
                return line.to_owned();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no matching line in {name} after {timeout:?}\n--- {name} ---\n{contents}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Polls the captured stderr until a line satisfies `predicate` and
    /// returns that line; panics with the captured stderr after `timeout`.
    pub fn wait_for_stderr_line(
        &self,
        predicate: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let contents = self.stderr();
            if let Some(line) = contents.lines().find(|l| predicate(l)) {
                return line.to_owned();
            }
            if Instant::now() >= deadline {
                panic!("no matching stderr line after {timeout:?}\n--- stderr ---\n{contents}");
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        {
            let mut child = lock(&self.child);
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- postern stderr (pid {}) ---\n{}",
                self.pid,
                self.stderr()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes `config_toml` (with `{dir}` replaced) to `postern.toml` in a fresh
/// temporary directory and runs `bin check -c <that file>`. Returns the exit
/// code (-1 if killed by a signal), stdout and stderr.
pub fn check_config(bin: &str, config_toml: &str) -> (i32, String, String) {
    let dir = fresh_dir();
    let config = config_toml.replace("{dir}", &dir.to_string_lossy());
    let path = dir.join("postern.toml");
    fs::write(&path, config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let output = Command::new(bin)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {bin} check: {e}"));
    let _ = fs::remove_dir_all(&dir);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates `temp_dir()/postern-test-<pid>-<counter>-<nanos>`.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("postern-test-{}-{n}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Reads `from` line by line into `buf` (and `lines`, while someone listens)
/// on a background thread until EOF.
fn drain(
    from: impl Read + Send + 'static,
    buf: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).into_owned();
            lock(&buf).push_str(&line);
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

/// Number of `[[listener]]` table headers in a config.
fn count_listeners(config: &str) -> usize {
    config
        .lines()
        .filter(|l| l.trim_start().starts_with("[[listener]]"))
        .count()
}

/// Parses `postern: listener NAME (MODE) listening on ADDR`.
fn parse_listener_line(line: &str) -> Option<ListenerInfo> {
    const PREFIX: &str = "postern: listener ";
    let start = line.find(PREFIX)? + PREFIX.len();
    let (head, addr) = line[start..].trim_end().rsplit_once(" listening on ")?;
    let addr = addr.trim().parse().ok()?;
    let (name, mode) = head.rsplit_once(" (")?;
    let mode = mode.strip_suffix(')')?;
    Some(ListenerInfo {
        name: name.to_owned(),
        mode: mode.to_owned(),
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listener_lines() {
        assert_eq!(
            parse_listener_line("postern: listener proxy (forward) listening on 127.0.0.1:41234\n"),
            Some(ListenerInfo {
                name: "proxy".into(),
                mode: "forward".into(),
                addr: "127.0.0.1:41234".parse().unwrap(),
            })
        );
        assert_eq!(
            parse_listener_line("postern: listener rev (reverse) listening on [::1]:8080")
                .map(|l| (l.name, l.mode, l.addr)),
            Some((
                "rev".into(),
                "reverse".into(),
                "[::1]:8080".parse().unwrap()
            ))
        );
        assert_eq!(parse_listener_line("postern: starting"), None);
        assert_eq!(
            parse_listener_line("postern: listener x (forward) listening on nowhere"),
            None
        );
    }

    #[test]
    fn counts_listener_tables() {
        let config = "[[listener]]\nname = \"a\"\n\n  [[listener]]\nname = \"b\"\n[[listener.rule]]\n# [[listener]]\n";
        // `[[listener.rule]]` is not a listener table.
        assert_eq!(count_listeners(config), 2);
    }

    #[test]
    fn fresh_dirs_are_unique() {
        let a = fresh_dir();
        let b = fresh_dir();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    /// Exercises the harness against stand-in shell scripts. A single test
    /// writes and runs all scripts, so no concurrent fork can hold a script
    /// open for writing while it is executed.
    #[test]
    fn drives_stand_in_binaries() {
        use std::os::unix::fs::PermissionsExt;

        let scripts = fresh_dir();
        let script = |name: &str, body: &str| -> String {
            let path = scripts.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path.to_string_lossy().into_owned()
        };
        let good = script(
            "good.sh",
            "echo \"postern: listener proxy (forward) listening on 127.0.0.1:1111\" >&2\n\
             echo \"config at $2\"\n\
             echo \"postern: listener rev (reverse) listening on [::1]:2222\" >&2\n\
             exec sleep 30\n",
        );
        let bad = script("bad.sh", "echo \"postern: bad config\" >&2\nexit 2\n");
        let check = script("check.sh", "echo \"$1 $2 $3\"\necho oops >&2\nexit 3\n");

        let config = "[[listener]]\nname = \"proxy\"\n[[listener]]\nname = \"rev\"\nlog = \"{dir}/access.log\"\n";
        let proxy = TestProxy::start(&good, config);
        assert_eq!(proxy.addr(), "127.0.0.1:1111".parse().unwrap());
        assert_eq!(proxy.addr_of("rev"), "[::1]:2222".parse().unwrap());
        assert_eq!(proxy.proxy_url(), "http://127.0.0.1:1111");
        assert_eq!(proxy.listeners().len(), 2);
        let written = proxy.read_file("postern.toml");
        assert!(written.contains(&format!("log = \"{}/access.log\"", proxy.dir().display())));
        assert_eq!(proxy.read_file("missing"), "");
        fs::write(proxy.dir().join("access.log"), "one\ntwo\n").unwrap();
        let line =
            proxy.wait_for_file_line("access.log", |l| l.starts_with('t'), Duration::from_secs(5));
        assert_eq!(line, "two");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proxy.stdout().contains("config at ") {
            assert!(Instant::now() < deadline, "stdout: {:?}", proxy.stdout());
            thread::sleep(POLL);
        }
        assert!(proxy.stderr().contains("listener rev (reverse)"));
        assert_eq!(proxy.wait_exit(Duration::from_millis(20)), None);
        proxy.signal(15);
        let status = proxy
            .wait_exit(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        assert!(!status.success());
        let dir = proxy.dir().to_path_buf();
        drop(proxy);
        assert!(!dir.exists());

        let failed = std::panic::catch_unwind(|| TestProxy::start(&bad, "[[listener]]\n"))
            .err()
            .expect("start fails when the binary exits");
        let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("postern: bad config"), "{message}");

        let (code, stdout, stderr) = check_config(&check, "x = 1\n");
        assert_eq!(code, 3);
        assert!(stdout.starts_with("check -c "), "{stdout}");
        assert!(stdout.trim_end().ends_with("/postern.toml"), "{stdout}");
        assert_eq!(stderr, "oops\n");

        fs::remove_dir_all(&scripts).unwrap();
    }
}
