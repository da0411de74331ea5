//! The access log sent to syslog (`[log] access = "syslog"`), one datagram
//! per line in the BSD format (RFC 3164) that syslog daemons and journald
//! read from `/dev/log`, and that nginx and HAProxy send by default:
//! `<PRI>Mmm dd hh:mm:ss HOST postern[PID]: LINE`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::SystemTime;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogDestination {
    /// A local datagram socket (`/dev/log`).
    Unix(PathBuf),
    /// A syslog server over UDP (port 514 by convention).
    Udp(SocketAddr),
}

/// `[log] access = "syslog..."` and `syslog_facility`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    pub destination: SyslogDestination,
    /// RFC 5424 §6.2.1 facility number (`local0` is 16).
    pub facility: u8,
}

/// Facility names as syslog.conf writes them (RFC 5424 §6.2.1).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Severity of access-log lines: informational.
const INFO: u8 = 6;

/// Longer lines are cut here: the size syslog daemons accept by default.
const MAX_LINE: usize = 8 * 1024;

/// `access = "syslog"`, `"syslog:/path/to/socket"` or
/// `"syslog:udp://ADDR:PORT"`; `None` for any other value.
pub fn parse_destination(value: &str) -> Option<Result<SyslogDestination, String>> {
    let rest = match value.strip_prefix("syslog") {
        Some("") => return Some(Ok(SyslogDestination::Unix("/dev/log".into()))),
        Some(rest) => rest.strip_prefix(':')?,
        None => return None,
    };
    Some(if let Some(addr) = rest.strip_prefix("udp://") {
        addr.parse::<SocketAddr>()
            .map(SyslogDestination::Udp)
            .map_err(|_| {
                format!("`syslog:udp://{addr}` needs an IP address and a port, as udp://127.0.0.1:514 or udp://[::1]:514")
            })
    } else if rest.starts_with('/') {
        Ok(SyslogDestination::Unix(rest.into()))
    } else {
        Err(format!(
            "`syslog:{rest}`: write syslog (for /dev/log), syslog:/path/to/socket or syslog:udp://ADDR:PORT"
        ))
    })
}

pub struct Syslog {
    socket: Socket,
    /// `<PRI>`, ready to write.
    priority: String,
    /// ` HOST postern[PID]: ` after the timestamp.
    origin: String,
    datagram: Vec<u8>,
}

enum Socket {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket, SocketAddr),
}

