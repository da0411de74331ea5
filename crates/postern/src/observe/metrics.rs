//! Prometheus metrics (text exposition format 0.0.4), counted from the same
//! request context the access log is written from.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::context::RequestCtx;

pub static ACTIVE_TUNNELS: AtomicI64 = AtomicI64::new(0);
pub static DNS_LOOKUPS: AtomicU64 = AtomicU64::new(0);
pub static DNS_FAILURES: AtomicU64 = AtomicU64::new(0);
pub static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Access-log lines dropped because the writer could not keep up.
pub static ACCESS_LOG_QUEUE_DROPS: AtomicU64 = AtomicU64::new(0);
/// Access-log lines lost to failed writes.
pub static ACCESS_LOG_LOST_LINES: AtomicU64 = AtomicU64::new(0);

/// Counts a tunnel while it is open.
pub struct TunnelGauge;

impl TunnelGauge {
    pub fn open() -> TunnelGauge {
        ACTIVE_TUNNELS.fetch_add(1, Ordering::Relaxed);
        TunnelGauge
    }
}

impl Drop for TunnelGauge {
    fn drop(&mut self) {
        ACTIVE_TUNNELS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Request-duration histogram bounds, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
struct PerListener {
    mode: &'static str,
    /// Requests by status class (1xx..5xx; index 0 is "no status").
    by_class: [u64; 6],
    bytes_in: u64,
    bytes_out: u64,
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    listeners: Mutex<crate::fasthash::FastMap<std::sync::Arc<str>, PerListener>>,
    denials: Mutex<HashMap<&'static str, u64>>,
    /// Recent refusals for the dashboard: (time, client, URL, reason).
    recent_denials: Mutex<std::collections::VecDeque<(String, String, String, String)>>,
    destinations: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    pub fn record(&self, ctx: &RequestCtx, mode: &'static str) {
        let elapsed = ctx.started.elapsed().as_secs_f64();
        {
            let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            let entry = l.entry(ctx.listener.clone()).or_default();
            entry.mode = mode;
            let class = (ctx.status / 100) as usize;
            entry.by_class[if (1..=5).contains(&class) { class } else { 0 }] += 1;
            entry.bytes_in += ctx.bytes_in;
            entry.bytes_out += ctx.bytes_out;
            entry.count += 1;
            entry.duration_sum += elapsed;
            for (i, b) in BUCKETS.iter().enumerate() {
                if elapsed <= *b {
                    entry.buckets[i] += 1;
                }
            }
        }
        if matches!(ctx.status, 403 | 407 | 429) || ctx.result == "TCP_DENIED" {
            let reason = ctx.error.unwrap_or("denied");
            *self
                .denials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(reason)
                .or_default() += 1;
            let mut recent = self
                .recent_denials
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if recent.len() >= 50 {
                recent.pop_front();
            }
            recent.push_back((
                crate::observe::time::rfc3339(ctx.start),
                ctx.client.ip().to_string(),
                ctx.url.clone(),
                ctx.rule.clone().unwrap_or_else(|| reason.to_string()),
            ));
        }
        // Top destinations need the URL, which is filled only when logging.
        if ctx.logging
            && let Some(up) = ctx.upstream
        {
            let key = up.to_string();
            let mut d = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
            if d.len() < 10_000 || d.contains_key(&key) {
                *d.entry(key).or_default() += 1;
            }
        }
    }

    /// Total requests so far (all listeners).
    pub fn total_requests(&self) -> u64 {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| l.count)
            .sum()
    }

    pub fn total_bytes(&self) -> (u64, u64) {
        let l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        (
            l.values().map(|x| x.bytes_in).sum(),
            l.values().map(|x| x.bytes_out).sum(),
        )
    }

    pub fn recent_denials(&self) -> Vec<(String, String, String, String)> {
        self.recent_denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn top_destinations(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .destinations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by_key(|d| std::cmp::Reverse(d.1));
        all.truncate(n);
        all
    }

    /// The exposition text; `extra` appends gauges the caller knows.
    pub fn render(&self, extra: &mut dyn FnMut(&mut String)) -> String {
        let mut out = String::with_capacity(4096);
        let l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP postern_requests_total Requests and tunnels served, by listener and status class.\n# TYPE postern_requests_total counter\n");
        for (name, x) in l.iter() {
            for (i, class) in ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .enumerate()
            {
                let _ = writeln!(
                    out,
                    "postern_requests_total{{listener=\"{}\",mode=\"{}\",class=\"{class}\"}} {}",
                    label(name),
                    x.mode,
                    x.by_class[i]
                );
            }
        }
        out.push_str("# HELP postern_received_bytes_total Bytes received from clients.\n# TYPE postern_received_bytes_total counter\n");
        for (name, x) in l.iter() {
            let _ = writeln!(
                out,
                "postern_received_bytes_total{{listener=\"{}\"}} {}",
                label(name),
                x.bytes_in
            );
        }
        out.push_str("# HELP postern_sent_bytes_total Bytes sent to clients.\n# TYPE postern_sent_bytes_total counter\n");
        for (name, x) in l.iter() {
            let _ = writeln!(
                out,
                "postern_sent_bytes_total{{listener=\"{}\"}} {}",
                label(name),
                x.bytes_out
            );
        }
        out.push_str("# HELP postern_request_duration_seconds Time from the request head to the end of the response.\n# TYPE postern_request_duration_seconds histogram\n");
        for (name, x) in l.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "postern_request_duration_seconds_bucket{{listener=\"{}\",le=\"{b}\"}} {}",
                    label(name),
                    x.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "postern_request_duration_seconds_bucket{{listener=\"{}\",le=\"+Inf\"}} {}",
                label(name),
                x.count
            );
            let _ = writeln!(
                out,
                "postern_request_duration_seconds_sum{{listener=\"{}\"}} {}",
                label(name),
                x.duration_sum
            );
            let _ = writeln!(
                out,
                "postern_request_duration_seconds_count{{listener=\"{}\"}} {}",
                label(name),
                x.count
            );
        }
        drop(l);
        out.push_str("# HELP postern_denials_total Requests refused, by reason (Proxy-Status error type).\n# TYPE postern_denials_total counter\n");
        for (reason, n) in self
            .denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "postern_denials_total{{reason=\"{reason}\"}} {n}");
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "postern_active_tunnels",
            "Tunnels open now (CONNECT, SOCKS, upgrades).",
            "gauge",
            ACTIVE_TUNNELS.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "postern_dns_lookups_total",
            "Name lookups (cache misses of the resolver included).",
            "counter",
            DNS_LOOKUPS.load(Ordering::Relaxed) as i64,
        );
        gauge(
            &mut out,
            "postern_dns_failures_total",
            "Name lookups that failed.",
            "counter",
            DNS_FAILURES.load(Ordering::Relaxed) as i64,
        );
        gauge(
            &mut out,
            "postern_auth_failures_total",
            "Failed proxy authentications.",
            "counter",
            AUTH_FAILURES.load(Ordering::Relaxed) as i64,
        );
        let _ = writeln!(
            out,
            "# HELP postern_access_log_dropped_lines_total Access-log lines not written: the queue was full (the log could not keep up) or the write failed.\n\
             # TYPE postern_access_log_dropped_lines_total counter\n\
             postern_access_log_dropped_lines_total{{reason=\"queue_full\"}} {}\n\
             postern_access_log_dropped_lines_total{{reason=\"write_error\"}} {}",
            ACCESS_LOG_QUEUE_DROPS.load(Ordering::Relaxed),
            ACCESS_LOG_LOST_LINES.load(Ordering::Relaxed),
        );
        extra(&mut out);
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
