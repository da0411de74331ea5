//! The access log: one line per request or tunnel, in Squid's native format (so
//! Squid's log tools read it), the combined format, JSON, or the operator's
//! own template (`log_template`).
//!
//! Lines are formatted on the connection's task and handed to one dedicated
//! writer thread through a bounded queue, so a slow disk or a blocked stdout
//! never stalls a request: when the queue is full, lines are dropped and
//! counted. Dropped lines and failed writes are reported on stderr by a second
//! thread, at most once every [`REPORT_EVERY`], never once per line or batch.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{AccessLogTarget, LogConfig, LogFormat};
use crate::context::RequestCtx;

use super::metrics::{ACCESS_LOG_LOST_LINES, ACCESS_LOG_QUEUE_DROPS};
use super::time;

/// Lines waiting for the writer, at most...
pub const QUEUE_LINES: usize = 65_536;
/// ...and bytes (whichever limit is reached first).
pub const QUEUE_BYTES: usize = 16 << 20;
/// Problems with the log are reported on stderr at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    handle: Option<Arc<Handle>>,
    format: LogFormat,
    /// Where and how it writes: a reload does not change it.
    started: Option<Arc<LogConfig>>,
}

/// Shared by the clones of one [`AccessLog`]; when the last one goes, the
/// writer writes what is left and stops.
struct Handle {
    queue: Arc<Queue>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.work.notify_all();
        self.queue.trouble.notify_all();
    }
}

/// The queue between the connections and the writer thread, and the problems
/// waiting to be reported.
struct Queue {
    state: Mutex<State>,
    /// The writer waits on this for lines, reopen and flush requests.
    work: Condvar,
    /// The reporter waits on this for problems to report.
    trouble: Condvar,
    /// Held while a report is taken and printed, so that a report taken just
    /// before shutdown is printed before the process exits.
    reporting: Mutex<()>,
    max_lines: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    /// Formatted lines, back to back.
    pending: Vec<u8>,
    lines: usize,
    reopen: bool,
    flushes: Vec<mpsc::Sender<()>>,
    closed: bool,
    writer_done: bool,
    /// Since the last report: lines dropped because the queue was full...
    dropped: u64,
    /// ...lines lost to failed writes, and the last write error.
    lost: u64,
    error: Option<String>,
}

impl State {
    fn has_trouble(&self) -> bool {
        self.dropped > 0 || self.lost > 0
    }

    /// The report line for the problems since the last report, which are
    /// then forgotten.
    fn take_report(&mut self) -> Option<String> {
        if !self.has_trouble() {
            return None;
        }
        let mut parts = Vec::new();
        if self.dropped > 0 {
            parts.push(format!(
                "{} dropped (the log cannot keep up)",
                lines(self.dropped)
            ));
        }
        if self.lost > 0 {
            let error = self.error.as_deref().unwrap_or("write failed");
            parts.push(format!("{} lost: {error}", lines(self.lost)));
        }
        self.dropped = 0;
        self.lost = 0;
        self.error = None;
        Some(format!("postern: access log: {}", parts.join("; ")))
    }
}

fn lines(n: u64) -> String {
    if n == 1 {
        "1 line".into()
    } else {
        format!("{n} lines")
    }
}

impl Queue {
    fn new(max_lines: usize, max_bytes: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            trouble: Condvar::new(),
            reporting: Mutex::new(()),
            max_lines,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a line, or drops and counts it when the queue is full. Never
    /// waits for the writer.
    fn push(&self, line: &str) {
        let mut s = self.lock();
        let full = s.lines >= self.max_lines
            || (s.lines > 0 && s.pending.len() + line.len() > self.max_bytes);
        if full {
            s.dropped += 1;
            ACCESS_LOG_QUEUE_DROPS.fetch_add(1, Ordering::Relaxed);
            if s.dropped == 1 {
                self.trouble.notify_all();
            }
            return;
        }
        let wake = s.lines == 0;
        s.pending.extend_from_slice(line.as_bytes());
        s.lines += 1;
        drop(s);
        if wake {
            self.work.notify_one();
        }
    }

    /// Records a failed write of `n` lines.
    fn lost(&self, n: usize, error: &io::Error) {
        ACCESS_LOG_LOST_LINES.fetch_add(n as u64, Ordering::Relaxed);
        let mut s = self.lock();
        let first = !s.has_trouble();
        s.lost += n as u64;
        s.error = Some(error.to_string());
        drop(s);
        if first {
            self.trouble.notify_all();
        }
    }
}

impl AccessLog {
    pub fn start(config: &LogConfig) -> io::Result<AccessLog> {
        let mut log = AccessLog::open(config)?;
        log.started = Some(Arc::new(config.clone()));
        Ok(log)
    }

