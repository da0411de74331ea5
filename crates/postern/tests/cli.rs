//! The command line and configuration files, as a user meets them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_testkit::{Origin, check_config};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("postern ") && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
}

#[test]
fn example_configuration_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../postern.example.toml");
    let out = Command::new(BIN)
        .args(["check", "-c", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_key_is_located_with_a_hint() {
    let (code, _, stderr) = check_config(
        BIN,
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmdoe = \"forward\"\n",
    );
    assert_eq!(code, 1);
    let line = stderr.lines().next().unwrap_or_default();
    assert!(
        line.ends_with("postern.toml:3:1: unknown key `mdoe` (did you mean `mode`?)"),
        "{stderr}"
    );
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let (code, _, stderr) = check_config(
        BIN,
        "[[listener]]\nbind = \"localhost\"\nmode = \"proxy\"\n[log]\nformat = \"xml\"\n[egress]\nconnect_ports = [443, 70000]\n",
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].contains("postern.toml:2:8: `localhost` is not an address"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("postern.toml:3:8: unknown listener mode `proxy`"),
        "{stderr}"
    );
    assert!(
        lines[2].contains("postern.toml:5:10: unknown log format `xml`"),
        "{stderr}"
    );
    assert!(
        lines[3].contains("postern.toml:7:23: `70000` is not a TCP port"),
        "{stderr}"
    );
}

#[test]
fn h2c_takes_true_false_or_only() {
    let (code, _, stderr) = check_config(
        BIN,
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = \"sometimes\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("postern.toml:4:7: `h2c` must be true, false or \"only\""),
        "{stderr}"
    );
    let (code, _, stderr) = check_config(
        BIN,
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\nh2c = \"only\"\n",
    );
    assert_eq!(code, 0, "{stderr}");
}

/// Durations beyond ten years would overflow the clock at run time (on
/// every keep-alive connection, on SIGTERM); sizes beyond 64 bits cannot be
/// held at all. Both are refused where they are written.
#[test]
fn durations_beyond_ten_years_and_huge_sizes_are_refused() {
    let (code, _, stderr) = check_config(
        BIN,
        "[timeouts]\n\
         drain = \"9999999999999999h\"\n\
         client_idle = 9223372036854775807\n\
         connect = \"87600h\"\n\
         [limits]\n\
         max_header_size = \"99999999999999999999GiB\"\n\
         [cache]\n\
         stale_if_unreachable = \"999999999999h\"\n\
         [[pool]]\n\
         name = \"app\"\n\
         servers = [\"127.0.0.1:1\"]\n\
         queue_timeout = 315360001\n\
         health = { interval = \"87601h\" }\n\
         outlier = { ejection_time = \"315360000001ms\" }\n",
    );
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let too_long = "is too long (at most ten years: 87600h, or 315360000 seconds)";
    let expected = [
        format!("postern.toml:2:9: timeout `drain`: duration `9999999999999999h` {too_long}"),
        format!(
            "postern.toml:3:15: timeout `client_idle`: duration 9223372036854775807 {too_long}"
        ),
        "postern.toml:6:19: `max_header_size`: size `99999999999999999999GiB` is too large".into(),
        format!("postern.toml:8:24: `stale_if_unreachable`: duration `999999999999h` {too_long}"),
        format!("postern.toml:12:17: `queue_timeout`: duration 315360001 {too_long}"),
        format!("postern.toml:13:23: `interval`: duration `87601h` {too_long}"),
        format!("postern.toml:14:29: `ejection_time`: duration `315360000001ms` {too_long}"),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.ends_with(want.as_str()), "{line}\nwanted: {want}");
    }
    // Exactly ten years is allowed.
    let (code, _, stderr) = check_config(
        BIN,
        "[timeouts]\ndrain = \"87600h\"\nclient_idle = 315360000\n",
    );
    assert_eq!(code, 0, "{stderr}");
}

