//! The one value that follows a request from accept to the log line. Each stage
//! adds what it learns; the access log is written from it, never re-derived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::error::ProxyError;

pub struct RequestCtx {
    /// Whether anything will read the descriptive fields (method, URL, type).
    pub logging: bool,
    pub started: Instant,
    pub start: SystemTime,
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub method: String,
    pub url: String,
    pub version: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: Option<SocketAddr>,
    pub result: &'static str,
    pub aborted: bool,
    pub content_type: Option<String>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    pub error: Option<&'static str>,
    /// The authenticated user, for the log's user column.
    pub user: Option<Arc<str>>,
    /// The rule or limit that refused the request, for the JSON log.
    pub rule: Option<String>,
    /// The id a reverse listener gave the request (`request_id`).
    pub request_id: Option<Box<str>>,
}

impl RequestCtx {
    pub fn new(client: SocketAddr, listener: &Arc<str>) -> RequestCtx {
        RequestCtx {
            logging: true,
            started: Instant::now(),
            start: SystemTime::now(),
            client,
            listener: listener.clone(),
            method: String::new(),
            url: String::new(),
            version: "HTTP/1.1",
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream: None,
            result: "TCP_MISS",
            aborted: false,
            content_type: None,
            referer: None,
            user_agent: None,
            error: None,
            user: None,
            rule: None,
            request_id: None,
        }
    }

    pub fn record_error(&mut self, err: &ProxyError) {
        self.status = err.status();
        self.result = err.kind.squid_code();
        self.error = Some(err.kind.proxy_status());
        use crate::error::ErrorKind::*;
        if matches!(
            err.kind,
            Denied | Blocked | AuthRequired | RateLimited | ConnectionLimit | PortNotAllowed
        ) {
            // Why it was refused (rule, list or limit), for the JSON log.
            self.rule = Some(err.detail.clone());
        }
    }
}