    fn open(config: &LogConfig) -> io::Result<AccessLog> {
        let format = config.format.clone();
        let sink = match &config.access {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    handle: None,
                    format,
                    started: None,
                });
            }
            AccessLogTarget::Stdout => Output::Stdout,
            AccessLogTarget::File(path) => Output::File(path.clone(), open(path)?),
            AccessLogTarget::Syslog(target) => Output::Syslog(super::syslog::Syslog::open(target)?),
        };
        AccessLog::with_output(
            format,
            sink,
            QUEUE_LINES,
            QUEUE_BYTES,
            REPORT_EVERY,
            Box::new(|line: &str| eprintln!("{line}")),
        )
    }

    fn with_output(
        format: LogFormat,
        sink: Output,
        max_lines: usize,
        max_bytes: usize,
        every: Duration,
        report: Box<dyn FnMut(&str) + Send>,
    ) -> io::Result<AccessLog> {
        let queue = Arc::new(Queue::new(max_lines, max_bytes));
        let q = queue.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(&q, sink))?;
        let q = queue.clone();
        std::thread::Builder::new()
            .name("access-log-report".into())
            .spawn(move || reporter(&q, every, report))?;
        Ok(AccessLog {
            handle: Some(Arc::new(Handle { queue })),
            format,
            started: None,
        })
    }

    pub fn enabled(&self) -> bool {
        self.handle.is_some()
    }

    /// Whether the lines show the request's Referer and User-Agent, which
    /// must then be kept for them.
    pub fn wants_request_fields(&self) -> bool {
        self.handle.is_some() && self.format.wants_request_fields()
    }

    /// Whether this log writes as `config` says (a reload cannot change
    /// the target or format of a running log).
    pub fn runs(&self, config: &LogConfig) -> bool {
        self.started
            .as_deref()
            .is_none_or(|s| s.access == config.access && s.format == config.format)
    }

    /// Writes the line for a finished request or tunnel, from its context.
    pub fn write(&self, ctx: &RequestCtx) {
        if let Some(h) = &self.handle {
            let line = format_entry(&self.format, ctx, ctx.started.elapsed());
            h.queue.push(&line);
        }
    }

    /// Reopens the file (after log rotation, on SIGUSR1).
    pub fn reopen(&self) {
        if let Some(h) = &self.handle {
            h.queue.lock().reopen = true;
            h.queue.work.notify_one();
        }
    }

    /// Waits (up to 5 s) until every line queued so far is written, then
    /// reports any problem not reported yet. For shutdown.
    pub fn flush(&self) {
        if let Some(h) = &self.handle {
            self.written(Duration::from_secs(5));
            let _reporting = h.queue.reporting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(report) = h.queue.lock().take_report() {
                eprintln!("{report}");
            }
        }
    }

    /// Waits up to `limit` until every line queued so far is written (or
    /// its write has failed).
    fn written(&self, limit: Duration) {
        if let Some(h) = &self.handle {
            let (done_tx, done_rx) = mpsc::channel();
            h.queue.lock().flushes.push(done_tx);
            h.queue.work.notify_one();
            let _ = done_rx.recv_timeout(limit);
        }
    }
}

