//! Timeouts armed only when an operation has to wait. Most writes of a
//! proxied response complete at once; reading the clock and registering a
//! timer for each of them cost more than the write's own bookkeeping.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

pub use tokio::time::error::Elapsed;

/// Like `tokio::time::timeout`, but polls `fut` once before the timer exists:
/// the limit then counts from the first time `fut` could not finish.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_at_once_and_timing_out() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await.ok(), Some(7));
        let never = std::future::pending::<()>();
        assert!(within(Duration::from_millis(20), never).await.is_err());
        let later = tokio::time::sleep(Duration::from_millis(10));
        assert!(within(Duration::from_secs(5), later).await.is_ok());
    }
}
