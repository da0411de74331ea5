//! The access log: one line per request or tunnel, in Squid's native format (so
//! Squid's log tools read it), the combined format, or JSON.
//!
//! Lines are formatted on the connection's task and written by one dedicated
//! thread, which batches writes and flushes whenever it has caught up, so a slow
//! disk never stalls a request.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::config::{AccessLogTarget, LogConfig, LogFormat};
use crate::context::RequestCtx;

use super::time;

enum Message {
    Line(String),
    Reopen,
    Flush(mpsc::Sender<()>),
}

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Message>>,
    format: LogFormat,
}

impl AccessLog {
    pub fn start(config: &LogConfig) -> io::Result<AccessLog> {
        let format = config.format;
        let sink = match &config.access {
            AccessLogTarget::Off => return Ok(AccessLog { tx: None, format }),
            AccessLogTarget::Stdout => Output::Stdout,
            AccessLogTarget::File(path) => Output::File(path.clone(), open(path)?),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, sink))?;
        Ok(AccessLog {
            tx: Some(tx),
            format,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Writes the line for a finished request or tunnel, from its context.
    pub fn write(&self, ctx: &RequestCtx) {
        if let Some(tx) = &self.tx {
            let line = format_entry(self.format, ctx, ctx.started.elapsed());
            let _ = tx.send(Message::Line(line));
        }
    }

    /// Reopens the file (after log rotation, on SIGUSR1).
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Reopen);
        }
    }

    /// Waits until every line sent so far is written.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done_tx, done_rx) = mpsc::channel();
            if tx.send(Message::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(Duration::from_secs(5));
            }
        }
    }
}

enum Output {
    Stdout,
    File(PathBuf, File),
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

fn writer(rx: mpsc::Receiver<Message>, mut out: Output) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Message::Line(line) => batch.extend_from_slice(line.as_bytes()),
                Message::Reopen => {
                    write_out(&mut out, &mut batch);
                    if let Output::File(path, file) = &mut out {
                        match open(path) {
                            Ok(f) => *file = f,
                            Err(e) => eprintln!("postern: cannot reopen {e}"),
                        }
                    }
                }
                Message::Flush(done) => {
                    write_out(&mut out, &mut batch);
                    let _ = done.send(());
                }
            }
            if batch.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        write_out(&mut out, &mut batch);
    }
    write_out(&mut out, &mut batch);
}

fn write_out(out: &mut Output, batch: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    let res = match out {
        Output::Stdout => {
            let mut lock = io::stdout().lock();
            lock.write_all(batch).and_then(|_| lock.flush())
        }
        Output::File(_, f) => f.write_all(batch),
    };
    if let Err(e) = res {
        eprintln!("postern: access log write failed: {e}");
    }
    batch.clear();
}

fn format_entry(format: LogFormat, e: &RequestCtx, duration: Duration) -> String {
    let mut s = String::with_capacity(200);
    match format {
        LogFormat::Squid => {
            // time elapsed client code/status bytes method URL user hierarchy/from type
            let t = e
                .start
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let result = if e.aborted && e.result == "TCP_MISS" {
                "TCP_MISS_ABORTED"
            } else {
                e.result
            };
            let hier = match e.upstream {
                Some(addr) => format!("HIER_DIRECT/{}", addr.ip()),
                None => "HIER_NONE/-".into(),
            };
            let _ = writeln!(
                s,
                "{}.{:03} {:>6} {} {}/{:03} {} {} {} {} {} {}",
                t.as_secs(),
                t.subsec_millis(),
                duration.as_millis(),
                e.client.ip(),
                result,
                e.status,
                e.bytes_out,
                field(&e.method),
                field(&e.url),
                e.user.as_deref().map(field).unwrap_or_else(|| "-".into()),
                hier,
                e.content_type
                    .as_deref()
                    .map(field)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        LogFormat::Combined => {
            let _ = writeln!(
                s,
                "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                e.client.ip(),
                e.user.as_deref().map(field).unwrap_or_else(|| "-".into()),
                time::clf_date(e.start),
                field(&e.method),
                field(&e.url),
                e.version,
                e.status,
                e.bytes_out,
                quoted(e.referer.as_deref().unwrap_or("-")),
                quoted(e.user_agent.as_deref().unwrap_or("-")),
            );
        }
        LogFormat::Json => {
            let _ = write!(
                s,
                "{{\"time\":\"{}\",\"duration_ms\":{},\"client\":\"{}\",\"user\":{},\"listener\":{},\"method\":{},\"url\":{},\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"upstream\":{},\"result\":\"{}\",\"aborted\":{},\"content_type\":{},\"error\":{},\"rule\":{}}}",
                time::rfc3339(e.start),
                duration.as_millis(),
                e.client.ip(),
                json_opt(e.user.as_deref()),
                json_str(&e.listener),
                json_str(&e.method),
                json_str(&e.url),
                e.status,
                e.bytes_in,
                e.bytes_out,
                json_opt(e.upstream.map(|a| a.to_string()).as_deref()),
                e.result,
                e.aborted,
                json_opt(e.content_type.as_deref()),
                json_opt(e.error),
                json_opt(e.rule.as_deref()),
            );
            s.push('\n');
        }
    }
    s
}

/// A space-free field for the Squid format: spaces and controls
/// percent-encoded. A `%` stays as it is: URLs arrive encoded already, and
/// Squid's tools read them as the client sent them.
fn field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ' ' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() { "-".into() } else { out }
}

fn quoted(s: &str) -> String {
    s.chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect()
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(s: Option<&str>) -> String {
    s.map(json_str).unwrap_or_else(|| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> RequestCtx {
        let mut ctx = RequestCtx::new("127.0.0.1:40000".parse().unwrap(), &"proxy".into());
        ctx.start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        ctx.method = "GET".into();
        ctx.url = "http://a.example/x y".into();
        ctx.status = 200;
        ctx.bytes_in = 80;
        ctx.bytes_out = 1234;
        ctx.upstream = Some("10.0.0.1:80".parse().unwrap());
        ctx.content_type = Some("text/html".into());
        ctx.user_agent = Some("curl/8".into());
        ctx
    }

    #[test]
    fn squid_native_format() {
        let line = format_entry(LogFormat::Squid, &entry(), Duration::from_millis(45));
        assert_eq!(
            line,
            "1700000000.123     45 127.0.0.1 TCP_MISS/200 1234 GET http://a.example/x%20y - HIER_DIRECT/10.0.0.1 text/html\n"
        );
        // An encoded URL is logged as the client sent it, not encoded twice.
        let mut encoded = entry();
        encoded.url = "http://a.example/caf%C3%A9?q=%25".into();
        let line = format_entry(LogFormat::Squid, &encoded, Duration::from_millis(45));
        assert!(
            line.contains(" GET http://a.example/caf%C3%A9?q=%25 "),
            "{line}"
        );
    }

    #[test]
    fn combined_and_json() {
        let line = format_entry(LogFormat::Combined, &entry(), Duration::from_millis(45));
        assert!(line.starts_with("127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] \"GET http://a.example/x%20y HTTP/1.1\" 200 1234 \"-\" \"curl/8\""), "{line}");
        let json = format_entry(LogFormat::Json, &entry(), Duration::from_millis(45));
        assert!(
            json.contains("\"status\":200") && json.contains("\"upstream\":\"10.0.0.1:80\""),
            "{json}"
        );
        assert!(json.contains("\"url\":\"http://a.example/x y\""));
    }
}