/// A mistake in a value that takes several forms names the key and the
/// forms; a typo in a server table gets the hint any other table gets.
#[test]
fn values_of_several_forms_get_clear_messages() {
    let (code, _, stderr) = check_config(BIN, "[timeouts]\ndrain = 1.5\n");
    assert_eq!(code, 1);
    assert!(
        stderr.trim_end().ends_with(
            "postern.toml:2:9: `drain` must be a duration such as \"500ms\", \"30s\", \"5m\" \
             or \"1h\", or a whole number of seconds (found floating point `1.5`)"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = check_config(
        BIN,
        "[[pool]]\nname = \"app\"\nservers = [{ addr = \"127.0.0.1:1\", wieght = 5 }]\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr
            .trim_end()
            .ends_with("postern.toml:3:36: unknown key `wieght` (did you mean `weight`?)"),
        "{stderr}"
    );
    assert!(!stderr.contains("untagged"), "{stderr}");
}

/// An access log that cannot be opened or created fails at start; `check`
/// says so where the file is named.
#[test]
fn check_reports_an_access_log_that_cannot_be_opened() {
    for (access, want) in [
        (
            "/proc/nope/access.log",
            "postern.toml:2:10: cannot create the access log /proc/nope/access.log: \
             the directory /proc/nope does not exist"
                .to_string(),
        ),
        (
            "{dir}/missing/access.log",
            "cannot create the access log {dir}/missing/access.log: \
             the directory {dir}/missing does not exist"
                .to_string(),
        ),
        (
            "{dir}",
            "postern.toml:2:10: the access log {dir} is a directory".to_string(),
        ),
    ] {
        let (code, _, stderr) = check_config(BIN, &format!("[log]\naccess = \"{access}\"\n"));
        assert_eq!(code, 1, "{access}: {stderr}");
        let line = stderr.lines().next().unwrap_or_default();
        // `{dir}` is the temporary directory check_config made.
        let dir = line
            .split_once("/postern.toml:")
            .map(|(d, _)| d)
            .unwrap_or_default();
        let want = want.replace("{dir}", dir);
        assert!(line.ends_with(&want), "{line}\nwanted: {want}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // A file that does not exist yet in a writable directory is fine, and
    // checking does not create it.
    let dir = std::env::temp_dir().join(format!("postern-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.log");
    let (code, _, stderr) = check_config(BIN, &format!("[log]\naccess = \"{}\"\n", file.display()));
    assert_eq!(code, 0, "{stderr}");
    assert!(!file.exists());
    // A FIFO nobody reads yet: checking must not wait for a reader.
    let fifo = dir.join("access.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (code, _, stderr) = check_config(BIN, &format!("[log]\naccess = \"{}\"\n", fifo.display()));
    assert_eq!(code, 0, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two listeners on one port where one address is the unspecified address
/// of the family: the second bind fails at start, so `check` refuses it.
#[test]
fn check_reports_listeners_whose_binds_overlap() {
    let (code, _, stderr) = check_config(
        BIN,
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n\
         [[listener]]\nname = \"b\"\nbind = \"0.0.0.0:1\"\n\
         [[listener]]\nname = \"c\"\nbind = \"[::]:2\"\n\
         [[listener]]\nname = \"d\"\nbind = \"[::1]:2\"\n\
         [[listener]]\nname = \"e\"\nbind = \"127.0.0.1:2\"\n\
         [[listener]]\nname = \"f\"\nbind = \"0.0.0.0:3\"\n\
         [[listener]]\nname = \"g\"\nbind = \"0.0.0.0:3\"\n",
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].ends_with(
            "postern.toml:6:8: `0.0.0.0:1` overlaps listener `a` on 127.0.0.1:1: \
             0.0.0.0 takes port 1 on every IPv4 address, so only one of them can bind"
        ),
        "{stderr}"
    );
    assert!(
        lines[1].ends_with(
            "postern.toml:12:8: `[::1]:2` overlaps listener `c` on [::]:2: \
             [::] takes port 2 on every IPv6 address, so only one of them can bind"
        ),
        "{stderr}"
    );
    // 127.0.0.1:2 beside [::]:2 is fine: IPv6 listeners are IPv6-only.
    assert!(
        lines[2].ends_with("postern.toml:21:8: two listeners bind 0.0.0.0:3"),
        "{stderr}"
    );
}

/// A SOCKS5 pool is a pool of parent proxies: a reverse route cannot send
/// requests to it.
#[test]
fn check_refuses_a_route_to_a_socks5_parent_pool() {
    let (code, _, stderr) = check_config(
        BIN,
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n\
         [[pool]]\nname = \"parents\"\nprotocol = \"socks5\"\nservers = [\"127.0.0.1:1080\"]\n\
         [[route]]\nlistener = \"web\"\npool = \"parents\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.trim_end().ends_with(
            "postern.toml:11:8: pool `parents` is a pool of SOCKS5 parent proxies \
             (`protocol = \"socks5\"`), for a forward listener's `parent`; \
             a route needs a pool of web servers"
        ),
        "{stderr}"
    );
}

#[test]
fn check_needs_a_file_and_a_bad_file_stops_the_server() {
    let out = Command::new(BIN).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["-c", "/nonexistent/postern.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/postern.toml:1:1: cannot read the file"),
        "{err}"
    );
}

/// The README's promise: `postern` alone is a working, safe forward proxy on
/// 127.0.0.1:3128. Loopback destinations are refused by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_default_listens_on_3128_and_refuses_loopback_destinations() {
    let origin = Origin::start().await;
    let mut child = Command::new(BIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    if line.contains("Address already in use") {
        eprintln!("127.0.0.1:3128 is taken on this machine; skipping: {line}");
        // The binary exits on its own after the bind error; reap it.
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    assert_eq!(
        line.trim(),
        "postern: listener proxy (forward) listening on 127.0.0.1:3128"
    );
    let url = origin.url("/bytes/10");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "10",
                "-x",
                "http://127.0.0.1:3128",
                &url,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("HTTP/1.1 403 Forbidden"), "{text}");
    assert!(
        text.contains("Proxy-Status: postern; error=destination_ip_prohibited"),
        "{text}"
    );
    assert_eq!(origin.requests(), 0);
    // The access log goes to stdout by default.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    stdout.read_line(&mut log).unwrap();
    assert!(
        log.contains("TCP_DENIED/403") && log.contains("/bytes/10"),
        "{log}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait(&mut child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

fn wait(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    None
}