impl Syslog {
    pub fn open(target: &SyslogTarget) -> io::Result<Syslog> {
        let socket = match &target.destination {
            SyslogDestination::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                // A syslog daemon that stops reading must not stop the
                // writer: what it cannot take is counted as lost.
                socket.set_nonblocking(true)?;
                Socket::Unix(socket, path.clone())
            }
            SyslogDestination::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv6() {
                    "[::]:0".parse().expect("literal")
                } else {
                    "0.0.0.0:0".parse().expect("literal")
                };
                let socket = UdpSocket::bind(local)?;
                socket.set_nonblocking(true)?;
                Socket::Udp(socket, *addr)
            }
        };
        Ok(Syslog {
            socket,
            priority: format!("<{}>", target.facility * 8 + INFO),
            origin: format!(" {} postern[{}]: ", hostname(), std::process::id()),
            datagram: Vec::with_capacity(MAX_LINE + 128),
        })
    }

    /// Sends each line of `batch` as one message. The first failure is
    /// returned (after the other lines were tried) with the number of lines
    /// it cost.
    pub fn send_lines(&mut self, batch: &[u8]) -> Result<(), (usize, io::Error)> {
        let stamp = timestamp(SystemTime::now());
        let mut failed: Option<(usize, io::Error)> = None;
        for line in batch.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.datagram.clear();
            self.datagram.extend_from_slice(self.priority.as_bytes());
            self.datagram.extend_from_slice(stamp.as_bytes());
            self.datagram.extend_from_slice(self.origin.as_bytes());
            self.datagram
                .extend_from_slice(&line[..cut_at(line, MAX_LINE)]);
            let sent = match &self.socket {
                Socket::Unix(s, path) => s.send_to(&self.datagram, path),
                Socket::Udp(s, addr) => s.send_to(&self.datagram, addr),
            };
            if let Err(e) = sent {
                match &mut failed {
                    Some((n, _)) => *n += 1,
                    None => failed = Some((1, e)),
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Where to cut `line` to at most `max` bytes without splitting a UTF-8
/// character.
fn cut_at(line: &[u8], max: usize) -> usize {
    if line.len() <= max {
        return line.len();
    }
    let mut end = max;
    // Continuation bytes are 0b10xxxxxx.
    while end > 0 && line[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    end
}

/// `Mmm dd hh:mm:ss` in local time, as RFC 3164 §4.1.2 writes it (a space
/// pads single-digit days).
fn timestamp(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    #[allow(unsafe_code)]
    // SAFETY: localtime_r reads the time and fills the struct passed by
    // pointer (a zeroed tm is a valid value to overwrite); it returns null
    // on failure, checked below.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        (!libc::localtime_r(&secs, &mut tm).is_null()).then_some(tm)
    };
    match tm {
        Some(tm) => format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            MONTHS[tm.tm_mon.clamp(0, 11) as usize],
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => "Jan  1 00:00:00".into(),
    }
}

/// This host's name, as the HOSTNAME field (no dots beyond the first label
/// are required; a name with spaces would break the field, so `-` then).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    #[allow(unsafe_code)]
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if ok && !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        name
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that stops reading costs lines (counted), never the writer.
    #[test]
    fn a_stalled_receiver_loses_lines_without_blocking() {
        let dir = std::env::temp_dir().join(format!("postern-syslog-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _server = UnixDatagram::bind(&path).unwrap();
        let mut log = Syslog::open(&SyslogTarget {
            destination: SyslogDestination::Unix(path),
            facility: 16,
        })
        .unwrap();
        let batch = "a line\n".repeat(500);
        let (lost, e) = log.send_lines(batch.as_bytes()).unwrap_err();
        assert!(lost > 0 && lost <= 500, "{lost}");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn destinations() {
        assert_eq!(
            parse_destination("syslog"),
            Some(Ok(SyslogDestination::Unix("/dev/log".into())))
        );
        assert_eq!(
            parse_destination("syslog:/run/log.sock"),
            Some(Ok(SyslogDestination::Unix("/run/log.sock".into())))
        );
        assert_eq!(
            parse_destination("syslog:udp://[::1]:514"),
            Some(Ok(SyslogDestination::Udp("[::1]:514".parse().unwrap())))
        );
        assert!(matches!(
            parse_destination("syslog:udp://logs.example:514"),
            Some(Err(_))
        ));
        assert!(matches!(parse_destination("syslog:tcp"), Some(Err(_))));
        assert_eq!(parse_destination("syslogs.txt"), None);
        assert_eq!(parse_destination("access.log"), None);
    }

    #[test]
    fn each_line_is_one_message_with_priority_and_tag() {
        let dir = std::env::temp_dir().join(format!("postern-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut log = Syslog::open(&SyslogTarget {
            destination: SyslogDestination::Unix(path),
            facility: 16,
        })
        .unwrap();
        let long = "x".repeat(MAX_LINE + 10);
        log.send_lines(format!("first line\nsecond\n{long}\n").as_bytes())
            .unwrap();
        let mut buf = vec![0u8; 3 * MAX_LINE];
        let mut next = || {
            let n = server.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let first = next();
        assert!(first.starts_with("<134>"), "{first}");
        let tag = format!(" postern[{}]: first line", std::process::id());
        assert!(first.ends_with(&tag), "{first}");
        // `<134>Mmm dd hh:mm:ss ` before the host name.
        assert_eq!(first.as_bytes()[5 + 15], b' ', "{first}");
        assert!(next().ends_with("]: second"));
        let cut = next();
        assert_eq!(cut.split("]: ").nth(1).unwrap(), "x".repeat(MAX_LINE));
        // A character is not split at the cut.
        let mut wide = "x".repeat(MAX_LINE - 1).into_bytes();
        wide.extend_from_slice("é".as_bytes());
        assert_eq!(cut_at(&wide, MAX_LINE), MAX_LINE - 1);
        assert_eq!(cut_at(b"short", MAX_LINE), 5);
        let _ = std::fs::remove_dir_all(dir);
    }
}
