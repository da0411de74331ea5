//! The content and bandwidth rules on responses to HTTP/2 clients, as the
//! HTTP/1 path applies them (`forward::http`): a refused media type or an
//! announced size over `content.max_response_size` is answered before
//! anything is sent; a body whose size was not announced is cut off when it
//! passes the limit (the stream is reset, so it never looks complete); and
//! the client's and user's bandwidth buckets pace the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{HeaderMap, Response};

use crate::config::Config;
use crate::egress::senders::BoxError;
use crate::error::{ErrorKind, ProxyError};
use crate::guard::limits::Bucket;

/// The content rules on a response head.
pub fn check_head(cfg: &Config, headers: &HeaderMap) -> Result<(), ProxyError> {
    let rules = &cfg.content;
    if !rules.deny_types.is_empty()
        && let Some(ct) = headers.get(hyper::header::CONTENT_TYPE)
        && let Some(denied) = rules.denies_type(&String::from_utf8_lossy(ct.as_bytes()))
    {
        return Err(ProxyError::new(
            ErrorKind::ContentDenied,
            format!("responses of type {denied} are refused (content.deny_types)"),
        ));
    }
    if let Some(max) = rules.max_response_size
        && let Some(n) = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        && n > max
    {
        return Err(ProxyError::new(
            ErrorKind::ResponseTooLarge,
            format!("the response has {n} bytes; content.max_response_size allows {max}"),
        ));
    }
    Ok(())
}

/// The response with its body held to the size limit and paced by
/// `buckets`; unchanged (but for its type) when neither applies.
pub fn limit<B>(
    cfg: &Config,
    buckets: &[Arc<Bucket>],
    response: Response<B>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, BoxError>>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    limit_to(cfg.content.max_response_size, buckets, response)
}

/// [`limit`] with the size limit given: a body encoded on the way is held
/// to the size before encoding and paced after it.
pub fn limit_to<B>(
    max: Option<u64>,
    buckets: &[Arc<Bucket>],
    response: Response<B>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, BoxError>>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if max.is_none() && buckets.is_empty() {
        return response.map(|b| b.map_err(Into::into).boxed());
    }
    response.map(|inner| {
        Limited {
            inner,
            left: max,
            buckets: buckets.to_vec(),
            held: None,
        }
        .boxed()
    })
}

struct Limited<B> {
    inner: B,
    /// Bytes the body may still carry.
    left: Option<u64>,
    buckets: Vec<Arc<Bucket>>,
    /// A frame waiting for the buckets to allow it.
    held: Option<(Frame<Bytes>, Pin<Box<tokio::time::Sleep>>)>,
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some((_, wait)) = &mut this.held {
                ready!(wait.as_mut().poll(cx));
                let (frame, _) = this.held.take().expect("held");
                return Poll::Ready(Some(Ok(frame)));
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return Poll::Ready(None),
            };
            let n = frame.data_ref().map_or(0, Bytes::len);
            if let Some(left) = &mut this.left {
                if n as u64 > *left {
                    return Poll::Ready(Some(Err(
                        "the response passed content.max_response_size".into()
                    )));
                }
                *left -= n as u64;
            }
            let wait = this
                .buckets
                .iter()
                .map(|b| b.take(n))
                .max()
                .unwrap_or_default();
            if wait.is_zero() {
                return Poll::Ready(Some(Ok(frame)));
            }
            this.held = Some((frame, Box::pin(tokio::time::sleep(wait))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some((frame, _)) = &self.held {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            hint.set_lower(hint.lower() + n);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
        }
        hint
    }
}