enum Output {
    Stdout,
    File(PathBuf, File),
    Syslog(super::syslog::Syslog),
    #[cfg(test)]
    Test(Box<dyn Write + Send>),
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

fn writer(queue: &Queue, mut out: Output) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let (lines, reopen, flushes, closed) = {
            let mut s = queue.lock();
            while s.lines == 0 && !s.reopen && s.flushes.is_empty() && !s.closed {
                s = queue.work.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            std::mem::swap(&mut s.pending, &mut batch);
            let lines = std::mem::take(&mut s.lines);
            let reopen = std::mem::take(&mut s.reopen);
            (lines, reopen, std::mem::take(&mut s.flushes), s.closed)
        };
        let written = match &mut out {
            Output::Syslog(syslog) => syslog.send_lines(&batch),
            out => write_out(out, &batch).map_err(|e| (lines, e)),
        };
        if let Err((lost, e)) = written {
            queue.lost(lost, &e);
        }
        batch.clear();
        if batch.capacity() > 1 << 20 {
            // Do not keep a burst's worth of memory for good.
            batch = Vec::with_capacity(64 * 1024);
        }
        if reopen && let Output::File(path, file) = &mut out {
            match open(path) {
                Ok(f) => *file = f,
                Err(e) => eprintln!("postern: cannot reopen {e}"),
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closed && queue.lock().lines == 0 {
            break;
        }
    }
    queue.lock().writer_done = true;
    queue.trouble.notify_all();
}

fn write_out(out: &mut Output, batch: &[u8]) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    match out {
        Output::Stdout => {
            let mut lock = io::stdout().lock();
            lock.write_all(batch).and_then(|_| lock.flush())
        }
        Output::File(_, f) => f.write_all(batch),
        Output::Syslog(s) => s.send_lines(batch).map_err(|(_, e)| e),
        #[cfg(test)]
        Output::Test(w) => w.write_all(batch).and_then(|_| w.flush()),
    }
}

/// Reports dropped and lost lines through `report`: at once the first time,
/// then at most once every `every`, summing up what happened in between; a
/// last time when the log closes.
fn reporter(queue: &Queue, every: Duration, mut report: Box<dyn FnMut(&str) + Send>) {
    let mut last: Option<Instant> = None;
    let mut s = queue.lock();
    loop {
        while !s.has_trouble() && !s.writer_done {
            s = queue.trouble.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(at) = last
            && !s.writer_done
        {
            let now = Instant::now();
            if now < at + every {
                s = queue
                    .trouble
                    .wait_timeout(s, at + every - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
        }
        let done = s.writer_done;
        drop(s);
        {
            let _reporting = queue.reporting.lock().unwrap_or_else(|e| e.into_inner());
            let line = queue.lock().take_report();
            if let Some(line) = line {
                report(&line);
                last = Some(Instant::now());
            }
        }
        if done {
            return;
        }
        s = queue.lock();
    }
}

/// Squid's result code, with `_ABORTED` when a side went away mid-response.
pub(super) fn squid_result(e: &RequestCtx) -> &'static str {
    if e.aborted && e.result == "TCP_MISS" {
        "TCP_MISS_ABORTED"
    } else {
        e.result
    }
}

fn format_entry(format: &LogFormat, e: &RequestCtx, duration: Duration) -> String {
    let mut s = String::with_capacity(200);
    match format {
        LogFormat::Custom(template) => return template.render(e, duration),
        LogFormat::Squid => {
            // time elapsed client code/status bytes method URL user hierarchy/from type
            let t = e
                .start
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let result = squid_result(e);
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
            // As Apache writes it: `"` and `\` escaped with a backslash,
            // so parsers find where each quoted field ends.
            let _ = writeln!(
                s,
                "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                e.client.ip(),
                e.user
                    .as_deref()
                    .map(|u| clf_escape(&field(u)))
                    .unwrap_or_else(|| "-".into()),
                time::clf_date(e.start),
                clf_escape(&field(&e.method)),
                clf_escape(&field(&e.url)),
                e.version,
                e.status,
                e.bytes_out,
                clf_escape(e.referer.as_deref().unwrap_or("-")),
                clf_escape(e.user_agent.as_deref().unwrap_or("-")),
            );
        }
        LogFormat::Json => {
            let _ = write!(
                s,
                "{{\"time\":\"{}\",\"duration_ms\":{},\"client\":\"{}\",\"user\":{},\"listener\":{},\"method\":{},\"url\":{},\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"upstream\":{},\"result\":\"{}\",\"aborted\":{},\"content_type\":{},\"error\":{},\"rule\":{},\"request_id\":{}}}",
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
                json_opt(e.request_id.as_deref()),
            );
            s.push('\n');
        }
    }
    s
}

/// A space-free field for the Squid format: spaces and controls
/// percent-encoded. A `%` stays as it is: URLs arrive encoded already, and
/// Squid's tools read them as the client sent them.
pub(super) fn field(s: &str) -> String {
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

/// Text for the combined format, escaped as Apache escapes log items: `"`
/// and `\` with a backslash, `\n`, `\r`, `\t`, and other control characters
/// as `\xHH` (each byte of their UTF-8 form).
pub(super) fn clf_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Line and paragraph separators end a line for some readers.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
    out
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

    const WAIT: Duration = Duration::from_secs(10);

    /// An access log writing to `sink`, with its stderr reports sent to the
    /// returned channel (which closes when the log has stopped).
    fn log_to(
        sink: Box<dyn Write + Send>,
        max_lines: usize,
        max_bytes: usize,
        every: Duration,
    ) -> (AccessLog, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let log = AccessLog::with_output(
            LogFormat::Squid,
            Output::Test(sink),
            max_lines,
            max_bytes,
            every,
            Box::new(move |line: &str| {
                let _ = tx.send(line.to_string());
            }),
        )
        .unwrap();
        (log, rx)
    }

    fn push(log: &AccessLog, line: &str) {
        log.handle.as_ref().unwrap().queue.push(line);
    }

    /// A sink that blocks every write until opened, like stdout into a pipe
    /// nobody reads; it says when a write has started.
    struct Gate {
        entered: mpsc::Sender<()>,
        open: Arc<(Mutex<bool>, Condvar)>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// While the writer is stuck, at most `max_lines` lines wait; the rest
    /// are dropped and counted, reported at once and then at most once per
    /// interval (the last time when the log stops), never per line.
    #[test]
    fn a_stuck_writer_drops_lines_beyond_the_queue_and_reports_them_rarely() {
        let (entered_tx, entered) = mpsc::channel();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate {
            entered: entered_tx,
            open: open.clone(),
            out: out.clone(),
        };
        let (log, reports) = log_to(Box::new(gate), 3, 1 << 20, Duration::from_secs(3600));
        let before = ACCESS_LOG_QUEUE_DROPS.load(Ordering::Relaxed);
        push(&log, "line 1\n");
        entered.recv_timeout(WAIT).expect("the writer takes line 1");
        for i in 2..=5 {
            push(&log, &format!("line {i}\n"));
        }
        assert_eq!(
            reports.recv_timeout(WAIT).unwrap(),
            "postern: access log: 1 line dropped (the log cannot keep up)"
        );
        for i in 6..=11 {
            push(&log, &format!("line {i}\n"));
        }
        {
            let s = log.handle.as_ref().unwrap().queue.lock();
            assert_eq!((s.lines, s.dropped), (3, 6));
        }
        assert!(ACCESS_LOG_QUEUE_DROPS.load(Ordering::Relaxed) >= before + 7);
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        drop(log);
        let rest: Vec<String> = reports.iter().collect();
        assert_eq!(
            rest,
            ["postern: access log: 6 lines dropped (the log cannot keep up)"]
        );
        assert_eq!(
            String::from_utf8(out.lock().unwrap().clone()).unwrap(),
            "line 1\nline 2\nline 3\nline 4\n"
        );
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let q = Queue::new(100, 100);
        let line = format!("{}\n", "x".repeat(39));
        for _ in 0..3 {
            q.push(&line);
        }
        let s = q.lock();
        assert_eq!((s.lines, s.pending.len(), s.dropped), (2, 80, 1));
        drop(s);
        // One line longer than the bound still goes when the queue is empty.
        let q = Queue::new(100, 10);
        q.push(&line);
        assert_eq!(q.lock().lines, 1);
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Failed writes (EPIPE, a full disk) are reported once, then summed up,
    /// not once per batch.
    #[test]
    fn write_errors_are_reported_at_most_once_per_interval() {
        let (log, reports) = log_to(Box::new(Broken), 100, 1 << 20, Duration::from_secs(3600));
        push(&log, "line 1\n");
        assert_eq!(
            reports.recv_timeout(WAIT).unwrap(),
            "postern: access log: 1 line lost: broken pipe"
        );
        for i in 2..=4 {
            push(&log, &format!("line {i}\n"));
            // One batch per line.
            log.written(WAIT);
        }
        drop(log);
        let rest: Vec<String> = reports.iter().collect();
        assert_eq!(rest, ["postern: access log: 3 lines lost: broken pipe"]);
    }

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
        let line = format_entry(&LogFormat::Squid, &entry(), Duration::from_millis(45));
        assert_eq!(
            line,
            "1700000000.123     45 127.0.0.1 TCP_MISS/200 1234 GET http://a.example/x%20y - HIER_DIRECT/10.0.0.1 text/html\n"
        );
        // An encoded URL is logged as the client sent it, not encoded twice.
        let mut encoded = entry();
        encoded.url = "http://a.example/caf%C3%A9?q=%25".into();
        let line = format_entry(&LogFormat::Squid, &encoded, Duration::from_millis(45));
        assert!(
            line.contains(" GET http://a.example/caf%C3%A9?q=%25 "),
            "{line}"
        );
    }

    /// The hierarchy column says whether a server was contacted for the
    /// response: a hit answered from the store names none, as Squid does.
    #[test]
    fn squid_hierarchy_names_a_server_only_when_one_was_contacted() {
        let mut hit = entry();
        hit.result = "TCP_HIT";
        hit.upstream = None;
        hit.content_type = None;
        let line = format_entry(&LogFormat::Squid, &hit, Duration::from_millis(1));
        assert!(
            line.ends_with(" TCP_HIT/200 1234 GET http://a.example/x%20y - HIER_NONE/- -\n"),
            "{line}"
        );
        let mut denied = entry();
        denied.result = "TCP_DENIED";
        denied.status = 403;
        denied.upstream = None;
        let line = format_entry(&LogFormat::Squid, &denied, Duration::from_millis(1));
        assert!(
            line.contains(" TCP_DENIED/403 ") && line.contains(" HIER_NONE/- "),
            "{line}"
        );
    }

    /// A `"` in the request line, the user, the Referer or the User-Agent
    /// must not end the quoted field early; controls are escaped too.
    #[test]
    fn combined_format_escapes_quotes_backslashes_and_controls() {
        let mut e = entry();
        e.method = "GE\"T".into();
        e.url = "http://127.0.0.1:47398/a\"b\\c\u{1}".into();
        e.status = 404;
        e.user = Some("al\"ice".into());
        e.referer = Some("http://r.example/\"q\"".into());
        e.user_agent = Some("agent \"1\"\t\u{7f}".into());
        let line = format_entry(&LogFormat::Combined, &e, Duration::from_millis(45));
        assert_eq!(
            line,
            "127.0.0.1 - al\\\"ice [14/Nov/2023:22:13:20 +0000] \
             \"GE\\\"T http://127.0.0.1:47398/a\\\"b\\\\c%01 HTTP/1.1\" 404 1234 \
             \"http://r.example/\\\"q\\\"\" \"agent \\\"1\\\"\\t\\x7f\"\n"
        );
    }

    #[test]
    fn combined_and_json() {
        let line = format_entry(&LogFormat::Combined, &entry(), Duration::from_millis(45));
        assert!(line.starts_with("127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] \"GET http://a.example/x%20y HTTP/1.1\" 200 1234 \"-\" \"curl/8\""), "{line}");
        let json = format_entry(&LogFormat::Json, &entry(), Duration::from_millis(45));
        assert!(
            json.contains("\"status\":200") && json.contains("\"upstream\":\"10.0.0.1:80\""),
            "{json}"
        );
        assert!(json.contains("\"url\":\"http://a.example/x y\""));
    }
}
