//! Background revalidation (RFC 5861 §3): a response served stale within
//! its `stale-while-revalidate` window is revalidated after the client has
//! it, by a task of its own, so later requests find it fresh again. One
//! refresh per URL runs at a time; its outcome (a 304 merged into the
//! stored response, or a new storable response) is stored like any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Cache;
use super::policy::Directives;
use super::store::Entry;
use crate::egress::Upstream;
use crate::error::ProxyError;
use crate::http1::RequestHead;
use crate::http1::body::{BodyKind, OutFraming, Sink, Source};
use crate::http1::fields::{connection_options, response_body};
use crate::http1::head::{HeadLimits, ResponseHead, parse_response};

/// Opens the connection the refresh goes out on.
pub type Opener = Pin<Box<dyn Future<Output = Result<Upstream, ProxyError>> + Send>>;

pub struct Refresh {
    pub cache: Arc<Cache>,
    pub stale: Arc<Entry>,
    /// The client's request: what the stored response varies on.
    pub request: RequestHead,
    pub req_cc: Directives,
    /// The request head as it goes upstream (see [`request_head`]).
    pub head_bytes: Vec<u8>,
    pub limits: HeadLimits,
    pub first_byte: Duration,
    pub io: Duration,
}

/// Fields of the client's request that would make the refresh's answer
/// partial or conditional on the client's copy, not the cache's.
const CLIENT_CONDITIONS: [&str; 6] = [
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
];

/// The upstream head of the client's GET, without its own conditions and
/// range, with the stored response's validators (RFC 9111 §4.3.1).
pub fn request_head(upstream: Vec<u8>, stale: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(upstream.len() + 128);
    let mut lines = upstream.split_inclusive(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        out.extend_from_slice(first);
    }
    for line in lines {
        if line == b"\r\n" {
            break;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if CLIENT_CONDITIONS
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(&super::validators(stale));
    out.extend_from_slice(b"\r\n");
    out
}

impl Refresh {
    /// Starts the refresh unless one for this URL is already running.
    pub fn spawn(self, open: Opener) {
        let Some(claim) = self.cache.claim_refresh(&self.stale.url) else {
            return;
        };
        tokio::spawn(async move {
            let _claim = claim;
            let url = self.stale.url.clone();
            if let Err(e) = self.run(open).await {
                // The stale copy stays; the next request after the window
                // revalidates in the foreground.
                eprintln!("postern: cache: background revalidation of {url}: {e}");
            }
        });
    }

    async fn run(self, open: Opener) -> Result<(), String> {
        let request_time = super::now();
        let mut upstream = open.await.map_err(|e| e.detail.clone())?;
        let write = upstream.write_all(&self.head_bytes);
        tokio::time::timeout(self.io, write)
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let head = read_head(&mut upstream, &mut buf, self.limits, self.first_byte).await?;
        let cache = &self.cache;
        if head.status == 304 {
            // §4.3.4: a 304 that selects no stored response updates none.
            if !super::selects(&head, &self.stale) {
                super::not_selected(cache, &self.stale);
                return Ok(());
            }
            let fresh = super::refreshed(&self.stale, &head, request_time);
            cache.keep(fresh);
            return Ok(());
        }
        let Some(storing) = super::Storing::decide(
            &self.stale.url,
            &self.request,
            &self.req_cc,
            &head,
            (request_time, self.stale.targeted),
        ) else {
            return Ok(());
        };
        let kind = response_body(&head, false).map_err(str::to_string)?;
        let limit = cache.tap_limit();
        if let BodyKind::Length(n) = kind
            && n > limit as u64
        {
            return Ok(());
        }
        let mut body = Bounded {
            data: Vec::new(),
            limit,
        };
        {
            let mut src = Source {
                io: &mut upstream,
                buf: &mut buf,
                timeout: self.io,
            };
            let mut sink = Sink::new(&mut body, Vec::new(), self.io);
            crate::http1::body::relay(&mut src, &mut sink, kind, OutFraming::Raw, 64 * 1024)
                .await
                .map_err(|e| e.to_string())?;
        }
        let conn = connection_options(&head);
        cache.keep(storing.entry(&head, &conn, body.data));
        Ok(())
    }
}

async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    limits: HeadLimits,
    first_byte: Duration,
) -> Result<ResponseHead, String> {
    loop {
        if !buf.is_empty() {
            match parse_response(buf, limits) {
                Ok(Some((n, parts))) => {
                    let head = ResponseHead::new(buf.split_to(n).freeze(), parts);
                    // Interim responses are not for the cache.
                    if head.status >= 200 {
                        return Ok(head);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(format!("malformed response: {e:?}")),
            }
        }
        if buf.len() > limits.max_size {
            return Err("response head too large".into());
        }
        match tokio::time::timeout(first_byte, io.read_buf(buf)).await {
            Ok(Ok(0)) => return Err("closed before a response".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no response within the first-byte timeout".into()),
        }
    }
}

/// Collects a body up to `limit` bytes; beyond it the write fails, so a
/// response too large to store is not read further.
struct Bounded {
    data: Vec<u8>,
    limit: usize,
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.data.len() + buf.len() > this.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other("too large to store")));
        }
        this.data.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_head_drops_client_conditions_and_adds_validators() {
        let stale = Entry {
            url: "http://a/x".into(),
            status: 200,
            headers: vec![("ETag".into(), bytes::Bytes::from_static(b"\"v1\""))],
            body: bytes::Bytes::new(),
            request_time: 0,
            response_time: 0,
            vary: vec![],
            cc: Directives::default(),
            date: None,
            age_value: 0,
            lifetime: 0,
            targeted: false,
            gzipped: Default::default(),
        };
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nIf-None-Match: \"v0\"\r\nAccept: */*\r\n\r\n".to_vec();
        assert_eq!(
            String::from_utf8(request_head(head, &stale)).unwrap(),
            "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nIf-None-Match: \"v1\"\r\n\r\n"
        );
    }
}
